"""Desired state: compute each device's modules, sign, store, publish retained; keep it fresh.

For every module the deployment targeting a device with the highest
priority, then the newest, wins (see :mod:`.targeting`); an A/B deployment
adds its other versions with their weights. When that set changes, the device's generation goes up by
one, a :class:`~fleet_protocol.messages.DesiredState` is signed and stored,
and published retained at QoS 1 on the device's ``desired`` topic.
Computation, storing and publishing happen under one lock, so an older
generation can never be published after a newer one; on every (re)connect of
the MQTT link the stored documents are published again. Replicas sharing one
database each have their own lock, so a generation is stored only over the
one it was computed from (:func:`~.store.devices.set_desired` with
``replaces``): when another replica stored one first, this one re-reads the
device and computes again (a re-issue is then simply dropped). Two different
documents never carry one generation, and a device refuses a generation
lower than its own, so a late publish from another replica cannot move it back.

Freeze: every document carries an expiry ``ttl_s`` after it is issued (7 days
by default). :meth:`DesiredStates.refresh` re-issues each document with less
than half its lifetime left: the same modules under the next generation (so
versions still only go up and an older copy cannot be replayed over it), a new
expiry, signed again. A background thread (:meth:`start`) calls it every
quarter lifetime (at most hourly), and every (re)connect calls it before
republishing, so a server that was down past the expiry sends fresh documents
at once. A device that stops receiving them reports itself ``stale``. Among
server replicas only the leader re-issues (:mod:`.leadership`): the thread
idles elsewhere, and each re-issued document is stored in a fenced
transaction and published only after it committed.

Key rotation: every signature takes the key ring's current key (a rotation
on another replica included); :meth:`DesiredStates.rotate` re-issues every
stored document with it. Bundle manifests embedded in a document are
signed again with the current key when another key signed them (the stored
bundle keeps its original envelope), so a rotated-out key signs nothing a
device is sent.

Confidentiality: every module and A/B variant in a document carries its
bundle's content key, wrapped for this device's certificate keys
(:mod:`.content_keys`); the device's current keys are part of what makes a
document change, so a renewed certificate gets a re-wrapped document. A stored
document without content keys (written by an older server) is re-issued with
them. :meth:`DesiredStates.bundles_of` is what a device may fetch. An enrolled
device whose certificate keys the server does not hold
(:meth:`.content_keys.ContentKeys.unavailable`) never gets a key in the clear:
its document keeps only the modules it already had, new bundles are held back
until its certificate is renewed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timedelta

from fleet_protocol import bundle_crypto, messages, topics
from fleet_protocol.canonical import canonical_json, sha256_hex
from fleet_protocol.messages import DesiredModule, DesiredState, DesiredVariant
from fleet_protocol.signing import SigningKey, sign_envelope
from fleet_protocol.timestamps import from_iso, to_iso

from . import targeting
from .clock import utc_now
from .content_keys import ContentKeys
from .leadership import Leadership, NotLeader
from .secret_box import SecretBox
from .store import Database
from .store import bundles as bundle_store
from .store import deployments as deployment_store
from .store import devices as device_store

log = logging.getLogger(__name__)
Publish = Callable[..., bool]
DEFAULT_TTL_S = 7 * 86400.0
MAX_REFRESH_INTERVAL_S = 3600.0
MAX_CONCURRENT_RETRIES = 5  # computing one device again after another replica stored its document first


class DesiredStates:
    def __init__(self, *, db: Database, signing_key: Callable[[], SigningKey], publish: Publish,
                 leadership: Leadership, ttl_s: float = DEFAULT_TTL_S, secret_box: SecretBox | None = None,
                 content_urls: tuple[str, ...] = ()):
        self._db = db
        self._content_urls = content_urls  # named in every document with modules: where chunks come over HTTP
        self._leadership = leadership
        self._signing_key = signing_key  # read at each signature: a rotation (here or on another replica) applies
        self._publish = publish
        self.content_keys = ContentKeys(db, secret_box)  # sealed in a shared database
        self._ttl = timedelta(seconds=ttl_s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Refresh documents in the background until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._refresh_loop, name="desired-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def _refresh_loop(self) -> None:
        interval = min(self._ttl.total_seconds() / 4, MAX_REFRESH_INTERVAL_S)
        while not self._stop.wait(interval):
            if not self._leadership.is_leader:
                continue
            try:
                self.refresh()
            except NotLeader as exc:
                log.info("refreshing desired states stopped: %s", exc)
            except Exception:  # noqa: BLE001 - the refresher must survive a bad row or a closed database
                log.exception("refreshing desired states failed")

    def refresh(self) -> list[str]:
        """Re-issue (next generation, new expiry) every document with less than half its lifetime left; fenced:
        :class:`~fleet_server.leadership.NotLeader` on a replica that does not lead."""
        with self._lock:
            return self._reissue(due=utc_now() + self._ttl / 2, fenced=True)

    def rotate(self) -> list[str]:
        """After a key rotation: re-issue every stored document with the current signing key."""
        with self._lock:
            return self._reissue(due=None)

    def recompute(self, device_ids: Iterable[str] | None = None) -> list[str]:
        """Recompute the named devices (all when None); return the ids whose desired state changed."""
        with self._lock:
            if device_ids is None:
                devices = device_store.list_devices(db=self._db)
            else:  # one device connecting must not cost a read of the whole fleet
                devices = [d for d in (device_store.get_device(db=self._db, device_id=i) for i in set(device_ids)) if d]
            # deployments after devices: a document another replica stored before we read the device was computed
            # from deployments no newer than these, so what we compute is never older than what it replaces
            deployments = deployment_store.list_deployments(db=self._db)
            return [device["id"] for device in devices if self._update(device, deployments)]

    def republish_all(self) -> int:
        """Publish every stored desired state again, re-issuing those close to expiry (the link (re)connected, or
        this replica became leader); the re-issue is fenced like :meth:`refresh`."""
        with self._lock:
            self._reissue(due=utc_now() + self._ttl / 2, publish=False, fenced=True)
            published = device_store.published_desired(db=self._db)
            for device_id, envelope in published:
                self._publish(topics.device_topic(device_id, "desired"), messages.encode(envelope), qos=1, retain=True)
        log.info("republished the desired state of %d device(s)", len(published))
        return len(published)

    def bundles_of(self, device_id: str) -> frozenset[str]:
        """The bundle digests (main versions and A/B variants) in the device's current desired state."""
        device = device_store.get_device(db=self._db, device_id=device_id)
        envelope = device["desired_envelope"] if device else None
        if envelope is None:
            return frozenset()
        modules = envelope["signed"]["modules"]
        return frozenset([m["bundle_digest"] for m in modules] +
                         [v["bundle_digest"] for m in modules for v in m.get("variants", ())])

    def _update(self, device: dict, deployments: list[dict]) -> bool:
        for _ in range(MAX_CONCURRENT_RETRIES):
            stored = self._update_once(device, deployments)
            if stored is not None:
                return stored
            device_id = device["id"]
            device = device_store.get_device(db=self._db, device_id=device_id)  # another replica stored first
            if device is None:
                return False
            deployments = deployment_store.list_deployments(db=self._db)
        log.warning("device %s: other replicas kept storing its desired state first; left to them", device_id)
        return False

    def _update_once(self, device: dict, deployments: list[dict]) -> bool | None:
        """True: a new document stored and published; False: nothing changed; None: another replica won the race."""
        chosen = {} if device.get("revoked") else targeting.effective_deployments(device, deployments)
        recipients = self.content_keys.recipients(device["id"]) if chosen else []
        items = sorted([name, d["bundle_digest"]] + ([d["split"]] if d.get("split") else [])
                       for name, d in chosen.items())
        if recipients:  # a renewed certificate changes the document: its keys are wrapped for the new key too
            items.append(sorted(bundle_crypto.key_id(r) for r in recipients))
        key = sha256_hex(canonical_json(items))
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
        problem = self.content_keys.unavailable(device["id"], recipients) if modules else None
        if problem is not None:
            modules = self._held_back(device, modules, problem)
        if not self._store_and_publish(device["id"], key, DesiredState(
                device_id=device["id"], generation=device["desired_generation"] + 1, issued="",
                modules=tuple(modules)), recipients=recipients):
            return None
        log.info("device %s: desired state generation %d (%s)", device["id"], device["desired_generation"] + 1,
                 ", ".join(f"{m.name} v{m.version}" for m in modules) or "no modules")
        return True

    def _held_back(self, device: dict, modules: list[DesiredModule], problem: dict) -> list[DesiredModule]:
        """For a device no key can be sent to: each module as its current document has it (a new one left out)."""
        envelope = device["desired_envelope"]
        current = {m.name: m for m in DesiredState.from_dict(envelope["signed"]).modules} if envelope else {}

        def bundles(m: DesiredModule | None) -> tuple | None:
            return m and (m.bundle_digest, m.weight, [(v.bundle_digest, v.weight) for v in m.variants])

        held = [m for m in modules if bundles(current.get(m.name)) != bundles(m)]
        if held:
            log.warning("device %s: %s held back: %s", device["id"],
                        ", ".join(f"{m.name} v{m.version}" for m in held), problem["message"])
        return [current[m.name] for m in modules if m.name in current]

    def _reissue(self, *, due: datetime | None, publish: bool = True, fenced: bool = False) -> list[str]:
        """Re-sign, under the next generation, every stored document expiring before ``due`` (all: None); each
        one ``fenced`` (committed only while this replica leads, published only once committed) when asked."""
        reissued = []
        for device in device_store.list_devices(db=self._db):
            envelope = device["desired_envelope"]
            if envelope is None:
                continue
            old = DesiredState.from_dict(envelope["signed"])
            keyless = any(m.content_key is None or any(v.content_key is None for v in m.variants) for m in old.modules)
            if keyless:  # unless no key may go to this device (it would be re-issued keyless again and again)
                keys = self.content_keys
                keyless = keys.unavailable(device["id"], keys.recipients(device["id"])) is None
            if due is not None and old.expires is not None and from_iso(old.expires) > due and not keyless:
                continue
            with self._leadership.fenced() if fenced else nullcontext():
                envelope = self._store(device["id"], device["desired_key"], DesiredState(
                    device_id=old.device_id, generation=device["desired_generation"] + 1, issued="",
                    modules=old.modules, config=old.config))
            if envelope is None:
                continue  # another replica re-issued or replaced it meanwhile
            if publish:
                self._publish_envelope(device["id"], envelope)
            reissued.append(device["id"])
        if reissued:
            log.info("re-issued the desired state of %d device(s)", len(reissued))
        return reissued

    def _store_and_publish(self, device_id: str, key: str, state: DesiredState, *,
                           recipients: list | None = None) -> bool:
        """:meth:`_store`, then publish; False (nothing stored or published) when :meth:`_store` stored nothing."""
        envelope = self._store(device_id, key, state, recipients=recipients)
        if envelope is not None:
            self._publish_envelope(device_id, envelope)
        return envelope is not None

    def _publish_envelope(self, device_id: str, envelope: dict) -> None:
        self._publish(topics.device_topic(device_id, "desired"), messages.encode(envelope), qos=1, retain=True)

    def _store(self, device_id: str, key: str, state: DesiredState, *, recipients: list | None = None) -> dict | None:
        """Stamp ``state`` (issued now, expiry), re-sign foreign manifests, wrap content keys, sign, store; return
        the signed envelope, or None (nothing stored) when the stored generation is no longer the one before
        ``state``'s."""
        now = utc_now()
        if recipients is None and state.modules:
            recipients = self.content_keys.recipients(device_id)
        plain = not state.modules or self.content_keys.unavailable(device_id, recipients) is None

        def sealed(item) -> dict | None:  # a re-issue keeps the wrapped key while the device's keys are the same
            return self.content_keys.for_device(device_id, item.bundle_digest, recipients, current=item.content_key,
                                                plain=plain)

        modules = tuple(replace(m, manifest=self._signed(m.manifest), content_key=sealed(m),
                                variants=tuple(replace(v, manifest=self._signed(v.manifest), content_key=sealed(v))
                                               for v in m.variants))
                        for m in state.modules)
        state = replace(state, issued=to_iso(now), expires=to_iso(now + self._ttl), modules=modules,
                        content_urls=self._content_urls if modules else ())
        envelope = sign_envelope(state.to_dict(), self._signing_key())
        if not device_store.set_desired(db=self._db, device_id=device_id, generation=state.generation, key=key,
                                        envelope=envelope, replaces=state.generation - 1):
            return None
        return envelope

    def _signed(self, manifest: dict) -> dict:
        """``manifest`` as signed by the current key (itself when it is)."""
        key = self._signing_key()
        if [s.get("keyid") for s in manifest.get("signatures", ())] == [key.public_key.keyid]:
            return manifest
        return sign_envelope(manifest["signed"], key)
