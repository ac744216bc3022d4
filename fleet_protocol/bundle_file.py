"""The ``.efb`` bundle file: a signed manifest and the files it lists, in one tar.

Layout: ``manifest.json`` (the signed manifest envelope) then ``files/<path>``
for every file. Used by ``edgefleet module build`` and ``bundle inspect|verify``
and for uploads; devices fetch the same files chunk by chunk over MQTT instead.
Reading refuses links, devices, absolute paths, ``..`` and anything the
manifest does not list, before any content is returned. Bytes in, bytes out.
"""

from __future__ import annotations

import io
import json
import tarfile

from .errors import BadDataError, ManifestError, UnsafePathError
from .canonical import parse_json_object, sha256_hex
from .messages import MAX_MESSAGE_BYTES
from .manifest import DEFAULT_CHUNK_SIZE_BYTES, BundleManifest, FileEntry, check_relative_path, file_entry
from .signing import PublicKey, SigningKey, sign_envelope, verify_envelope
from .trust import check_file

MANIFEST_MEMBER = "manifest.json"
FILES_PREFIX = "files/"
MAX_MANIFEST_BYTES = MAX_MESSAGE_BYTES  # a signed manifest travels inside a desired-state message


def build_manifest(*, module: str, version: int, runtime: str, model: str, files: dict[str, bytes],
                   created: str, **extra) -> BundleManifest:
    """Describe ``files`` in a manifest (paths checked, digests and chunks computed).

    ``chunker(data, chunk_size)`` picks the chunks (fixed-size by default; the
    server uses :func:`fleet_protocol.chunking.content_defined_chunks`).
    """
    chunk_size = extra.pop("chunk_size", DEFAULT_CHUNK_SIZE_BYTES)
    chunker = extra.pop("chunker", None)
    entries = tuple(file_entry(path, files[path], chunk_size) if chunker is None else
                    FileEntry(check_relative_path(path), sha256_hex(files[path]), len(files[path]),
                              chunker(files[path], chunk_size)) for path in sorted(files))
    manifest = BundleManifest(module=module, version=version, runtime=runtime, model=model, files=entries,
                              created=created, chunk_size=chunk_size, **extra)
    return BundleManifest.from_dict(manifest.to_dict())  # the same validation a device applies


def pack_bundle(manifest: BundleManifest, files: dict[str, bytes], key: SigningKey) -> tuple[dict, bytes]:
    """Sign ``manifest`` and pack it with ``files``; return ``(envelope, tar bytes)``."""
    envelope = sign_envelope(manifest.to_dict(), key)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST_MEMBER, json.dumps(envelope, indent=1, sort_keys=True).encode())
        for entry in manifest.files:
            _add(tar, FILES_PREFIX + entry.path, files[entry.path])
    return envelope, buffer.getvalue()


def read_bundle(data: bytes, trusted: list[PublicKey] | None) -> tuple[dict, BundleManifest, dict[str, bytes]]:
    """Open a bundle file; verify signature (when ``trusted`` is given), digests and sizes.

    Returns ``(envelope, manifest, files)``. With ``trusted=None`` the signature
    is not checked (for ``bundle inspect``); everything else still is.
    """
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise BadDataError(f"not a bundle file: {exc}", code="malformed_bundle") from None
    raw: dict[str, bytes] = {}
    for member in members:
        if not member.isfile():
            raise UnsafePathError(f"bundle member {member.name!r} is not a regular file (link or device)")
        if member.name != MANIFEST_MEMBER:
            if not member.name.startswith(FILES_PREFIX):
                raise UnsafePathError(f"bundle member {member.name!r} is outside files/")
            check_relative_path(member.name[len(FILES_PREFIX):])
        if member.name in raw:
            raise BadDataError(f"bundle member {member.name!r} appears twice", code="malformed_bundle")
        raw[member.name] = tar.extractfile(member).read()
    if MANIFEST_MEMBER not in raw:
        raise BadDataError("bundle has no manifest.json", code="malformed_bundle")
    envelope = parse_json_object(raw.pop(MANIFEST_MEMBER), what="manifest.json", max_bytes=MAX_MANIFEST_BYTES,
                                 error=ManifestError)
    if trusted is not None:
        signed = verify_envelope(envelope, {k.keyid: k for k in trusted}, what="bundle manifest")
    elif isinstance(envelope, dict) and isinstance(envelope.get("signed"), dict):
        signed = envelope["signed"]
    else:
        raise BadDataError("manifest.json is not a signed envelope", code="malformed_manifest")
    manifest = BundleManifest.from_dict(signed)
    files = {name[len(FILES_PREFIX):]: content for name, content in raw.items()}
    listed = {entry.path for entry in manifest.files}
    if set(files) != listed:
        extra, missing = sorted(set(files) - listed), sorted(listed - set(files))
        raise BadDataError(f"bundle files differ from the manifest (extra {extra}, missing {missing})",
                           code="manifest_mismatch")
    for entry in manifest.files:
        check_file(entry, files[entry.path])
    return envelope, manifest, files


def _add(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(content))
