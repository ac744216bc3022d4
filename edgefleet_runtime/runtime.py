"""Runtime host: load installed modules and serve them from one table.

:meth:`Runtime.load` turns an installed version into a :class:`LoadedModule`
without touching what is served: the model opens on the best accelerator of
the firmware profile (:mod:`edgefleet_runtime.accelerators`), the entry script is
imported from the installed directory under a unique module name, its
``init(context)`` runs once, and the manifest's sample request (if any) runs
through the module as a health check (an entry script's answer must be the
manifest's signature, when it has one), with the manifest's health policy
(latency budget, the entry script's ``health_check(context)``, a window to
pass in: :mod:`edgefleet_runtime.health`). Only then does :meth:`Runtime.activate`
put it in the serving table with a single dict assignment, so requests never
see a half-loaded module and never fail during a switch.

A manifest ``config`` key ``accelerators`` (a list of provider or delegate
names) overrides the firmware profile's order for that module.

The hot path (:meth:`LoadedModule.score`, used by ``Agent.infer`` and the
HTTP API) is a closure built at load time: no locks, logging or dict
building beyond the outputs dict; per-request statistics are a latency
sketch (:mod:`fleet_protocol.sketch`, 1 % relative error) updated without a
lock (a rare lost increment under concurrent requests is accepted: they are
statistics, :mod:`edgefleet_runtime.request_stats`). Under an A/B split, answers
by class are counted as :mod:`edgefleet_runtime.answers` says. Not here: the
wrappers that run an onnxruntime session or a LiteRT interpreter
(:mod:`edgefleet_runtime.model_runners`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import logging
import sys
from dataclasses import dataclass
from math import ceil
from math import log as ln
from pathlib import Path
from time import perf_counter_ns
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from fleet_protocol import oip, sketch
from fleet_protocol.errors import BadDataError, EdgefleetError, MessageError
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.profiles import FirmwareProfile

from .answers import AnswerCounts, declared_class_names
from .drift import DriftCounter, counter_for
from .fallback import FallbackPolicy
from .health import CrashWatch, HealthCheckError, HealthPolicy, check_latency, gate
from .inputs import ModuleError, TensorSpec, failure_of
from .installed import ActiveRecord
from .model_runners import OnnxModel, TfliteModel
from .module_config import check_answer_output
from .request_stats import Stats

log = logging.getLogger("edgefleet.runtime")

PLATFORMS = {"onnx": "onnxruntime_onnx", "tflite": "tensorflow_lite"}


class LoadError(EdgefleetError):
    code = "load_failed"
    category = "load"


class ModelNotFound(EdgefleetError):
    code = "model_not_found"
    category = "message"


class ScoreResult:
    """Outputs of one prediction, with what produced them."""

    __slots__ = ("outputs", "model_name", "model_version", "accelerator")
    scored_on = "local"  # a class attribute, so the hot path pays nothing (the cloud's results set "cloud")
    parameters: Mapping[str, Any] = MappingProxyType({})  # joint inference's marks, when some rows were hard

    def __init__(self, outputs: dict[str, np.ndarray], model_name: str, model_version: int, accelerator: str):
        self.outputs = outputs
        self.model_name = model_name
        self.model_version = model_version
        self.accelerator = accelerator

    def __repr__(self) -> str:
        return (f"ScoreResult(model_name={self.model_name!r}, model_version={self.model_version}, "
                f"accelerator={self.accelerator!r}, outputs={list(self.outputs)})")


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
                 notes: list[str], entry_run: Callable | None, policy: HealthPolicy = HealthPolicy(),
                 health_check: Callable | None = None, context: "ModuleContext | None" = None):
        self.name = record.name
        self.version = record.version
        self.digest = record.digest
        self.record = record
        self.manifest = manifest
        self.model = model
        self.accelerator = accelerator
        self.notes = notes
        self.platform = PLATFORMS[manifest.runtime]
        signature = manifest.signature  # what callers see; a bundle without one is described by its model
        self.inputs: list[TensorSpec] = model.inputs if signature is None else signature.input_specs()
        self.outputs: list[TensorSpec] = model.outputs if signature is None else signature.output_specs()
        self.input_specs = {name: (datatype, shape) for name, datatype, shape in self.inputs}
        self.custom_run = entry_run is not None
        self.checks_inputs = signature is not None or not self.custom_run  # an undeclared script takes anything
        self.accelerator_failed: list[str] = []  # accelerators present here, wanted first, that failed to load it
        self.stats = Stats()
        self.policy = policy
        self.health_check = health_check
        self.context = context
        self.health_attempts = 0
        self.crashes = CrashWatch(policy.crash_limit)  # the reconciler sets on_loop when it serves this version
        self.primary = self  # with an A/B split, table[name] is a copy of the main version whose score splits
        self.variants: dict[int, LoadedModule] = {}  # the other versions of an A/B split, by version
        self.answers = AnswerCounts()  # answers by class, counted only under an A/B split
        self.drift: DriftCounter | None = None  # histograms over the bundle's drift reference, if it ships one
        self.score = self._build_score(entry_run)
        # The same model call as score, counted nowhere (no stats, crash streak or drift): the health checks' path
        self.run_uncounted: Callable[[dict], dict] = entry_run if entry_run is not None else model.run

    def _build_score(self, entry_run: Callable | None) -> Callable[[dict], ScoreResult]:
        stats, name, version, accelerator = self.stats, self.name, self.version, self.accelerator
        failure = failure_of(f"{name} v{version}", self.inputs, any_batch=not self.checks_inputs)
        result = ScoreResult
        clock = perf_counter_ns
        inv = sketch.INV_LOG_GAMMA  # the sketch key of a duration, inline: ceil(ln(ns) * inv)
        if entry_run is None and isinstance(self.model, OnnxModel) and len(self.model.output_names) == 1:
            run, (only,) = self.model.session.run, self.model.output_names

            def score(inputs: dict) -> ScoreResult:  # the common case, without dict(zip(...))
                t0 = clock()
                try:
                    outs = run(None, inputs)
                except Exception as exc:
                    stats.errors[0] += 1
                    raise failure(exc, inputs) from exc
                stats.buckets[ceil(ln(clock() - t0 or 1) * inv)] += 1
                return result({only: outs[0]}, name, version, accelerator)
        elif entry_run is None and isinstance(self.model, OnnxModel):
            run, names = self.model.session.run, self.model.output_names

            def score(inputs: dict) -> ScoreResult:
                t0 = clock()
                try:
                    outs = run(None, inputs)
                except Exception as exc:
                    stats.errors[0] += 1
                    raise failure(exc, inputs) from exc
                stats.buckets[ceil(ln(clock() - t0 or 1) * inv)] += 1
                return result(dict(zip(names, outs)), name, version, accelerator)
        else:
            call = entry_run if entry_run is not None else self.model.run
            crashes = self.crashes

            def score(inputs: dict) -> ScoreResult:
                t0 = clock()
                try:
                    outs = call(inputs)
                except Exception as exc:
                    stats.errors[0] += 1
                    error = failure(exc, inputs)
                    if entry_run is not None and isinstance(error, ModuleError):
                        crashes.crashed()  # the module's own code failed: counts toward a crash loop
                    raise error from exc
                crashes.streak = 0
                stats.buckets[ceil(ln(clock() - t0 or 1) * inv)] += 1
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
        policy = HealthPolicy.from_config(manifest.config)
        try:
            FallbackPolicy.from_configs(manifest.config)
        except MessageError as exc:  # refused, never ignored: the module would otherwise run without its policy
            raise LoadError(f"{record.name} v{record.version}: {exc}", code="bad_fallback_policy") from None
        try:  # refused, never ignored: the A/B comparison would otherwise count some other output
            declared = check_answer_output(manifest.config, [name for name, _, _ in model.outputs],
                                           has_entry=bool(manifest.entry))
        except BadDataError as exc:
            raise LoadError(f"{record.name} v{record.version}: {exc}", code="bad_module_config") from None
        entry_run = health_check = context = None
        if manifest.entry:
            entry_run, health_check, context = self._load_entry(record, manifest, model)
        loaded = LoadedModule(record, manifest, model, accelerator, list(notes), entry_run, policy, health_check,
                              context)
        loaded.accelerator_failed = list(getattr(notes, "failed", ()))
        loaded.answers = AnswerCounts(declared, declared_class_names(manifest.config))
        if manifest.sample or health_check is not None:
            loaded.health_attempts = gate(lambda: self._health_check(loaded), policy)
        if manifest.drift_reference:
            tensors = {name for name, _, _ in model.inputs + model.outputs}
            try:
                loaded.drift = counter_for(record.dir / manifest.drift_reference, tensors,
                                           manifest.model_ref or f"{record.name}:{record.version}")
            except BadDataError as exc:
                raise LoadError(f"{record.name} v{record.version}: {exc}", code="bad_drift_reference") from None
            loaded.score = loaded.drift.wrap(loaded.score)
        return loaded

    def activate(self, loaded: LoadedModule) -> None:
        old = self.table.get(loaded.name)
        self.table[loaded.name] = loaded  # the switch: one assignment per table, each consistent alone
        self.scorers[loaded.name] = loaded.score
        if old is not None and old is not loaded:
            self.retired.append(old)

    def set_split(self, name: str, main_weight: int | None, variants: list[tuple[LoadedModule, int]]) -> None:
        """Serve ``name`` as an A/B split of its main version and ``variants`` by weight; no variants: main alone.

        Every version stays addressable by number; the unversioned name picks
        one at random by weight. Only split modules pay for the choice.
        """
        current = self.table.get(name)
        if current is None:
            return
        main = current.primary
        if not variants:
            if current is not main:
                self.table[name] = main
                self.scorers[name] = main.score
            return
        split = copy.copy(main)
        split.variants = {loaded.version: loaded for loaded, _ in variants}
        split.score = _split_score([(main, main_weight or 0)] + variants)
        self.table[name] = split
        self.scorers[name] = split.score

    def variant_of(self, name: str, digest: str) -> LoadedModule | None:
        current = self.table.get(name)
        return next((v for v in current.variants.values() if v.digest == digest), None) if current else None

    def unload(self, name: str) -> None:
        self.scorers.pop(name, None)
        old = self.table.pop(name, None)
        if old is not None:
            self.retired.append(old)

    def check_health(self, name: str) -> tuple[LoadedModule, bool]:
        """Run the served main version's health check once, no retries (the ``health_check`` job): the loaded
        version and whether it declares a check at all; :class:`HealthCheckError` when it fails. Like the check
        at load, it is neither a request nor a crash (a diagnostic must never start a crash loop)."""
        served = self.table.get(name)
        if served is None:
            raise ModelNotFound(f"module {name!r} is not running on this device", code="module_not_running",
                                category="job")
        loaded = served.primary
        declared = bool(loaded.manifest.sample) or loaded.health_check is not None
        if declared:
            self._health_check(loaded)
        return loaded, declared

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

    def _load_entry(self, record: ActiveRecord, manifest: BundleManifest,
                    model: Any) -> tuple[Callable | None, Callable | None, ModuleContext]:
        """Import the entry script and run its ``init``; return its ``run``, ``health_check`` and context."""
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
            context = ModuleContext(model, model.inputs, model.outputs, record.dir, dict(manifest.config), module_log)
            init = getattr(module, "init", None)
            if callable(init):
                init(context)
        except LoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - module code can raise anything
            raise LoadError(f"{record.name} v{record.version}: entry script {manifest.entry} failed: "
                            f"{type(exc).__name__}: {_reason(exc)}") from None
        finally:
            # Registered only while it executes (for code that looks itself up); its functions keep it alive,
            # so replaced versions do not pile up in sys.modules.
            sys.modules.pop(unique, None)
        run, check = getattr(module, "run", None), getattr(module, "health_check", None)
        return (run if callable(run) else None), (check if callable(check) else None), context

    def _health_check(self, loaded: LoadedModule) -> None:
        """One check: the sample scores (within the latency budget), then the module's ``health_check`` passes.

        The sample goes through :attr:`LoadedModule.run_uncounted`, so it shows in no request statistics, drift
        histogram or crash streak: counting it would make a failing check look like a crashing request.
        """
        what = f"{loaded.name} v{loaded.version}"
        if loaded.manifest.sample:
            path = loaded.record.dir / loaded.manifest.sample
            try:
                request = oip.decode_request(json.loads(path.read_text()))
                t0 = perf_counter_ns()
                outputs = loaded.run_uncounted(request.inputs)
                elapsed_ns = perf_counter_ns() - t0
                if not isinstance(outputs, dict) or not outputs:
                    raise ValueError("the module returned no outputs")
                for array in outputs.values():
                    np.asarray(array)
                signature = loaded.manifest.signature if loaded.custom_run else None  # a model keeps its own
                problem = signature and signature.output_problem(outputs)
                if problem:  # an entry script answers with what its module declares, or is not served
                    raise ValueError(f"the answer is not the module's signature: {problem}")
            except Exception as exc:  # noqa: BLE001
                raise HealthCheckError(f"{what} failed its health check on {loaded.manifest.sample}: "
                                       f"{type(exc).__name__}: {_reason(exc)}") from None
            check_latency(loaded.policy, elapsed_ns, what)
        if loaded.health_check is not None:
            try:
                healthy = loaded.health_check(loaded.context)
            except Exception as exc:  # noqa: BLE001 - module code can raise anything
                raise HealthCheckError(f"{what}: health_check raised {type(exc).__name__}: {_reason(exc)}") from None
            if healthy is False:
                raise HealthCheckError(f"{what}: health_check reported the module unhealthy")


def _split_score(entries: list[tuple[LoadedModule, int]]) -> Callable[[dict], ScoreResult]:
    """A score function that sends each request to one version, at random in proportion to its weight."""
    total = sum(weight for _, weight in entries) or 1
    choices, cumulative = [], 0
    for loaded, weight in entries:
        cumulative += weight
        choices.append((cumulative / total, loaded.score, loaded.answers.add))
    pick = random.random

    def score(inputs: dict) -> ScoreResult:
        r = pick()
        for limit, chosen, count in choices:
            if r < limit:
                break
        result = chosen(inputs)
        count(result.outputs)
        return result

    return score


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
