"""Reading a module folder uploaded as a ``.tar.gz``: ``module.json`` and the files it lists.

Every member name is checked before anything is read: links, devices,
absolute paths, ``..`` and other unsafe names are refused with
:class:`~fleet_protocol.errors.UnsafePathError`. Only ``module.json`` and the
files it lists are read; anything else in the archive is ignored. A key of
``module.json`` or of its ``config`` that nothing reads (a typo such as
``entyr``) is refused, naming the nearest valid key
(:func:`edgefleet_runtime.module_config.check_module_config`). An optional
``signature`` (:mod:`fleet_protocol.signature`) is parsed here and checked
against the model by the bundle builder. An archive
with a single top-level folder (``tar czf m.tgz iris/``) is read as if that
folder were the root. Bytes in, values out: no file is written.

:func:`read_wheel_archive` reads the other kind of upload, the wheels of a new
agent version (``edgefleet module build --kind agent DIR``), with the same
member checks.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass, field, fields

from edgefleet_runtime.module_config import check_module_config
from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import BadDataError, UnsafePathError
from fleet_protocol.fields import NAME, name_list_field, refuse_unknown_keys
from fleet_protocol.manifest import RUNTIMES, check_relative_path
from fleet_protocol.signature import Signature

SPEC_FILE = "module.json"
MAX_SPEC_BYTES = 1024 * 1024


class _BadModule(BadDataError):
    code = "bad_module"


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    runtime: str
    model: str
    files: tuple[str, ...]
    description: str = ""
    entry: str | None = None
    sample: str | None = None
    target_profiles: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    signature: Signature | None = None


def _open_archive(data: bytes, max_total_bytes: int) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    """The uploaded archive and its members by name, checked by :func:`_safe_members`; ``bad_archive`` if unreadable."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        return tar, _safe_members(tar, max_total_bytes)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        reason = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        raise BadDataError(f"the upload is not a readable .tar.gz archive ({reason})", code="bad_archive") from None


def read_module_archive(data: bytes, *, max_total_bytes: int) -> tuple[ModuleSpec, dict[str, bytes]]:
    """Return the module spec and the listed files' contents."""
    tar, members = _open_archive(data, max_total_bytes)
    prefix = _root_prefix(members)
    if prefix + SPEC_FILE not in members:
        raise BadDataError(f"the archive has no {SPEC_FILE} at its top level", code="bad_module")
    spec_member = members[prefix + SPEC_FILE]
    if spec_member.size > MAX_SPEC_BYTES:
        raise BadDataError(f"{SPEC_FILE} is larger than {MAX_SPEC_BYTES} bytes", code="bad_module")
    spec = parse_module_spec(_read(tar, spec_member))
    files = {}
    for path in spec.files:
        if prefix + path not in members:
            raise BadDataError(f"{SPEC_FILE} lists {path!r}, which is not in the archive", code="bad_module")
        files[path] = _read(tar, members[prefix + path])
    return spec, files


def read_wheel_archive(data: bytes, *, max_total_bytes: int) -> dict[str, bytes]:
    """The ``.whl`` files at the top level of a ``.tar.gz`` (or of its single folder), by file name.

    Anything else in the archive is refused: an agent bundle holds wheels only.
    """
    tar, members = _open_archive(data, max_total_bytes)
    tops = {name.split("/", 1)[0] for name in members}
    prefix = tops.pop() + "/" if len(tops) == 1 and all("/" in name for name in members) else ""
    wheels = {}
    for name, member in members.items():
        relative = name[len(prefix):]
        if "/" in relative or not relative.endswith(".whl"):
            raise BadDataError(f"an agent upload holds only .whl files at its top level, not {name!r}",
                               code="bad_module")
        wheels[relative] = _read(tar, member)
    if not wheels:
        raise BadDataError("the agent upload holds no .whl file", code="bad_module")
    return wheels


def parse_module_spec(raw: bytes) -> ModuleSpec:
    doc = parse_json_object(raw, what=SPEC_FILE, max_bytes=MAX_SPEC_BYTES, error=_BadModule)
    refuse_unknown_keys(doc, (f.name for f in fields(ModuleSpec)), where=SPEC_FILE, error=_BadModule)

    def get(key: str, kind: type, default=None, required: bool = False):
        value = doc.get(key)
        if value is None:
            if required:
                raise BadDataError(f"{SPEC_FILE}: missing field '{key}'", code="bad_module")
            return default
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadDataError(f"{SPEC_FILE}: field '{key}' must be a {kind.__name__}", code="bad_module")
        return value

    name = get("name", str, required=True)
    if not NAME.fullmatch(name):
        raise BadDataError(f"{SPEC_FILE}: name {name!r} must be lowercase letters, digits, '.', '_' or '-' "
                           "(up to 64, starting with a letter or digit)", code="bad_module")
    runtime = get("runtime", str, required=True)
    if runtime not in RUNTIMES:
        raise BadDataError(f"{SPEC_FILE}: runtime {runtime!r} is not one of {', '.join(RUNTIMES)}", code="bad_module")
    files = get("files", list, required=True)
    if not files or not all(isinstance(f, str) for f in files):
        raise BadDataError(f"{SPEC_FILE}: 'files' must be a non-empty list of paths", code="bad_module")
    if len(set(files)) != len(files):
        raise BadDataError(f"{SPEC_FILE}: 'files' lists a path twice", code="bad_module")
    for path in files:
        check_relative_path(path)
        if path == SPEC_FILE:
            raise BadDataError(f"{SPEC_FILE}: 'files' must not list {SPEC_FILE} itself", code="bad_module")
    spec = ModuleSpec(
        name=name, runtime=runtime, model=get("model", str, required=True), files=tuple(files),
        description=get("description", str, ""), entry=get("entry", str), sample=get("sample", str),
        target_profiles=tuple(name_list_field(doc, "target_profiles", where=SPEC_FILE, error=_BadModule)),
        config=get("config", dict, {}),
        signature=None if doc.get("signature") is None else
        Signature.from_dict(doc["signature"], where=f"{SPEC_FILE}: signature", error=_BadModule),
    )
    for key in ("model", "entry", "sample"):
        value = getattr(spec, key)
        if value is not None and value not in spec.files:
            raise BadDataError(f"{SPEC_FILE}: {key} {value!r} is not one of the listed 'files'", code="bad_module")
    check_module_config(spec.config, has_entry=spec.entry is not None, where=f"{SPEC_FILE}: config")
    return spec


def _safe_members(tar: tarfile.TarFile, max_total_bytes: int) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    total = 0
    for member in tar:
        name = member.name
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/") if member.isdir() else name
        if name in ("", "."):
            continue
        try:
            check_relative_path(name)
        except UnsafePathError as exc:
            raise UnsafePathError(f"archive member {member.name!r} is refused: {exc}") from None
        if member.isdir():
            continue
        if not member.isfile():
            raise UnsafePathError(f"archive member {member.name!r} is refused: it is a link or a special file, "
                                  "not a regular file")
        if name in members:
            raise BadDataError(f"archive member {name!r} appears twice", code="bad_archive")
        total += member.size
        if total > max_total_bytes:
            raise BadDataError(f"the archive unpacks to more than {max_total_bytes} bytes", code="bad_archive")
        members[name] = member
    return members


def _root_prefix(members: dict[str, tarfile.TarInfo]) -> str:
    """``"iris/"`` when every member lies in one top-level folder that holds module.json, else ``""``."""
    if SPEC_FILE in members:
        return ""
    tops = {name.split("/", 1)[0] for name in members}
    if len(tops) == 1 and all("/" in name for name in members):
        return tops.pop() + "/"
    return ""


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise BadDataError(f"archive member {member.name!r} cannot be read", code="bad_archive")
    return handle.read()
