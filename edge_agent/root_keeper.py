"""The root of trust a device holds, moved forward only by threshold-signed rotations.

A device enrolled with a root document (``trusted_root`` in its config,
written by ``edgefleet agent enroll``) trusts the signing keys that root
lists. The server publishes every root, oldest first, retained on
:data:`fleet_protocol.topics.ROOT_TOPIC`; :meth:`RootKeeper.receive` walks the
ones newer than the root held with :class:`fleet_protocol.root.TrustedRoot`
(each signed by a threshold of the previous root's keys and of its own, no
version skipped, the newest unexpired), persists the newest in the outbox
database's meta table (one SQLite transaction: atomic) and only then trusts
it. A message whose newest root is the one held, byte for byte (the retained
chain delivered again), changes nothing. Anything else is refused with the
reason: a newest root older than the one held (a rollback), one with the held
version but other bytes, a forged or malformed chain. A refusal stays
reported (``error``) until a verified newer root is trusted: unverified input
never clears it. At start the persisted root wins over the enrollment one
when it is newer.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Callable

from fleet_protocol import messages
from fleet_protocol.canonical import canonical_json, parse_json_object
from fleet_protocol.errors import BadDataError, EdgefleetError, MessageError, RollbackError
from fleet_protocol.root import TrustedRoot

from .clock import utc_now
from .outbox import Outbox

log = logging.getLogger("edgefleet.agent.root")
ROOT_KEY = "trusted_root"


class RootKeeper:
    def __init__(self, *, outbox: Outbox, enrolled: Path, now: Callable[[], datetime] = utc_now):
        self._outbox = outbox
        self._now = now
        try:
            envelope = _parse_root(Path(enrolled).read_bytes())
            self.root = TrustedRoot.from_envelope(envelope)
            self._held = canonical_json(envelope)  # the trusted root's bytes, to recognise a copy of it
        except (OSError, ValueError, EdgefleetError) as exc:
            raise ValueError(f"trusted_root {enrolled}: not a valid signed root document ({exc})") from None
        stored = outbox.get_meta(ROOT_KEY)
        if stored is not None:
            try:
                envelope = _parse_root(stored)
                persisted = TrustedRoot.from_envelope(envelope)
            except (ValueError, EdgefleetError) as exc:
                log.error("the stored root of trust is not valid (%s); using the enrollment root", exc)
            else:
                if persisted.version > self.root.version:
                    self.root, self._held = persisted, canonical_json(envelope)
        self.error: dict | None = None  # the last refused root message, until a verified newer root

    @property
    def version(self) -> int:
        return self.root.version

    def receive(self, payload: bytes) -> bool:
        """Apply a root-chain message; True when a newer root is now trusted. Raises (and keeps) the refusal."""
        try:
            return self._receive(payload)
        except EdgefleetError as exc:
            self.error = exc.as_report()
            raise

    def _receive(self, payload: bytes) -> bool:
        envelopes = sorted(messages.parse_root_chain(payload), key=_version_hint)
        newer = [e for e in envelopes if _version_hint(e) > self.root.version]
        if not newer:
            newest = _version_hint(envelopes[-1])
            if newest < self.root.version:
                raise RollbackError(f"root version {newest} is older than the trusted version {self.root.version}")
            if _bytes(envelopes[-1]) != self._held:
                raise BadDataError(f"root version {newest} is not the trusted root of that version (other bytes); "
                                   f"only a root signed as its successor (version {newest + 1}) can replace it",
                                   code="root_conflict")
            return False  # the held root again: nothing changes, a reported refusal included
        root = self.root.update_chain(newer, self._now())
        self._outbox.set_meta(ROOT_KEY, json.dumps(newer[-1]))  # persisted before it is trusted
        log.info("root of trust moved from version %d to %d", self.root.version, root.version)
        self.root, self._held = root, _bytes(newer[-1])
        self.error = None
        return True


def _version_hint(envelope: dict) -> int:
    """The version an unverified root claims, to order and filter the chain (verification comes after)."""
    signed = envelope.get("signed")
    version = signed.get("version") if isinstance(signed, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise MessageError("root chain: a root has no integer version")
    return version


def _parse_root(data: bytes | str) -> dict:
    return parse_json_object(data, what="root", max_bytes=messages.MAX_MESSAGE_BYTES)


def _bytes(envelope: dict) -> bytes | None:
    """The canonical bytes of a root envelope, or None when it has none (a float: never the held root)."""
    try:
        return canonical_json(envelope)
    except MessageError:
        return None
