"""Configuration from the environment (prefix ``DIACHISO_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    db_pool_size: int = Field(default=5, ge=1, le=100)
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_uncompressed_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    overlap_min_area_m2: float = Field(default=100.0, ge=0)

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

    @property
    def uses_embedded_db(self) -> bool:
        """True when no external database is configured."""
        return self.database_url is None


def sqlalchemy_url(url: str) -> str:
    """Normalise a PostgreSQL URL to the psycopg2 driver SQLAlchemy uses here."""
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url
