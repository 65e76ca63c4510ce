"""The API replica's settings: one typed object, loaded from a JSON file."""
from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stack.errors import ConfigError

SETTINGS_ENV = "STACK_API_SETTINGS"


class ApiSettings(BaseModel):
    """Everything one API replica needs; rendered by the lab into a JSON file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="replica name, e.g. api1")
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    admin_port: int = Field(ge=1, le=65535)
    admin_token: str = Field(min_length=1)
    db_conninfo: str
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=8, ge=1)
    db_pool_timeout_s: float = Field(default=2.0, gt=0)
    db_statement_timeout_ms: int = Field(default=2000, ge=0)
    redis_url: str | None = None
    redis_timeout_s: float = Field(default=0.05, gt=0)
    cache_ttl_s: int = Field(default=30, ge=1)
    model_dir: str
    model_version: str | None = None
    sentry_dsn: str | None = None
    sentry_events_dir: str | None = None
    run_dir: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "ApiSettings":
        if self.port == self.admin_port:
            raise ValueError("port and admin_port must differ")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("db_pool_min must be <= db_pool_max")
        return self


def load_settings(path: str | os.PathLike[str] | None = None) -> ApiSettings:
    """Read settings from `path`, or from the file named by $STACK_API_SETTINGS."""
    if path is None:
        path = os.environ.get(SETTINGS_ENV)
        if not path:
            raise ConfigError(f"no settings file: pass --settings PATH or set ${SETTINGS_ENV}")
    source = Path(path)
    try:
        raw = json.loads(source.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read settings: {exc}", source=str(source)) from exc
    except ValueError as exc:
        raise ConfigError(f"not valid JSON: {exc}", source=str(source)) from exc
    try:
        return ApiSettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ConfigError(first["msg"], field=field, source=str(source)) from exc
