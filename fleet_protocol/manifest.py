"""Bundle manifests: what a module bundle holds, how to split it, and its digest.

A manifest lists every file with its SHA-256, size and chunks. It is signed
(see :mod:`fleet_protocol.signing`) and its digest, the SHA-256 of the
canonical JSON of the manifest, names the bundle: a bundle is content
addressed. Parsing validates every field and refuses paths that could escape
the bundle's directory. No I/O.

A manifest has a ``kind``: ``module`` (a model and its scripts, the default,
left out of the dict so older manifests and their signatures stay byte for
byte the same) or ``agent`` (a new version of the device agent: the wheels of
``edgefleet[agent]`` under ``wheels/``, module :data:`AGENT_MODULE`, runtime
:data:`AGENT_RUNTIME`, its ``model`` the ``edgefleet`` wheel, whose file name
gives :attr:`BundleManifest.agent_version`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field
from functools import cached_property
from typing import Iterable

from .canonical import canonical_json, sha256_hex
from .errors import ManifestError, UnsafePathError
from .fields import count_field, digest_field, field, name_field, name_list_field
from .signature import Signature

MANIFEST_TYPE = "bundle-manifest"
RUNTIMES = ("onnx", "tflite")
KINDS = ("module", "agent")
AGENT_MODULE = "edgefleet-agent"
AGENT_RUNTIME = "wheels"
WHEELS_DIR = "wheels/"
# PEP 427 file name of the agent's own wheel: edgefleet-{version}(-{build})?-{python}-{abi}-{platform}.whl
_AGENT_WHEEL = re.compile(r"wheels/edgefleet-([0-9][A-Za-z0-9.+!]*)-(?:[0-9][A-Za-z0-9_.]*-)?[A-Za-z0-9_.]+"
                          r"-[A-Za-z0-9_.]+-[A-Za-z0-9_.]+\.whl")
DEFAULT_CHUNK_SIZE_BYTES = 262_144
MAX_CHUNK_SIZE_BYTES = 4 * 1024 * 1024
MAX_FILES = 1_000
MAX_BUNDLE_BYTES = 2 * 1024**3
MAX_PATH_CHARS = 255
_SEGMENT = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")  # fullmatch only: ``$`` also accepts a trailing newline


def check_relative_path(path: str) -> str:
    """Return ``path`` if it stays inside its directory, else raise :class:`UnsafePathError`."""
    if not isinstance(path, str) or not path:
        raise UnsafePathError("empty file path in bundle")
    if len(path) > MAX_PATH_CHARS:
        raise UnsafePathError(f"file path longer than {MAX_PATH_CHARS} characters")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise UnsafePathError(f"unsafe file path {path!r}: absolute or with a backslash or NUL")
    for segment in path.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
            raise UnsafePathError(f"unsafe file path {path!r}: segment {segment!r} is not allowed")
    return path


def check_distinct_paths(paths: Iterable[str]) -> None:
    """Refuse paths that would land on the same file on a case-insensitive file system (``A.txt`` and
    ``a.txt``, ``Dir/x`` and ``dir/y``: compared with ``str.casefold``, directories included), and a path
    that is both a file and a directory."""
    files: dict[str, str] = {}
    dirs: dict[str, str] = {}
    for path in paths:
        seen = files.get(path.casefold())
        if seen == path:
            raise ManifestError(f"manifest: file path {path!r} is listed twice")
        if seen is not None:
            raise ManifestError(f"manifest: file paths {seen!r} and {path!r} differ only in case "
                                "(one file on a case-insensitive file system)")
        files[path.casefold()] = path
        parts = path.split("/")
        for end in range(1, len(parts)):
            directory = "/".join(parts[:end])
            seen = dirs.setdefault(directory.casefold(), directory)
            if seen != directory:
                raise ManifestError(f"manifest: directories {seen!r} and {directory!r} differ only in case "
                                    "(one directory on a case-insensitive file system)")
    both = sorted(set(files) & set(dirs))
    if both:
        raise ManifestError(f"manifest: {files[both[0]]!r} is both a file and a directory")


@dataclass(frozen=True)
class ChunkRef:
    sha256: str
    size: int


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int
    chunks: tuple[ChunkRef, ...]

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "chunks": [{"sha256": c.sha256, "size": c.size} for c in self.chunks],
        }


def split_into_chunks(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE_BYTES) -> tuple[ChunkRef, ...]:
    """Fixed-size chunking; an empty file has no chunks."""
    return tuple(
        ChunkRef(sha256_hex(data[i : i + chunk_size]), len(data[i : i + chunk_size]))
        for i in range(0, len(data), chunk_size)
    )


def file_entry(path: str, data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE_BYTES) -> FileEntry:
    return FileEntry(check_relative_path(path), sha256_hex(data), len(data), split_into_chunks(data, chunk_size))


@dataclass(frozen=True)
class BundleManifest:
    module: str
    version: int
    runtime: str
    model: str
    files: tuple[FileEntry, ...]
    created: str
    entry: str | None = None
    sample: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE_BYTES
    target_profiles: tuple[str, ...] = ()
    model_ref: str | None = None
    expires: str | None = None
    description: str = ""
    config: dict = dc_field(default_factory=dict)
    drift_reference: str | None = None  # a file of the bundle: the model's drift reference (fleet_protocol.drift)
    kind: str = "module"
    signature: Signature | None = None  # the inputs and outputs callers see (fleet_protocol.signature)

    def to_dict(self) -> dict:
        doc = {
            "type": MANIFEST_TYPE,
            "module": self.module,
            "version": self.version,
            "runtime": self.runtime,
            "model": self.model,
            "entry": self.entry,
            "sample": self.sample,
            "files": [f.to_dict() for f in self.files],
            "chunk_size": self.chunk_size,
            "target_profiles": list(self.target_profiles),
            "model_ref": self.model_ref,
            "created": self.created,
            "expires": self.expires,
            "description": self.description,
            "config": self.config,
        }
        if self.drift_reference is not None:  # only then, so other manifests stay byte for byte as before
            doc["drift_reference"] = self.drift_reference
        if self.kind != "module":  # only then, so module manifests (and their digests) stay as before
            doc["kind"] = self.kind
        if self.signature is not None:  # the same: bundles built before signatures keep their digests
            doc["signature"] = self.signature.to_dict()
        return doc

    @property
    def agent_version(self) -> str | None:
        """The agent version an ``agent`` bundle installs (from its ``edgefleet`` wheel's name), else None."""
        match = _AGENT_WHEEL.fullmatch(self.model) if self.kind == "agent" else None
        return match.group(1) if match else None

    @property
    def digest(self) -> str:
        """The bundle's content address: SHA-256 of the canonical manifest."""
        return sha256_hex(canonical_json(self.to_dict()))

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise ManifestError(f"manifest of {self.module} v{self.version} has no file {path!r}")

    def chunk_sizes(self) -> dict[str, int]:
        """Every distinct chunk digest in the bundle with its size (computed once; do not modify it)."""
        return self._chunk_sizes

    @cached_property
    def _chunk_sizes(self) -> dict[str, int]:  # every fetched chunk is checked against it: build it once
        return {c.sha256: c.size for f in self.files for c in f.chunks}

    @classmethod
    def from_dict(cls, doc: dict) -> "BundleManifest":
        """Validate an untrusted manifest dict; raise :class:`ManifestError` naming the field."""
        where = "manifest"
        err = ManifestError
        if not isinstance(doc, dict):
            raise ManifestError("manifest must be a JSON object")
        if doc.get("type") != MANIFEST_TYPE:
            raise ManifestError(f"manifest: field 'type' must be {MANIFEST_TYPE!r}")
        kind = field(doc, "kind", str, where=where, optional=True, default="module", error=err)
        if kind not in KINDS:
            raise ManifestError(f"manifest: kind {kind!r} is not one of {', '.join(KINDS)}")
        runtime = field(doc, "runtime", str, where=where, error=err)
        if kind == "module" and runtime not in RUNTIMES:  # an agent bundle's runtime is checked with its files
            raise ManifestError(f"manifest: runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        chunk_size = count_field(doc, "chunk_size", where=where, minimum=1, error=err)
        if chunk_size > MAX_CHUNK_SIZE_BYTES:
            raise ManifestError(f"manifest: chunk_size {chunk_size} exceeds {MAX_CHUNK_SIZE_BYTES}")
        raw_files = field(doc, "files", list, where=where, error=err)
        if not raw_files or len(raw_files) > MAX_FILES:
            raise ManifestError(f"manifest: must list between 1 and {MAX_FILES} files")
        files = tuple(_parse_file(raw, chunk_size) for raw in raw_files)
        check_distinct_paths(f.path for f in files)
        if sum(f.size for f in files) > MAX_BUNDLE_BYTES:
            raise ManifestError(f"manifest: bundle larger than {MAX_BUNDLE_BYTES} bytes")
        manifest = cls(
            module=name_field(doc, "module", where=where, error=err),
            version=count_field(doc, "version", where=where, minimum=1, error=err),
            runtime=runtime,
            model=check_relative_path(field(doc, "model", str, where=where, error=err)),
            files=files,
            created=field(doc, "created", str, where=where, error=err),
            entry=_optional_path(doc, "entry"),
            sample=_optional_path(doc, "sample"),
            chunk_size=chunk_size,
            target_profiles=tuple(name_list_field(doc, "target_profiles", where=where, error=err)),
            model_ref=field(doc, "model_ref", str, where=where, optional=True, error=err),
            expires=field(doc, "expires", str, where=where, optional=True, error=err),
            description=field(doc, "description", str, where=where, optional=True, default="", error=err),
            config=field(doc, "config", dict, where=where, optional=True, default={}, error=err),
            drift_reference=_optional_path(doc, "drift_reference"),
            kind=kind,
            signature=None if doc.get("signature") is None else
            Signature.from_dict(doc["signature"], where="manifest: signature", error=err),
        )
        for path in filter(None, (manifest.model, manifest.entry, manifest.sample, manifest.drift_reference)):
            manifest.file(path)
        if kind == "agent":
            _check_agent_layout(manifest)
        return manifest


def _check_agent_layout(manifest: BundleManifest) -> None:
    """An agent bundle: module and runtime fixed, only wheels, ``model`` the ``edgefleet`` wheel, no scripts."""
    if manifest.module != AGENT_MODULE or manifest.runtime != AGENT_RUNTIME:
        raise ManifestError(f"manifest: an agent bundle is module {AGENT_MODULE!r} with runtime {AGENT_RUNTIME!r}")
    if manifest.entry is not None or manifest.sample is not None or manifest.drift_reference is not None:
        raise ManifestError("manifest: an agent bundle has no entry script, sample or drift reference")
    for entry in manifest.files:
        if not (entry.path.startswith(WHEELS_DIR) and entry.path.endswith(".whl") and entry.path.count("/") == 1):
            raise ManifestError(f"manifest: agent bundle file {entry.path!r} is not a wheel under {WHEELS_DIR}")
    if manifest.agent_version is None:
        raise ManifestError(f"manifest: an agent bundle's model must be its edgefleet wheel, not {manifest.model!r}")


def _parse_file(raw: object, chunk_size: int) -> FileEntry:
    if not isinstance(raw, dict):
        raise ManifestError("manifest: each file must be an object")
    where, err = "manifest file", ManifestError
    path = check_relative_path(field(raw, "path", str, where=where, error=err))
    size = count_field(raw, "size", where=f"{where} {path}", error=err)
    chunks = []
    for c in field(raw, "chunks", list, where=f"{where} {path}", error=err):
        if not isinstance(c, dict):
            raise ManifestError(f"manifest file {path}: malformed chunk")
        c_size = count_field(c, "size", where=f"chunk of {path}", minimum=1, error=err)
        if c_size > chunk_size:
            raise ManifestError(f"manifest file {path}: chunk larger than chunk_size")
        chunks.append(ChunkRef(digest_field(c, "sha256", where=f"chunk of {path}", error=err), c_size))
    if sum(c.size for c in chunks) != size:
        raise ManifestError(f"manifest file {path}: chunk sizes do not add up to the file size")
    return FileEntry(path, digest_field(raw, "sha256", where=f"{where} {path}", error=err), size, tuple(chunks))


def _optional_path(doc: dict, key: str) -> str | None:
    value = field(doc, key, str, where="manifest", optional=True, error=ManifestError)
    return None if value is None else check_relative_path(value)
