"""API tokens: ``/api/tokens`` (admin only). A new token's text is returned once, by POST; never again."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from ... import tokens as token_service
from ...audit import note
from ...store import tokens as token_store
from ..deps import FleetDep
from ..schemas import TokenCreate, TokenCreated, TokenPublic

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(fleet: FleetDep, request: Request, body: TokenCreate) -> dict:
    note(request, token=body.name, role=body.role)
    plaintext, record = token_service.create_token(fleet.db, name=body.name, role=body.role)
    return {**record, "token": plaintext}


@router.get("", response_model=list[TokenPublic])
def list_tokens(fleet: FleetDep) -> list[dict]:
    return token_store.list_tokens(db=fleet.db)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(fleet: FleetDep, name: str) -> None:
    """Revoke a token at once (its next request is 401). The last admin token cannot be deleted."""
    token_service.delete_token(fleet.db, name=name)
