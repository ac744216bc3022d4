"""Publishing bundle chunks that devices ask for, on each bundle's shared topic, as few times as possible.

Runs on its own worker thread (``edgefleet-chunks``), so a large fetch never
delays status or telemetry handling; the MQTT handlers only queue requests
(and decide who may ask: see :mod:`.handlers`). Every chunk goes out encrypted
with its bundle's content key (:func:`fleet_protocol.bundle_crypto.encrypt_chunk`):
any device may subscribe to the shared topic, only those the bundle is
assigned to hold the key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fleet_protocol import bundle_crypto, topics

log = logging.getLogger(__name__)


class _BundleRounds:
    """What the sender knows about one bundle: what to publish and when, when each chunk went out, who asked."""

    def __init__(self) -> None:
        self.wanted: dict[str, float] = {}  # chunk -> not before (monotonic s), in request order
        self.published: dict[str, tuple[int, float]] = {}  # chunk -> (sequence number, time) of its last publish
        self.first_seen: dict[str, int] = {}  # device -> publish sequence number at its first request
        self.asked: dict[str, int] = {}  # device -> bitmask of chunk indexes it has asked for
        self.index: dict[str, int] = {}  # chunk -> its bit in ``asked``
        self.last_request = 0.0


class ChunkSender:
    """Publishes requested chunks on each bundle's shared topic from one worker thread, each as few times as it can.

    The broker fans one publish out to every device subscribed to the bundle's
    chunk topic, so the sender publishes a chunk again only when some requester
    cannot have received it, and then once for all of them:

    - A chunk never published goes out at once.
    - A device subscribes to the chunk topic before its first request, so a
      chunk published after the server saw that device's first request reaches
      it through the broker: a later request of that device for the chunk (a
      sliding fetch window) is not answered with another publish.
    - A device that joins while a broadcast is under way (its first request
      names chunks published less than ``recent_s`` ago) hears the rest of the
      broadcast first; the chunks it missed go out again when it asks for them
      again, after the broadcast went quiet, together with everyone else who
      joined late. Other chunks published before a device's first request are
      published again.
    - A device asking again for a chunk it asked for before has missed it (a
      fetch asks again only when chunks stop arriving: after a reconnect, a
      restart, or when it joined late): the chunk is published again.

    A chunk published again goes out no sooner than ``gather_s`` after the
    request that asked for it and ``resend_s`` after its previous publish, so
    a wave of such requests shares one publish and a storm of them cannot
    flood the broker. What the sender remembers about a bundle is dropped
    after ``forget_after_s`` without requests for it. ``publishes`` counts
    chunk publishes.
    """

    def __init__(self, fleet, *, content_key: Callable[[str], bytes], gather_s: float = 0.2, resend_s: float = 5.0,
                 recent_s: float = 30.0, forget_after_s: float = 600.0):
        self._fleet = fleet
        self._content_key = content_key  # bundle digest -> the key its chunks are encrypted with
        self._gather_s = gather_s
        self._resend_s = resend_s
        self._recent_s = recent_s
        self._forget_after_s = forget_after_s
        self._bundles: dict[str, _BundleRounds] = {}
        self._seq = 0
        self.publishes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="edgefleet-chunks", daemon=True)
        self._thread.start()

    def request(self, bundle_digest: str, device_id: str, chunk_digests: list[str]) -> int:
        """Note ``device_id``'s request; return how many chunks it added to those waiting to go out."""
        now = time.monotonic()
        queued = 0
        with self._cond:
            self._forget_idle(now)
            state = self._bundles.get(bundle_digest)
            if state is None:
                state = self._bundles[bundle_digest] = _BundleRounds()
            state.last_request = now
            joining = device_id not in state.first_seen
            first_seen = state.first_seen.setdefault(device_id, self._seq)
            asked = state.asked.get(device_id, 0)
            for chunk in chunk_digests:
                bit = 1 << state.index.setdefault(chunk, len(state.index))
                repeat = bool(asked & bit)
                asked |= bit
                if chunk in state.wanted:
                    continue
                sent = state.published.get(chunk)
                if sent is None:
                    state.wanted[chunk] = now
                else:
                    seq, when = sent
                    if not repeat and seq > first_seen:
                        continue  # published after this device subscribed: the broker is delivering it
                    if not repeat and joining and now - when < self._recent_s:
                        continue  # a broadcast is under way: asked again once it went quiet
                    state.wanted[chunk] = max(now + self._gather_s, when + self._resend_s)
                queued += 1
            state.asked[device_id] = asked
            if queued:
                self._cond.notify()
        return queued

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _forget_idle(self, now: float) -> None:
        for digest in [d for d, s in self._bundles.items()
                       if not s.wanted and now - s.last_request > self._forget_after_s]:
            del self._bundles[digest]

    def _next_jobs(self) -> list[tuple[str, str, int]] | None:
        """Wait until some chunk is due and take every due one: ``(bundle, chunk, seq)``; None when stopping."""
        with self._cond:
            while not self._stopping:
                due = min((t for s in self._bundles.values() for t in s.wanted.values()), default=None)
                if due is None:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if due <= now:
                    break
                self._cond.wait(due - now)
            if self._stopping:
                return None
            jobs = []
            for digest, state in self._bundles.items():
                for chunk in [c for c, not_before in state.wanted.items() if not_before <= now]:
                    del state.wanted[chunk]
                    self._seq += 1
                    state.published[chunk] = (self._seq, now)
                    jobs.append((digest, chunk, self._seq))
            return jobs

    def _unpublished(self, bundle_digest: str, chunk: str, seq: int) -> None:
        """A publish that failed: forget it, so the next request for the chunk is answered at once."""
        with self._cond:
            state = self._bundles.get(bundle_digest)
            if state is not None and state.published.get(chunk, (None,))[0] == seq:
                del state.published[chunk]

    def _run(self) -> None:
        while (jobs := self._next_jobs()) is not None:
            for bundle_digest, chunk, seq in jobs:
                sent = False
                try:
                    payload = bundle_crypto.encrypt_chunk(self._content_key(bundle_digest), bundle_digest,
                                                          self._fleet.chunks.get(chunk))
                    sent = self._fleet.publish(topics.bundle_chunks_topic(bundle_digest), payload, qos=1)
                    if not sent:
                        log.info("chunk %s of bundle %s not sent: the broker link is down", chunk[:12],
                                 bundle_digest[:12])
                except FileNotFoundError:
                    log.error("chunk %s of bundle %s is missing from the chunk store", chunk[:12], bundle_digest[:12])
                except Exception:  # noqa: BLE001 - the worker must outlive any one chunk
                    log.exception("sending chunk %s of bundle %s", chunk[:12], bundle_digest[:12])
                if sent:
                    self.publishes += 1
                else:
                    self._unpublished(bundle_digest, chunk, seq)
