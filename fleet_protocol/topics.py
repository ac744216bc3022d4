"""MQTT topic names, the only place they are spelled.

    edgefleet/v1/devices/<id>/desired    server → device, retained, QoS 1: signed desired state
    edgefleet/v1/devices/<id>/reported   device → server, retained, QoS 1: what the device runs
    edgefleet/v1/devices/<id>/status     device → server, retained, QoS 1: online, or offline (last will)
    edgefleet/v1/devices/<id>/telemetry  device → server, QoS 1: telemetry batches from the outbox
    edgefleet/v1/devices/<id>/fetch      device → server, QoS 1: request for bundle chunks
    edgefleet/v1/devices/<id>/renew      device → server, QoS 1: CSR for a renewed client certificate
    edgefleet/v1/devices/<id>/certificate server → device, QoS 1: the renewed certificate
                                          (both: :mod:`fleet_protocol.renewal`; the broker's mTLS
                                          identity and ACL are what authenticate a renewal)
    edgefleet/v1/devices/<id>/jobs       server → device, QoS 1, not retained: a signed job
                                          (:mod:`fleet_protocol.jobs`); its result comes back as telemetry
    edgefleet/v1/bundles/<digest>/chunks server → devices, QoS 1: chunk payloads, shared so the
                                          broker fans one publish out to every device fetching it
    edgefleet/v1/root                    server → devices, retained, QoS 1: the chain of signed root
                                          documents (:mod:`fleet_protocol.root`), oldest first, so a
                                          device offline through several key rotations can catch up

Several server replicas on one broker subscribe through the shared group
``$share/edgefleet/<filter>`` (:func:`server_subscriptions`): the broker hands each
message to one member of the group (Mosquitto round-robins; amqtt has no shared
subscriptions). Messages keep their plain topic on delivery.

Device ids are lowercase names (see :data:`fleet_protocol.fields.NAME`), so they
never contain MQTT wildcards or separators.
"""

from __future__ import annotations

from .errors import MessageError
from .fields import HEX64, is_valid_name

PREFIX = "edgefleet/v1"
DEVICE_KINDS = ("desired", "reported", "status", "telemetry", "fetch", "renew", "certificate", "jobs")


ROOT_TOPIC = f"{PREFIX}/root"


def device_topic(device_id: str, kind: str) -> str:
    if kind not in DEVICE_KINDS:
        raise ValueError(f"unknown device topic kind {kind!r}")
    if not is_valid_name(device_id):
        raise MessageError(f"invalid device id {device_id!r}")
    return f"{PREFIX}/devices/{device_id}/{kind}"


def bundle_chunks_topic(bundle_digest: str) -> str:
    if not HEX64.fullmatch(bundle_digest):
        raise MessageError(f"invalid bundle digest {bundle_digest!r}")
    return f"{PREFIX}/bundles/{bundle_digest}/chunks"


SERVER_SUBSCRIPTIONS = tuple(f"{PREFIX}/devices/+/{kind}" for kind in ("reported", "status", "telemetry", "fetch",
                                                                          "renew"))
SHARE_GROUP = "edgefleet"


def server_subscriptions(*, shared: bool) -> tuple[str, ...]:
    """The server's topic filters; shared: each wrapped as ``$share/edgefleet/<filter>`` (one replica gets each)."""
    if not shared:
        return SERVER_SUBSCRIPTIONS
    return tuple(f"$share/{SHARE_GROUP}/{topic_filter}" for topic_filter in SERVER_SUBSCRIPTIONS)


def parse_device_topic(topic: str) -> tuple[str, str]:
    """Split ``edgefleet/v1/devices/<id>/<kind>`` into ``(id, kind)``."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{PREFIX}/devices" or parts[4] not in DEVICE_KINDS:
        raise MessageError(f"not a device topic: {topic!r}")
    if not is_valid_name(parts[3]):
        raise MessageError(f"invalid device id in topic {topic!r}")
    return parts[3], parts[4]
