"""Remote jobs: the signed job document the server sends a device, and the result the device sends back.

A job is one of a fixed set of kinds (:data:`KINDS`), never a command line:

    restart_module  {"module": NAME}        load the installed version again and swap it in
    health_check    {"module": NAME}        run the module's health check once, as at install
    collect_logs    {"max_bytes": N}        the agent's recent log records, at most N bytes (≤ MAX_LOG_BYTES)
    diagnostics     {}                      execution providers, memory, disk, versions, clock skew
    flush_outbox    {}                      send what the outbox holds now

A :class:`JobDocument` (``type: job``) names its device and carries ``issued``
and ``expires``; the server signs it with its current signing key exactly as a
desired state (:func:`fleet_protocol.signing.sign_envelope`), and the agent checks
it with :meth:`fleet_protocol.trust.TrustedState.verify_job` (signature by a key
the device trusts now, so a rotated-out key is refused; device binding; expiry).
It travels on the device's ``jobs`` topic (:mod:`fleet_protocol.topics`), QoS 1,
not retained. ``job_id`` is unique per job and device; the agent runs a job id
at most once and answers a redelivery with the result it stored.

The result is an outbox record of kind :data:`RESULT_KIND` (so it is durable
and leaves the device only on the broker's PUBACK), at most :data:`MAX_RESULT_BYTES`
of canonical JSON (the agent answers a larger one ``failed``/``result_too_large``);
:func:`parse_result` reads its data on the server and refuses a larger one. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .canonical import canonical_json, parse_json_object
from .errors import MessageError
from .fields import count_field, field, name_field, refuse_unknown_keys
from .messages import parse_error
from .timestamps import from_iso

KINDS = ("restart_module", "health_check", "collect_logs", "diagnostics", "flush_outbox")
RESULT_KIND = "job_result"
RESULT_STATES = ("succeeded", "failed")
MAX_JOB_BYTES = 16 * 1024
MAX_LOG_BYTES = 65_536
"""Most bytes of log text one ``collect_logs`` job returns (the agent's log ring holds this much)."""
MAX_RESULT_BYTES = 4 * MAX_LOG_BYTES
"""Most bytes of one job result record as canonical JSON: room for the log text's JSON escapes."""
_PARAMS = {"restart_module": ("module",), "health_check": ("module",), "collect_logs": ("max_bytes",),
           "diagnostics": (), "flush_outbox": ()}


def check_params(kind: str, params: dict, *, where: str = "job") -> dict:
    """The params of a job of ``kind``, checked and with defaults filled in; :class:`MessageError` otherwise."""
    if kind not in KINDS:
        raise MessageError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(params, dict):
        raise MessageError(f"{where}: params must be an object")
    refuse_unknown_keys(params, _PARAMS[kind], where=f"{where} params of {kind}")
    if "module" in _PARAMS[kind]:
        return {"module": name_field(params, "module", where=f"{where} params")}
    if kind == "collect_logs":
        size = count_field(params, "max_bytes", where=f"{where} params", minimum=1, optional=True,
                           default=MAX_LOG_BYTES)
        if size > MAX_LOG_BYTES:
            raise MessageError(f"{where} params: max_bytes must be at most {MAX_LOG_BYTES}, got {size}")
        return {"max_bytes": size}
    return {}


@dataclass(frozen=True)
class JobDocument:
    job_id: str
    device_id: str
    kind: str
    params: dict
    issued: str
    expires: str

    def to_dict(self) -> dict:
        return {"type": "job", "job_id": self.job_id, "device_id": self.device_id, "kind": self.kind,
                "params": self.params, "issued": self.issued, "expires": self.expires}

    @classmethod
    def from_dict(cls, doc: dict) -> "JobDocument":
        where = "job"
        if doc.get("type") != "job":
            raise MessageError(f"{where}: field 'type' must be 'job'")
        refuse_unknown_keys(doc, ("type", "job_id", "device_id", "kind", "params", "issued", "expires"), where=where)
        kind = field(doc, "kind", str, where=where)
        issued, expires = field(doc, "issued", str, where=where), field(doc, "expires", str, where=where)
        from_iso(issued, what=f"{where} issued"), from_iso(expires, what=f"{where} expires")
        return cls(job_id=name_field(doc, "job_id", where=where), device_id=name_field(doc, "device_id", where=where),
                   kind=kind, params=check_params(kind, field(doc, "params", dict, where=where), where=where),
                   issued=issued, expires=expires)


def parse_job_envelope(payload: bytes) -> dict:
    """Decode a job payload to its (still unverified) signed envelope."""
    doc = parse_json_object(payload, what="job", max_bytes=MAX_JOB_BYTES)
    if "signed" not in doc or "signatures" not in doc:
        raise MessageError("job is not a signed envelope")
    return doc


@dataclass(frozen=True)
class JobResult:
    """What a device did with a job: ``succeeded`` with a result, or ``failed`` with a ``{code, category,
    message}`` error; ``started``/``finished`` are the device's clock."""

    job_id: str
    kind: str
    state: str
    result: dict
    error: dict | None
    started: str
    finished: str

    def to_dict(self) -> dict:
        return {"job_id": self.job_id, "kind": self.kind, "state": self.state, "result": self.result,
                "error": self.error, "started": self.started, "finished": self.finished}


def parse_result(data: dict) -> JobResult:
    """The data of a :data:`RESULT_KIND` record from a device (untrusted: already parsed by the batch)."""
    where = "job result"
    size = len(canonical_json(data))
    if size > MAX_RESULT_BYTES:
        raise MessageError(f"{where}: {size} bytes, more than {MAX_RESULT_BYTES}")
    state = field(data, "state", str, where=where)
    if state not in RESULT_STATES:
        raise MessageError(f"{where}: state {state!r} is not one of {', '.join(RESULT_STATES)}")
    kind = field(data, "kind", str, where=where)
    if kind not in KINDS:
        raise MessageError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    error = parse_error(data.get("error"), where)
    if state == "failed" and error is None:
        raise MessageError(f"{where}: a failed job needs an error")
    started, finished = field(data, "started", str, where=where), field(data, "finished", str, where=where)
    from_iso(started, what=f"{where} started"), from_iso(finished, what=f"{where} finished")
    result = field(data, "result", dict, where=where, optional=True, default={})
    if state == "succeeded":
        _check_result(kind, result, where=f"{where} of {kind}")
    return JobResult(job_id=name_field(data, "job_id", where=where), kind=kind, state=state, result=result,
                     error=error, started=started, finished=finished)


def _check_result(kind: str, result: dict, *, where: str) -> None:
    """The fields of a succeeded result that the CLI and the dashboard show (more are allowed)."""
    if kind == "collect_logs":
        field(result, "text", str, where=where), count_field(result, "bytes", where=where)
    elif kind == "diagnostics":
        if not all(isinstance(p, str) for p in field(result, "providers", list, where=where)):
            raise MessageError(f"{where}: field 'providers' must be a list of names")
        for part, counts in (("memory", ("total_bytes", "available_bytes")), ("disk", ("free_bytes",))):
            values = field(result, part, dict, where=where)
            for key in counts:
                count_field(values, key, where=f"{where} {part}")
        field(field(result, "versions", dict, where=where), "agent", str, where=f"{where} versions")
        field(result, "clock_skew_s", int, where=where)
    elif kind in ("restart_module", "health_check"):
        name_field(result, "module", where=where), count_field(result, "version", where=where, minimum=1)
