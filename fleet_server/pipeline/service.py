"""The registry side of the pipeline: each step reads a registered version and stores its result.

- :func:`register_converted`: a pickled scikit-learn model becomes the next ONNX version of a name;
- :func:`optimize_version`: an optimised / quantised copy becomes the next version of the same name,
  with ``optimized_from: "name:version"`` in its properties;
- :func:`profile_version`: measurements stored in the version's ``profile`` property (integers only);
  a version without a drift reference gets one from a profile sample of at least
  :data:`fleet_protocol.drift.MIN_BASELINE_ROWS` rows.
"""

from __future__ import annotations

from fleet_protocol import drift
from fleet_protocol.errors import BadDataError
from fleet_protocol.timestamps import to_iso

from .. import registry
from ..clock import utc_now
from ..drift import service as drift_service
from ..drift.baseline import reference_from_arrays
from ..modelinfo import inspect_model
from ..store import models as model_store
from .convert import sklearn_to_onnx
from .optimize import compare, optimize_onnx
from .profiling import profile_onnx
from .samples import load_samples


def register_converted(fleet, *, name: str, data: bytes, tags: dict[str, str], properties: dict,
                       allow_duplicate: bool = False, baseline: tuple[str, bytes] | None = None) -> dict:
    """Convert a pickled estimator (operator-only: unpickling runs code) and register the ONNX (``baseline``: as
    :func:`fleet_server.registry.register_model`)."""
    registry.check_name(name)
    onnx_bytes, estimator = sklearn_to_onnx(data)
    return registry.register_model(fleet, name=name, data=onnx_bytes, tags=tags,
                                   properties={**properties, "converted_from": f"sklearn:{estimator}"},
                                   allow_duplicate=allow_duplicate, baseline=baseline)


def optimize_version(fleet, *, name: str, version: int, level: str, quantize: str | None,
                     calibration: bytes | None, sample: bytes | None) -> dict:
    """``{"model": the new version, "report": sizes, what was done and output changes on the sample}``."""
    record = _onnx_version(fleet, name, version, "optimised")
    data = fleet.blobs.get(record["sha256"])
    calibration_arrays = load_samples(calibration, record["inputs"], what="calibration") if calibration else None
    sample_arrays = load_samples(sample, record["inputs"]) if sample else None
    optimized, done = optimize_onnx(data, level=level, quantize=quantize, calibration=calibration_arrays)
    report = {**done, **compare(data, optimized, sample_arrays)}
    properties = {k: v for k, v in record["properties"].items() if k != "profile"}
    properties.update(optimized_from=f"{name}:{version}", optimization=f"{level}" + (
        f"+{quantize}-{done['method']}" if done["method"] else ""))
    model = registry.insert_model_record(fleet, name=name, info=inspect_model(optimized),
                                         sha256=fleet.blobs.put(optimized), size=len(optimized),
                                         tags=record["tags"], properties=properties)
    return {"model": model, "report": report}


def profile_version(fleet, *, name: str, version: int, sample: bytes, runs: int) -> dict:
    """Measure the version on every local provider and store the result as its ``profile`` property."""
    record = _onnx_version(fleet, name, version, "profiled")
    samples = load_samples(sample, record["inputs"])
    data = fleet.blobs.get(record["sha256"])
    profile = {**profile_onnx(data, samples, runs=runs), "measured": to_iso(utc_now())}
    if drift_service.load_reference(fleet, name, version) is None and \
            min(len(a) for a in samples.values()) >= drift.MIN_BASELINE_ROWS:
        try:
            drift_service.set_reference(fleet, model=name, version=version, source="profile sample",
                                        reference=reference_from_arrays(data, record["runtime"], samples))
        except BadDataError:
            pass  # a sample that cannot be a drift reference (an image model) still profiles
    return model_store.update_version(db=fleet.db, name=name, version=version,
                                      properties={**record["properties"], "profile": profile})


def _onnx_version(fleet, name: str, version: int, what: str) -> dict:
    record = registry.get_model_version(fleet, name=name, version=version)
    if record["runtime"] != "onnx":
        raise BadDataError(f"{name}:{version} is a {record['runtime']} model; only ONNX models can be {what}")
    return record
