"""/keys: API key management over REST, for admins (the CLI works on the store directly)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from agenticore.apikeys import ApiKey, ApiKeyNotFound, Role
from api.deps import KeysDep, require
from api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeysPublic

__all__ = ["router"]

router = APIRouter(prefix="/keys", tags=["keys"], dependencies=[Depends(require(Role.ADMIN))])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_key(body: ApiKeyCreate, keys: KeysDep) -> ApiKeyCreated:
    record, secret = keys.create(body.name, body.role)
    return ApiKeyCreated(**_public(record).model_dump(), key=secret)


@router.get("", response_model=ApiKeysPublic)
def list_keys(keys: KeysDep) -> ApiKeysPublic:
    data = [_public(record) for record in keys.list()]
    return ApiKeysPublic(data=data, count=len(data))


@router.delete("/{key_id}", response_model=ApiKeyPublic)
def revoke_key(key_id: str, keys: KeysDep) -> ApiKeyPublic:
    """Revokes the key at once on this API process; others stop trusting it within
    ``API_KEY_CACHE_SECONDS``."""
    try:
        return _public(keys.revoke(key_id))
    except ApiKeyNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def _public(record: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=record.id,
        name=record.name,
        role=record.role,
        created=record.created,
        revoked=record.revoked,
    )
