"""Admin routes (admin port only, bearer token): the model's blue/green slots and fault knobs.

Every route is async, so it answers while all request threads are busy; loading a model (reading
and unpickling a file, seconds) runs in asyncio's own thread pool, not on the request threads.

    GET  /admin/model           both slots: which version each holds, which one serves
    POST /admin/model/stage     {"version"}: load and verify into the idle slot, not served
    POST /admin/model/activate  {"version"}: serve the idle slot (it must hold that version)
    POST /admin/model/rollback  serve the previous slot again
    POST /admin/model/reload    {"version"|null}: stage and activate in one step
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from stack.api.knobs import leaked_mb
from stack.api.schemas import (
    INVALID,
    TOO_LARGE,
    Faults,
    FaultsState,
    ModelVersion,
    ReloadRequest,
    Unauthorized,
    doc,
    error_body,
)
from stack.api.state import get_state
from stack.errors import ApiError, ModelRejected, SlotError
from stack.model.registry import load_verified

log = logging.getLogger(__name__)


# The scheme the admin document declares; it checks nothing itself (auto_error=False), so
# require_admin answers an off-port request with 404 before anyone learns a token is wanted.
bearer = HTTPBearer(auto_error=False, scheme_name="adminToken",
                    description="the lab's admin token (lab.json: admin_token)")


async def require_admin(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """Runs on the event loop (async), so admin calls still answer when every worker thread
    is stuck in a slow request. 404 off the admin port; 401 without `Authorization: Bearer <admin_token>`."""
    settings = get_state(request).settings
    server = request.scope.get("server")
    if not server or server[1] != settings.admin_port:
        raise ApiError(404, "not_found", "Not Found")
    token = credentials.credentials.strip() if credentials else ""
    if not credentials or not secrets.compare_digest(token.encode(),
                                                     settings.admin_token.encode()):
        raise ApiError(401, "unauthorized", "send the header 'Authorization: Bearer <token>'")


router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)], responses={
    401: doc("no 'Authorization: Bearer <admin token>', or a wrong token", Unauthorized)})


# -- what the routes answer, for the admin document -----------------------------------------
class Slot(BaseModel):
    state: Literal["active", "previous", "idle"]
    version: str | None
    sha256: str | None
    loaded_at: float | None = Field(description="Unix time the slot was loaded")


class Slots(BaseModel):
    active_slot: str
    active_version: str | None
    previous_slot: str | None
    slots: dict[str, Slot]


class Reloaded(BaseModel):
    version: str
    sha256: str
    previous: str | None


class Staged(BaseModel):
    slot: str
    version: str
    sha256: str
    active_version: str | None
    seconds: float


class Activated(BaseModel):
    version: str | None
    previous: str | None
    slot: str
    changed: bool


class RolledBack(BaseModel):
    version: str | None
    previous: str | None
    slot: str


REJECTED = doc("the model failed verification (unknown version, bad checksum, wrong features)",
               error_body("ModelRejected", "model_rejected"))


@router.post("/model/reload", response_model=Reloaded,
             responses={409: REJECTED, 413: TOO_LARGE, 422: INVALID})
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


@router.get("/model", response_model=Slots)
async def get_model(request: Request) -> dict[str, Any]:
    """Both slots and which one serves."""
    return get_state(request).describe()


@router.post("/model/stage", response_model=Staged,
             responses={409: REJECTED, 413: TOO_LARGE, 422: INVALID})
async def stage_model(request: Request, body: ModelVersion) -> dict[str, Any]:
    """Load and verify a version into the idle slot without serving it; 409 if rejected."""
    return await asyncio.to_thread(_stage, request, body.version)


def _stage(request: Request, version: str) -> dict[str, Any]:
    st = get_state(request)
    t0 = time.monotonic()
    with st.reload_lock:  # one load at a time; /predict never waits for this lock
        try:
            model = load_verified(st.settings.model_dir, version)
        except ModelRejected as exc:
            log.error("staging model %s rejected: %s", version, exc)
            st.reporter.report(exc, cause="model", route="/admin/model/stage")
            raise ApiError(409, "model_rejected", str(exc)) from exc
        slot = st.stage(model)
    log.warning("model %s staged in slot %s (serving %s)", version, slot, st.model_version)
    return {"slot": slot, "version": model.version, "sha256": model.sha256,
            "active_version": st.model_version, "seconds": round(time.monotonic() - t0, 3)}


@router.post("/model/activate", response_model=Activated, responses={
    409: doc("the idle slot does not hold that version: stage it first",
             error_body("NotStaged", "not_staged")),
    413: TOO_LARGE, 422: INVALID})
async def activate_model(request: Request, body: ModelVersion) -> dict[str, Any]:
    """Serve the staged version: one pointer swap, no loading, so it runs on the event loop.
    Requests already running finish on the model they started with. 409 if it is not staged."""
    st = get_state(request)
    previous = st.model_version
    try:
        changed = st.flip_to(body.version)
    except SlotError as exc:
        raise ApiError(409, "not_staged", str(exc)) from exc
    if changed:
        log.warning("model activated: %s -> %s (slot %s)", previous, body.version,
                    st.active_slot)
    return {"version": st.model_version, "previous": previous, "slot": st.active_slot,
            "changed": changed}


@router.post("/model/rollback", response_model=RolledBack, responses={
    409: doc("there is no previous slot to serve",
             error_body("NothingToRollBack", "nothing_to_roll_back"))})
async def rollback_model(request: Request) -> dict[str, Any]:
    """Serve the previous slot's model again; 409 if there is none."""
    st = get_state(request)
    previous = st.model_version
    try:
        version = st.rollback()
    except SlotError as exc:
        raise ApiError(409, "nothing_to_roll_back", str(exc)) from exc
    log.warning("model rolled back: %s -> %s (slot %s)", previous, version, st.active_slot)
    return {"version": version, "previous": previous, "slot": st.active_slot}


@router.get("/faults", response_model=FaultsState)
async def get_faults(request: Request) -> dict[str, Any]:
    """The current fault knobs, and how much memory the leak fault holds."""
    return {**get_state(request).faults.current.model_dump(), "leaked_mb": leaked_mb()}


@router.put("/faults", response_model=FaultsState,
            responses={413: TOO_LARGE, 422: INVALID})
async def put_faults(request: Request, faults: Faults) -> dict[str, Any]:
    """Replace all fault knobs (omitted ones reset to 0)."""
    get_state(request).faults.replace(faults)
    return {**faults.model_dump(), "leaked_mb": leaked_mb()}
