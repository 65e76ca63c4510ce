"""create_app: the fraud-scoring API for one replica."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts

from stack.api import db
from stack.api.cache import REPORT_INTERVAL_S, CustomerCache, make_redis
from stack.api.knobs import FaultState
from stack.api.handlers import install_handlers
from stack.api.metrics import ApiMetrics
from stack.api.middleware import (
    AdminPortGuard,
    BodyLimitMiddleware,
    CatchAllMiddleware,
    MetricsMiddleware,
    served_on,
)
from stack.api.routes_admin import require_admin
from stack.api.routes_admin import router as admin_router
from stack.api.routes_health import router as health_router
from stack.api.routes_predict import router as predict_router
from stack.api.sentry import Reporter, flush_sentry, init_sentry
from stack.api.settings import ApiSettings
from stack.api.state import ApiState
from stack.model.registry import deployed_version, load_verified

log = logging.getLogger(__name__)

POOL_CLOSE_TIMEOUT_S = 5.0


def _load_model(st: ApiState) -> None:
    """Load the configured model (else the deployed one, else the latest) into the active slot;
    on failure keep serving and let /readyz say why."""
    settings = st.settings
    try:
        # the deployed pointer: a restart serves what the last deploy or rollback chose
        version = settings.model_version or deployed_version(settings.model_dir)
        st.activate(load_verified(settings.model_dir, version))
    except Exception as exc:
        st.model_error = str(exc)
        log.error("model not loaded: %s", exc)
        st.reporter.report(exc, cause="model")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    st: ApiState = app.state.api
    settings = st.settings
    # Start up: error reporting, the model, the database pool (without waiting), Redis.
    init_sentry(settings)
    await anyio.to_thread.run_sync(_load_model, st)
    st.pool = db.make_pool(settings)
    st.pool.open(wait=False)
    if settings.redis_url:
        st.cache.client = make_redis(settings.redis_url, settings.redis_timeout_s)
    log.info("%s started (model %s)", settings.name, st.model_version)
    try:
        yield
    finally:
        # Shut down (uvicorn has drained in-flight requests): close the pool, Redis, sentry.
        pool, st.pool = st.pool, None
        await anyio.to_thread.run_sync(lambda: pool.close(timeout=POOL_CLOSE_TIMEOUT_S))
        st.cache.close()
        st.cache.client = None
        flush_sentry()
        log.info("%s stopped", settings.name)


PUBLIC_DESCRIPTION = """Scores card transactions for fraud.

Every error is JSON `{"error": <code>, "detail": ...}`: `error` is one of the codes each
response lists, `detail` a sentence, or for a 422 the list of `{"field", "message"}` at fault.
A method a path does not take gets 405 with an `Allow` header."""

ADMIN_DESCRIPTION = """The admin port of one replica: the model's blue/green slots, the fault
knobs and the probes. Every /admin route wants `Authorization: Bearer <admin token>`."""


def openapi_document(app: FastAPI, *, admin_port: bool) -> dict[str, Any]:
    """The OpenAPI document of what one port serves (the public one never names /admin)."""
    routes = [r for r in iter_route_contexts(app.routes)  # included routers, flattened
              if served_on(r.path or "", admin_port=admin_port)]
    title = f"{app.title} (admin port)" if admin_port else app.title
    return get_openapi(title=title, version=app.version, routes=routes,
                       description=ADMIN_DESCRIPTION if admin_port else PUBLIC_DESCRIPTION)


def create_app(settings: ApiSettings) -> FastAPI:
    """A new app with its own state and metrics; nothing is opened until startup."""
    holder: list[ApiState] = []  # the collectors below read the state at call time
    metrics = ApiMetrics(get_pool=lambda: holder[0].pool if holder else None)
    reporter = Reporter(settings.name, lambda: holder[0].model_version if holder else None)
    cache = CustomerCache(
        None, settings.cache_ttl_s,
        count=lambda result: metrics.cache.labels(result).inc(),
        on_error=lambda exc: reporter.report(exc, cause="cache",
                                             min_interval_s=REPORT_INTERVAL_S))
    st = ApiState(settings=settings, metrics=metrics, faults=FaultState(), reporter=reporter,
                  cache=cache)
    holder.append(st)
    app = FastAPI(title="fraud-scoring API", version="1", lifespan=lifespan)
    app.state.api = st
    install_handlers(app)
    app.include_router(predict_router)
    app.include_router(health_router)
    app.include_router(admin_router)

    # Two documents: /openapi.json (and /docs) on the public port, /admin/openapi.json behind
    # the token on the admin port. Each describes exactly what its port serves.
    def public_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, admin_port=False)
        return app.openapi_schema

    app.openapi = public_openapi  # type: ignore[method-assign]
    admin_doc: list[dict[str, Any]] = []

    @app.get("/admin/openapi.json", include_in_schema=False,
             dependencies=[Depends(require_admin)])
    async def admin_openapi() -> JSONResponse:
        if not admin_doc:
            admin_doc.append(openapi_document(app, admin_port=True))
        return JSONResponse(admin_doc[0])

    # Middleware, innermost first (add_middleware wraps what is already there).
    app.add_middleware(CatchAllMiddleware, state=st)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AdminPortGuard, admin_port=settings.admin_port)
    app.add_middleware(MetricsMiddleware, state=st)
    return app
