"""Signed module bundles: ``/api/bundles``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile, status

from ...audit import note
from ..deps import BundlerDep, ConfigDep
from ..schemas import BundleDetail, BundleFromModelCreate, BundlePublic
from ._params import read_upload

router = APIRouter(prefix="/bundles", tags=["bundles"])


@router.post("/from-module", response_model=BundlePublic, status_code=status.HTTP_201_CREATED)
def from_module(bundler: BundlerDep, config: ConfigDep, request: Request,
                file: Annotated[UploadFile, File(description=".tar.gz of a module folder with module.json")]) -> dict:
    """Build, sign and store the next version of the module; registers its model if the registry lacks it."""
    bundle = bundler.build_from_module(read_upload(file, limit_bytes=config.max_upload_bytes))
    note(request, module=bundle["module"], version=bundle["version"], digest=bundle["digest"])
    return bundle


@router.post("/agent", response_model=BundlePublic, status_code=status.HTTP_201_CREATED)
def agent(bundler: BundlerDep, config: ConfigDep, request: Request,
          file: Annotated[UploadFile, File(description=".tar.gz of the wheels of edgefleet[agent], edgefleet's own "
                                                       "among them")]) -> dict:
    """Build, sign and store the next ``edgefleet-agent`` bundle: a new agent version devices install themselves."""
    bundle = bundler.build_agent(read_upload(file, limit_bytes=config.max_upload_bytes))
    note(request, module=bundle["module"], version=bundle["version"], digest=bundle["digest"])
    return bundle


@router.post("/from-model", response_model=BundlePublic, status_code=status.HTTP_201_CREATED)
def from_model(bundler: BundlerDep, request: Request, body: BundleFromModelCreate) -> dict:
    """Wrap a registered model version (default: newest) in a signed bundle."""
    note(request, model=body.model, model_version=body.version)
    bundle = bundler.build_from_model(model=body.model, version=body.version, module=body.module,
                                      entry_script=body.entry_script, sample=body.sample, config=body.config,
                                      signature=body.signature)
    note(request, module=bundle["module"], version=bundle["version"], digest=bundle["digest"])
    return bundle


@router.get("", response_model=list[BundlePublic])
def list_bundles(bundler: BundlerDep, module: str | None = None) -> list[dict]:
    return bundler.list_bundles(module=module)


@router.get("/{digest}", response_model=BundleDetail)
def get_bundle(bundler: BundlerDep, digest: str) -> dict:
    bundle = bundler.get_bundle(digest)
    return {**bundle, "manifest": bundle["envelope"]}


@router.get("/{digest}/file", response_class=Response, responses={200: {"content": {"application/x-tar": {}}}})
def download(bundler: BundlerDep, digest: str) -> Response:
    """The bundle as an ``.efb`` file (signed manifest + files), verifiable with ``bundle verify``."""
    bundle = bundler.get_bundle(digest)
    return Response(bundler.bundle_file_bytes(digest), media_type="application/x-tar",
                    headers={"Content-Disposition": f'attachment; filename="{bundle["module"]}-'
                                                    f'{bundle["version"]}.efb"'})
