"""Building, signing and packing module bundles.

A bundle is built from a module archive (``module.json`` + files) or from a
registered model version; either way the manifest is made with
:func:`fleet_protocol.bundle_file.build_manifest` with content-defined
chunks (so versions that share bytes share chunks, and devices fetch only
what changed), its chunks are stored content-addressed, the next version of the module is allocated and the
manifest signed inside one database transaction, and the model is linked
(``model_ref = name:version``), registering it first when a module brings
bytes the registry has not seen. A model version with a drift reference
(:mod:`.drift`) has it shipped as ``drift_reference.json``. The manifest
carries the module's signature (:mod:`fleet_protocol.signature`): the one
``module.json`` declares, checked against the model, or, for a module
without an entry script, the model's own; a module with an entry script that
declares none is described by its model, as before. The ``.efb`` file is packed from the stored
envelope, so downloading a bundle never re-signs it.

An agent bundle (kind ``agent``, :meth:`Bundler.build_agent`) is built the same way
from the wheels of a new agent version; it links no model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import threading

from edgefleet_runtime.fallback import FallbackPolicy
from edgefleet_runtime.module_config import check_answer_output, check_module_config
from fleet_protocol import bundle_file, drift, oip
from fleet_protocol.chunking import content_defined_chunks
from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import NAME, did_you_mean
from fleet_protocol.manifest import AGENT_MODULE, AGENT_RUNTIME, WHEELS_DIR, BundleManifest
from fleet_protocol.signature import DATATYPES, Signature, SignatureMismatch, check_against_model
from fleet_protocol.signing import sign_envelope
from fleet_protocol.timestamps import to_iso

from .clock import utc_now
from .config import ServerConfig
from .drift.service import Drift
from .errors import ConflictError, NotFoundError
from .keys import KeyRing
from .modelinfo import inspect_model
from .module_archive import read_module_archive, read_wheel_archive
from .registry import Registry
from .store import BlobStore, Database
from .store import bundles as bundle_store
from .store import models as model_store

MODEL_FILES = {"onnx": "model.onnx", "tflite": "model.tflite"}


class Bundler:
    """Builds, signs and stores bundles; reads them back. Built by the fleet.

    ``keys``: the :class:`~fleet_server.keys.KeyRing`, whose current signing key signs each manifest (a rotation
    changes it); ``chunks``: where bundle chunks are stored by digest, ``blobs``: model files; ``config``: its
    ``chunk_size_bytes`` and ``max_upload_bytes``, read at each build.
    """

    def __init__(self, *, db: Database, blobs: BlobStore, chunks: BlobStore, keys: KeyRing, registry: Registry,
                 drift: Drift, config: ServerConfig):
        self._db = db
        self._blobs = blobs
        self._chunks = chunks
        self._keys = keys
        self._registry = registry
        self._drift = drift
        self._config = config

    def list_bundles(self, *, module: str | None = None) -> list[dict]:
        return bundle_store.list_bundles(db=self._db, module=module)

    def build_from_module(self, archive: bytes) -> dict:
        """``POST /api/bundles/from-module``: build the next version of the module in ``archive``."""
        spec, files = read_module_archive(archive, max_total_bytes=self._config.max_upload_bytes)
        model_bytes = files[spec.model]
        info = inspect_model(model_bytes)
        if info.runtime != spec.runtime:
            raise BadDataError(f"module.json says runtime {spec.runtime!r} but {spec.model} is a {info.runtime} model",
                               code="bad_module")
        check_answer_output(spec.config, [o["name"] for o in info.outputs], has_entry=spec.entry is not None,
                            where="module.json: config")
        self._check_joint_model(spec.config, inputs=info.inputs, outputs=info.outputs, has_entry=spec.entry is not None)
        signature = _signature(spec.signature, info.inputs, info.outputs, has_entry=spec.entry is not None)
        known = model_store.find_by_sha256(db=self._db, sha256=hashlib.sha256(model_bytes).hexdigest(),
                                           prefer_name=spec.name)
        files, drift_file = self._with_drift_reference(known, files)
        draft = self._draft(module=spec.name, runtime=spec.runtime, model=spec.model, files=files, entry=spec.entry,
                            sample=spec.sample, description=spec.description, target_profiles=spec.target_profiles,
                            config=spec.config, drift_reference=drift_file, signature=signature)
        model_sha = self._blobs.put(model_bytes)
        with self._db.transaction():
            record = model_store.find_by_sha256(db=self._db, sha256=model_sha, prefer_name=spec.name)
            if record is None:
                record = self._registry.insert_model_record(name=spec.name, info=info, sha256=model_sha,
                                                            size=len(model_bytes), tags={},
                                                            properties={"registered_by": "module build"})
            return self._commit(draft, model_name=record["name"], model_version=record["version"])

    def build_from_model(self, *, model: str, version: int | None, module: str | None, entry_script: str | None,
                         sample: dict | None, config: dict | None, signature: dict | None = None) -> dict:
        """``POST /api/bundles/from-model``: wrap a registered model version in a module bundle."""
        record = self._registry.get_model_version(name=model, version=version)
        module = module or model
        if not NAME.fullmatch(module):
            raise BadDataError(f"module name {module!r} must be lowercase letters, digits, '.', '_' or '-'")
        check_module_config(config or {}, has_entry=entry_script is not None)
        declared = None if signature is None else Signature.from_dict(signature, where="signature",
                                                                      error=SignatureMismatch)
        check_answer_output(config or {}, [o["name"] for o in record["outputs"]], has_entry=entry_script is not None)
        self._check_joint_model(config or {}, inputs=record["inputs"], outputs=record["outputs"],
                                has_entry=entry_script is not None)
        model_file = MODEL_FILES[record["runtime"]]
        files = {model_file: self._blobs.get(record["sha256"])}
        if entry_script is not None:
            files["main.py"] = entry_script.encode("utf-8")
        if sample is not None:
            oip.decode_request(sample)  # a sample must be a valid inference request
            files["sample.json"] = json.dumps(sample, indent=1, sort_keys=True).encode("utf-8")
        files, drift_file = self._with_drift_reference(record, files)
        draft = self._draft(module=module, runtime=record["runtime"], model=model_file, files=files,
                            entry="main.py" if entry_script is not None else None,
                            sample="sample.json" if sample is not None else None, config=config or {},
                            drift_reference=drift_file,
                            signature=_signature(declared, record["inputs"], record["outputs"],
                                                 has_entry=entry_script is not None))
        with self._db.transaction():
            if model_store.get_version(db=self._db, name=record["name"], version=record["version"]) is None:
                raise ConflictError(f"model {record['name']}:{record['version']} was deleted while the bundle was "
                                    "built")
            return self._commit(draft, model_name=record["name"], model_version=record["version"])

    def _check_joint_model(self, config: dict, *, inputs: list[dict], outputs: list[dict], has_entry: bool) -> None:
        """The model that answers low-confidence rows (``fallback.cloud_model``) must be registered here, and,
        without an entry script (which decides its own inputs and outputs), take exactly the module's inputs (the
        device sends those) and give its outputs, with the same datatypes and the same dimensions after the batch
        axis where both models know them (so the cloud's rows can stand in for the local ones).
        """
        name = FallbackPolicy.from_configs(config).joint_model  # the policy itself was checked with the config
        if name is None:
            return
        cloud = model_store.latest_version(db=self._db, name=name)
        if cloud is None:
            known = sorted({r["name"] for r in model_store.search_latest(db=self._db)})
            raise BadDataError(f"config.fallback: cloud model {name!r} is not a registered model "
                               f"({did_you_mean(name, known)}register it first: edgefleet model register FILE "
                               f"--name {name})", code="bad_module_config")
        if has_entry:
            return
        where = f"config.fallback: cloud model {name}:{cloud['version']} cannot answer for this module"
        for what, mine, theirs in (("input", inputs, cloud["inputs"]), ("output", outputs, cloud["outputs"])):
            by_name = {t["name"]: t for t in theirs}
            for tensor in mine:
                if not _stands_in(by_name.get(tensor["name"]), tensor):
                    raise BadDataError(f"{where}: it has no {tensor['datatype']} {what} {tensor['name']!r} "
                                       f"{_dims(tensor)} (its {what}s: {', '.join(map(_tensor, theirs))})",
                                       code="bad_module_config")
        sent = {t["name"] for t in inputs}
        for tensor in cloud["inputs"]:
            if tensor["name"] not in sent:
                raise BadDataError(f"{where}: it needs an input {_tensor(tensor)} that the module's requests do not "
                                   f"have", code="bad_module_config")

    def _with_drift_reference(self, record: dict | None,
                              files: dict[str, bytes]) -> tuple[dict[str, bytes], str | None]:
        """``files`` with the model version's drift reference added (if it has one), and its path."""
        stored = None if record is None else self._drift.load_reference(record["name"], record["version"])
        if stored is None:
            return files, None
        if drift.REFERENCE_FILE in files:
            raise BadDataError(f"the module has a file named {drift.REFERENCE_FILE}, where the bundle puts the "
                               "model's drift reference: rename it", code="bad_module")
        return {**files, drift.REFERENCE_FILE: stored[1].to_json()}, drift.REFERENCE_FILE

    def build_agent(self, archive: bytes) -> dict:
        """``POST /api/bundles/agent``: the next ``edgefleet-agent`` bundle from a ``.tar.gz`` of wheels, one of them
        ``edgefleet`` itself (its version is the agent version devices will run)."""
        wheels = read_wheel_archive(archive, max_total_bytes=self._config.max_upload_bytes)
        own = sorted(name for name in wheels if name.startswith("edgefleet-"))
        if len(own) != 1:
            raise BadDataError(f"an agent upload holds exactly one edgefleet-*.whl (the agent), not {len(own)}",
                               code="bad_module")
        files = {WHEELS_DIR + name: data for name, data in wheels.items()}
        draft = self._draft(module=AGENT_MODULE, runtime=AGENT_RUNTIME, model=WHEELS_DIR + own[0], files=files,
                            kind="agent", description=f"edgefleet agent {own[0].split('-')[1]}")
        with self._db.transaction():
            version = bundle_store.next_version(db=self._db, module=draft.module)
            manifest = dataclasses.replace(draft, version=version, created=to_iso(utc_now()))
            envelope = sign_envelope(manifest.to_dict(), self._keys.signing_key)
            return bundle_store.insert_bundle(db=self._db, digest=manifest.digest, module=manifest.module,
                                              version=manifest.version, model_name=None, model_version=None,
                                              size=manifest.total_size, envelope=envelope, created=manifest.created)

    def get_bundle(self, digest: str) -> dict:
        bundle = bundle_store.get_bundle(db=self._db, digest=digest)
        if bundle is None:
            raise NotFoundError(f"there is no bundle with digest {digest}")
        return bundle

    def bundle_file_bytes(self, digest: str) -> bytes:
        """The ``.efb`` of a stored bundle: its envelope as signed, then its files, as ``pack_bundle`` lays them out."""
        bundle = self.get_bundle(digest)
        manifest = BundleManifest.from_dict(bundle["envelope"]["signed"])
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, bundle_file.MANIFEST_MEMBER, json.dumps(bundle["envelope"], indent=1, sort_keys=True).encode())
            for entry in manifest.files:
                content = b"".join(self._chunks.get(chunk.sha256) for chunk in entry.chunks)
                _add(tar, bundle_file.FILES_PREFIX + entry.path, content)
        return buffer.getvalue()

    def _draft(self, *, module: str, runtime: str, model: str, files: dict[str, bytes], **extra) -> BundleManifest:
        """The manifest without its final version (hashing is done here, outside the write lock); chunks stored."""
        if module == AGENT_MODULE and extra.get("kind") != "agent":
            raise BadDataError(f"module name {AGENT_MODULE!r} is reserved for agent bundles (`edgefleet module build "
                               "--kind agent WHEELS_DIR`)", code="bad_module")
        manifest = bundle_file.build_manifest(module=module, version=1, runtime=runtime, model=model, files=files,
                                              created=to_iso(utc_now()), chunk_size=self._config.chunk_size_bytes,
                                              chunker=content_defined_chunks, **extra)
        for entry in manifest.files:
            data, offset = files[entry.path], 0
            for chunk in entry.chunks:
                self._chunks.put(data[offset:offset + chunk.size], chunk.sha256)
                offset += chunk.size
        return manifest

    def _commit(self, draft: BundleManifest, *, model_name: str, model_version: int) -> dict:
        """Inside the caller's transaction: take the next version, sign, store."""
        version = bundle_store.next_version(db=self._db, module=draft.module)
        manifest = BundleManifest.from_dict(dataclasses.replace(
            draft, version=version, model_ref=f"{model_name}:{model_version}", created=to_iso(utc_now())).to_dict())
        envelope = sign_envelope(manifest.to_dict(), self._keys.signing_key)
        return bundle_store.insert_bundle(db=self._db, digest=manifest.digest, module=manifest.module,
                                          version=manifest.version, model_name=model_name, model_version=model_version,
                                          size=manifest.total_size, envelope=envelope, created=manifest.created)


def _signature(declared: Signature | None, inputs: list[dict], outputs: list[dict], *,
               has_entry: bool) -> Signature | None:
    """The signature to sign: the declared one once it agrees with the model, else the model's own (none for an
    entry script, whose outputs are its own: it is described by its model, as bundles before signatures)."""
    if declared is not None:
        check_against_model(declared, inputs=inputs, outputs=outputs, has_entry=has_entry)
        return declared
    derived = None if has_entry else Signature.from_model(inputs, outputs)
    known = derived is not None and all(t.datatype in DATATYPES for t in derived.inputs + derived.outputs)
    return derived if known else None  # a tensor type the protocol has no name for: described by the model


def _stands_in(theirs: dict | None, mine: dict) -> bool:
    """Same datatype, and the same dimensions after the batch axis where both know them (-1: any)."""
    if theirs is None or theirs["datatype"] != mine["datatype"]:
        return False
    a, b = mine.get("shape") or [], theirs.get("shape") or []
    return not a or not b or (len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a[1:], b[1:])))


def _dims(tensor: dict) -> str:
    return str(tensor.get("shape") or "[?]")


def _tensor(tensor: dict) -> str:
    return f"{tensor['name']} {tensor['datatype']} {_dims(tensor)}"


class ChunkIndex:
    """Which chunks (digest → size) belong to which bundle (bundles never change, so answers are cached)."""

    def __init__(self, db: Database, *, max_entries: int = 512):
        self._db = db
        self._cache: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def chunks_of(self, digest: str) -> dict[str, int] | None:
        with self._lock:
            if digest in self._cache:
                return self._cache[digest]
        bundle = bundle_store.get_bundle(db=self._db, digest=digest)
        if bundle is None:
            return None
        chunks = BundleManifest.from_dict(bundle["envelope"]["signed"]).chunk_sizes()
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = chunks
        return chunks


def _add(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(content))
