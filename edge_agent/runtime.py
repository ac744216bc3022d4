"""Runtime host: load installed modules and serve them from one table.

:meth:`Runtime.load` turns an installed version into a :class:`LoadedModule`
without touching what is served: the model opens on the best accelerator of
the firmware profile (:mod:`edge_agent.accelerators`), the entry script is
imported from the installed directory under a unique module name, its
``init(context)`` runs once, and the manifest's sample request (if any) runs
through the module as a health check. Only then does :meth:`Runtime.activate`
put it in the serving table with a single dict assignment, so requests never
see a half-loaded module and never fail during a switch.

A manifest ``config`` key ``accelerators`` (a list of provider or delegate
names) overrides the firmware profile's order for that module.

The hot path (:meth:`LoadedModule.score`, used by ``Agent.infer`` and the
HTTP API) is a closure built at load time: no locks, logging or dict
building beyond the outputs dict; per-request statistics are a log2
latency histogram updated without a lock (a rare lost increment under
concurrent requests is accepted: they are statistics).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Callable

import numpy as np

from fleet_protocol import oip
from fleet_protocol.errors import BadDataError, EdgefleetError
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.profiles import FirmwareProfile

from .installer import ActiveRecord

log = logging.getLogger("edgefleet.agent.runtime")

PLATFORMS = {"onnx": "onnxruntime_onnx", "tflite": "tensorflow_lite"}
_ONNX_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
               "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
               "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL",
               "tensor(string)": "BYTES"}


class LoadError(EdgefleetError):
    code = "load_failed"
    category = "load"


class HealthCheckError(EdgefleetError):
    code = "health_check_failed"
    category = "health"


class InferenceError(BadDataError):
    """A request the model refused (wrong input name, shape or dtype)."""

    code = "bad_request"
    category = "message"


class ModelNotFound(EdgefleetError):
    code = "model_not_found"
    category = "message"


class ScoreResult:
    """Outputs of one prediction, with what produced them."""

    __slots__ = ("outputs", "model_name", "model_version", "accelerator")

    def __init__(self, outputs: dict[str, np.ndarray], model_name: str, model_version: int, accelerator: str):
        self.outputs = outputs
        self.model_name = model_name
        self.model_version = model_version
        self.accelerator = accelerator

    def __repr__(self) -> str:
        return (f"ScoreResult(model_name={self.model_name!r}, model_version={self.model_version}, "
                f"accelerator={self.accelerator!r}, outputs={list(self.outputs)})")


TensorSpec = tuple[str, str, list[int]]  # (name, OIP datatype, shape with -1 for dynamic dims)


class Stats:
    """Per-version request counters since the last report (log2 buckets of nanoseconds)."""

    __slots__ = ("buckets", "errors")

    def __init__(self) -> None:
        self.buckets = [0] * 64
        self.errors = [0]

    def take(self) -> tuple[list[int], int]:
        buckets, self.buckets = self.buckets, [0] * 64
        errors, self.errors = self.errors, [0]
        return buckets, errors[0]


class OnnxModel:
    """``run(feeds) -> {name: array}`` over an onnxruntime session."""

    def __init__(self, session: Any):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]
        self.inputs = [(i.name, _ONNX_TYPES.get(i.type, i.type), _shape(i.shape)) for i in session.get_inputs()]
        self.outputs = [(o.name, _ONNX_TYPES.get(o.type, o.type), _shape(o.shape)) for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds)))


class TfliteModel:
    """``run(feeds) -> {name: array}`` over a LiteRT interpreter (one call at a time: it is not thread safe)."""

    def __init__(self, interpreter: Any):
        self.interpreter = interpreter
        self._lock = threading.Lock()
        self._in = {d["name"]: d for d in interpreter.get_input_details()}
        self._out = [(d["name"], d["index"]) for d in interpreter.get_output_details()]
        self.inputs = [(d["name"], oip.datatype_of(np.empty(0, d["dtype"])), _tflite_shape(d))
                       for d in interpreter.get_input_details()]
        self.outputs = [(d["name"], oip.datatype_of(np.empty(0, d["dtype"])), _tflite_shape(d))
                        for d in interpreter.get_output_details()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self.interpreter
        with self._lock:
            resized = False
            for name, array in feeds.items():
                detail = self._in.get(name)
                if detail is None:
                    raise InferenceError(f"model has no input {name!r}")
                if tuple(detail["shape"]) != array.shape:
                    interp.resize_tensor_input(detail["index"], list(array.shape))
                    resized = True
            if resized:
                interp.allocate_tensors()
                self._in = {d["name"]: d for d in interp.get_input_details()}
            for name, array in feeds.items():
                interp.set_tensor(self._in[name]["index"], array)
            interp.invoke()
            return {name: interp.get_tensor(index).copy() for name, index in self._out}


@dataclass
class ModuleContext:
    """What a module's ``init(context)`` receives."""

    model: Any
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    module_dir: Path
    config: dict
    log: logging.Logger


class LoadedModule:
    """One loaded version of a module; ``score(inputs) -> ScoreResult`` is the hot path."""

    def __init__(self, record: ActiveRecord, manifest: BundleManifest, model: Any, accelerator: str,
                 notes: list[str], entry_run: Callable | None):
        self.name = record.name
        self.version = record.version
        self.digest = record.digest
        self.record = record
        self.manifest = manifest
        self.model = model
        self.accelerator = accelerator
        self.notes = notes
        self.platform = PLATFORMS[manifest.runtime]
        self.inputs: list[TensorSpec] = model.inputs
        self.outputs: list[TensorSpec] = model.outputs
        self.input_specs = {name: (datatype, shape) for name, datatype, shape in model.inputs}
        self.custom_run = entry_run is not None
        self.stats = Stats()
        self.score = self._build_score(entry_run)

    def _build_score(self, entry_run: Callable | None) -> Callable[[dict], ScoreResult]:
        stats, name, version, accelerator = self.stats, self.name, self.version, self.accelerator
        result = ScoreResult
        clock = perf_counter_ns
        if entry_run is None and isinstance(self.model, OnnxModel) and len(self.model.output_names) == 1:
            run, (only,) = self.model.session.run, self.model.output_names

            def score(inputs: dict) -> ScoreResult:  # the common case, without dict(zip(...))
                t0 = clock()
                try:
                    outs = run(None, inputs)
                except Exception as exc:
                    stats.errors[0] += 1
                    raise InferenceError(f"{name} v{version} refused the request: {_reason(exc)}") from exc
                stats.buckets[(clock() - t0).bit_length()] += 1
                return result({only: outs[0]}, name, version, accelerator)
        elif entry_run is None and isinstance(self.model, OnnxModel):
            run, names = self.model.session.run, self.model.output_names

            def score(inputs: dict) -> ScoreResult:
                t0 = clock()
                try:
                    outs = run(None, inputs)
                except Exception as exc:
                    stats.errors[0] += 1
                    raise InferenceError(f"{name} v{version} refused the request: {_reason(exc)}") from exc
                stats.buckets[(clock() - t0).bit_length()] += 1
                return result(dict(zip(names, outs)), name, version, accelerator)
        else:
            call = entry_run if entry_run is not None else self.model.run

            def score(inputs: dict) -> ScoreResult:
                t0 = clock()
                try:
                    outs = call(inputs)
                except Exception as exc:
                    stats.errors[0] += 1
                    if isinstance(exc, BadDataError):
                        raise
                    raise InferenceError(f"{name} v{version} refused the request: {_reason(exc)}") from exc
                stats.buckets[(clock() - t0).bit_length()] += 1
                return result(outs, name, version, accelerator)
        return score


class Runtime:
    """Loads modules and holds the serving table ``name -> LoadedModule``."""

    def __init__(self, profile: FirmwareProfile):
        self.profile = profile
        self.table: dict[str, LoadedModule] = {}
        self.scorers: dict[str, Callable[[dict], ScoreResult]] = {}  # name -> table[name].score, for Agent.infer
        self.retired: list[LoadedModule] = []  # replaced versions whose stats are not reported yet

    def load(self, record: ActiveRecord) -> LoadedModule:
        """Load ``record`` completely (model, entry script, init, health check); serve nothing yet."""
        try:
            manifest = BundleManifest.from_dict(record.signed)
        except (BadDataError, KeyError, TypeError) as exc:
            raise LoadError(f"installed manifest of {record.name} is unreadable: {exc}") from None
        model_path = record.dir / manifest.model
        override = manifest.config.get("accelerators")
        if override is not None and not (isinstance(override, list) and all(isinstance(v, str) for v in override)):
            override = None
        try:
            model, accelerator, notes = self._open_model(manifest.runtime, model_path, override)
        except EdgefleetError as exc:
            raise LoadError(f"{record.name} v{record.version}: {exc}", code=exc.code) from None
        except Exception as exc:  # noqa: BLE001 - a runtime's native errors have no common base
            raise LoadError(f"{record.name} v{record.version}: cannot load {manifest.model}: {_reason(exc)}") from None
        entry_run = None
        if manifest.entry:
            entry_run = self._load_entry(record, manifest, model)
        loaded = LoadedModule(record, manifest, model, accelerator, list(notes), entry_run)
        if manifest.sample:
            self._health_check(loaded)
            loaded.stats.take()  # the health check is not a request
        return loaded

    def activate(self, loaded: LoadedModule) -> None:
        old = self.table.get(loaded.name)
        self.table[loaded.name] = loaded  # the switch: one assignment per table, each consistent alone
        self.scorers[loaded.name] = loaded.score
        if old is not None and old is not loaded:
            self.retired.append(old)

    def unload(self, name: str) -> None:
        self.scorers.pop(name, None)
        old = self.table.pop(name, None)
        if old is not None:
            self.retired.append(old)

    def _open_model(self, runtime: str, model_path: Path, override: list[str] | None) -> tuple[Any, str, list[str]]:
        from . import accelerators

        if model_path.stat().st_size > self.profile.max_model_bytes:
            raise LoadError(f"{model_path.name} is larger than the {self.profile.max_model_bytes} bytes "
                            f"firmware profile {self.profile.name} allows", code="model_too_large",
                            category="resources")
        if runtime == "onnx":
            session, accelerator, notes = accelerators.create_onnx_session(model_path, self.profile, override)
            return OnnxModel(session), accelerator, notes
        interpreter, accelerator, notes = accelerators.create_tflite_interpreter(model_path, self.profile, override)
        return TfliteModel(interpreter), accelerator, notes

    def _load_entry(self, record: ActiveRecord, manifest: BundleManifest, model: Any) -> Callable | None:
        path = record.dir / manifest.entry
        safe_name = record.name.replace("-", "_").replace(".", "_")
        unique = f"edgefleet_module_{safe_name}_v{record.version}_{record.digest[:12]}"
        module_log = logging.getLogger(f"edgefleet.module.{record.name}")
        try:
            spec = importlib.util.spec_from_file_location(unique, path)
            if spec is None or spec.loader is None:
                raise LoadError(f"{manifest.entry} is not an importable Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            spec.loader.exec_module(module)
            init = getattr(module, "init", None)
            if callable(init):
                init(ModuleContext(model, model.inputs, model.outputs, record.dir, dict(manifest.config), module_log))
        except LoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - module code can raise anything
            raise LoadError(f"{record.name} v{record.version}: entry script {manifest.entry} failed: "
                            f"{type(exc).__name__}: {_reason(exc)}") from None
        finally:
            # Registered only while it executes (for code that looks itself up); its functions keep it alive,
            # so replaced versions do not pile up in sys.modules.
            sys.modules.pop(unique, None)
        run = getattr(module, "run", None)
        return run if callable(run) else None

    def _health_check(self, loaded: LoadedModule) -> None:
        path = loaded.record.dir / loaded.manifest.sample
        try:
            request = oip.decode_request(json.loads(path.read_text()))
            outputs = loaded.score(request.inputs).outputs
            if not isinstance(outputs, dict) or not outputs:
                raise ValueError("the module returned no outputs")
            for array in outputs.values():
                np.asarray(array)
        except Exception as exc:  # noqa: BLE001
            raise HealthCheckError(f"{loaded.name} v{loaded.version} failed its health check on "
                                   f"{loaded.manifest.sample}: {_reason(exc)}") from None


def _shape(dims: list) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in (dims or [])]


def _tflite_shape(detail: dict) -> list[int]:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    return [int(d) for d in dims]


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
