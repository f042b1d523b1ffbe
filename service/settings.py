"""Configuration from the environment (prefix ``DIACHISO_``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from geo.boundaries import MAX_FEATURE_VERTICES
from geo.dedupe import DedupeParams

_DEDUPE = DedupeParams()  # the defaults live with the scoring they tune
_BASEMAP_EXAMPLE = "https://tiles.example.vn/{z}/{x}/{y}.png"
# The basemap's origin goes into the pages' Content-Security-Policy: ';' would end its
# directive, ',' start a second policy, whitespace or a quote add or break a source.
_CSP_BREAKERS = frozenset(";,'\"")


class Settings(BaseSettings):
    """Every knob of the service; read once at start-up and passed down explicitly."""

    model_config = SettingsConfigDict(env_prefix="DIACHISO_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL/PostGIS URL; unset: an embedded cluster under data_dir.",
    )
    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # A worker under a sync peak has ~10 requests in flight; with a pool of 5 the rest ran on
    # overflow connections that were opened and closed per request (a fork on the server each
    # time), which doubled PostgreSQL's CPU and put load-test p95 at 650 ms instead of 170 ms.
    db_pool_size: int = Field(default=12, ge=1, le=100)
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_uncompressed_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    overlap_min_area_m2: float = Field(default=100.0, ge=0)
    max_feature_vertices: int = Field(
        default=MAX_FEATURE_VERTICES, ge=100, description="Most vertices of one unit boundary"
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", description="Proxies trusted for X-Forwarded-* (comma list or *)"
    )
    max_batch_items: int = Field(default=1000, ge=1, le=10_000)
    # Batches a worker process validates and writes at once; more wait their turn, unstarted.
    # Intake is CPU work under one interpreter lock: more threads at it only add switching
    # (measured in docs/intake.md#measured).
    intake_concurrency: int = Field(default=4, ge=1, le=64)
    accuracy_warn_m: float = Field(default=30.0, gt=0)
    accuracy_hard_m: float = Field(default=100.0, gt=0)
    future_tolerance_s: float = Field(default=300.0, ge=0)
    max_capture_age_days: float = Field(default=90.0, gt=0)
    commune_tolerance_m: float = Field(
        default=1000.0, ge=0, description="How far outside a commune polygon a point may be"
    )
    # Duplicate detection: search radius max(floor, k × (accuracy_a + accuracy_b)), capped.
    dedupe_floor_m: float = Field(default=_DEDUPE.floor_m, gt=0)
    dedupe_k: float = Field(default=_DEDUPE.k, ge=0)
    dedupe_cap_m: float = Field(default=_DEDUPE.cap_m, gt=0, le=1000)
    dedupe_review_threshold: float = Field(
        default=_DEDUPE.review_threshold, gt=0, le=1, description="Score that holds for review"
    )
    code_scheme: Literal["vpostcode", "olc"] = Field(
        default="vpostcode", description="Address-code scheme for new codes"
    )
    code_move_m: float = Field(
        default=5.0, gt=0, description="A correction moving a household further gets a new code"
    )
    dedupe_auto_link: bool = Field(
        default=False, description="Merge exact re-captures (same name, phone, spot) unreviewed"
    )
    capture_accuracy_m: float = Field(
        default=10.0, gt=0, description="GPS accuracy field clients wait for before saving"
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="When set, GET /metrics needs 'Authorization: Bearer <it>'"
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL phones reach the service at (Collect settings, form links); "
        "unset: the URL of each request",
    )

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        url = _optional_url(value, "DIACHISO_PUBLIC_URL", _http_url_problem)
        return url.rstrip("/") if url else None

    tiles_max_stale_s: float = Field(
        default=15.0, ge=0, description="How long tiles may use coverage older than the data"
    )
    basemap_url: str | None = Field(
        default=None,
        max_length=2000,
        description="Raster basemap tile URL ({z}/{x}/{y}) for the map pages; none by default",
    )

    @field_validator("basemap_url")
    @classmethod
    def _check_basemap_url(cls, value: str | None) -> str | None:
        return _optional_url(value, "DIACHISO_BASEMAP_URL", _basemap_url_problem)

    @field_validator("metrics_token")
    @classmethod
    def _blank_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value()
        if not url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
            raise ValueError(
                "DIACHISO_DATABASE_URL must be a postgresql:// URL "
                "(or unset to use the embedded cluster under DIACHISO_DATA_DIR)"
            )
        return value

    @model_validator(mode="after")
    def _check_accuracy_limits(self) -> Settings:
        if self.accuracy_warn_m >= self.accuracy_hard_m:
            raise ValueError(
                "DIACHISO_ACCURACY_WARN_M must be below DIACHISO_ACCURACY_HARD_M "
                f"({self.accuracy_warn_m} >= {self.accuracy_hard_m})"
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        url = self.database_url.get_secret_value() if self.database_url else ""
        if self.environment == "production" and "change-me" in url:
            raise ValueError(
                "DIACHISO_DATABASE_URL uses the placeholder password 'change-me' in production: "
                "set DIACHISO_DB_PASSWORD (docker compose) or a real password"
            )
        return self

    @property
    def uses_embedded_db(self) -> bool:
        """True when no external database is configured."""
        return self.database_url is None


def _optional_url(
    value: str | None, setting: str, problem: Callable[[str], str | None]
) -> str | None:
    """A URL setting: blank is unset; otherwise ``problem`` (what is wrong, or None) decides."""
    url = (value or "").strip()
    if not url:
        return None
    if found := problem(url):
        raise ValueError(f"{setting} {found}")
    return url


def _http_url_problem(url: str, *, example: str = "https://diachiso.example.vn") -> str | None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL with a host, e.g. {example}"
    return None


def _basemap_url_problem(url: str) -> str | None:
    """What is wrong with a basemap tile URL template, or None."""
    for char in url:
        if char in _CSP_BREAKERS or char.isspace() or not char.isprintable():
            return f"may not contain {char!r} (the URL goes into the pages' CSP header)"
    if problem := _http_url_problem(url, example=_BASEMAP_EXAMPLE):
        return problem
    if problem := _basemap_origin_problem(urlsplit(url).netloc):
        return problem
    if missing := [p for p in ("{z}", "{x}", "{y}") if p not in url]:
        return f"must contain {{z}}, {{x}} and {{y}} (missing {', '.join(missing)})"
    return None


def _basemap_origin_problem(netloc: str) -> str | None:
    """The host[:port] must be a valid CSP host-source, as the pages' policy names it."""
    if "@" in netloc:
        return "may not carry a user or password (user:password@host)"
    if "{" in netloc:
        return "may not have a placeholder in its host ({s}, {a-c}): name one server"
    if not netloc.isascii():
        return "must write an internationalised host name in its xn-- (IDNA) form"
    _, colon, port = netloc.rpartition("]")[2].partition(":")  # past an IPv6 literal's "]"
    if colon and not (port.isdigit() and 0 < int(port) <= 65535):
        return f"has a bad port: {port!r}"
    return None


def sqlalchemy_url(url: str) -> str:
    """Normalise a PostgreSQL URL to the psycopg2 driver SQLAlchemy uses here."""
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url
