"""Admin routes (admin port only, bearer token): model reload and fault knobs."""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request

from stack.api.faults import leaked_mb
from stack.api.schemas import Faults, ReloadRequest
from stack.api.state import ApiError, get_state
from stack.errors import ModelRejected
from stack.model.registry import load_verified

log = logging.getLogger(__name__)


async def require_admin(request: Request) -> None:
    """Runs on the event loop (async), so admin calls still answer when every worker thread
    is stuck in a slow request. 404 off the admin port; 401 without `Authorization: Bearer <admin_token>`."""
    settings = get_state(request).settings
    server = request.scope.get("server")
    if not server or server[1] != settings.admin_port:
        raise ApiError(404, "not_found", "Not Found")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), settings.admin_token.encode()):
        raise ApiError(401, "unauthorized", "send the header 'Authorization: Bearer <token>'")


router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


@router.post("/model/reload")
async def reload_model(request: Request, body: ReloadRequest | None = None) -> dict[str, Any]:
    """Load and verify a version (default: latest) and make it active; 409 if rejected."""
    # loading reads and unpickles a file: off the event loop, and off the request threads
    return await asyncio.to_thread(_reload, request, body)


def _reload(request: Request, body: ReloadRequest | None) -> dict[str, Any]:
    st = get_state(request)
    version = body.version if body else None
    with st.reload_lock:
        previous = st.model_version
        try:
            model = load_verified(st.settings.model_dir, version)
        except ModelRejected as exc:
            log.error("model reload to %s rejected: %s", version or "latest", exc)
            st.reporter.report(exc, cause="model", route="/admin/model/reload")
            raise ApiError(409, "model_rejected", str(exc)) from exc
        st.activate(model)
    log.warning("model reloaded: %s -> %s", previous, model.version)
    return {"version": model.version, "sha256": model.sha256, "previous": previous}


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    """The current fault knobs, and how much memory the leak fault holds."""
    return {**get_state(request).faults.current.model_dump(), "leaked_mb": leaked_mb()}


@router.put("/faults")
async def put_faults(request: Request, faults: Faults) -> dict[str, Any]:
    """Replace all fault knobs (omitted ones reset to 0)."""
    get_state(request).faults.replace(faults)
    return {**faults.model_dump(), "leaked_mb": leaked_mb()}
