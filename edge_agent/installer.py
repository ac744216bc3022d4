"""Atomic install of a verified bundle, and the record of what is active.

Layout under ``state_dir``::

    staging/<digest>/chunks/<sha256>      chunks as fetched (each checked on arrival)
    staging/<digest>/tree/<path>          files assembled from chunks, then checked
    modules/<name>/<version>-<digest12>/  an installed version (renamed from tree/)
    modules/<name>/active.json            {name, version, digest, dir, manifest, previous}
    variants/<name>/<version>-<digest12>/ another version served beside the active one (A/B split)
    variants/<name>/<version>-<digest12>.json   its signed manifest envelope, written after the directory

Steps of :meth:`Installer.install`: assemble every file into ``tree/`` (paths
from the manifest, already checked safe, and refused again if they would
resolve outside the tree), fsync, :func:`fleet_protocol.trust.check_file`
each file as read back from disk, rename ``tree/`` to its version directory,
then switch by atomically replacing ``active.json`` (temp file, fsync,
``os.replace``, fsync of the directory). A crash at any instant leaves
``active.json`` naming either the old or the new version, and the version it
names is complete: old version directories are deleted only after the
switch. The version that was active before stays on disk as ``previous``
(for rollback); older ones are deleted.

What it does not do: verify signatures (the caller passes a manifest that
:class:`fleet_protocol.trust.TrustedState` accepted), fetch, or load models.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from edgefleet_runtime.installed import ActiveRecord, version_dir_name
from fleet_protocol.errors import BadDataError, DigestMismatchError, UnsafePathError
from fleet_protocol.manifest import BundleManifest, check_relative_path
from fleet_protocol.trust import check_file

log = logging.getLogger("edgefleet.agent.installer")

ACTIVE = "active.json"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` with ``mode`` via temp file + fsync + os.replace + directory fsync."""
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as fh:
        os.fchmod(fh.fileno(), mode)  # the umask never widens a key file, and never narrows a shared one
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Installer:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.modules_dir = state_dir / "modules"
        self.staging_dir = state_dir / "staging"
        self.modules_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    # --- reading --------------------------------------------------------------------------------

    def staging(self, digest: str) -> Path:
        return self.staging_dir / digest

    def active(self, name: str) -> ActiveRecord | None:
        """The active record of ``name``, or None (missing or unreadable: treated as not installed)."""
        path = self.modules_dir / name / ACTIVE
        try:
            doc = json.loads(path.read_text())
            return _record(self.modules_dir / name, doc)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("%s is unreadable (%s); treating %s as not installed", path, exc, name)
            return None

    def installed(self) -> dict[str, ActiveRecord]:
        out: dict[str, ActiveRecord] = {}
        for entry in sorted(self.modules_dir.iterdir()) if self.modules_dir.exists() else []:
            if entry.is_dir():
                record = self.active(entry.name)
                if record is not None:
                    out[entry.name] = record
        return out

    # --- installing -----------------------------------------------------------------------------

    def install(self, manifest: BundleManifest, envelope: dict) -> ActiveRecord:
        """Assemble, check, rename into place and switch ``active.json``; return the new record.

        Raises :class:`BadDataError` (nothing switched, staging tree removed)
        when a file does not match the manifest, and ``OSError`` on disk errors.
        """
        name, digest = manifest.module, manifest.digest
        staging = self.staging(digest)
        tree = self._assemble(manifest)
        module_dir = self.modules_dir / name
        module_dir.mkdir(parents=True, exist_ok=True)
        final = module_dir / version_dir_name(manifest.version, digest)
        current = self.active(name)
        if final.exists():
            if current is not None and current.dir == final:  # already active: nothing to switch
                shutil.rmtree(staging, ignore_errors=True)
                return current
            shutil.rmtree(final)  # a leftover from a crash before the switch, or an old rollback target
        os.rename(tree, final)
        fsync_dir(module_dir)
        previous = current.to_dict(with_previous=False) if current is not None else None
        record = _record(module_dir, {"name": name, "version": manifest.version, "digest": digest,
                                      "dir": final.name, "manifest": envelope, "previous": previous})
        self._switch(record)
        self._collect(module_dir, keep={record.dir.name} | ({record.previous.dir.name} if record.previous else set()))
        shutil.rmtree(staging, ignore_errors=True)
        log.info("installed %s v%s (%s)", name, manifest.version, digest[:12])
        return record

    def install_variant(self, manifest: BundleManifest, envelope: dict) -> ActiveRecord:
        """Assemble and check a version served beside the active one (A/B); ``active.json`` is not touched."""
        tree = self._assemble(manifest)
        variants_dir = self.state_dir / "variants" / manifest.module
        variants_dir.mkdir(parents=True, exist_ok=True)
        final = variants_dir / version_dir_name(manifest.version, manifest.digest)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tree, final)
        fsync_dir(variants_dir)
        record = ActiveRecord(manifest.module, manifest.version, manifest.digest, final, envelope)
        write_atomic(final.with_name(final.name + ".json"), json.dumps(record.to_dict(with_previous=False)).encode())
        shutil.rmtree(self.staging(manifest.digest), ignore_errors=True)
        log.info("installed %s v%s (%s) as an A/B variant", manifest.module, manifest.version, manifest.digest[:12])
        return record

    def variants(self, name: str) -> dict[str, ActiveRecord]:
        """The installed A/B variants of ``name`` by bundle digest (complete ones: their record is written last)."""
        variants_dir = self.state_dir / "variants" / name
        out = {}
        for path in sorted(variants_dir.glob("*.json")) if variants_dir.is_dir() else []:
            try:
                record = _record(variants_dir, json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if record.dir.is_dir():
                out[record.digest] = record
        return out

    def drop_variants(self, name: str, keep: set[str]) -> None:
        """Delete the A/B variants of ``name`` whose digest is not in ``keep``."""
        for digest, record in self.variants(name).items():
            if digest not in keep:
                record.dir.with_name(record.dir.name + ".json").unlink(missing_ok=True)
                shutil.rmtree(record.dir, ignore_errors=True)

    def seed_chunks(self, manifest: BundleManifest) -> int:
        """Copy into staging every chunk of ``manifest`` that an installed version already holds; return bytes.

        Content-defined chunking makes versions share most chunks, so these
        need no download. Each copied chunk is checked against its digest.
        """
        wanted = manifest.chunk_sizes()
        chunks_dir = self.staging(manifest.digest) / "chunks"
        sources: dict[str, tuple[Path, int, int]] = {}
        records = list(self.variants(manifest.module).values())
        active = self.active(manifest.module)
        if active is not None:
            records += [active] + ([active.previous] if active.previous else [])
        for record in records:
            try:
                installed = BundleManifest.from_dict(record.signed)
            except (BadDataError, KeyError, TypeError):
                continue
            for entry in installed.files:
                offset = 0
                for chunk in entry.chunks:
                    if chunk.sha256 in wanted and chunk.sha256 not in sources:
                        sources[chunk.sha256] = (record.dir / entry.path, offset, chunk.size)
                    offset += chunk.size
        reused = 0
        for sha, (path, offset, size) in sources.items():
            target = chunks_dir / sha
            if target.exists():
                continue
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read(size)
            except OSError:
                continue
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                continue  # an installed file changed on disk: fetch this chunk instead
            chunks_dir.mkdir(parents=True, exist_ok=True)
            tmp = chunks_dir / f".{sha}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target)
            reused += size
        return reused

    def _assemble(self, manifest: BundleManifest) -> Path:
        """Write every file from its staged chunks into ``staging/<digest>/tree`` and check it; return the tree."""
        staging = self.staging(manifest.digest)
        chunks, tree = staging / "chunks", staging / "tree"
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        try:
            for entry in manifest.files:
                target = _inside(tree, entry.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    for chunk in entry.chunks:
                        try:
                            out.write((chunks / chunk.sha256).read_bytes())
                        except FileNotFoundError:
                            raise DigestMismatchError(f"chunk {chunk.sha256[:12]} of {entry.path} is missing",
                                                      code="missing_chunk") from None
                    out.flush()
                    os.fsync(out.fileno())
                check_file(entry, target.read_bytes())
            for directory in sorted({p for p in tree.rglob("*") if p.is_dir()} | {tree}, reverse=True):
                fsync_dir(directory)
        except BadDataError:
            shutil.rmtree(tree, ignore_errors=True)
            raise
        return tree

    def rollback(self, name: str) -> ActiveRecord | None:
        """Make ``previous`` active again (after a failed load); delete the failed version.

        Returns the record now active, or None if there was no previous version
        (then ``active.json`` and the failed version are removed).
        """
        current = self.active(name)
        if current is None:
            return None
        module_dir = self.modules_dir / name
        if current.previous is None or not current.previous.dir.is_dir():
            self.remove(name)
            return None
        record = ActiveRecord(current.previous.name, current.previous.version, current.previous.digest,
                              current.previous.dir, current.previous.manifest, None)
        self._switch(record)
        self._collect(module_dir, keep={record.dir.name})
        log.warning("rolled %s back to v%s (%s)", name, record.version, record.digest[:12])
        return record

    def remove(self, name: str) -> None:
        """Uninstall ``name``: ``active.json`` goes first (atomic), then the files."""
        module_dir = self.modules_dir / name
        active = module_dir / ACTIVE
        if active.exists():
            active.unlink()
            fsync_dir(module_dir)
        shutil.rmtree(module_dir, ignore_errors=True)

    def drop_staging(self, keep: set[str]) -> None:
        """Delete staging directories of bundles that are no longer wanted."""
        for entry in self.staging_dir.iterdir() if self.staging_dir.exists() else []:
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    def discard_staging(self, digest: str) -> None:
        shutil.rmtree(self.staging(digest), ignore_errors=True)

    def collect_garbage(self) -> None:
        """At start: remove temp files and version directories no ``active.json`` names."""
        for module_dir in self.modules_dir.iterdir() if self.modules_dir.exists() else []:
            if not module_dir.is_dir():
                continue
            record = self.active(module_dir.name)
            if record is None:
                if not (module_dir / ACTIVE).exists():
                    shutil.rmtree(module_dir, ignore_errors=True)
                continue
            keep = {record.dir.name} | ({record.previous.dir.name} if record.previous else set())
            self._collect(module_dir, keep=keep)

    # --- internals ------------------------------------------------------------------------------

    def _switch(self, record: ActiveRecord) -> None:
        data = json.dumps(record.to_dict(), indent=1, sort_keys=True).encode()
        write_atomic(self.modules_dir / record.name / ACTIVE, data)

    @staticmethod
    def _collect(module_dir: Path, *, keep: set[str]) -> None:
        for entry in module_dir.iterdir():
            if entry.name == ACTIVE or entry.name in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _inside(tree: Path, relative: str) -> Path:
    """``tree/relative`` if it stays inside ``tree`` once resolved, else :class:`UnsafePathError`."""
    check_relative_path(relative)
    target = (tree / relative).resolve()
    root = tree.resolve()
    if target == root or root not in target.parents:
        raise UnsafePathError(f"file path {relative!r} resolves outside the bundle directory")
    return tree / relative


def _record(module_dir: Path, doc: dict) -> ActiveRecord:
    previous = doc.get("previous")
    dir_name = doc["dir"]
    if not isinstance(dir_name, str) or "/" in dir_name or dir_name in ("", ".", ".."):
        raise ValueError(f"bad dir {dir_name!r}")
    return ActiveRecord(
        name=str(doc["name"]), version=int(doc["version"]), digest=str(doc["digest"]),
        dir=module_dir / dir_name, manifest=doc["manifest"],
        previous=_record(module_dir, previous) if isinstance(previous, dict) else None,
    )
