"""Exception handlers: every error is JSON `{"error": ..., "detail": ...}`."""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from stack.errors import ApiError
from stack.api.middleware import route_of
from stack.api.state import get_state

log = logging.getLogger(__name__)

_LOC_ROOTS = ("body", "query", "header", "path", "cookie")


def describe_errors(errors: Any) -> list[dict[str, str]]:
    """Pydantic/FastAPI errors as [{"field": "amount", "message": "..."}]."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if len(loc) > 1 and loc[0] in _LOC_ROOTS:
            loc = loc[1:]
        kind = err.get("type", "")
        message = str(err.get("msg", "invalid value"))
        if kind == "json_invalid":
            field = "body"
            ctx = err.get("ctx") or {}
            message = f"malformed JSON: {ctx.get('error', message)}"
        elif kind == "missing" and loc == ["body"]:
            field, message = "body", "a JSON object body is required"
        else:
            field = ".".join(loc) or "body"
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
        out.append({"field": field, "message": message})
    return out


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "detail": describe_errors(exc.errors())},
                        status_code=422)


async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.error, "detail": exc.detail},
                        status_code=exc.status_code, headers=exc.headers or None)


def _unreadable_body(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not read a JSON body at all (bytes that are not UTF-8, say), or None.

    FastAPI answers that with a bare 400 "There was an error parsing the body", raised from the
    decoding error; malformed JSON it answers with a validation error. The client made the
    same mistake both times, so both get the same 422 naming the body."""
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        return str(exc.__cause__)
    return None


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this path, for a 405's Allow header. (The router
    names only the first route that matched the path: GET /admin/faults and PUT /admin/faults
    are two routes, and its Allow would say GET alone.)"""
    path = request.scope["path"]
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if (reason := _unreadable_body(exc)) is not None:
        return JSONResponse({"error": "invalid_request", "detail": [
            {"field": "body", "message": f"malformed JSON: {reason}"}]}, status_code=422)
    headers = dict(getattr(exc, "headers", None) or {})
    detail = exc.detail
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
        detail = f"{request.url.path} takes {headers['Allow']} only"
    try:
        slug = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        slug = "http_error"
    return JSONResponse({"error": slug, "detail": detail}, status_code=exc.status_code,
                        headers=headers or None)


async def on_unhandled(request: Request, exc: Exception) -> JSONResponse:
    """Backstop for errors outside the routes (the CatchAll middleware handles the rest)."""
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    get_state(request).reporter.report(exc, cause="unhandled", route=route_of(request.scope))
    return JSONResponse({"error": "internal_error"}, status_code=500)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unhandled)
