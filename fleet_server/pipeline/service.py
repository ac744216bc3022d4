"""The registry side of the pipeline: each step reads a registered version and stores its result.

- :meth:`ModelPipeline.register_converted`: a pickled scikit-learn model becomes the next ONNX version of a name;
- :meth:`ModelPipeline.optimize_version`: an optimised / quantised copy becomes the next version of the same name,
  with ``optimized_from: "name:version"`` in its properties;
- :meth:`ModelPipeline.profile_version`: measurements stored in the version's ``profile`` property (integers only);
  a version without a drift reference gets one from a profile sample of at least
  :data:`fleet_protocol.drift.MIN_BASELINE_ROWS` rows.
"""

from __future__ import annotations

from fleet_protocol import drift
from fleet_protocol.errors import BadDataError
from fleet_protocol.timestamps import to_iso

from ..clock import utc_now
from ..drift.service import Drift
from ..drift.baseline import reference_from_arrays
from ..modelinfo import inspect_model
from ..registry import Registry, check_name
from ..store import BlobStore
from .convert import sklearn_to_onnx
from .optimize import compare, optimize_onnx
from .profiling import profile_onnx
from .samples import load_samples


class ModelPipeline:
    """Convert, optimise and profile registered versions; built by the fleet."""

    def __init__(self, *, registry: Registry, drift: Drift, blobs: BlobStore):
        self._registry = registry
        self._drift = drift
        self._blobs = blobs

    def register_converted(self, *, name: str, data: bytes, tags: dict[str, str], properties: dict,
                           allow_duplicate: bool = False, baseline: tuple[str, bytes] | None = None) -> dict:
        """Convert a pickled estimator (operator-only: unpickling runs code) and register the ONNX (``baseline``: as
        :meth:`fleet_server.registry.Registry.register_model`)."""
        check_name(name)
        onnx_bytes, estimator = sklearn_to_onnx(data)
        return self._registry.register_model(name=name, data=onnx_bytes, tags=tags,
                                             properties={**properties, "converted_from": f"sklearn:{estimator}"},
                                             allow_duplicate=allow_duplicate, baseline=baseline)

    def optimize_version(self, *, name: str, version: int, level: str, quantize: str | None,
                         calibration: bytes | None, sample: bytes | None) -> dict:
        """``{"model": the new version, "report": sizes, what was done and output changes on the sample}``."""
        record = self._onnx_version(name, version, "optimised")
        data = self._blobs.get(record["sha256"])
        calibration_arrays = load_samples(calibration, record["inputs"], what="calibration") if calibration else None
        sample_arrays = load_samples(sample, record["inputs"]) if sample else None
        optimized, done = optimize_onnx(data, level=level, quantize=quantize, calibration=calibration_arrays)
        report = {**done, **compare(data, optimized, sample_arrays)}
        properties = {k: v for k, v in record["properties"].items() if k != "profile"}
        properties.update(optimized_from=f"{name}:{version}", optimization=f"{level}" + (
            f"+{quantize}-{done['method']}" if done["method"] else ""))
        model = self._registry.insert_model_record(name=name, info=inspect_model(optimized),
                                                   sha256=self._blobs.put(optimized), size=len(optimized),
                                                   tags=record["tags"], properties=properties)
        return {"model": model, "report": report}

    def profile_version(self, *, name: str, version: int, sample: bytes, runs: int) -> dict:
        """Measure the version on every local provider and store the result as its ``profile`` property."""
        record = self._onnx_version(name, version, "profiled")
        samples = load_samples(sample, record["inputs"])
        data = self._blobs.get(record["sha256"])
        profile = {**profile_onnx(data, samples, runs=runs), "measured": to_iso(utc_now())}
        if self._drift.load_reference(name, version) is None and \
                min(len(a) for a in samples.values()) >= drift.MIN_BASELINE_ROWS:
            try:
                self._drift.set_reference(model=name, version=version, source="profile sample",
                                          reference=reference_from_arrays(data, record["runtime"], samples))
            except BadDataError:
                pass  # a sample that cannot be a drift reference (an image model) still profiles
        return self._registry.update_version(name=name, version=version, tags=None,
                                             properties={**record["properties"], "profile": profile})

    def _onnx_version(self, name: str, version: int, what: str) -> dict:
        record = self._registry.get_model_version(name=name, version=version)
        if record["runtime"] != "onnx":
            raise BadDataError(f"{name}:{version} is a {record['runtime']} model; only ONNX models can be {what}")
        return record
