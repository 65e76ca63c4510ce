"""The load client's HTTP/1.1: a small keep-alive connection pool on asyncio Protocols, each
response parsed by httptools (llhttp, the C parser under uvicorn and Node.js).

Plumbing with one job, kept small so that the client spends its CPU on the schedule and the
records, not on the library: one pool per URL sends a request's bytes on a pooled connection
and returns the response, or raises one of three errors that the client records as kinds:

    ConnectError    no connection: refused, unreachable, unknown host, TLS handshake  "connect"
    ClosedError     the connection closed or was reset before the response ended      "read"
    ProtocolError   what came back is not an HTTP/1.x response                        "protocol"

(a deadline is the caller's: `asyncio.timeout` around `Pool.send`, recorded as "timeout").

One request at a time on a connection (no pipelining). A connection goes back to the pool when
its response has ended and both sides keep it alive; one whose request was abandoned (its
deadline passed) is closed, since its answer may still arrive. At most `limit` connections are
open at once; further requests wait for one, first come first served, and the wait is part
of their deadline. Only an https URL imports ssl (it verifies the server's certificate).
"""
from __future__ import annotations

import asyncio
import base64
from collections import deque
from typing import Any, Mapping
from urllib.parse import quote, unquote, urlsplit

import httptools

# what every request says unless the caller's headers say otherwise
USER_AGENT = "uptime-playbook-loadgen"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # Content-Length: 0 even without a body


class HTTPError(Exception):
    """A request that got no complete HTTP response (never raised past the load client)."""


class ConnectError(HTTPError):
    """No connection to the server: refused, unreachable, unknown host, failed TLS handshake."""


class ClosedError(HTTPError):
    """The connection closed or was reset before the response ended.

    `answered` is False when not even the response's head had arrived: the server may never
    have seen the request (a keep-alive connection it closed just as the request left)."""

    def __init__(self, answered: bool, cause: BaseException | None = None):
        what = "mid-response" if answered else "before any response"
        super().__init__(f"connection closed {what}" + (f": {cause}" if cause else ""))
        self.answered = answered


class ProtocolError(HTTPError):
    """The bytes that came back are not a valid HTTP/1.x response."""


class Response:
    """A complete response: status, headers (names lower-cased) and body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body


def with_body(head: bytes, body: bytes, extra: bytes = b"") -> bytes:
    """A request from its `Pool.head`, `extra` header lines (each ending in CRLF) and a body."""
    return b"%s%sContent-Length: %d\r\n\r\n%s" % (head, extra, len(body), body)


class _HeadEnd(Exception):
    """Raised from the parser's callback to end a response to HEAD at its head."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its response, then hands itself
    back to its pool (or closes, when either side does not keep it alive)."""

    def __init__(self, pool: Pool):
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._head_only = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._head_done = False
        self._until_close = False  # a body that ends when the server closes the connection
        self.counted = False  # holds one of the pool's slots until it is lost
        self.closed = False

    # --- used by the pool ------------------------------------------------------------------

    def exchange(self, message: bytes, head_only: bool) -> asyncio.Future[Response]:
        """Write a request; the future gets its response or one of the errors above."""
        assert self._transport is not None and self._waiter is None
        self._waiter = waiter = self._pool.loop.create_future()
        self._head_only = head_only
        if self.closed or self._transport.is_closing():
            self._fail(ClosedError(False))
        else:
            self._transport.write(message)
        return waiter

    def abandon(self) -> None:
        """The request gave up (its deadline): its answer may still come, so never reuse."""
        self._waiter = None
        self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        self.closed = True
        self._pool._forget_idle(self)
        if self._transport is not None:
            self._transport.abort() if abort else self._transport.close()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: a server that talks out of turn
            self.close(abort=True)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadEnd):  # the HEAD response ended at its head
                self._parser = httptools.HttpResponseParser(self)
                return
            self._fail(ProtocolError(f"bad response: {exc}"))
        except httptools.HttpParserError as exc:  # also HttpParserUpgrade: no upgrades here
            self._fail(ProtocolError(f"bad response: {exc}"))

    def eof_received(self) -> bool:
        self.closed = True  # the server closed its side: answer what was read, reuse never
        self._pool._forget_idle(self)
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._lost(self)
        if self._waiter is not None:
            if self._until_close and self._head_done:
                self._finish(keep_alive=False)  # the close is the body's end
            else:
                self._fail(ClosedError(self._head_done, exc), close=False)

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._status, self._headers, self._body = 0, {}, []
        self._head_done = self._until_close = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (103 Early Hints): the real one follows
        self._head_done = True
        if self._head_only:
            self._finish(self._parser.should_keep_alive())
            raise _HeadEnd  # llhttp cannot be told that a HEAD response has no body
        headers = self._headers
        self._until_close = (status not in (204, 304) and "content-length" not in headers
                             and "chunked" not in headers.get("transfer-encoding", ""))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._head_done:
            self._finish(self._parser.should_keep_alive())

    # --- the end of an exchange -------------------------------------------------------------

    def _finish(self, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():  # its request gave up meanwhile
            self.close(abort=True)
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if keep_alive and not self.closed:
            self._pool._release(self)
        elif not self.closed:
            self.close()
        waiter.set_result(Response(self._status, self._headers, body))

    def _fail(self, exc: HTTPError, close: bool = True) -> None:
        waiter, self._waiter = self._waiter, None
        if close:
            self.close(abort=True)
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class Pool:
    """Keep-alive connections to the server of one URL, at most `limit` of them at once."""

    def __init__(self, url: str, limit: int, *, user_agent: str = USER_AGENT,
                 loop: asyncio.AbstractEventLoop | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL with a host: {url!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        self.url, self.limit = url, limit
        self.loop = loop or asyncio.get_running_loop()
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: Any = None
        if parts.scheme == "https":
            import ssl  # only here: most of the course's URLs are plain http on loopback

            self._ssl = ssl.create_default_context()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.target = quote(target, safe="/?&=%:@!$'()*+,;~-._")  # spaces and the like
        default = {"host": ("Host", parts.netloc.rpartition("@")[2]),
                   "user-agent": ("User-Agent", user_agent), "accept": ("Accept", "*/*")}
        if parts.username is not None:  # user:password@host, as other clients do
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            default["authorization"] = ("Authorization",
                                        "Basic " + base64.b64encode(secret).decode())
        self._default = default
        self._idle: list[_Connection] = []  # most recently used last: the warmest first
        self._open: set[_Connection] = set()
        self._size = 0  # slots taken: connections open, or being opened
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()

    def head(self, method: str, headers: Mapping[str, str] | None = None) -> bytes:
        """A request's line and header lines: Host, User-Agent and Accept unless `headers`
        give their own, then `headers`. Made once per kind of request; `with_body` or
        `message` end it."""
        lines = [f"{method} {self.target} HTTP/1.1"]
        given = {name.lower() for name in headers} if headers else set()
        lines += [f"{k}: {v}" for key, (k, v) in self._default.items() if key not in given]
        for name, value in (headers or {}).items():
            if any(c in f"{name}{value}" for c in "\r\n"):
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    def message(self, method: str, headers: Mapping[str, str] | None = None,
                body: bytes | None = None) -> bytes:
        """A whole request's bytes: `head`, Content-Length when there is a body (or the
        method takes one) and the caller gave none, then the body."""
        head = self.head(method, headers)
        if not any(name.lower() == "content-length" for name in headers or {}) and (
                body is not None or method in _BODY_METHODS):
            return with_body(head, body or b"")
        return head + b"\r\n" + (body or b"")

    async def send(self, message: bytes, head_only: bool = False, fresh: bool = False
                   ) -> Response:
        """Send a request's bytes (`message()`) on a pooled connection; its response.

        `fresh`: on a new connection, not an idle one (a re-send after an idle one closed
        unanswered: the server may be closing the others it kept, as retiring nginx
        workers do). At the limit, one idle connection is closed to make room."""
        if fresh:
            if self._idle and self._size >= self.limit:
                self._idle.pop().close()  # its slot frees when it is lost
            conn = await self._acquire()
        else:
            conn = self._idle.pop() if self._idle else await self._acquire()
        reply = conn.exchange(message, head_only)
        try:
            return await reply
        except asyncio.CancelledError:
            if not reply.done() or reply.cancelled():  # gave up before its answer came
                conn.abandon()
            raise

    def close(self) -> None:
        """Close every connection (in-flight requests end as ClosedError)."""
        for conn in list(self._open):
            conn.close()

    @property
    def connections(self) -> int:
        """Connections open or being opened."""
        return self._size

    # --- slots and connections ---------------------------------------------------------------

    async def _acquire(self) -> _Connection:
        """An idle connection handed over by a finished request, or a new one."""
        if self._size < self.limit:
            self._size += 1
        else:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over as we gave up
                    handed = waiter.result()
                    self._release(handed) if handed is not None else self._free_slot()
                else:
                    try:
                        self._waiters.remove(waiter)
                    except ValueError:
                        pass
                raise
            if conn is not None:
                return conn
            # None: a slot was freed and reserved for this request: open a connection in it
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port, ssl=self._ssl,
                server_hostname=self.host if self._ssl else None)
        except asyncio.CancelledError:
            self._free_slot()
            raise
        except OSError as exc:  # refused, unreachable, unknown host; ssl.SSLError is one too
            self._free_slot()
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        conn.counted = True
        self._open.add(conn)
        if conn.closed:  # lost before this request could use it: frees its slot now
            self._lost(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        """A connection free for the next request: the longest waiting one, else idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _free_slot(self) -> None:
        """A slot freed: reserve it for the longest waiting request, if any."""
        self._size -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._size += 1
                waiter.set_result(None)
                return

    def _forget_idle(self, conn: _Connection) -> None:
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def _lost(self, conn: _Connection) -> None:
        self._forget_idle(conn)
        self._open.discard(conn)
        if conn.counted:
            conn.counted = False
            self._free_slot()
