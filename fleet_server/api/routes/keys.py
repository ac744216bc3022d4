"""The root of trust: ``GET /api/keys``, ``GET /api/keys/root`` and ``POST /api/keys/rotate`` (admin).

A rotation makes a new signing key and root version N+1 signed by the root
keys, publishes the root chain retained on :data:`fleet_protocol.topics.ROOT_TOPIC`
and re-issues every device's desired state signed with the new key
(:meth:`fleet_server.trust.TrustRoot.rotate`); devices refuse the old
key once they hold the new root. The audit log records the rotation as
``POST /api/keys/rotate``. Only public keys are ever returned.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ...audit import note
from ..deps import TrustDep
from ..schemas import KeysPublic, SigningKeyPublic

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


@router.get("", response_model=KeysPublic)
def keys(trust: TrustDep) -> KeysPublic:
    public = trust.signing_key()
    return KeysPublic(signing_keys=[SigningKeyPublic(keyid=public.keyid, public_key=public.to_hex())])


@router.get("/root", response_model=RootPublic)
def root(trust: TrustDep) -> RootPublic:
    """The current root of trust."""
    return RootPublic(**trust.root())


@router.post("/rotate", response_model=RootPublic)
def rotate(trust: TrustDep, request: Request) -> RootPublic:
    """New signing key under root N+1; from now on bundles and desired state are signed with it."""
    public = RootPublic(**trust.rotate())
    note(request, root_version=public.version, signing_keyids=public.signing_keyids)
    return public
