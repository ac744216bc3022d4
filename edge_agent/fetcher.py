"""Fetch a bundle's chunks into its staging directory, resumably: over HTTP(S) first when the desired state names
content URLs (:mod:`.content_http`), over MQTT for whatever they could not give.

With ``content_urls`` set (the reconciler copies them from each desired state)
and a content key, each missing chunk is asked of those URLs in order and
checked exactly like one from MQTT (a cache is never trusted); a chunk no URL
gave good bytes for, and every chunk once no URL answers, comes over MQTT as
below, so a device behind a broker-only link still updates. Over MQTT:

For one verified manifest, :meth:`Fetcher.fetch` subscribes to the bundle's
shared chunk topic (waiting for the SUBACK) *before* it publishes a
:class:`~fleet_protocol.messages.FetchRequest` on the device's ``fetch``
topic, keeps at most ``window`` chunks requested at a time, and asks again
for requested chunks once no chunk of the bundle has arrived for
:data:`REASK_AFTER_S` (at most ``timeout_s``), doubling that wait on each
further silence in a row up to :data:`MAX_BACKOFF_FACTOR` times. The topic is shared:
while chunks of the bundle keep arriving (answers to other devices' requests
too) nothing is asked again, so a device never asks for a chunk the broker
may still be fanning out to it.
After :data:`STALL_ROUNDS` rounds without a verified chunk it reports ``download_stalled``
through ``on_problem`` and keeps trying (the server or the link may
come back). It returns when every chunk is on disk, and unsubscribes.
Before asking for anything it checks that the disk can hold the missing
chunks plus the assembled copy of the bundle (the manifest's total size);
if not, it reports ``resources/disk_full`` and waits, downloading nothing,
until space is freed.

Chunks are encrypted with the bundle's content key (:mod:`fleet_protocol.bundle_crypto`),
which the device's signed desired state carries wrapped for its certificate
key: :meth:`Fetcher.open_key` unwraps it (refusing a wrap that is tampered or
for another device) before anything is asked for; an encrypted chunk's header
names it by a keyed id (:func:`fleet_protocol.bundle_crypto.chunk_id`), mapped
back to the manifest's digest, and every chunk is decrypted before its digest
is checked. A desired module without a content key (from a
server older than encryption) is fetched from plaintext chunks
(:func:`fleet_protocol.messages.encode_chunk`); an encrypted chunk is then
refused, as a plaintext one is when a key was given.

Each incoming chunk (paho's thread) is split at its header; a chunk already on
disk is decrypted and checked like the others; only a chunk that passes
:func:`fleet_protocol.trust.check_chunk` (the one SHA-256 per chunk) counts as the broadcast being
alive (junk cannot hold back a re-ask), and a missing one is stored in
``staging/<digest>/chunks/<sha>`` through a temp file and a rename; chunks
that fail a check are refused, counted (:class:`~edge_agent.mqtt_link.RefusalCount`, kind
``chunk``) and never written, nothing else: they are not reported through ``on_problem`` (junk on the
shared topic must not mark the module failed or write a record each time); chunks already on
disk, or for bundles nobody here fetches, are ignored (the topic is shared
with other devices). After a restart, chunks already on disk are re-checked
and only the missing ones are requested.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable

from fleet_protocol import bundle_crypto, messages, topics
from fleet_protocol.errors import BadDataError, DigestMismatchError, EdgefleetError, TransportError
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.trust import check_chunk

from .content_http import HttpContent, NoContentUrl
from .mqtt_link import MqttLink, RateLimitedLog, RefusalCount

log = logging.getLogger("edgefleet.agent.fetch")

STALL_ROUNDS = 3
MAX_BACKOFF_FACTOR = 8
REASK_AFTER_S = 5.0
SPACE_POLL_S = 1.0  # how often a download waiting for disk space looks again
_CHUNK_MAGIC = messages.encode_chunk(b"")[:4]  # chunk framing: magic, SHA-256 of the data (32 bytes), data
_HEADER_BYTES = 36


class FetchAborted(Exception):
    """The fetch was interrupted (newer desired state, agent stopping); chunks on disk are kept."""


class _Job:
    def __init__(self, manifest: BundleManifest, chunks_dir: Path, content_key: bytes | None):
        self.manifest = manifest
        self.content_key = content_key  # None: the server sends this bundle's chunks in plaintext
        self.chunks_dir = chunks_dir
        self.sizes = manifest.chunk_sizes()
        self.ids = {bundle_crypto.chunk_id(content_key, sha): sha for sha in self.sizes} if content_key else {}
        self.missing: set[str] = set()
        self.cond = threading.Condition()
        self.received = 0
        self.arrived = 0  # chunks of this bundle seen on the topic, wanted or not: the broadcast is alive
        self.last_arrival = 0.0  # monotonic time of the latest one
        self.store_error: OSError | None = None  # the last chunk that could not be written (a full disk)


class Fetcher:
    def __init__(self, link: MqttLink, device_id: str, staging_dir: Path, *, window: int = 16,
                 timeout_s: float = 10.0, on_malformed: Callable[[str], None] | None = None,
                 key_file: Path | None = None, refusals: RefusalCount | None = None):
        self.link = link
        self.refusals = refusals if refusals is not None else RefusalCount()  # chunks that fail their check
        self.key_file = key_file  # the device's private key (its TLS client key): content keys are wrapped for it
        self.device_id = device_id
        self.staging_dir = staging_dir
        self.window = max(1, min(window, messages.MAX_FETCH_CHUNKS))
        self.timeout_s = timeout_s
        self._reask_s = min(REASK_AFTER_S, timeout_s)
        self._wake_every = max(1, self.window // 4)  # stored chunks between wake-ups of the requesting thread
        self._on_malformed = on_malformed
        self._jobs: dict[str, _Job] = {}  # bundle digest -> job (read in paho's thread)
        self._fetch_topic = topics.device_topic(device_id, "fetch")
        self._ratelog = RateLimitedLog(log)
        self.chunks_refused = 0
        self.content_urls: tuple[str, ...] = ()  # from the latest desired state: chunks over HTTP(S) first
        self.http = HttpContent(timeout_s=timeout_s)

    def chunks_dir(self, digest: str) -> Path:
        return self.staging_dir / digest / "chunks"

    def missing_chunks(self, manifest: BundleManifest) -> set[str]:
        """Chunks not yet on disk; a stored chunk that no longer checks out is deleted."""
        directory = self.chunks_dir(manifest.digest)
        missing: set[str] = set()
        for sha, size in manifest.chunk_sizes().items():
            path = directory / sha
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                missing.add(sha)
                continue
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                log.warning("stored chunk %s of %s is damaged; fetching it again", sha[:12], manifest.module)
                path.unlink(missing_ok=True)
                missing.add(sha)
        return missing

    def open_key(self, manifest: BundleManifest, content_key: dict | None) -> bytes | None:
        """The bundle's content key from its desired module's ``content_key`` (None: none was sent).

        Raises :class:`fleet_protocol.bundle_crypto.ContentKeyError` when it is not for this
        device's key or does not open (tampered). The key file is read each time: a renewal replaces it.
        """
        if content_key is None:
            return None
        private_key = None
        if self.key_file is not None:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key  # on first use (B5)

            try:
                private_key = load_pem_private_key(self.key_file.read_bytes(), password=None)
            except (OSError, ValueError, TypeError) as exc:
                raise EdgefleetError(f"cannot read this device's key {self.key_file} to open the content key of "
                                     f"{manifest.module} v{manifest.version}: {exc}",
                                     code="device_key_unreadable") from None
        return bundle_crypto.open_content_key(content_key, device_id=self.device_id, bundle_digest=manifest.digest,
                                              private_key=private_key)

    def fetch(self, manifest: BundleManifest, *, should_abort: Callable[[], bool],
              on_problem: Callable[[EdgefleetError | None], None], content_key: bytes | None = None,
              waiting: Callable[[], AbstractContextManager] = nullcontext) -> None:
        """Block until every chunk of ``manifest`` is on disk; raise :class:`FetchAborted` if told to stop.

        ``content_key`` (from :meth:`open_key`) decrypts the chunks. ``on_problem(error)`` is called
        when the fetch stalls or the disk is full (:class:`TransportError` only), and with ``None`` when
        it makes progress again after a reported problem; refused chunks are only counted.
        ``waiting()`` is entered while the fetch waits for disk space (the reconciler lets go of its lock).
        """
        digest = manifest.digest
        job = _Job(manifest, self.chunks_dir(digest), content_key)
        job.chunks_dir.mkdir(parents=True, exist_ok=True)
        job.missing = self.missing_chunks(manifest)
        if not job.missing:
            return
        self._wait_for_space(job, should_abort, on_problem, waiting)
        if self.content_urls and content_key is not None:
            self._fetch_over_http(job, should_abort)
            if not job.missing:
                return
        topic = topics.bundle_chunks_topic(digest)
        self._jobs[digest] = job
        total = len(job.sizes)
        log.info("fetching %s v%s: %d of %d chunks missing", manifest.module, manifest.version,
                 len(job.missing), total)
        try:
            self._run(job, topic, should_abort, on_problem)
        finally:
            self._jobs.pop(digest, None)
            self.link.unsubscribe(topic)

    def _fetch_over_http(self, job: _Job, should_abort: Callable[[], bool]) -> None:
        """Each missing chunk from the content URLs, checked as any chunk; back to the caller (MQTT for the rest)
        when none of them answers. A chunk refused from every URL that answered is left for MQTT too.

        Devices start at different chunks (by their id) and go round: a fleet that starts together then does not
        ask a cold cache for the same chunk at the same moment (nginx's ``proxy_cache_lock`` makes all but one of
        them wait about 500 ms, chunk after chunk), and each chunk's one miss overlaps other devices' hits."""
        self.http.reset()
        wanted = sorted(job.missing)
        start = int(hashlib.sha256(self.device_id.encode()).hexdigest()[:8], 16) % len(wanted)
        for sha in wanted[start:] + wanted[:start]:  # each device its own starting chunk: see the docstring
            if should_abort():
                raise FetchAborted()
            cid = bundle_crypto.chunk_id(job.content_key, sha).hex()

            def accept(payload: bytes) -> bool:
                try:
                    got, data = self._open(job, payload)
                    if got != sha:
                        raise DigestMismatchError(f"asked for chunk {sha[:12]} of {job.manifest.module}, got "
                                                  f"{got[:12]}")
                except BadDataError as exc:
                    self._refuse(job, exc)
                    return False
                self._keep(job, sha, data)
                return True

            try:
                self.http.fetch_chunk(self.content_urls, job.manifest.digest, cid, job.chunks_dir / f".{cid}.part",
                                      accept)
            except NoContentUrl as exc:
                log.info("%s; fetching the rest of %s v%s over MQTT", exc, job.manifest.module, job.manifest.version)
                return

    def _wait_for_space(self, job: _Job, should_abort: Callable[[], bool],
                        on_problem: Callable[[EdgefleetError | None], None],
                        waiting: Callable[[], AbstractContextManager]) -> None:
        """Before the first chunk: until the disk can hold the missing chunks and the assembled copy, report
        ``resources/disk_full`` (once) and wait inside ``waiting()``, asking for nothing."""
        needed = sum(job.sizes[sha] for sha in job.missing) + job.manifest.total_size
        free = shutil.disk_usage(self.staging_dir).free
        if free >= needed:
            return
        error = TransportError(
            f"not enough disk space for {job.manifest.module} v{job.manifest.version}: it needs "
            f"{needed / 1e6:.1f} MB (its chunks, then the assembled copy of {job.manifest.total_size / 1e6:.1f}"
            f" MB) and {free / 1e6:.1f} MB are free in {self.staging_dir}; nothing was downloaded, the "
            "installed version keeps serving, and the download starts when space is freed",
            code="disk_full", category="resources")
        log.warning("%s", error)
        on_problem(error)
        with waiting():
            while shutil.disk_usage(self.staging_dir).free < needed:
                if should_abort():
                    raise FetchAborted()
                time.sleep(SPACE_POLL_S)
        on_problem(None)

    def _run(self, job: _Job, topic: str, should_abort: Callable[[], bool],
             on_problem: Callable[[EdgefleetError | None], None]) -> None:
        digest = job.manifest.digest
        subscribed = False
        requested: dict[str, float] = {}  # sha -> deadline
        stalls = 0
        reasks = 0  # silences in a row that made us ask again: the next wait doubles
        reported = False
        progress_mark = job.received
        arrived_mark = job.arrived
        round_deadline = time.monotonic() + self.timeout_s
        while True:
            if should_abort():
                raise FetchAborted()
            with job.cond:
                if not job.missing:
                    return
                missing = set(job.missing)
            for sha in [s for s in requested if s not in missing]:
                del requested[sha]
            if not self.link.connected:
                subscribed = False
                requested.clear()
                self.link.wait_connected(0.5)
                continue
            if not subscribed:
                try:
                    self.link.subscribe(topic, self._on_chunk, qos=1, timeout_s=self.timeout_s)
                    subscribed = True
                except TransportError as exc:
                    log.info("cannot subscribe to chunks of %s yet: %s", job.manifest.module, exc)
                    time.sleep(0.5)
                    continue
            now = time.monotonic()
            expired = [s for s, deadline in requested.items() if deadline <= now]
            for sha in expired:
                del requested[sha]  # silence since we asked: ask again
            reasks += bool(expired)
            room = self.window - len(requested)
            wanted = [s for s in sorted(missing) if s not in requested][:room] if room > 0 else []
            if wanted:
                request = messages.FetchRequest(self.device_id, digest, tuple(wanted))
                try:
                    mid = self.link.publish(self._fetch_topic, messages.encode(request.to_dict()), qos=1)
                except TransportError as exc:
                    log.info("fetch request for %s failed: %s", job.manifest.module, exc)
                    mid = None
                if mid is not None:
                    deadline = now + self._reask_s * min(2 ** reasks, MAX_BACKOFF_FACTOR)
                    for sha in wanted:
                        requested[sha] = deadline
            with job.cond:
                if len(job.missing) == len(missing):
                    job.cond.wait(timeout=min(0.5, self.timeout_s))
            now = time.monotonic()
            if job.arrived != arrived_mark:  # the broadcast is alive: what we asked for may still come
                arrived_mark = job.arrived
                reasks = 0
                requested = dict.fromkeys(requested, job.last_arrival + self._reask_s)
                round_deadline = max(round_deadline, job.last_arrival + self.timeout_s)
            if job.received != progress_mark:
                progress_mark = job.received
                stalls = reasks = 0
                round_deadline = now + self.timeout_s
                if reported:
                    reported = False
                    on_problem(None)
            elif job.store_error is not None and not reported:
                reason = job.store_error.strerror or str(job.store_error)
                on_problem(TransportError(
                    f"no space left to store {job.manifest.module} v{job.manifest.version} ({len(missing)} of "
                    f"{len(job.sizes)} chunks missing): {reason}; the installed version keeps serving and the "
                    "download resumes when space is freed", code="disk_full", category="resources"))
                reported = True
            elif now >= round_deadline:
                stalls += 1
                round_deadline = now + self.timeout_s * min(2 ** stalls, MAX_BACKOFF_FACTOR)
                log.info("no chunk of %s v%s for %.1fs (round %d); asking again", job.manifest.module,
                         job.manifest.version, self.timeout_s, stalls)
                requested.clear()
                if stalls >= STALL_ROUNDS and job.store_error is None:
                    on_problem(TransportError(
                        f"no chunk of {job.manifest.module} v{job.manifest.version} arrived in {stalls} rounds "
                        f"({len(missing)} of {len(job.sizes)} chunks missing); still trying",
                        code="download_stalled"))
                    reported = True

    # --- paho's thread --------------------------------------------------------------------------

    def _on_chunk(self, topic: str, payload: bytes) -> None:
        digest = topic.split("/")[-2]
        job = self._jobs.get(digest)
        if job is None:
            return
        try:
            sha, data = self._open(job, payload)
        except BadDataError as exc:
            if self._on_malformed is not None and getattr(exc, "damaged", True):
                self._on_malformed(topic)  # no header, or bytes that do not match their own header: damaged in transit
            self._refuse(job, exc)
            return
        with job.cond:  # only a verified chunk says the broadcast is alive (no wake-up: read on the next look)
            job.arrived += 1
            job.last_arrival = time.monotonic()
        self._keep(job, sha, data)

    def _open(self, job: _Job, payload: bytes) -> tuple[str, bytes]:
        """The manifest digest and plaintext of a chunk payload (MQTT or HTTP), checked; BadDataError if it is not
        a chunk of this bundle (its ``damaged`` says whether the bytes do not even match their own header)."""
        magic = bundle_crypto.CHUNK_MAGIC if job.content_key is not None else _CHUNK_MAGIC
        if len(payload) < _HEADER_BYTES or payload[:4] != magic:
            raise DigestMismatchError(f"corrupted chunk payload for {job.manifest.module}: no {magic.decode()} header")
        header, data = payload[4:_HEADER_BYTES], payload[_HEADER_BYTES:]
        sha = header.hex() if job.content_key is None else job.ids.get(header, header.hex())  # keyed id -> digest
        try:
            if job.content_key is not None:
                if header not in job.ids:
                    raise DigestMismatchError(f"chunk {sha[:12]} is not part of {job.manifest.module} "
                                              f"v{job.manifest.version} (no chunk of its manifest has that id)")
                data = bundle_crypto.decrypt_chunk(job.content_key, job.manifest.digest, header, data)
            check_chunk(job.manifest, sha, data)  # the manifest's digest, so also the header's
        except BadDataError as exc:
            exc.damaged = hashlib.sha256(data).hexdigest() != sha
            raise
        return sha, data

    def _keep(self, job: _Job, sha: str, data: bytes) -> None:
        """Store a checked chunk through a temp file and a rename, unless it is on disk already."""
        with job.cond:
            if sha not in job.missing:
                return  # already have it (another device asked for it, or a duplicate)
        path = job.chunks_dir / sha
        tmp = job.chunks_dir / f".{sha}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._ratelog.warning(f"store:{job.manifest.digest}", "cannot store a chunk of %s v%s: %s",
                                  job.manifest.module, job.manifest.version, exc)
            with job.cond:
                job.store_error = exc
                job.cond.notify_all()
            return
        with job.cond:
            job.store_error = None
            job.missing.discard(sha)
            job.received += 1
            if not job.missing or job.received % self._wake_every == 0:
                job.cond.notify_all()

    def _refuse(self, job: _Job, exc: BadDataError) -> None:
        """Count an unverified chunk and log it (rate-limited); it changes nothing else."""
        self.chunks_refused += 1
        self.refusals.add("chunk", exc.code)
        self._ratelog.warning(job.manifest.digest, "refused a chunk of %s v%s: %s", job.manifest.module,
                              job.manifest.version, exc)
