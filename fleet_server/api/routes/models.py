"""The model registry: ``/api/models``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from ... import registry
from ...audit import note
from ...errors import NotFoundError
from ...store import models as model_store
from ...store.blobs import BlobNotFound
from ..deps import FleetDep
from ..schemas import ModelVersionPublic, ModelVersionUpdate
from ._params import drift_note, parse_json_form, parse_tag_filters, read_baseline, read_upload

router = APIRouter(prefix="/models", tags=["models"])


@router.post("/{name}", response_model=ModelVersionPublic, status_code=status.HTTP_201_CREATED)
def register(fleet: FleetDep, request: Request, name: str,
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
    data = read_upload(file, limit_bytes=fleet.config.max_upload_bytes)
    record = registry.register_model(fleet, name=name, data=data, tags=parsed_tags, properties=parsed_properties,
                                     allow_duplicate=allow_duplicate, baseline=read_baseline(fleet, baseline))
    note(request, version=record["version"], sha256=record["sha256"], **drift_note(record))
    return record


@router.get("", response_model=list[ModelVersionPublic])
def search(fleet: FleetDep, name: str | None = None,
           q: Annotated[str | None, Query(description="Substring of the name")] = None,
           tag: Annotated[list[str] | None, Query(description="key=value, repeatable")] = None) -> list[dict]:
    """The newest version of each model name among the versions matching every filter."""
    return model_store.search_latest(db=fleet.db, name=name, q=q, tags=parse_tag_filters(tag))


@router.get("/{name}", response_model=list[ModelVersionPublic])
def versions(fleet: FleetDep, name: str) -> list[dict]:
    records = model_store.list_versions(db=fleet.db, name=name)
    if not records:
        raise NotFoundError(f"there is no model named {name!r}")
    return records


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic)
def get_version(fleet: FleetDep, name: str, version: int) -> dict:
    return registry.get_model_version(fleet, name=name, version=version)


@router.patch("/{name}/versions/{version}", response_model=ModelVersionPublic)
def update_version(fleet: FleetDep, name: str, version: int, body: ModelVersionUpdate) -> dict:
    registry.get_model_version(fleet, name=name, version=version)
    return model_store.update_version(db=fleet.db, name=name, version=version, tags=body.tags,
                                      properties=body.properties)


@router.get("/{name}/versions/{version}/file", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def download(fleet: FleetDep, name: str, version: int) -> Response:
    record = registry.get_model_version(fleet, name=name, version=version)
    extension = "onnx" if record["runtime"] == "onnx" else "tflite"
    try:  # streamed: a large model is never all in memory
        size, pieces = fleet.blobs.size(record["sha256"]), fleet.blobs.iter_bytes(record["sha256"])
    except BlobNotFound:
        raise NotFoundError(f"the file of model {name}:{version} is missing from the blob store") from None
    return StreamingResponse(pieces, media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{name}-{version}.{extension}"',
                                      **({"Content-Length": str(size)} if size is not None else {})})


@router.delete("/{name}/versions/{version}", status_code=status.HTTP_204_NO_CONTENT)
def delete(fleet: FleetDep, name: str, version: int) -> Response:
    """Refused with 409 while a deployment uses a bundle built from this version."""
    registry.delete_model_version(fleet, name=name, version=version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
