"""API tokens: ``/api/tokens`` (admin only). A new token's text is returned once, by POST; never again."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from ...audit import note
from ..deps import TokensDep
from ..schemas import TokenCreate, TokenCreated, TokenPublic

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(tokens: TokensDep, request: Request, body: TokenCreate) -> dict:
    note(request, token=body.name, role=body.role)
    plaintext, record = tokens.create_token(name=body.name, role=body.role)
    return {**record, "token": plaintext}


@router.get("", response_model=list[TokenPublic])
def list_tokens(tokens: TokensDep) -> list[dict]:
    return tokens.list_tokens()


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(tokens: TokensDep, name: str) -> None:
    """Revoke a token at once (its next request is 401). The last admin token cannot be deleted."""
    tokens.delete_token(name=name)
