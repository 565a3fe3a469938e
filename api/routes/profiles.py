"""/profiles: what jobs can name."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from agenticore.apikeys import Role
from agenticore.profiles import list_profiles
from api.deps import SettingsDep, require
from api.schemas import ProfilePublic, ProfilesPublic

__all__ = ["router"]

router = APIRouter(
    prefix="/profiles", tags=["profiles"], dependencies=[Depends(require(Role.VIEWER))]
)


@router.get("", response_model=ProfilesPublic)
def get_profiles(settings: SettingsDep) -> ProfilesPublic:
    data = [ProfilePublic.model_validate(p, from_attributes=True) for p in list_profiles(settings)]
    return ProfilesPublic(data=data, count=len(data))
