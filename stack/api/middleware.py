"""Pure ASGI middleware: metrics and X-Backend, the admin-port guard, the body limit and the
last-resort 500."""
from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stack.errors import InjectedFault
from stack.api.state import ApiState

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
ADMIN_PREFIX = "/admin"
# Paths the admin port answers besides /admin.
ADMIN_PORT_PATHS = ("/healthz", "/readyz", "/metrics")


def route_of(scope: Scope) -> str:
    """The matched route's template (e.g. /predict), or "other"."""
    route = scope.get("route")
    return getattr(route, "path", None) or "other"


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def served_on(path: str, *, admin_port: bool) -> bool:
    """Whether a port serves a path: /admin only on the admin port, which serves nothing else
    but the probes. The guard below and the two OpenAPI documents both follow this."""
    if admin_port:
        return is_admin_path(path) or path in ADMIN_PORT_PATHS
    return not is_admin_path(path)


class MetricsMiddleware:
    """Counts, times and tracks in-flight requests, and adds `X-Backend: <replica>`."""

    def __init__(self, app: ASGIApp, state: ApiState):
        self.app, self.state = app, state
        self.backend = state.settings.name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.state.metrics
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Backend", self.backend)
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m.in_flight.dec()
            route = route_of(scope)
            m.duration.labels(route).observe(time.perf_counter() - start)
            m.requests.labels(route, scope["method"], str(status)).inc()


class AdminPortGuard:
    """/admin only on the admin port (404 elsewhere); the admin port serves nothing else
    but /healthz, /readyz and /metrics."""

    def __init__(self, app: ASGIApp, admin_port: int):
        self.app, self.admin_port = app, admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            on_admin_port = bool(server) and server[1] == self.admin_port
            if not served_on(scope["path"], admin_port=on_admin_port):
                response = JSONResponse({"error": "not_found", "detail": "Not Found"},
                                        status_code=404)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length and by counting streamed bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"error": "body_too_large",
             "detail": f"request body is larger than {self.max_bytes} bytes"},
            status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, receive, send)
                    return
        # Read the whole body here (at most max_bytes), then replay it to the app.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class CatchAllMiddleware:
    """Any exception the routes did not handle: a 500 `{"error": "internal_error"}`,
    logged and reported to sentry."""

    def __init__(self, app: ASGIApp, state: ApiState):
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            route = route_of(scope)
            if isinstance(exc, InjectedFault):
                log.warning("%s %s: %s", scope["method"], scope["path"], exc)
            else:
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            self.state.reporter.report(exc, cause="unhandled", route=route)
            if started:
                raise
            response = JSONResponse({"error": "internal_error"}, status_code=500)
            await response(scope, receive, send)
