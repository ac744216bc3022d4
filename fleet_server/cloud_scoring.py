"""Cloud scoring: every registered model version, served for the Open Inference Protocol v2 routes.

:class:`CloudScoring` keeps a bounded LRU of loaded models (at most
``cloud_max_loaded_models``): a request for a version not loaded opens its
file from the blob store on the best accelerator of the server's firmware
profile (``cloud_profile``; the same chooser the agent uses, see
:mod:`edgefleet_runtime.accelerators`), and the least recently used version is
dropped when the cache is full. Requests already holding a dropped model
finish on it. Thread safe: the cache has one lock, and each version loads
at most once at a time (its own lock), so a burst of requests for a cold
model loads it once.

:meth:`CloudScoring.model` scores a registered model itself (the raw ONNX
or TFLite file). :meth:`CloudScoring.module` scores one version of a
module's bundle exactly as an agent runs it: the bundle is rebuilt from the
chunk store (digests and sizes checked against the stored manifest),
written to ``data_dir/cloud-modules/``, and loaded by the agent's own
:class:`edgefleet_runtime.runtime.Runtime` (accelerator chain, entry script
``init``, sample health check), so a device's cloud fallback answers with
the same outputs and the module's name. That runs the module's entry script
in the server process: whoever may build a module may run code here.
It does not speak HTTP (see :mod:`fleet_server.api.routes.inference`).

    CloudScoring.model(name, version)  -> CloudModel    NotFoundError: unknown name or version
                                                        (no version: a module with an entry script first)
    CloudScoring.module(name, version) -> CloudModel    NotFoundError: unknown module or version
    CloudModel.score(request)          -> outputs       BadDataError: inputs that do not fit (400)
                                                        ModuleError: the model or script failed (5xx)
    CloudModel.answer(request)         -> Scored        the same, with the response's name and parameters
                                                        (REST and gRPC both answer with it)
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgefleet_runtime.answers import AnswerCounts
from edgefleet_runtime.feedback import RecentRequests, new_request_id
from edgefleet_runtime.inputs import ModuleError, mismatch
from edgefleet_runtime.scored import Scored
from fleet_protocol import bundle_file
from fleet_protocol.oip import InferenceRequest
from fleet_protocol.errors import EdgefleetError, MessageError
from fleet_protocol.profiles import FirmwareProfile

from .errors import NotFoundError
from .store import bundles as bundle_store
from .store import models as model_store
from .store.blobs import BlobNotFound

PLATFORMS = {"onnx": "onnxruntime_onnx", "tflite": "tensorflow_lite"}
MODULE_KEY = "module:"  # cache keys of modules, apart from models of the same name


@dataclass
class CloudModel:
    """One loaded model or module version: ``score(inputs)`` checks the inputs, then runs."""

    name: str
    version: int
    runtime: str
    accelerator: str
    inputs: list[dict]
    outputs: list[dict]
    runner: Any  # edgefleet_runtime.model_runners.OnnxModel or TfliteModel, or a module's LoadedModule
    notes: list[str] = field(default_factory=list)
    check: bool = True  # False for a module with an entry script: the script decides what it takes
    module_dir: Any = None  # a module's unpacked bundle, removed when the module leaves the cache
    answers: AnswerCounts = field(default_factory=AnswerCounts)  # reads each row's class, for feedback

    def metadata(self, versions: list[int]) -> dict:
        return {"name": self.name, "versions": [str(v) for v in versions], "platform": PLATFORMS[self.runtime],
                "inputs": self.inputs, "outputs": self.outputs, "parameters": {"accelerator": self.accelerator}}

    def score(self, inputs: dict[str, np.ndarray], wanted: list[str] | None = None) -> dict[str, np.ndarray]:
        what = f"{self.name} v{self.version}"
        specs = [(s["name"], s["datatype"], s["shape"]) for s in self.inputs]
        # a module checks as its agent does (its signature's dims); a registered model takes any batch (LiteRT resizes)
        module = self.module_dir is not None
        problem = mismatch(specs, inputs, any_batch=not module, what="module" if module else "model") \
            if self.check else None
        if problem is not None:
            raise MessageError(f"{what}: {problem}")
        try:
            outputs = self.runner.score(inputs).outputs if self.module_dir else self.runner.run(inputs)
        except EdgefleetError:  # a module's LoadedModule already says whose fault it was
            raise
        except Exception as exc:  # noqa: BLE001 - inputs that fit, yet onnxruntime or LiteRT failed: our side
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise ModuleError(f"{what} failed: {type(exc).__name__}: {text}",
                              temporary=isinstance(exc, MemoryError)) from None
        if wanted is None:
            return outputs
        unknown = [n for n in wanted if n not in outputs]
        if unknown:
            raise MessageError(f"model {self.name!r} has no output {unknown[0]!r}")
        return {n: outputs[n] for n in wanted}

    def answer(self, request: InferenceRequest, recent: RecentRequests | None = None) -> Scored:
        """:meth:`score` as a response; with ``recent``, the request is remembered (and answered with its id, one
        assigned when it had none) for feedback."""
        outputs = self.score(request.inputs, request.outputs)
        request_id = request.id
        if recent is not None and recent.enabled:
            request_id = request_id or new_request_id()
            recent.remember(request_id, model=self.name, version=self.version, scored_on="cloud", split=False,
                            classes=self.answers.classes(outputs), class_names=self.answers.class_names)
        return Scored(self.name, str(self.version), outputs, request_id,
                      {"scored_on": "cloud", "accelerator": self.accelerator, "model_version": str(self.version)})


class CloudScoring:
    def __init__(self, fleet, *, profile: FirmwareProfile, max_loaded: int):
        if max_loaded < 1:
            raise ValueError("cloud_max_loaded_models must be at least 1")
        self._fleet = fleet
        self.profile = profile
        self.max_loaded = max_loaded
        self._cache: OrderedDict[tuple[str, int], CloudModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._modules_dir = Path(fleet.config.data_dir) / "cloud-modules"
        shutil.rmtree(self._modules_dir, ignore_errors=True)  # left by a previous run: nothing is loaded yet
        config = fleet.config  # requests scored here, remembered for labels (fleet_server.feedback)
        self.recent = RecentRequests(max_requests=config.feedback_max_requests, max_rows=config.feedback_max_rows)

    def versions(self, model: CloudModel) -> list[int]:
        """The versions metadata lists beside ``model``: a module's bundle alone, or the registered model's."""
        if model.module_dir is not None:
            return [model.version]
        return [r["version"] for r in model_store.list_versions(db=self._fleet.db, name=model.name)]

    def model(self, name: str, version: int | None = None) -> CloudModel:
        """The loaded ``version`` of ``name`` (its newest when None), loading it on first use.

        Without a version, a module of that name whose newest bundle runs an entry script answers instead, as
        :meth:`module` (its devices answer with the script's outputs, which the model alone lacks: a device
        without the module, or any client, gets the same outputs from the cloud).
        """
        if version is None:
            bundle = bundle_store.get_by_version(db=self._fleet.db, module=name)
            if bundle is not None and bundle["envelope"]["signed"].get("entry"):
                return self._cached((MODULE_KEY + name, bundle["version"]), lambda: self._load_module(bundle))
        record = self._fleet.registry.get_model_version(name=name, version=version)
        return self._cached((record["name"], record["version"]), lambda: self._load(record))

    def module(self, name: str, version: int) -> CloudModel:
        """Bundle ``version`` of module ``name``, loaded as an agent loads it, on first use."""
        bundle = bundle_store.get_by_version(db=self._fleet.db, module=name, version=version)
        if bundle is None:
            raise NotFoundError(f"module {name!r} has no bundle version {version}")
        return self._cached((MODULE_KEY + name, version), lambda: self._load_module(bundle))

    def _cached(self, key: tuple[str, int], load: Callable[[], CloudModel]) -> CloudModel:
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                cached = self._cache.get(key)
            if cached is None:
                cached = load()
            with self._lock:
                self._loading.pop(key, None)
                self._cache[key] = cached
                self._cache.move_to_end(key)
                dropped = [self._cache.popitem(last=False)[1] for _ in range(len(self._cache) - self.max_loaded)]
        for old in dropped:
            if old.module_dir is not None:  # its script and model are in memory: requests holding it finish
                shutil.rmtree(old.module_dir, ignore_errors=True)
        return cached

    @property
    def loaded(self) -> list[tuple[str, int]]:
        """Loaded versions, least recently used first."""
        with self._lock:
            return list(self._cache)

    def _load(self, record: dict) -> CloudModel:
        from edgefleet_runtime import accelerators
        from edgefleet_runtime.model_runners import OnnxModel, TfliteModel

        try:
            path = self._fleet.blobs.file(record["sha256"])  # a shared backend copies it here, digest checked
        except BlobNotFound:
            raise NotFoundError(f"the file of model {record['name']}:{record['version']} is missing from the "
                                "blob store") from None
        if record["runtime"] == "onnx":
            session, accelerator, notes = accelerators.create_onnx_session(path, self.profile)
            runner: Any = OnnxModel(session)
        else:
            interpreter, accelerator, notes = accelerators.create_tflite_interpreter(path, self.profile)
            runner = TfliteModel(interpreter)
        return CloudModel(record["name"], record["version"], record["runtime"], accelerator, record["inputs"],
                          record["outputs"], runner, list(notes))

    def _load_module(self, bundle: dict) -> CloudModel:
        from edgefleet_runtime.installed import ActiveRecord, version_dir_name
        from edgefleet_runtime.runtime import Runtime

        # The envelope comes from the database, the bytes from the chunk store: digests and sizes are checked.
        envelope, manifest, files = bundle_file.read_bundle(self._fleet.bundler.bundle_file_bytes(bundle["digest"]),
                                                            None)
        # A folder per load, removed with it: an eviction never pulls files from under a new load of the same bundle.
        self._modules_dir.mkdir(parents=True, exist_ok=True)
        prefix = f"{manifest.module}-{version_dir_name(manifest.version, manifest.digest)}-"
        target = Path(tempfile.mkdtemp(prefix=prefix, dir=self._modules_dir))
        try:
            for path, data in files.items():
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                (target / path).write_bytes(data)
            record = ActiveRecord(manifest.module, manifest.version, manifest.digest, target, envelope)
            loaded = Runtime(self.profile).load(record)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        specs = [{"name": n, "datatype": d, "shape": list(sh)} for n, d, sh in loaded.inputs]
        outs = [{"name": n, "datatype": d, "shape": list(sh)} for n, d, sh in loaded.outputs]
        return CloudModel(manifest.module, manifest.version, manifest.runtime, loaded.accelerator, specs, outs,
                          loaded, list(loaded.notes), check=loaded.checks_inputs, module_dir=target,
                          answers=loaded.answers)

