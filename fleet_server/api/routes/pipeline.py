"""The model pipeline: ``/api/models/{name}/from-sklearn``, ``…/versions/{v}/optimize`` and ``…/profile``.

Every route here needs an operator (or admin) token for any method (``require_operator`` on the
router in :mod:`..app`). That
matters most for ``from-sklearn``: it unpickles the upload, and unpickling
runs code, so only callers already trusted to change the fleet may send one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from pydantic import BaseModel

from ...audit import note
from ...pipeline import service
from ..deps import FleetDep
from ..schemas import ModelVersionPublic
from ._params import drift_note, parse_json_form, read_baseline, read_upload

router = APIRouter(prefix="/models", tags=["models"])


class OptimizeResult(BaseModel):
    model: ModelVersionPublic
    report: dict


@router.post("/{name}/from-sklearn", response_model=ModelVersionPublic, status_code=status.HTTP_201_CREATED)
def register_sklearn(fleet: FleetDep, request: Request, name: str,
                     file: Annotated[UploadFile, File(description="A pickled, fitted scikit-learn estimator")],
                     tags: Annotated[str | None, Form(description="JSON object of string to string")] = None,
                     properties: Annotated[str | None, Form(description="JSON object")] = None,
                     allow_duplicate: Annotated[bool, Form(description="Register even when this name already "
                                                                       "holds the same ONNX bytes")] = False,
                     baseline: Annotated[UploadFile | None, File(description="Drift baseline: .npy, .npz or .csv rows "
                                                                             "of the model's inputs")] = None) -> dict:
    """Convert a pickled scikit-learn model to ONNX (skl2onnx, ZipMap off) and register it as the next version
    (with a drift reference from ``baseline``, as ``POST /api/models/{name}``).

    Unpickling runs code: this needs an operator or admin token.
    """
    parsed_tags = parse_json_form(tags, what="tags", strings_only=True)
    parsed_properties = parse_json_form(properties, what="properties")
    data = read_upload(file, limit_bytes=fleet.config.max_upload_bytes)
    record = service.register_converted(fleet, name=name, data=data, tags=parsed_tags,
                                        properties=parsed_properties, allow_duplicate=allow_duplicate,
                                        baseline=read_baseline(fleet, baseline))
    note(request, version=record["version"], sha256=record["sha256"], **drift_note(record))
    return record


@router.post("/{name}/versions/{version}/optimize", response_model=OptimizeResult,
             status_code=status.HTTP_201_CREATED)
def optimize(fleet: FleetDep, request: Request, name: str, version: int,
             level: Annotated[str, Form(description="basic (portable) or extended (CPU fusions)")] = "basic",
             quantize: Annotated[str | None, Form(description="int8")] = None,
             calibration: Annotated[UploadFile | None, File(description=".npy/.npz: static int8")] = None,
             sample: Annotated[UploadFile | None, File(description=".npy/.npz: compare outputs")] = None) -> dict:
    """A new version: graph-optimised, optionally int8-quantised; the report gives sizes and output changes."""
    limit = fleet.config.max_upload_bytes
    result = service.optimize_version(
        fleet, name=name, version=version, level=level, quantize=quantize or None,
        calibration=read_upload(calibration, limit_bytes=limit) if calibration else None,
        sample=read_upload(sample, limit_bytes=limit) if sample else None)
    note(request, created_version=result["model"]["version"])
    return result


@router.post("/{name}/versions/{version}/profile", response_model=ModelVersionPublic)
def profile(fleet: FleetDep, name: str, version: int,
            sample: Annotated[UploadFile, File(description=".npy/.npz: the input of one call")],
            runs: Annotated[int, Form(ge=1, le=10_000)] = 200) -> dict:
    """Latency p50/p95/p99, throughput and peak memory on each local provider, stored as ``properties.profile``."""
    data = read_upload(sample, limit_bytes=fleet.config.max_upload_bytes)
    return service.profile_version(fleet, name=name, version=version, sample=data, runs=runs)
