"""Schemas of every MQTT message, with validation of untrusted input.

Each message is a JSON object with a ``type``; ``parse_*`` functions take raw
payload bytes and return a typed value or raise
:class:`~fleet_protocol.errors.MessageError`. Bundle chunks are the one binary
payload: ``b"EFC1" + sha256 (32 raw bytes) + data``, or, encrypted with the bundle's
content key as the server sends them, ``b"EFE2" + a keyed chunk id`` (:mod:`fleet_protocol.bundle_crypto`).

Desired state is signed (an envelope, see :mod:`fleet_protocol.signing`);
its trust checks live in :mod:`fleet_protocol.trust`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field as dc_field

from .canonical import canonical_json, parse_json_object
from .errors import MessageError
from .fields import count_field, digest_field, field, name_field

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_TELEMETRY_RECORDS = 500
MAX_FETCH_CHUNKS = 256
MODULE_STATES = ("running", "installing", "failed", "absent")
DEVICE_STATES = ("online", "offline")
_CHUNK_MAGIC = b"EFC1"


def encode(message: dict) -> bytes:
    return canonical_json(message)


def _load(payload: bytes, expected_type: str) -> dict:
    doc = parse_json_object(payload, what=expected_type, max_bytes=MAX_MESSAGE_BYTES)
    if doc.get("type") != expected_type:
        raise MessageError(f"expected a {expected_type} message, got type {doc.get('type')!r}")
    return doc


def parse_error(raw: object, where: str, key: str = "error") -> dict | None:
    """A ``{code, category, message}`` triple (the value of field ``key``), or None."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MessageError(f"{where}: field '{key}' must be an object with code, category and message")
    return {k: field(raw, k, str, where=where) for k in ("code", "category", "message")}


# --- desired state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredVariant:
    """A second version of a module served beside the main one, for an A/B split of traffic."""

    version: int
    bundle_digest: str
    manifest: dict
    weight: int
    content_key: dict | None = None  # the bundle's chunk key for this device (:mod:`fleet_protocol.bundle_crypto`)

    def to_dict(self) -> dict:
        doc = {"version": self.version, "bundle_digest": self.bundle_digest, "manifest": self.manifest,
               "weight": self.weight}
        if self.content_key is not None:
            doc["content_key"] = self.content_key
        return doc


@dataclass(frozen=True)
class DesiredModule:
    name: str
    version: int
    bundle_digest: str
    manifest: dict  # the signed manifest envelope, verified by the agent's trust checks
    weight: int | None = None  # with variants: the main version's share of the traffic (relative weights)
    variants: tuple[DesiredVariant, ...] = ()
    content_key: dict | None = None  # the bundle's chunk key for this device (:mod:`fleet_protocol.bundle_crypto`)

    def to_dict(self) -> dict:
        doc = {"name": self.name, "version": self.version, "bundle_digest": self.bundle_digest,
               "manifest": self.manifest}
        if self.content_key is not None:
            doc["content_key"] = self.content_key
        if self.variants:  # only then, so documents without a split stay byte for byte as before
            doc["weight"] = self.weight
            doc["variants"] = [v.to_dict() for v in self.variants]
        return doc


@dataclass(frozen=True)
class DesiredState:
    device_id: str
    generation: int
    issued: str
    modules: tuple[DesiredModule, ...]
    expires: str | None = None
    config: dict = dc_field(default_factory=dict)
    content_urls: tuple[str, ...] = ()  # base URLs serving chunks by id over HTTP(S), tried in order; none: MQTT

    def to_dict(self) -> dict:
        doc = {"type": "desired-state", "device_id": self.device_id, "generation": self.generation,
               "issued": self.issued, "expires": self.expires,
               "modules": [m.to_dict() for m in self.modules], "config": self.config}
        if self.content_urls:  # only then, so documents without HTTP content stay byte for byte as before
            doc["content_urls"] = list(self.content_urls)
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> "DesiredState":
        where = "desired state"
        if doc.get("type") != "desired-state":
            raise MessageError(f"{where}: field 'type' must be 'desired-state'")
        modules = []
        for raw in field(doc, "modules", list, where=where):
            if not isinstance(raw, dict):
                raise MessageError(f"{where}: each module must be an object")
            modules.append(DesiredModule(
                name=name_field(raw, "name", where=f"{where} module"),
                version=count_field(raw, "version", where=f"{where} module", minimum=1),
                bundle_digest=digest_field(raw, "bundle_digest", where=f"{where} module"),
                manifest=field(raw, "manifest", dict, where=f"{where} module"),
                content_key=field(raw, "content_key", dict, where=f"{where} module", optional=True),
                **_variants(raw, f"{where} module"),
            ))
        names = [m.name for m in modules]
        if len(set(names)) != len(names):
            raise MessageError(f"{where}: a module is listed twice")
        return cls(
            device_id=name_field(doc, "device_id", where=where),
            generation=count_field(doc, "generation", where=where, minimum=1),
            issued=field(doc, "issued", str, where=where),
            modules=tuple(modules),
            expires=field(doc, "expires", str, where=where, optional=True),
            config=field(doc, "config", dict, where=where, optional=True, default={}),
            content_urls=_content_urls(doc, where),
        )


MAX_CONTENT_URLS = 8
_CONTENT_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~\-/]*)?")


def _content_urls(doc: dict, where: str) -> tuple[str, ...]:
    """The desired state's ``content_urls``: 0 to :data:`MAX_CONTENT_URLS` plain ``http(s)://host[:port][/path]``."""
    urls = field(doc, "content_urls", list, where=where, optional=True, default=[])
    if len(urls) > MAX_CONTENT_URLS:
        raise MessageError(f"{where}: field 'content_urls' holds more than {MAX_CONTENT_URLS} URLs")
    for url in urls:
        if not isinstance(url, str) or len(url) > 2048 or not _CONTENT_URL.fullmatch(url):
            raise MessageError(f"{where}: field 'content_urls' must list http(s)://host[:port][/path] URLs, "
                               f"got {url!r}")
    return tuple(url.rstrip("/") for url in urls)


def _variants(raw: dict, where: str) -> dict:
    """The optional A/B fields of a desired module: ``weight`` and ``variants`` (other versions, weights)."""
    variants = []
    for item in field(raw, "variants", list, where=where, optional=True, default=[]):
        if not isinstance(item, dict):
            raise MessageError(f"{where}: each variant must be an object")
        variants.append(DesiredVariant(
            version=count_field(item, "version", where=f"{where} variant", minimum=1),
            bundle_digest=digest_field(item, "bundle_digest", where=f"{where} variant"),
            manifest=field(item, "manifest", dict, where=f"{where} variant"),
            weight=count_field(item, "weight", where=f"{where} variant"),
            content_key=field(item, "content_key", dict, where=f"{where} variant", optional=True)))
    if not variants:
        return {}
    digests = [raw.get("bundle_digest")] + [v.bundle_digest for v in variants]
    if len(set(digests)) != len(digests):
        raise MessageError(f"{where}: a variant repeats a bundle")
    return {"weight": count_field(raw, "weight", where=where), "variants": tuple(variants)}


def parse_desired_envelope(payload: bytes) -> dict:
    """Decode a desired-state payload to its (still unverified) signed envelope."""
    doc = parse_json_object(payload, what="desired state", max_bytes=MAX_MESSAGE_BYTES)
    if "signed" not in doc or "signatures" not in doc:
        raise MessageError("desired state is not a signed envelope")
    return doc


# --- root of trust ---------------------------------------------------------------------------

MAX_ROOTS = 1000


def encode_root_chain(roots: list[dict]) -> bytes:
    """The retained message on :data:`fleet_protocol.topics.ROOT_TOPIC`: every signed root, oldest first."""
    return encode({"type": "root-chain", "roots": roots})


def parse_root_chain(payload: bytes) -> list[dict]:
    """The (still unverified) root envelopes of a root-chain message; :class:`fleet_protocol.root.TrustedRoot`
    verifies them."""
    doc = _load(payload, "root-chain")
    roots = field(doc, "roots", list, where="root chain")
    if not roots or len(roots) > MAX_ROOTS:
        raise MessageError(f"root chain: must hold 1 to {MAX_ROOTS} roots")
    if not all(isinstance(root, dict) for root in roots):
        raise MessageError("root chain: each root must be a signed envelope (an object)")
    return roots


# --- reported state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleReport:
    name: str
    state: str
    version: int | None = None
    bundle_digest: str | None = None
    target_version: int | None = None
    target_digest: str | None = None
    accelerator: str | None = None
    error: dict | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "version": self.version,
                "bundle_digest": self.bundle_digest, "target_version": self.target_version,
                "target_digest": self.target_digest, "accelerator": self.accelerator, "error": self.error}


@dataclass(frozen=True)
class ReportedState:
    device_id: str
    generation: int
    ts: str
    modules: tuple[ModuleReport, ...]
    agent_version: str = ""
    profile: str = ""
    error: dict | None = None  # a refused desired-state document
    stale: bool = False  # the desired state the device holds has expired (freeze): it serves it anyway
    root_version: int | None = None  # the root of trust the device holds (None: fixed trusted_keys)
    root_error: dict | None = None  # a refused root document

    def to_dict(self) -> dict:
        doc = {"type": "reported-state", "device_id": self.device_id, "generation": self.generation,
               "ts": self.ts, "agent_version": self.agent_version, "profile": self.profile,
               "modules": [m.to_dict() for m in self.modules], "error": self.error}
        if self.stale:  # the trust fields only when set, so other documents stay byte for byte as before
            doc["stale"] = True
        if self.root_version is not None:
            doc["root_version"] = self.root_version
        if self.root_error is not None:
            doc["root_error"] = self.root_error
        return doc


def parse_reported_state(payload: bytes) -> ReportedState:
    doc = _load(payload, "reported-state")
    where = "reported state"
    modules = []
    for raw in field(doc, "modules", list, where=where):
        if not isinstance(raw, dict):
            raise MessageError(f"{where}: each module must be an object")
        mw = f"{where} module"
        state = field(raw, "state", str, where=mw)
        if state not in MODULE_STATES:
            raise MessageError(f"{mw}: state {state!r} is not one of {', '.join(MODULE_STATES)}")
        modules.append(ModuleReport(
            name=name_field(raw, "name", where=mw), state=state,
            version=count_field(raw, "version", where=mw, minimum=1, optional=True),
            bundle_digest=_optional_digest(raw, "bundle_digest", mw),
            target_version=count_field(raw, "target_version", where=mw, minimum=1, optional=True),
            target_digest=_optional_digest(raw, "target_digest", mw),
            accelerator=field(raw, "accelerator", str, where=mw, optional=True),
            error=parse_error(raw.get("error"), mw),
        ))
    return ReportedState(
        device_id=name_field(doc, "device_id", where=where),
        generation=count_field(doc, "generation", where=where),
        ts=field(doc, "ts", str, where=where),
        modules=tuple(modules),
        agent_version=field(doc, "agent_version", str, where=where, optional=True, default=""),
        profile=field(doc, "profile", str, where=where, optional=True, default=""),
        error=parse_error(doc.get("error"), where),
        stale=field(doc, "stale", bool, where=where, optional=True, default=False),
        root_version=count_field(doc, "root_version", where=where, minimum=1, optional=True),
        root_error=parse_error(doc.get("root_error"), where, "root_error"),
    )


def _optional_digest(doc: dict, key: str, where: str) -> str | None:
    return None if doc.get(key) is None else digest_field(doc, key, where=where)


# --- device status (online / offline, the last will) -----------------------------------------


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    state: str
    ts: str | None = None
    profile: str = ""
    tags: dict = dc_field(default_factory=dict)
    agent_version: str = ""
    scoring_url: str | None = None

    def to_dict(self) -> dict:
        return {"type": "device-status", "device_id": self.device_id, "state": self.state, "ts": self.ts,
                "profile": self.profile, "tags": self.tags, "agent_version": self.agent_version,
                "scoring_url": self.scoring_url}


def parse_device_status(payload: bytes) -> DeviceStatus:
    doc = _load(payload, "device-status")
    where = "device status"
    state = field(doc, "state", str, where=where)
    if state not in DEVICE_STATES:
        raise MessageError(f"{where}: state {state!r} is not online or offline")
    tags = field(doc, "tags", dict, where=where, optional=True, default={})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise MessageError(f"{where}: tags must map strings to strings")
    return DeviceStatus(
        device_id=name_field(doc, "device_id", where=where), state=state,
        ts=field(doc, "ts", str, where=where, optional=True),
        profile=field(doc, "profile", str, where=where, optional=True, default=""), tags=tags,
        agent_version=field(doc, "agent_version", str, where=where, optional=True, default=""),
        scoring_url=field(doc, "scoring_url", str, where=where, optional=True),
    )


# --- telemetry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelemetryRecord:
    seq: int
    ts: str
    kind: str
    data: dict

    def to_dict(self) -> dict:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "data": self.data}


@dataclass(frozen=True)
class TelemetryBatch:
    """Records from one device outbox; ``(device_id, outbox_id, seq)`` identifies a record."""

    device_id: str
    outbox_id: str  # random id of the device's outbox, so a wiped device never collides with its past
    records: tuple[TelemetryRecord, ...]

    def to_dict(self) -> dict:
        return {"type": "telemetry-batch", "device_id": self.device_id, "outbox_id": self.outbox_id,
                "records": [r.to_dict() for r in self.records]}


def parse_telemetry_batch(payload: bytes) -> TelemetryBatch:
    doc = _load(payload, "telemetry-batch")
    where = "telemetry batch"
    raw_records = field(doc, "records", list, where=where)
    if len(raw_records) > MAX_TELEMETRY_RECORDS:
        raise MessageError(f"{where}: more than {MAX_TELEMETRY_RECORDS} records")
    records = []
    for raw in raw_records:
        if not isinstance(raw, dict):
            raise MessageError(f"{where}: each record must be an object")
        records.append(TelemetryRecord(
            seq=count_field(raw, "seq", where=f"{where} record", minimum=1),
            ts=field(raw, "ts", str, where=f"{where} record"),
            kind=name_field(raw, "kind", where=f"{where} record"),
            data=field(raw, "data", dict, where=f"{where} record"),
        ))
    return TelemetryBatch(device_id=name_field(doc, "device_id", where=where),
                          outbox_id=name_field(doc, "outbox_id", where=where), records=tuple(records))


# --- bundle fetch --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchRequest:
    device_id: str
    bundle_digest: str
    chunks: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"type": "fetch-request", "device_id": self.device_id, "bundle_digest": self.bundle_digest,
                "chunks": list(self.chunks)}


def parse_fetch_request(payload: bytes) -> FetchRequest:
    doc = _load(payload, "fetch-request")
    where = "fetch request"
    raw_chunks = field(doc, "chunks", list, where=where)
    if not raw_chunks or len(raw_chunks) > MAX_FETCH_CHUNKS:
        raise MessageError(f"{where}: must ask for 1 to {MAX_FETCH_CHUNKS} chunks")
    chunks = tuple(digest_field({"c": c}, "c", where=where) for c in raw_chunks)
    return FetchRequest(device_id=name_field(doc, "device_id", where=where),
                        bundle_digest=digest_field(doc, "bundle_digest", where=where), chunks=chunks)


def encode_chunk(data: bytes) -> bytes:
    return _CHUNK_MAGIC + hashlib.sha256(data).digest() + data


def decode_chunk(payload: bytes) -> tuple[str, bytes]:
    """Return ``(sha256 hex, data)``; the digest is checked against the data."""
    if len(payload) < 36 or payload[:4] != _CHUNK_MAGIC:
        raise MessageError("chunk payload has no EFC1 header")
    digest, data = payload[4:36], payload[36:]
    if hashlib.sha256(data).digest() != digest:
        raise MessageError("chunk payload does not match its own digest (truncated or corrupted)")
    return digest.hex(), data
