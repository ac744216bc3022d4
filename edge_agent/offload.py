"""What the local scoring API does besides scoring: cloud fallback, fallback statistics and data capture.

:class:`Offload` is used by :mod:`edge_agent.scoring_api` on the HTTP path
only; the in-process :meth:`Agent.infer` never goes through it, so local
scoring costs nothing extra there. Per request it

- asks the module's :class:`~edgefleet_runtime.fallback.FallbackPolicy` where to
  score (rows, body bytes, requests in flight, recent latency with a probe
  request now and then, a present accelerator that failed, the caller's
  ``parameters.prefer``);
- sends cloud-bound requests through :class:`~edge_agent.cloud_client.CloudClient`
  to the module's own bundle (``/v2/modules/{name}/versions/{v}``: the cloud
  runs the same entry script, so the answer has the same outputs and the
  module's name), or to the registered model ``fallback.target`` names; a
  model not installed here goes to the cloud under the requested name and
  version;
- after local scoring, re-scores the rows below ``fallback.confidence_below``
  with the bigger cloud model (:meth:`second_opinion`, joint inference, rows
  and marks as :mod:`edge_agent.joint` says); when the cloud cannot answer
  them, or they cannot be cut from the request, the local answer stands,
  marked low-confidence;
- counts every fallback by model, reason and outcome (a request with hard
  rows counts once under ``low_confidence``); :meth:`take_records`
  turns the counts into ``fallback`` telemetry records at each heartbeat,
  and :attr:`Offload.fallbacks_total` keeps them since start (the metrics);
- samples requests for capture (manifest ``config["capture"]``:
  ``{"fraction_percent": 10, "max_per_minute": 60, "max_bytes": 65536}``;
  percent because signed documents hold no floats) and writes them to the
  outbox as ``capture`` records (see :mod:`fleet_protocol.captures`). Every
  hard example is captured (its rows, the answer they got, ``reason:
  low_confidence``) within ``max_per_minute`` and ``max_bytes``, the
  defaults when the module has no ``capture`` section.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from edgefleet_runtime.answers import declared_output
from edgefleet_runtime.capture import CaptureSampler
from edgefleet_runtime.fallback import (BATCH_TOO_LARGE, LOCAL, LOW_CONFIDENCE, REQUEST_TOO_LARGE, Decision,
                                        FallbackPolicy, LatencyAverage)
from edgefleet_runtime.runtime import LoadedModule, ScoreResult
from fleet_protocol import captures, oip
from fleet_protocol.errors import MessageError, TransportError
from fleet_protocol.fields import is_ascii_decimal

from . import joint
from .cloud_client import CloudClient, CloudRefused
from .mqtt_link import RateLimitedLog
from .outbox import Outbox

log = logging.getLogger("edgefleet.agent.offload")


class CloudScoreResult(ScoreResult):
    """A :class:`ScoreResult` made from the cloud's OIP response (``scored_on`` is ``cloud``)."""

    __slots__ = ("scored_on", "fallback_reason")

    def __init__(self, response: dict):
        parameters = response.get("parameters") or {}
        version = str(response.get("model_version", ""))
        super().__init__(oip.decode_response(response), str(response.get("model_name", "")),
                         int(version) if is_ascii_decimal(version) else 0, str(parameters.get("accelerator", "")))
        self.scored_on = "cloud"
        self.fallback_reason = parameters.get("fallback_reason")


class JointScoreResult(ScoreResult):
    """A local :class:`ScoreResult` with its hard rows answered in the cloud; ``parameters`` says which."""

    __slots__ = ("scored_on", "parameters")

    def __init__(self, local: ScoreResult, outputs: dict[str, np.ndarray], parameters: dict):
        super().__init__(outputs, local.model_name, local.model_version, local.accelerator)
        self.scored_on = parameters["scored_on"]
        self.parameters = parameters


class Offload:
    def __init__(self, *, client: CloudClient | None, outbox: Outbox, overrides: Callable[[], dict] = dict):
        self.client = client
        self.outbox = outbox
        self._overrides = overrides  # desired state config["fallback"]: {module: {key: value}}
        self._lock = threading.Lock()
        self._policies: dict[tuple[str, str], tuple[FallbackPolicy, CaptureSampler | None]] = {}
        self._inflight: Counter[str] = Counter()
        self._latency: dict[str, LatencyAverage] = {}
        self._counts: Counter[tuple[str, str, str]] = Counter()  # (model, reason, outcome) since the last take
        self.fallbacks_total: Counter[tuple[str, str, str]] = Counter()  # the same, since start
        self._joint_log = RateLimitedLog(log)  # a misconfigured cloud model would warn on every request

    # --- deciding and sending -----------------------------------------------------------------------

    def run(self, name: str, version: int | None, module: LoadedModule | None, inputs: dict[str, np.ndarray], *,
            request_bytes: int, body: Callable[[], bytes], prefer: object = None) -> dict | None:
        """The cloud's OIP response when the policy sends this request there; None: score it here.

        Raises :class:`CloudRefused` (the cloud answered 4xx) or ``TransportError`` when the request
        cannot be scored here and the cloud cannot be reached (the message says why). When it could be
        scored here, an unreachable cloud just means None.
        """
        rows = max((a.shape[0] if a.ndim else 1 for a in inputs.values()), default=0)
        decision = self.decide(name, module, rows, request_bytes, prefer)
        if decision.where == LOCAL:
            return None
        target, target_version, is_module = self.cloud_target(name, version, module)
        try:
            response = self.client.infer(target, target_version, body(), module=is_module)
        except CloudRefused:
            self.count(name, decision.reason, "refused")
            raise
        except TransportError as exc:
            if module is None or decision.reason in (BATCH_TOO_LARGE, REQUEST_TOO_LARGE):
                self.count(name, decision.reason, "refused")
                raise TransportError(f"model {name!r}: this request must be scored in the cloud ({decision.reason}) "
                                     f"and cloud scoring is unavailable: {exc}", code=exc.code) from None
            self.count(name, decision.reason, "local")  # the cloud is down: score here after all
            return None
        self.count(name, decision.reason, "cloud")
        if not isinstance(response.get("parameters"), dict):
            response["parameters"] = {}
        response["parameters"]["fallback_reason"] = decision.reason
        sampler = self._sampled(module) if module is not None else None
        if sampler is not None:
            try:
                outputs = oip.decode_response(response)
            except MessageError:
                return response
            self._write_capture(module, sampler, "cloud", str(response["parameters"].get("accelerator", "")),
                                inputs, outputs)
        return response


    def decide(self, name: str, module: LoadedModule | None, rows: int, request_bytes: int,
               prefer: object) -> Decision:
        if module is None:
            return FallbackPolicy().decide(installed=False) if self.client is not None else Decision(LOCAL)
        if self.client is None:
            return Decision(LOCAL)
        policy, _ = self._policy(module)
        latency = self._latency.get(name)
        return policy.decide(installed=True, prefer=prefer if isinstance(prefer, str) else None, rows=rows,
                             request_bytes=request_bytes, inflight=self._inflight[name],
                             latency_ms=None if latency is None else latency.probe(policy.latency_slo_ms),
                             accelerator_failed=bool(module.accelerator_failed))

    def cloud_target(self, name: str, version: int | None,
                     module: LoadedModule | None) -> tuple[str, int | None, bool]:
        """``(name, version, is_module)`` to ask the cloud for: this module's bundle, or a registered model."""
        if module is None:
            return name, version, False
        policy, _ = self._policy(module)
        if policy.target:
            return policy.target, None, False
        return module.name, module.version, True

    def second_opinion(self, module: LoadedModule, inputs: dict[str, np.ndarray], scored: dict[str, np.ndarray],
                       returned: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
        """Joint inference: ``returned`` with its hard rows answered by the cloud model, and the parameters.

        ``scored`` holds every output of the local answer (the probability output is read there),
        ``returned`` those the caller asked for. Never fails the request: when the cloud cannot answer,
        the local rows stand and the parameters say ``low_confidence``.
        """
        policy, sampler = self._policy(module)
        if policy.confidence_below is None:
            return returned, {}
        declared = declared_output(module.manifest.config)  # a probability output: checked at build and load
        if declared is None:
            return returned, {}
        hard, rows = joint.hard_rows(scored, declared[0], policy.confidence_below)
        if not len(hard):
            return returned, {}
        answer, response, hard_inputs = returned, None, None
        try:
            hard_inputs = joint.take_rows(inputs, hard, rows)
            if self.client is not None:
                response = self.client.infer(policy.joint_model, None,
                                             json.dumps(oip.encode_request(hard_inputs)).encode())
                answer = joint.merge(returned, oip.decode_response(response), hard, rows)
        except (TransportError, CloudRefused, MessageError) as exc:  # counted below; a refusal is a mistake
            message = "%s: %d low-confidence rows keep their local answer: the cloud model %r did not answer them: %s"
            if isinstance(exc, TransportError):
                log.debug(message, module.name, len(hard), policy.joint_model, exc)
            else:
                self._joint_log.warning(module.name, message, module.name, len(hard), policy.joint_model, exc)
            answer, response = returned, None
        self.count(module.name, LOW_CONFIDENCE, "local" if response is None else "cloud")
        if sampler is not None and sampler.admit():
            self._capture_hard(module, sampler, response, inputs, hard_inputs, answer, hard, rows)
        return answer, joint.marks(rows=rows, hard=hard, answered=response is not None,
                                   cloud_model=str((response or {}).get("model_name", "")),
                                   cloud_version=str((response or {}).get("model_version", "")))

    def _capture_hard(self, module: LoadedModule, sampler: CaptureSampler, response: dict | None,
                      inputs: dict[str, np.ndarray], hard_inputs: dict[str, np.ndarray] | None,
                      answer: dict[str, np.ndarray], hard: np.ndarray, rows: int) -> None:
        """The hard rows and the answer they got; the whole request when its rows cannot be told apart."""
        if hard_inputs is not None:
            try:
                inputs, answer = hard_inputs, joint.take_rows(answer, hard, rows)
            except MessageError:
                pass  # an output without one row per row: the whole answer goes with the whole request
        parameters = (response or {}).get("parameters") or {}
        self._write_capture(module, sampler, "local" if response is None else "cloud",
                            str(parameters.get("accelerator", "")) if response else module.accelerator,
                            inputs, answer, reason=LOW_CONFIDENCE)

    def joint_result(self, module: LoadedModule, inputs: dict[str, np.ndarray], result: ScoreResult) -> ScoreResult:
        """:meth:`second_opinion` for the in-process :meth:`Agent.infer_with_fallback`."""
        outputs, marks = self.second_opinion(module, inputs, result.outputs, result.outputs)
        return JointScoreResult(result, outputs, marks) if marks else result

    # --- scoring bookkeeping ------------------------------------------------------------------------

    @contextmanager
    def local(self, name: str) -> Iterator[None]:
        """Count a local request in flight and feed its latency to the policy's average."""
        with self._lock:
            self._inflight[name] += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            with self._lock:
                self._inflight[name] -= 1
                self._latency.setdefault(name, LatencyAverage()).add(elapsed_ms)

    def count(self, model: str, reason: str, outcome: str) -> None:
        """outcome: ``cloud`` (scored there), ``local`` (cloud failed, scored here), ``refused`` (503)."""
        with self._lock:
            self._counts[(model, reason, outcome)] += 1
            self.fallbacks_total[(model, reason, outcome)] += 1

    def take_records(self) -> list[tuple[str, dict]]:
        """``fallback`` telemetry records for the counts since the last call."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        by_model: dict[str, dict] = {}
        for (model, reason, outcome), n in sorted(counts.items()):
            by_model.setdefault(model, {"model": model, "reasons": {}})["reasons"].setdefault(reason, {})[outcome] = n
        return [("fallback", record) for record in by_model.values()]

    # --- capture ------------------------------------------------------------------------------------

    def capture(self, module: LoadedModule, scored_on: str, accelerator: str, inputs: dict[str, np.ndarray],
                outputs: dict[str, np.ndarray]) -> None:
        sampler = self._sampled(module)
        if sampler is not None:
            self._write_capture(module, sampler, scored_on, accelerator, inputs, outputs)

    def _sampled(self, module: LoadedModule) -> CaptureSampler | None:
        """The module's sampler when this request is to be captured, else None."""
        _, sampler = self._policy(module)
        return sampler if sampler is not None and sampler.sample() else None

    def _write_capture(self, module: LoadedModule, sampler: CaptureSampler, scored_on: str, accelerator: str,
                       inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                       reason: str | None = None) -> None:
        try:
            data = captures.encode_capture(model=module.name, version=module.version, accelerator=accelerator,
                                           scored_on=scored_on, inputs=inputs, outputs=outputs, reason=reason)
        except MessageError:
            return  # an output the protocol cannot carry: nothing to capture
        if not sampler.fits(len(json.dumps(data))):
            return
        try:
            self.outbox.add(captures.KIND, data)
        except Exception:  # noqa: BLE001 - capture must never fail a request
            log.exception("cannot write a capture of %s to the outbox", module.name)

    def _policy(self, module: LoadedModule) -> tuple[FallbackPolicy, CaptureSampler | None]:
        override = (self._overrides() or {}).get(module.name)
        key = (module.digest, json.dumps(override, sort_keys=True))
        cached = self._policies.get(key)
        if cached is not None:
            return cached
        config = module.manifest.config
        try:
            policy = FallbackPolicy.from_configs(config, override)
        except MessageError as exc:  # the manifest's own policy was checked at load: the override is bad
            log.warning("%s v%s: the desired state's fallback override is refused, the module's policy "
                        "applies: %s", module.name, module.version, exc)
            policy = FallbackPolicy.from_configs(config)
        sampler = None
        if isinstance(config.get("capture"), dict):
            try:
                sampler = CaptureSampler(config["capture"])
            except MessageError as exc:
                log.warning("%s v%s: capture config ignored: %s", module.name, module.version, exc)
        if sampler is None and policy.confidence_below is not None:
            sampler = CaptureSampler({})  # hard examples only (fraction_percent 0), within the default bounds
        with self._lock:
            self._policies[key] = (policy, sampler)
        return policy, sampler
