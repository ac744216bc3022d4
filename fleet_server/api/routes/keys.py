"""The root of trust: ``GET /api/keys/root`` and ``POST /api/keys/rotate`` (admin, like ``GET /api/keys``).

A rotation makes a new signing key and root version N+1 signed by the root
keys, publishes the root chain retained on :data:`fleet_protocol.topics.ROOT_TOPIC`
and re-issues every device's desired state signed with the new key
(:meth:`fleet_server.fleet.Fleet.rotate_signing_key`); devices refuse the old
key once they hold the new root. The audit log records the rotation as
``POST /api/keys/rotate``. Only public keys are ever returned.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from fleet_protocol.root import RootDocument
from fleet_protocol.signing import PublicKey

from ...audit import note
from ...fleet import Fleet
from ..deps import FleetDep

router = APIRouter(prefix="/keys", tags=["server"])


class RootPublic(BaseModel):
    version: int
    expires: str
    root_keyids: list[str] = Field(description="Key ids (SHA-256 of the public key) of the keys that sign roots")
    root_threshold: int
    signing_keyids: list[str] = Field(description="Key ids of the keys bundles and desired state are signed with")
    signing_keys: list[str] = Field(description="Those public keys, hex")
    root: dict[str, Any] = Field(description="The current signed root document")
    chain_length: int = Field(description="Root documents published for devices to walk, version 1 first")


def _public(fleet: Fleet) -> RootPublic:
    doc = RootDocument.from_dict(fleet.keys.root["signed"])
    return RootPublic(version=doc.version, expires=doc.expires,
                      root_keyids=[PublicKey.from_hex(k).keyid for k in doc.root_keys],
                      root_threshold=doc.root_threshold,
                      signing_keyids=[PublicKey.from_hex(k).keyid for k in doc.signing_keys],
                      signing_keys=list(doc.signing_keys), root=fleet.keys.root, chain_length=len(fleet.keys.roots))


@router.get("/root", response_model=RootPublic)
def root(fleet: FleetDep) -> RootPublic:
    """The current root of trust."""
    return _public(fleet)


@router.post("/rotate", response_model=RootPublic)
def rotate(fleet: FleetDep, request: Request) -> RootPublic:
    """New signing key under root N+1; from now on bundles and desired state are signed with it."""
    fleet.rotate_signing_key()
    public = _public(fleet)
    note(request, root_version=public.version, signing_keyids=public.signing_keyids)
    return public
