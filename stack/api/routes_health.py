"""GET /healthz (alive), /readyz (model loaded and database answering), /metrics."""
from __future__ import annotations

import threading

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from stack.api import db
from stack.api.schemas import Alive, NotReady, Ready, doc
from stack.api.state import get_state

router = APIRouter()

READY_DB_TIMEOUT_S = 1.0


class PrometheusText(Response):
    """The Prometheus text exposition format, version 0.0.4: what generate_latest writes with
    its default (underscore) escaping, and what every Prometheus scrapes."""

    media_type = CONTENT_TYPE_PLAIN_0_0_4


@router.get("/healthz", response_model=Alive)
async def healthz(request: Request) -> dict[str, str]:
    """Liveness: the process is serving."""
    return {"status": "alive", "replica": get_state(request).settings.name}


def _check_db(pool: object, timeout_s: float) -> str | None:
    """None if SELECT 1 answers within timeout_s, else the reason.

    The query runs in a helper thread so a hung server cannot hold /readyz past the deadline.
    """
    if pool is None:
        return "database unreachable: no connection pool"
    outcome: list[str | None] = []

    def run() -> None:
        try:
            db.ping(pool, timeout_s)  # type: ignore[arg-type]
            outcome.append(None)
        except Exception as exc:
            outcome.append(f"database unreachable: {db.describe_error(exc)}")

    worker = threading.Thread(target=run, name="readyz-ping", daemon=True)
    worker.start()
    worker.join(timeout_s + 0.25)
    if not outcome:
        return f"database unreachable: SELECT 1 took longer than {timeout_s:g} s"
    return outcome[0]


@router.get("/readyz", response_model=None, responses={
    200: doc("ready: the model is loaded and the database answers", Ready),
    503: doc("not ready; the reasons say why", NotReady)})
def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 if the model is loaded and the database answers, else 503 with reasons."""
    st = get_state(request)
    reasons = []
    model = st.model
    if model is None:
        reasons.append(f"model not loaded: {st.model_error}")
    db_reason = _check_db(st.pool, READY_DB_TIMEOUT_S)
    if db_reason:
        reasons.append(db_reason)
    if reasons:
        return JSONResponse({"status": "not_ready", "replica": st.settings.name,
                             "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ready", "replica": st.settings.name,
                         "model_version": model.version if model else None})


@router.get("/metrics", response_class=PrometheusText, responses={
    200: {"description": "this replica's metrics in the Prometheus text format",
          "content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> PrometheusText:
    """Prometheus text format from this app's own registry."""
    registry = get_state(request).metrics.registry
    return PrometheusText(generate_latest(registry))
