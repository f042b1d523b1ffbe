"""Request and response bodies of the HTTP API (pydantic v2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["surveyor", "reviewer", "admin", "postal"]
Level = Literal["province", "district", "commune", "hamlet"]
T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a list with the cursor of the next page."""

    items: list[T]
    next_cursor: str | None = None


class UnitOut(BaseModel):
    """One administrative unit version."""

    code: str
    level: Level
    name: str
    parent_code: str | None
    province_code: str | None
    postcode: str | None
    expected_households: int | None
    valid_from: datetime | None = Field(description="null: valid since the beginning")
    valid_to: datetime | None = Field(description="null: still valid")
    has_geometry: bool
    geometry_drafted: bool = False
    geometry: dict[str, Any] | None = None
    versions: list[UnitVersionOut] | None = None


class UnitVersionOut(BaseModel):
    """One version in a unit's history."""

    id: int
    name: str
    parent_code: str | None
    valid_from: datetime | None
    valid_to: datetime | None


class TargetIn(BaseModel):
    """Expected household count of a unit."""

    model_config = ConfigDict(extra="forbid")
    expected_households: int | None = Field(ge=0, le=10_000_000)


class OverlapOut(BaseModel):
    """Two sibling units whose polygons overlap."""

    a: str
    b: str
    area_m2: float


class GapOut(BaseModel):
    """Uncovered area inside a parent between its children."""

    parent: str | None
    area_m2: float


class ImportReport(BaseModel):
    """What an import created, changed, repaired and found between siblings."""

    level: Level
    source_crs: str | None
    created: int
    updated: int
    unchanged: int
    repaired: list[str]
    overlaps: list[OverlapOut]
    gaps: list[GapOut]
    warnings: list[str]


class TeamIn(BaseModel):
    """A new team and the hamlet or commune codes it may capture in."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    units: list[str] = Field(default_factory=list, max_length=10_000)


class TeamUnitsIn(BaseModel):
    """Units to add to a team's area."""

    model_config = ConfigDict(extra="forbid")
    units: list[str] = Field(min_length=1, max_length=10_000)


class TeamOut(BaseModel):
    """A team and its area."""

    id: int
    name: str
    units: list[str]
    created_at: datetime


class UserIn(BaseModel):
    """A new token holder; surveyors need a team."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Role
    team: str | None = Field(default=None, max_length=200)


class UserOut(BaseModel):
    """A user without secrets."""

    id: int
    name: str
    role: Role
    team: str | None
    token_hint: str | None
    created_at: datetime
    revoked_at: datetime | None


class UserCreated(BaseModel):
    """The new user and the bearer token, shown this one time."""

    id: int
    name: str
    role: Role
    team: str | None
    token: str


class MeOut(BaseModel):
    """Who the token belongs to and where they may work."""

    id: int
    name: str
    role: Role
    team: str | None
    area: list[str]


class Health(BaseModel):
    """Liveness/readiness state."""

    status: Literal["ok", "unavailable"]
    database: str | None = None
    migration: str | None = None
    expected_migration: str | None = None


UnitOut.model_rebuild()
