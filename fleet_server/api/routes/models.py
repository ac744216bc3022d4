"""The model registry and what is done to its versions: ``/api/models/...``.

Registration and lookup (:mod:`fleet_server.registry`), the pipeline steps
(``from-sklearn``, ``optimize``, ``profile``: :mod:`fleet_server.pipeline`)
and a version's drift (:mod:`fleet_server.drift`). The pipeline routes need an
operator (or admin) token for any method: ``from-sklearn`` unpickles the
upload, and unpickling runs code, so only callers already trusted to change
the fleet may send one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ...audit import note
from ..deps import ConfigDep, DriftDep, PipelineDep, RegistryDep, require_operator
from ..schemas import ModelVersionPublic, ModelVersionUpdate
from ._params import drift_note, parse_json_form, parse_tag_filters, read_baseline, read_upload

router = APIRouter(prefix="/models")
_MODELS, _DRIFT = ["models"], ["drift"]  # the OpenAPI groups
_OPERATOR = [Depends(require_operator)]


class OptimizeResult(BaseModel):
    model: ModelVersionPublic
    report: dict


@router.post("/{name}", response_model=ModelVersionPublic, status_code=status.HTTP_201_CREATED, tags=_MODELS)
def register(registry: RegistryDep, config: ConfigDep, request: Request, name: str,
             file: Annotated[UploadFile, File(description="ONNX or TFLite model")],
             tags: Annotated[str | None, Form(description="JSON object of string to string")] = None,
             properties: Annotated[str | None, Form(description="JSON object")] = None,
             allow_duplicate: Annotated[bool, Form(description="Register even when this name already holds the "
                                                               "same bytes (409 otherwise)")] = False,
             baseline: Annotated[UploadFile | None, File(description="Drift baseline: .npy, .npz or .csv rows of the "
                                                                     "model's inputs")] = None) -> dict:
    """Register the next version of ``name``; the runtime, inputs and outputs are read from the file.

    The same bytes as an existing version of ``name`` are refused (409, naming it) unless ``allow_duplicate``;
    ``warnings`` names any existing copy. An ONNX classifier with a ZipMap output is refused (400).
    With a ``baseline``, the drift reference of every input column and output is computed and stored with the
    version (bundles built from it ship it); a baseline that does not fit registers nothing (400).
    """
    parsed_tags = parse_json_form(tags, what="tags", strings_only=True)
    parsed_properties = parse_json_form(properties, what="properties")
    data = read_upload(file, limit_bytes=config.max_upload_bytes)
    record = registry.register_model(name=name, data=data, tags=parsed_tags, properties=parsed_properties,
                                     allow_duplicate=allow_duplicate,
                                     baseline=read_baseline(baseline, limit_bytes=config.max_upload_bytes))
    note(request, version=record["version"], sha256=record["sha256"], **drift_note(record))
    return record


@router.get("", response_model=list[ModelVersionPublic], tags=_MODELS)
def search(registry: RegistryDep, name: str | None = None,
           q: Annotated[str | None, Query(description="Substring of the name")] = None,
           tag: Annotated[list[str] | None, Query(description="key=value, repeatable")] = None) -> list[dict]:
    """The newest version of each model name among the versions matching every filter."""
    return registry.search(name=name, q=q, tags=parse_tag_filters(tag))


@router.get("/{name}", response_model=list[ModelVersionPublic], tags=_MODELS)
def versions(registry: RegistryDep, name: str) -> list[dict]:
    return registry.versions(name)


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic, tags=_MODELS)
def get_version(registry: RegistryDep, name: str, version: int) -> dict:
    return registry.get_model_version(name=name, version=version)


@router.patch("/{name}/versions/{version}", response_model=ModelVersionPublic, tags=_MODELS)
def update_version(registry: RegistryDep, name: str, version: int, body: ModelVersionUpdate) -> dict:
    return registry.update_version(name=name, version=version, tags=body.tags, properties=body.properties)


@router.get("/{name}/versions/{version}/file", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}}, tags=_MODELS)
def download(registry: RegistryDep, name: str, version: int) -> Response:
    size, pieces, filename = registry.model_file(name=name, version=version)  # streamed: never all in memory
    return StreamingResponse(pieces, media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      **({"Content-Length": str(size)} if size is not None else {})})


@router.delete("/{name}/versions/{version}", status_code=status.HTTP_204_NO_CONTENT, tags=_MODELS)
def delete(registry: RegistryDep, name: str, version: int) -> Response:
    """Refused with 409 while a deployment uses a bundle built from this version."""
    registry.delete_model_version(name=name, version=version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/from-sklearn", response_model=ModelVersionPublic, status_code=status.HTTP_201_CREATED,
             dependencies=_OPERATOR, tags=_MODELS)
def register_sklearn(pipeline: PipelineDep, config: ConfigDep, request: Request, name: str,
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
    data = read_upload(file, limit_bytes=config.max_upload_bytes)
    record = pipeline.register_converted(name=name, data=data, tags=parsed_tags, properties=parsed_properties,
                                         allow_duplicate=allow_duplicate,
                                         baseline=read_baseline(baseline, limit_bytes=config.max_upload_bytes))
    note(request, version=record["version"], sha256=record["sha256"], **drift_note(record))
    return record


@router.post("/{name}/versions/{version}/optimize", response_model=OptimizeResult,
             status_code=status.HTTP_201_CREATED, dependencies=_OPERATOR, tags=_MODELS)
def optimize(pipeline: PipelineDep, config: ConfigDep, request: Request, name: str, version: int,
             level: Annotated[str, Form(description="basic (portable) or extended (CPU fusions)")] = "basic",
             quantize: Annotated[str | None, Form(description="int8")] = None,
             calibration: Annotated[UploadFile | None, File(description=".npy/.npz: static int8")] = None,
             sample: Annotated[UploadFile | None, File(description=".npy/.npz: compare outputs")] = None) -> dict:
    """A new version: graph-optimised, optionally int8-quantised; the report gives sizes and output changes."""
    limit = config.max_upload_bytes
    result = pipeline.optimize_version(
        name=name, version=version, level=level, quantize=quantize or None,
        calibration=read_upload(calibration, limit_bytes=limit) if calibration else None,
        sample=read_upload(sample, limit_bytes=limit) if sample else None)
    note(request, created_version=result["model"]["version"])
    return result


@router.post("/{name}/versions/{version}/profile", response_model=ModelVersionPublic, dependencies=_OPERATOR,
             tags=_MODELS)
def profile(pipeline: PipelineDep, config: ConfigDep, name: str, version: int,
            sample: Annotated[UploadFile, File(description=".npy/.npz: the input of one call")],
            runs: Annotated[int, Form(ge=1, le=10_000)] = 200) -> dict:
    """Latency p50/p95/p99, throughput and peak memory on each local provider, stored as ``properties.profile``."""
    data = read_upload(sample, limit_bytes=config.max_upload_bytes)
    return pipeline.profile_version(name=name, version=version, sample=data, runs=runs)


@router.get("/{name}/versions/{version}/drift", tags=_DRIFT)
def drift_report(registry: RegistryDep, drift: DriftDep, name: str, version: int,
                 by: Annotated[str | None, Query(description="Group by this device tag, or 'device'")] = None,
                 since: Annotated[str, Query(description="ISO time or span back (30m, 6h, 7d)")] = "24h",
                 bucket_s: Annotated[int, Query(ge=60, le=30 * 86400, description="Drift over time: bucket width")]
                 = 3600) -> dict:
    """PSI, Jensen–Shannon distance and KS per feature for each group, PSI per time bucket, and the alerts."""
    registry.get_model_version(name=name, version=version)
    return drift.report(model=name, version=version, by=by, since=since, bucket_s=bucket_s)


@router.get("/{name}/versions/{version}/drift/reference", tags=_DRIFT)
def drift_reference(drift: DriftDep, name: str, version: int) -> dict:
    """The stored reference: per feature its bin edges, baseline range and baseline counts."""
    return drift.stored_reference(name, version)
