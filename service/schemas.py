"""Request and response bodies of the HTTP API (pydantic v2)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from geo.levels import Level

Role = Literal["surveyor", "reviewer", "admin", "postal"]
T = TypeVar("T")
#: A name: trimmed, not blank.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def holds_nul(value: Any) -> bool:
    """True when any text in ``value`` (keys too, at any depth) contains U+0000.

    Walked with a stack: the JSON parser accepts bodies nested far deeper than recursion goes.
    """
    stack = [value]
    while stack:
        top = stack.pop()
        if isinstance(top, str):
            if "\x00" in top:
                return True
        elif isinstance(top, dict):
            stack += top.keys()
            stack += top.values()
        elif isinstance(top, list | tuple):
            stack += top
    return False


class RequestBody(BaseModel):
    """Base of JSON request bodies: unknown members and NUL characters are refused (422).

    PostgreSQL text cannot hold U+0000, so such a value would otherwise fail only when it
    reaches the database.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if holds_nul(data):
            raise ValueError("text must not contain the NUL character (U+0000)")
        return data


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


class TargetIn(RequestBody):
    """Expected household count of a unit."""

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
    closed: int = Field(description="units closed because the file no longer has them")
    repaired: list[str]
    overlaps: list[OverlapOut]
    gaps: list[GapOut]
    warnings: list[str]
    codes_issued: int = Field(
        default=0, description="codes issued to households whose commune just got its postcode"
    )


class TeamIn(RequestBody):
    """A new team and the hamlet or commune codes it may capture in."""

    name: Name
    units: list[str] = Field(default_factory=list, max_length=10_000)


class TeamUnitsIn(RequestBody):
    """Units to add to a team's area."""

    units: list[str] = Field(min_length=1, max_length=10_000)


class TeamOut(BaseModel):
    """A team and its area."""

    id: int
    name: str
    units: list[str]
    created_at: datetime


class UserIn(RequestBody):
    """A new token holder; surveyors need a team."""

    name: Name
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


class HamletChoiceOut(BaseModel):
    """A hamlet a field client offers, with its commune (both valid now)."""

    code: str
    name: str
    commune_code: str
    commune_name: str


class CaptureConfigOut(BaseModel):
    """What the capture page needs: who captures, where, and the GPS thresholds (metres)."""

    user: MeOut
    accuracy_target_m: float
    accuracy_warn_m: float
    accuracy_hard_m: float
    batch_size: int
    hamlets: list[HamletChoiceOut]


class CollectSettingsOut(BaseModel):
    """An ODK Collect configuration for one surveyor: the QR code and what it holds."""

    id: int
    name: str
    team: str | None
    token: str
    server_url: str
    settings: dict[str, Any]
    payload: str
    qr_svg: str


class Health(BaseModel):
    """Liveness/readiness state."""

    status: Literal["ok", "unavailable"]
    database: str | None = None
    migration: str | None = None
    expected_migration: str | None = None


UnitOut.model_rebuild()


class LocationIn(BaseModel):
    """WGS84 point with GPS accuracy (documentation of the item shape)."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(default=None, ge=0)
    mock: bool | None = False


class HouseholdIn(BaseModel):
    """Address details of one household."""

    head_name: str | None = None
    house_number: str | None = None
    street: str | None = None
    phone: str | None = None
    kind: Literal["residence", "business", "ocop", "public", "other"] | None = "residence"
    members: int | None = Field(default=None, ge=0, le=100)


class SubmissionItemIn(BaseModel):
    """One household observation as a surveyor's client sends it."""

    id: str = Field(description="Client-generated UUID; resending it is idempotent")
    captured_at: datetime = Field(description="ISO 8601 with UTC offset")
    location: LocationIn
    hamlet_code: str
    household: HouseholdIn
    note: str | None = None
    household_id: int | None = Field(
        default=None, description="An existing household this observation updates"
    )


class BatchIn(BaseModel):
    """Up to 1,000 submissions (validated item by item, never all-or-nothing)."""

    submissions: list[SubmissionItemIn] = Field(max_length=1000)


class IssueOut(BaseModel):
    """A validation finding: stable code, severity, Vietnamese message."""

    code: str
    severity: Literal["info", "warning", "error"]
    message: str
    detail: dict[str, Any] | None = None


class ItemResult(BaseModel):
    """The outcome of one submitted item."""

    id: str | int | None
    status: Literal["accepted", "flagged", "rejected", "conflict", "error"]
    household_id: int | None
    address_code: str | None
    issues: list[IssueOut]


class BatchResult(BaseModel):
    """Every item's result in request order, and counts per status."""

    results: list[ItemResult]
    counts: dict[str, int]


class SubmissionOut(BaseModel):
    """A logged submission with its payload as received."""

    id: str | None
    seq: int
    status: str
    received_at: datetime
    captured_at: datetime | None
    hamlet_code: str | None
    commune_code: str | None
    surveyor: int | None
    household_id: int | None
    issues: list[Any]
    payload: Any
    error: str | None


class HouseholdOut(BaseModel):
    """The current state of a household."""

    id: int
    status: str
    province_code: str | None
    commune_code: str | None
    hamlet_code: str | None
    lon: float
    lat: float
    accuracy_m: float | None
    head_name: str | None
    house_number: str | None
    street: str | None
    phone: str | None
    phone_raw: str | None
    kind: str
    members: int | None
    note: str | None
    issues: list[Any]
    captured_at: datetime
    version: int
    merged_into_id: int | None
    address_code: str | None = None
    national_code: str | None
    team_id: int | None
    created_at: datetime
    updated_at: datetime
    history: list[dict[str, Any]] | None = None
