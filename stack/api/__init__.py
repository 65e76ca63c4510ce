"""The fraud-scoring API: one FastAPI app per replica, served by uvicorn."""
from stack.api.app import create_app
from stack.api.schemas import Faults, ReloadRequest, Transaction
from stack.api.sentry import LocalEventTransport, init_sentry, read_events
from stack.api.settings import SETTINGS_ENV, ApiSettings, load_settings

__all__ = [
    "SETTINGS_ENV", "ApiSettings", "Faults", "LocalEventTransport", "ReloadRequest",
    "Transaction", "create_app", "init_sentry", "load_settings", "read_events",
]
