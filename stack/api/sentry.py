"""Error reporting with the real sentry-sdk: to a Sentry DSN, or to a local JSON-lines store.

The local store is `<sentry_events_dir>/<replica>.jsonl`, one event per line.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sentry_sdk
from sentry_sdk.transport import Transport

if TYPE_CHECKING:
    from sentry_sdk.envelope import Envelope

    from stack.api.settings import ApiSettings

log = logging.getLogger(__name__)


class LocalEventTransport(Transport):
    """A sentry transport that appends each error event to a JSON-lines file."""

    def __init__(self, events_dir: str | os.PathLike[str], replica: str):
        super().__init__(None)
        self.events_dir = Path(events_dir)
        self.replica = replica
        self._lock = threading.Lock()

    def capture_envelope(self, envelope: "Envelope") -> None:
        for item in envelope.items:
            if item.type != "event" or item.payload.json is None:
                continue
            record = summarize_event(item.payload.json)
            name = record["tags"].get("replica") or self.replica
            line = json.dumps(record, default=str, sort_keys=True) + "\n"
            with self._lock:
                self.events_dir.mkdir(parents=True, exist_ok=True)
                with open(self.events_dir / f"{name}.jsonl", "a") as fh:
                    fh.write(line)


def summarize_event(event: dict[str, Any]) -> dict[str, Any]:
    """The parts of a sentry event worth keeping locally."""
    tags = event.get("tags") or {}
    if isinstance(tags, list):
        tags = dict(tags)
    exceptions = [
        {"type": exc.get("type"), "value": exc.get("value")}
        for exc in (event.get("exception") or {}).get("values", [])
    ]
    timestamp = event.get("timestamp")
    if hasattr(timestamp, "isoformat"):
        timestamp = timestamp.isoformat()
    message = event.get("message") or (event.get("logentry") or {}).get("message")
    return {
        "event_id": event.get("event_id"),
        "timestamp": timestamp,
        "level": event.get("level"),
        "exception": exceptions,
        "message": message,
        "tags": tags,
        "route": tags.get("route"),
        "server_name": event.get("server_name"),
    }


def init_sentry(settings: "ApiSettings") -> bool:
    """Start sentry-sdk if a DSN or a local events folder is set; True if started."""
    common: dict[str, Any] = {
        "traces_sample_rate": 0.0,
        "default_integrations": False,
        "server_name": settings.name,
    }
    if settings.sentry_dsn:
        sentry_sdk.init(dsn=settings.sentry_dsn, **common)
    elif settings.sentry_events_dir:
        transport = LocalEventTransport(settings.sentry_events_dir, settings.name)
        sentry_sdk.init(transport=transport, **common)
    else:
        return False
    sentry_sdk.get_global_scope().set_tag("replica", settings.name)
    log.info("sentry reporting on for %s", settings.name)
    return True


class Reporter:
    """Sends exceptions to sentry with the replica's tags; a no-op when sentry is off."""

    def __init__(self, replica: str, get_model_version: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic):
        self.replica = replica
        self._get_model_version = get_model_version
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def report(self, exc: BaseException, cause: str, route: str | None = None,
               min_interval_s: float = 0.0) -> str | None:
        """Capture `exc` tagged with cause, replica, model_version; None if rate-limited."""
        if min_interval_s:
            now = self._clock()
            with self._lock:
                if now - self._last.get(cause, float("-inf")) < min_interval_s:
                    return None
                self._last[cause] = now
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("replica", self.replica)
            scope.set_tag("model_version", self._get_model_version() or "none")
            scope.set_tag("cause", cause)
            if route:
                scope.set_tag("route", route)
            return sentry_sdk.capture_exception(exc)


def flush_sentry(timeout_s: float = 2.0) -> None:
    if sentry_sdk.get_client().is_active():
        sentry_sdk.flush(timeout=timeout_s)


def read_events(events_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All locally stored events, from every replica's file, oldest first."""
    events: list[dict[str, Any]] = []
    for path in sorted(Path(events_dir).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    log.warning("skipping a bad line in %s", path)
    events.sort(key=lambda e: str(e.get("timestamp") or ""))
    return events
