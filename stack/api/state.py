"""What one app instance holds at run time, shared by its routes and middleware."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from stack.api.cache import CustomerCache
from stack.api.faults import FaultState
from stack.api.metrics import ApiMetrics
from stack.api.sentry import Reporter
from stack.api.settings import ApiSettings

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from stack.model.registry import LoadedModel


@dataclass
class ApiState:
    """Settings, metrics, the active model, the pool and the cache of one app."""

    settings: ApiSettings
    metrics: ApiMetrics
    faults: FaultState
    reporter: Reporter
    cache: CustomerCache
    model: "LoadedModel | None" = None
    model_error: str | None = "not loaded yet"
    pool: "ConnectionPool | None" = None
    reload_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_version(self) -> str | None:
        model = self.model
        return model.version if model is not None else None

    def activate(self, model: "LoadedModel") -> None:
        """Swap in a verified model; one attribute assignment, so readers see old or new."""
        self.model = model
        self.model_error = None
        self.metrics.set_model(model.version, model.sha256)


def get_state(request: Request) -> ApiState:
    return request.app.state.api


class ApiError(Exception):
    """An expected failure answered as JSON `{"error": ..., "detail": ...}`."""

    def __init__(self, status_code: int, error: str, detail: object = None):
        super().__init__(f"{status_code} {error}: {detail}")
        self.status_code, self.error, self.detail = status_code, error, detail
