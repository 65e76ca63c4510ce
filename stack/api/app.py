"""create_app: the fraud-scoring API for one replica."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

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
)
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
    # Middleware, innermost first (add_middleware wraps what is already there).
    app.add_middleware(CatchAllMiddleware, state=st)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AdminPortGuard, admin_port=settings.admin_port)
    app.add_middleware(MetricsMiddleware, state=st)
    return app
