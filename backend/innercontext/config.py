"""Application settings, read from the environment and from ``.env`` in the working directory."""

import logging
import sys
from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration.

    Environment variables take precedence over values in ``.env``. In production the working
    directory is the release's ``backend/`` directory, where ``.env`` links to the shared file.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Validation errors would otherwise echo every setting, GEMINI_API_KEY included.
        hide_input_in_errors=True,
    )

    database_url: str
    gemini_api_key: SecretStr | None = None
    pricing_interval_seconds: float = Field(default=60, gt=0)
    price_max_age_seconds: float = Field(default=24 * 60 * 60, gt=0)
    # /docs, /redoc and /openapi.json describe every route: served only when enabled.
    docs_enabled: bool = False

    @field_validator("gemini_api_key", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def gemini_configured(self) -> bool:
        return self.gemini_api_key is not None


@lru_cache
def get_settings() -> Settings:
    return Settings()


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stdout (journald adds timestamps and the unit name)."""
    logging.basicConfig(
        level=level,
        stream=sys.stdout,
        format="%(levelname)s %(name)s: %(message)s",
    )
