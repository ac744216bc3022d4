"""A list of MQTT broker URLs and the choice of which to connect to next: failover between cluster nodes.

Agents and servers may be given several broker URLs (the nodes of one broker
cluster: NATS, EMQX, VerneMQ). :func:`parse_broker_urls` checks them:
``mqtt://`` (``tcp://`` is the same) or ``mqtts://`` with a host and a port
(default 1883, 8883 for ``mqtts``), no duplicates, and one scheme family for
all of them: a link's TLS settings (the one fleet CA, the one client
certificate) are the same whichever node it reaches, so mixing plain and TLS
nodes would silently drop the device certificate on some of them.

:class:`BrokerFailover` decides, and does no I/O (the caller connects, sleeps
and draws the jitter, uniform in [0, 1), as with :mod:`fleet_protocol.retry`):

- each link walks the nodes in its own random order (``order``, a permutation
  the caller draws), starting with its first: a fleet spreads over the cluster
  instead of piling onto the first URL, and the devices of a node that died
  spread over the survivors instead of all moving to the node listed next;
- sticky: while a node works the link stays on it; after a working
  connection drops, the first reconnect goes to the same node (the drop may
  have been the device's own network) after a jittered wait of
  ``draw * base_delay_s``, so the devices of a node that died do not all
  come back in the same instant (no thundering herd);
- every failed attempt moves to the next node in that order and waits the full-jitter
  back-off of :meth:`fleet_protocol.retry.RetryPolicy.backoff_s` for the
  failures in a row so far, up to ``max_delay_s``; a successful CONNACK resets it.

What it does not do: health-check nodes it is not connected to, or move a
working link to rebalance a cluster (a restarted node fills up again as
links elsewhere drop or as devices restart).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .retry import RetryPolicy

_DEFAULT_PORT = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883}
_URL = re.compile(r"(?P<scheme>[a-z]+)://(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9._-]+))"
                  r"(?::(?P<port>[0-9]{1,5}))?/?")


@dataclass(frozen=True)
class BrokerUrl:
    url: str
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerUrl:
    """One ``mqtt://host:port`` or ``mqtts://host:port``, or :class:`ValueError` saying what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
    url = url.strip()
    match = _URL.fullmatch(url)
    if match is None or match["scheme"] not in _DEFAULT_PORT:
        raise ValueError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
    port = int(match["port"]) if match["port"] else _DEFAULT_PORT[match["scheme"]]
    if not 0 < port < 65536:
        raise ValueError(f"broker URL {url!r} has an invalid port")
    return BrokerUrl(url, match["ipv6"] or match["host"], port, match["scheme"] == "mqtts")


def parse_broker_urls(urls: Iterable[str]) -> tuple[BrokerUrl, ...]:
    """Several broker URLs (each may also be a comma-separated list): all plain or all TLS, none twice."""
    parsed: list[BrokerUrl] = []
    for item in urls:
        for url in str(item).split(","):
            if url.strip():
                parsed.append(parse_broker_url(url))
    if not parsed:
        raise ValueError("no broker URL given: name at least one, such as mqtt://host:1883")
    if len({broker.tls for broker in parsed}) > 1:
        raise ValueError("broker URLs mix mqtt:// and mqtts://: give every node of the cluster the same scheme "
                         "(mqtts:// with the fleet CA, or mqtt://), got " + ", ".join(b.url for b in parsed))
    seen: set[tuple[str, int]] = set()
    for broker in parsed:
        if (broker.host, broker.port) in seen:
            raise ValueError(f"broker {broker.host}:{broker.port} is listed twice")
        seen.add((broker.host, broker.port))
    return tuple(parsed)


class BrokerFailover:
    """Which broker of the list to try now, and how long to wait first (see the module docstring)."""

    def __init__(self, brokers: tuple[BrokerUrl, ...], *, order: list[int],
                 policy: RetryPolicy = RetryPolicy(base_delay_s=1.0, max_delay_s=30.0)):
        if not brokers:
            raise ValueError("a broker failover needs at least one broker")
        if sorted(order) != list(range(len(brokers))):
            raise ValueError(f"order must be a permutation of 0..{len(brokers) - 1}, got {order!r}")
        self.brokers = tuple(brokers[i] for i in order)  # this link's own walk through the cluster
        self.policy = policy
        self._index = 0
        self._failures = 0  # attempts in a row that reached no working session

    @property
    def current(self) -> BrokerUrl:
        return self.brokers[self._index]

    def connected(self) -> None:
        """The current broker accepted the connection (CONNACK): stay on it, and start back-off afresh."""
        self._failures = 0

    def dropped(self, draw: float) -> float:
        """A working connection was lost: seconds to wait before trying the same broker again."""
        self._failures = 0
        return self.policy.backoff_s(1, draw)

    def failed(self, draw: float) -> float:
        """An attempt on the current broker failed (refused, unreachable, CONNACK refused): move on to the next
        broker and return the seconds to wait before trying it."""
        self._failures += 1
        self._index = (self._index + 1) % len(self.brokers)
        return self.policy.backoff_s(self._failures, draw)
