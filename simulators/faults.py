"""Fault injection: a :class:`FaultPlan` for simulated fleets and a TCP proxy whose link can be cut.

:class:`FaultPlan` is parsed from ``--fault`` strings (see :meth:`FaultPlan.parse`)
and applied by :mod:`simulators.fleet` at the seams of each simulated device:
incoming messages (drop, delay), the process's network (partitions), the
device's life (crash and restart from its state directory), its staging
directory (disk full) and its model calls (slow accelerator). Random choices
come from per-device generators seeded from the fleet's seed, so a run repeats.

:class:`LinkProxy` listens on a loopback port and forwards every accepted
connection to ``target``. Point an agent's ``broker_url`` at the proxy
instead of the broker, then:

* ``cut()`` partitions the link: open connections are reset and new ones are
  accepted and closed at once (the device sees the network as gone);
* ``blackhole()`` partitions it silently: connections stay open but bytes are
  dropped in both directions (the device only notices via keepalive);
* ``restore()`` heals it; new connections are forwarded again.

It does not shape bandwidth, reorder or corrupt bytes; it is a switch. One
thread per direction per connection: fine for a handful of devices in tests,
not for load runs.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|min)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, None: 1.0}


def parse_duration_s(text: str) -> float:
    """``50ms``, ``30s``, ``2m`` or a bare number of seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 50ms, 30s, 2m)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class FaultPlan:
    """What goes wrong in a simulated fleet, parsed from strings such as ``drop=0.01``.

    * ``drop=P``: each incoming message is lost with probability P. MQTT runs over
      TCP, so a lost QoS 1 message is one whose connection died before the PUBACK:
      the device cuts its connection, reconnects and the broker delivers it again.
    * ``delay=50ms``: every incoming message reaches its handler this much later.
    * ``partition=30s@60s``: the network of every device is down for 30 s, 60 s
      after the start (repeatable).
    * ``crash=0.001/s``: each device crashes at this rate (Poisson; ``/min`` too) and
      restarts from its state directory a second later; no offline status, the
      broker publishes its last will.
    * ``disk-full=device-7[,device-9]``: these devices cannot store downloaded chunks.
    * ``slow-accelerator=3x``: model calls take this many times as long.
    """

    drop: float = 0.0
    delay_s: float = 0.0
    partitions: tuple[tuple[float, float], ...] = ()  # (start after s, duration s)
    crash_per_s: float = 0.0
    disk_full: frozenset[str] = frozenset()
    slow_accelerator: float = 1.0

    @classmethod
    def parse(cls, specs: Iterable[str]) -> "FaultPlan":
        """Parse ``NAME=VALUE`` strings; raise ``ValueError`` naming the bad one."""
        values: dict = {"partitions": [], "disk_full": set()}
        for spec in specs:
            name, sep, value = spec.partition("=")
            name, value = name.strip(), value.strip()
            try:
                if not sep or not value:
                    raise ValueError("expected NAME=VALUE")
                if name == "drop":
                    values["drop"] = _probability(value)
                elif name == "delay":
                    values["delay_s"] = parse_duration_s(value)
                elif name == "partition":
                    length, at_sep, start = value.partition("@")
                    values["partitions"].append((parse_duration_s(start) if at_sep else 0.0,
                                                 parse_duration_s(length)))
                elif name == "crash":
                    values["crash_per_s"] = _rate_per_s(value)
                elif name == "disk-full":
                    values["disk_full"].update(v.strip() for v in value.split(",") if v.strip())
                elif name == "slow-accelerator":
                    factor = float(value.removesuffix("x"))
                    if not factor >= 1.0:
                        raise ValueError("the factor must be at least 1")
                    values["slow_accelerator"] = factor
                else:
                    raise ValueError("unknown fault (drop, delay, partition, crash, disk-full, slow-accelerator)")
            except ValueError as exc:
                raise ValueError(f"bad fault {spec!r}: {exc}") from None
        return cls(**{**values, "partitions": tuple(sorted(values["partitions"])),
                      "disk_full": frozenset(values["disk_full"])})

    def __bool__(self) -> bool:
        return self != FaultPlan()


class FullDisk:
    """A full 4 KiB tmpfs mounted over ``path`` (a device's staging directory): every write fails with ENOSPC.

    Mounting needs root (CAP_SYS_ADMIN); without it the constructor raises
    ``PermissionError``. :meth:`release` unmounts; files under ``path`` from
    before the mount reappear.
    """

    FILLER = ".disk-full"  # a file, which the installer's staging cleanup (rmtree of directories) leaves alone

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise PermissionError(f"the disk-full fault mounts a tiny tmpfs over {path} and needs root: "
                                  f"{result.stderr.strip() or result.returncode}")
        self.mounted = True
        try:
            with open(path / self.FILLER, "wb") as filler:
                filler.write(b"\0" * 4096)
        except OSError:
            pass  # already full

    def release(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


def _probability(text: str) -> float:
    value = float(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
    if not 0.0 <= value <= 1.0:
        raise ValueError("a probability is from 0 to 1")
    return value


def _rate_per_s(text: str) -> float:
    number, _, unit = text.partition("/")
    per = {"": 1.0, "s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}.get(unit.strip())
    if per is None:
        raise ValueError("a rate looks like 0.001/s, 0.1/min or 1/h")
    value = float(number) / per
    if value < 0:
        raise ValueError("a rate cannot be negative")
    return value


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


@dataclass
class LinkProxy:
    """Forward ``127.0.0.1:port`` to ``target``; cut, blackhole and restore the link on demand."""

    target: tuple[str, int]
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    _state: str = field(default="up", init=False)  # up | cut | blackhole
    _pairs: list[_Pair] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    cuts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((self.host, self.port))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"link-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def state(self) -> str:
        return self._state

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._state, pairs, self._pairs = "cut", self._pairs, []
            self.cuts += 1
        for pair in pairs:
            pair.close()

    def blackhole(self) -> None:
        """Keep connections open but drop every byte in both directions until :meth:`restore`."""
        with self._lock:
            self._state = "blackhole"
            self.cuts += 1

    def restore(self) -> None:
        """Heal the link. Connections that lived through a blackhole are reset (their streams lost bytes)."""
        with self._lock:
            pairs = self._pairs if self._state == "blackhole" else []
            if pairs:
                self._pairs = []
            self._state = "up"
        for pair in pairs:
            pair.close()

    def close(self) -> None:
        self._closed = True
        self.cut()
        try:
            self._listener.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._state != "up":
                _Pair(client, socket.socket()).close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _Pair(client, socket.socket()).close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._state == "up":
                    dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        pair.close()
