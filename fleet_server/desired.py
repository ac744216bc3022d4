"""Desired state: compute each device's modules, sign, store, publish retained.

For every module the deployment targeting a device with the highest
priority, then the newest, wins (see :mod:`.targeting`); an A/B deployment
adds its other versions with their weights. When that set changes, the device's generation goes up by
one, a :class:`~fleet_protocol.messages.DesiredState` is signed and stored,
and published retained at QoS 1 on the device's ``desired`` topic.
Computation, storing and publishing happen under one lock, so an older
generation can never be published after a newer one; on every (re)connect of
the MQTT link the stored documents are published again as they are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from fleet_protocol import messages, topics
from fleet_protocol.canonical import canonical_json, sha256_hex
from fleet_protocol.messages import DesiredModule, DesiredState, DesiredVariant
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_protocol.timestamps import to_iso, utc_now

from . import targeting
from .store import Database
from .store import bundles as bundle_store
from .store import deployments as deployment_store
from .store import devices as device_store

log = logging.getLogger(__name__)
Publish = Callable[..., bool]


class DesiredStates:
    def __init__(self, *, db: Database, key: SigningKey, publish: Publish):
        self._db = db
        self._key = key
        self._publish = publish
        self._lock = threading.Lock()

    def recompute(self, device_ids: Iterable[str] | None = None) -> list[str]:
        """Recompute the named devices (all when None); return the ids whose desired state changed."""
        with self._lock:
            deployments = deployment_store.list_deployments(db=self._db)
            wanted = None if device_ids is None else set(device_ids)
            changed = []
            for device in device_store.list_devices(db=self._db):
                if wanted is None or device["id"] in wanted:
                    if self._update(device, deployments):
                        changed.append(device["id"])
            return changed

    def republish_all(self) -> int:
        """Publish every stored desired state again, unchanged (after the link (re)connects)."""
        with self._lock:
            published = device_store.published_desired(db=self._db)
            for device_id, envelope in published:
                self._publish(topics.device_topic(device_id, "desired"), messages.encode(envelope), qos=1, retain=True)
        log.info("republished the desired state of %d device(s)", len(published))
        return len(published)

    def _update(self, device: dict, deployments: list[dict]) -> bool:
        chosen = {} if device.get("revoked") else targeting.effective_deployments(device, deployments)
        key = sha256_hex(canonical_json(sorted([name, d["bundle_digest"]] + ([d["split"]] if d.get("split") else [])
                                               for name, d in chosen.items())))
        if key == device["desired_key"] or (device["desired_key"] is None and not chosen):
            return False
        modules = []
        for name in sorted(chosen):
            bundle = bundle_store.get_bundle(db=self._db, digest=chosen[name]["bundle_digest"])
            split = chosen[name].get("split")
            variants = tuple(DesiredVariant(v["version"], v["bundle_digest"],
                                            bundle_store.get_bundle(db=self._db, digest=v["bundle_digest"])["envelope"],
                                            v["weight"]) for v in (split or {}).get("variants", ()))
            modules.append(DesiredModule(name, bundle["version"], bundle["digest"], bundle["envelope"],
                                         split["weight"] if split else None, variants))
        state = DesiredState(device_id=device["id"], generation=device["desired_generation"] + 1,
                             issued=to_iso(utc_now()), modules=tuple(modules))
        envelope = sign_envelope(state.to_dict(), self._key)
        device_store.set_desired(db=self._db, device_id=device["id"], generation=state.generation, key=key,
                                 envelope=envelope)
        self._publish(topics.device_topic(device["id"], "desired"), messages.encode(envelope), qos=1, retain=True)
        log.info("device %s: desired state generation %d (%s)", device["id"], state.generation,
                 ", ".join(f"{m.name} v{m.version}" for m in modules) or "no modules")
        return True
