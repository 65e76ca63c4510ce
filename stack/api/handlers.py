"""Exception handlers: every error is JSON `{"error": ..., "detail": ...}`."""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    try:
        slug = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        slug = "http_error"
    return JSONResponse({"error": slug, "detail": exc.detail}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


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
