"""Cloud scoring: every registered model version, served for the Open Inference Protocol v2 routes.

:class:`CloudScoring` keeps a bounded LRU of loaded models (at most
``cloud_max_loaded_models``): a request for a version not loaded opens its
file from the blob store on the best accelerator of the server's firmware
profile (``cloud_profile``; the same chooser the agent uses, see
:mod:`edge_agent.accelerators`), and the least recently used version is
dropped when the cache is full. Requests already holding a dropped model
finish on it. Thread safe: the cache has one lock, and each version loads
at most once at a time (its own lock), so a burst of requests for a cold
model loads it once.

What it scores is the registered model itself (the raw ONNX or TFLite
file), never a module's entry script: the server does not run module code.
It does not speak HTTP (see :mod:`fleet_server.api.routes.inference`).

    CloudScoring.model(name, version) -> CloudModel    NotFoundError: unknown name or version
    CloudModel.score(request)          -> outputs       BadDataError: inputs the model refuses
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fleet_protocol import oip
from fleet_protocol.errors import BadDataError, MessageError
from fleet_protocol.profiles import FirmwareProfile

from . import registry
from .errors import NotFoundError
from .store import models as model_store

PLATFORMS = {"onnx": "onnxruntime_onnx", "tflite": "tensorflow_lite"}


@dataclass
class CloudModel:
    """One loaded model version: ``score(inputs)`` checks the inputs against the registry, then runs."""

    name: str
    version: int
    runtime: str
    accelerator: str
    inputs: list[dict]
    outputs: list[dict]
    runner: Any  # edge_agent.runtime.OnnxModel or TfliteModel
    notes: list[str] = field(default_factory=list)

    def metadata(self, versions: list[int]) -> dict:
        return {"name": self.name, "versions": [str(v) for v in versions], "platform": PLATFORMS[self.runtime],
                "inputs": self.inputs, "outputs": self.outputs, "parameters": {"accelerator": self.accelerator}}

    def score(self, inputs: dict[str, np.ndarray], wanted: list[str] | None = None) -> dict[str, np.ndarray]:
        check_inputs(self.name, self.inputs, inputs)
        try:
            outputs = self.runner.run(inputs)
        except BadDataError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime and LiteRT raise their own untyped errors
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise MessageError(f"{self.name} v{self.version} refused the request: {text}") from None
        if wanted is None:
            return outputs
        unknown = [n for n in wanted if n not in outputs]
        if unknown:
            raise MessageError(f"model {self.name!r} has no output {unknown[0]!r}")
        return {n: outputs[n] for n in wanted}


def check_inputs(model: str, specs: list[dict], inputs: dict[str, np.ndarray]) -> None:
    """Refuse, with the reason, inputs the model would refuse: unknown, missing, wrong datatype or shape."""
    by_name = {s["name"]: s for s in specs}
    for name, array in inputs.items():
        spec = by_name.get(name)
        if spec is None:
            raise MessageError(f"model {model!r} has no input {name!r} (inputs: {', '.join(by_name)})")
        got = oip.datatype_of(array)
        if got != spec["datatype"]:
            raise MessageError(f"input {name!r} must be {spec['datatype']}, got {got}")
        shape = spec["shape"]  # the leading (batch) dimension is left to the runtime: LiteRT resizes it
        if shape and (len(shape) != array.ndim or any(d not in (-1, g) for d, g in zip(shape[1:], array.shape[1:]))):
            raise MessageError(f"input {name!r} must have shape {shape}, got {list(array.shape)}")
    missing = [name for name in by_name if name not in inputs]
    if missing:
        raise MessageError(f"missing input {missing[0]!r}")


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

    def versions(self, name: str) -> list[int]:
        return [r["version"] for r in model_store.list_versions(db=self._fleet.db, name=name)]

    def model(self, name: str, version: int | None = None) -> CloudModel:
        """The loaded ``version`` of ``name`` (its newest when None), loading it on first use."""
        record = registry.get_model_version(self._fleet, name=name, version=version)
        key = (record["name"], record["version"])
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
                cached = self._load(record)
            with self._lock:
                self._loading.pop(key, None)
                self._cache[key] = cached
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_loaded:
                    self._cache.popitem(last=False)
        return cached

    @property
    def loaded(self) -> list[tuple[str, int]]:
        """Loaded versions, least recently used first."""
        with self._lock:
            return list(self._cache)

    def _load(self, record: dict) -> CloudModel:
        from edge_agent import accelerators
        from edge_agent.runtime import OnnxModel, TfliteModel

        path = self._fleet.blobs.path(record["sha256"])
        if not path.is_file():
            raise NotFoundError(f"the file of model {record['name']}:{record['version']} is missing from the "
                                "blob store")
        if record["runtime"] == "onnx":
            session, accelerator, notes = accelerators.create_onnx_session(path, self.profile)
            runner: Any = OnnxModel(session)
        else:
            interpreter, accelerator, notes = accelerators.create_tflite_interpreter(path, self.profile)
            runner = TfliteModel(interpreter)
        return CloudModel(record["name"], record["version"], record["runtime"], accelerator, record["inputs"],
                          record["outputs"], runner, list(notes))
