"""The load client's own process: `python -m stack.lab.loadgen CONFIG_JSON`.

`stack.lab.traffic.Traffic` starts this process so that the client never shares a Python
interpreter (and its GIL) with the notebook kernel, the test or the lab code that injects
faults: a client starved by its caller would send late and make the server look bad.

It speaks one JSON object per line on stdout:

    {"event": "started", "t0": <CLOCK_MONOTONIC seconds>}      the schedule's clock
    {"event": "tick", "sent": n, "ok": n, "late": n}           once a second
    {"event": "done", ...the result's fields...}               at the end
    {"event": "error", "message": "..."}                       and exit status 1

and stops early when it reads "stop" or end-of-file on stdin (the caller asked, or died):
it never outlives its caller by more than its own timeouts.

HTTP is the small keep-alive pool of `stack.lab.loadgen_http` (asyncio Protocols, httptools'
C parser) on uvloop; request bytes are built from parts made once. The schedules are timer
callbacks, each request one task: at a few hundred requests a second or fewer, the cost of a
request is mostly waking up for it, so each wake-up does as little as it can. The process
imports no numpy, pandas or ssl (ssl only for an https URL).
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from typing import Any, Awaitable, Callable

import uvloop

from stack.analysis.fields import LATE_S
from stack.lab.loadgen_http import (ClosedError, ConnectError, HTTPError, Pool, Response,
                                    with_body)
from stack.lab.traffic import STALE_CONNECTION_ATTEMPTS, RecordWriter, Transactions


# Every time the client records (the schedule, latency, lag) is read here: uvloop's loop.time()
# is libuv's cached millisecond clock, too coarse for a request that takes a millisecond.
_now = time.monotonic

PROBE_CONNECTIONS = 8
_JSON = {"Content-Type": "application/json"}
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per call


def classify(exc: BaseException) -> str:
    """Map a client-side exception to an error kind."""
    if isinstance(exc, TimeoutError):  # a deadline: the request's own is a CancelledError
        return "timeout"
    if isinstance(exc, ConnectError):  # refused, unreachable: never sent
        return "connect"
    if isinstance(exc, (ClosedError, OSError)):
        return "read"  # the connection closed or reset under the request
    return "protocol"


class _Schedule:
    """Calls `launch(due)` at t0, t0+period, ... until `duration` is up, from timer callbacks;
    never waits on responses, so the clock keeps going whatever the server does. Running
    late, it launches up to 64 overdue requests in a row, then lets responses be handled."""

    def __init__(self, loop: asyncio.AbstractEventLoop, t0: float, period: float,
                 duration: float, launch: Callable[[float], None]):
        self.loop, self.t0, self.period, self.duration = loop, t0, period, duration
        self.launch = launch
        self.done: asyncio.Future[None] = loop.create_future()
        self._i = 0
        self._timer_for = -1  # the slot the pending timer is set for
        self._handle: asyncio.Handle = loop.call_soon(self._fire)

    def cancel(self) -> None:
        """Launch nothing more (in-flight requests go on)."""
        self._handle.cancel()
        if not self.done.done():
            self.done.set_result(None)

    def _fire(self) -> None:
        try:
            for _ in range(64):
                if not self._i * self.period < self.duration - 1e-9:
                    self.done.set_result(None)
                    return
                due = self.t0 + self._i * self.period
                # a timer set for this slot makes it due: libuv's millisecond timers may wake
                # a fraction of a millisecond early, and the record's lag_s shows it as it is
                if self._i != self._timer_for and due > _now():
                    self._timer_for = self._i
                    self._handle = self.loop.call_later(due - _now(), self._fire)
                    return
                self.launch(due)
                self._i += 1
            self._handle = self.loop.call_soon(self._fire)  # 64 overdue: let responses in
        except BaseException as exc:  # a bug in launch: the run ends with it, never hangs
            if not self.done.done():
                self.done.set_exception(exc)


class Engine:
    """The open-loop schedules, the requests and their records, on one asyncio loop."""

    def __init__(self, cfg: dict[str, Any], emit: Callable[[dict[str, Any]], None]):
        self.cfg = cfg
        self.emit = emit
        self.rate, self.duration = float(cfg["rate"]), float(cfg["duration"])
        self.timeout, self.probe_timeout = float(cfg["timeout"]), float(cfg["probe_timeout"])
        self.tx = Transactions(int(cfg["n_customers"]), int(cfg["seed"]))
        self.writer = RecordWriter(cfg["path"])
        # (method, body, headers) of a fixed request; None: random POST /predict bodies
        self.fixed: tuple[str, bytes | None, dict[str, str]] | None = None
        if cfg.get("fixed"):
            body = cfg.get("body")
            headers = dict(cfg.get("headers") or {})
            if body is not None and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
            self.fixed = (cfg.get("method", "POST"),
                          None if body is None else str(body).encode(), headers)
        self.counts = {"load": [0, 0], "probe": [0, 0]}  # kind -> [sent, ok]
        self.late = 0
        self.retried = 0  # re-sends: a connection closed unanswered, or a 503's Retry-After
        self.waited_503 = 0  # of those, re-sends after a 503's Retry-After
        self.schedules: list[_Schedule] = []
        self.load_tasks: set[asyncio.Task[None]] = set()
        self.probe_tasks: set[asyncio.Task[None]] = set()
        self.t0 = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._stop_requested = False

    def stop_soon(self) -> None:
        """From any thread: send nothing new; in-flight requests end by their timeouts."""
        with self._lock:
            self._stop_requested = True
            loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._cancel_schedules)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _cancel_schedules(self) -> None:
        for schedule in self.schedules:
            schedule.cancel()

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        load_pool = Pool(cfg["predict_url"], int(cfg["max_connections"]))
        probe_pool = Pool(cfg["probe_url"], PROBE_CONNECTIONS)
        try:
            self.t0 = _now()  # CLOCK_MONOTONIC: the caller reads the same clock
            if cfg.get("load", True):
                self.schedules.append(_Schedule(loop, self.t0, 1.0 / self.rate,
                                                self.duration, self._load_launcher(load_pool)))
            if cfg.get("probe", True):
                self.schedules.append(_Schedule(loop, self.t0, float(cfg["probe_interval"]),
                                                self.duration, self._probe_launcher(probe_pool)))
            ticker = loop.create_task(self._tick())
            with self._lock:
                self.loop = loop
                if self._stop_requested:
                    self._cancel_schedules()
            self.emit({"event": "started", "t0": self.t0})
            # 1. send on schedule until the duration is up or a stop cancels the schedules
            for outcome in await asyncio.gather(*(s.done for s in self.schedules),
                                                return_exceptions=True):
                if isinstance(outcome, Exception):
                    raise outcome
            ended = _now()
            # 2. drain: in-flight requests end by their own timeouts; this bound is a backstop
            pending = self.load_tasks | self.probe_tasks
            if pending:
                _, pending = await asyncio.wait(
                    pending, timeout=max(self.timeout, self.probe_timeout) + 1.0)
            # 3. force: cancel what is left (each records itself as a timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        finally:
            load_pool.close()
            probe_pool.close()
        self.writer.close()
        (load_sent, load_ok), (probes_sent, probes_ok) = self.counts["load"], self.counts["probe"]
        return {"event": "done", "load_sent": load_sent, "load_ok": load_ok,
                "probes_sent": probes_sent, "probes_ok": probes_ok,
                "duration_s": round(ended - self.t0, 3), "load_late": self.late,
                "retried": self.retried, "waited_503": self.waited_503,
                "cpu_s": round(time.process_time(), 3)}

    def _load_launcher(self, pool: Pool) -> Callable[[float], None]:
        loop = asyncio.get_running_loop()
        max_in_flight = int(self.cfg["max_in_flight"])
        if self.fixed is not None:  # another API's request, the same bytes every time
            method, body, headers = self.fixed
            message, head_only = pool.message(method, headers, body), method == "HEAD"

            def request() -> Awaitable[Response]:
                return pool.send(message, head_only)
        elif self.cfg["idempotency_keys"]:
            head = pool.head("POST", _JSON)

            def request() -> Awaitable[Response]:
                key = b"Idempotency-Key: %s\r\n" % str(uuid.uuid4()).encode()
                return self._post_with_retries(pool, with_body(head, self._body(), key))
        else:
            head = pool.head("POST", _JSON)

            def request() -> Awaitable[Response]:
                return pool.send(with_body(head, self._body()))

        def launch(due: float) -> None:
            now = _now()
            if len(self.load_tasks) >= max_in_flight or now - due > self.timeout:
                self._record("load", due, now, time.time(), 0.0, 0, "client_overload", "", "")
                return
            self.load_tasks.add(loop.create_task(
                self._send("load", due, self.timeout, request, self.load_tasks)))

        return launch

    def _probe_launcher(self, pool: Pool) -> Callable[[float], None]:
        loop = asyncio.get_running_loop()
        message = pool.message("GET")

        def request() -> Awaitable[Response]:
            return pool.send(message)

        def launch(due: float) -> None:
            now = _now()
            if now - due > self.probe_timeout:
                self._record("probe", due, now, time.time(), 0.0, 0, "client_overload", "", "")
                return
            self.probe_tasks.add(loop.create_task(
                self._send("probe", due, self.probe_timeout, request, self.probe_tasks)))

        return launch

    def _body(self) -> bytes:
        return _dumps(self.tx.next()).encode()

    async def _post_with_retries(self, pool: Pool, message: bytes) -> Response:
        """A POST /predict with an Idempotency-Key, re-sent when that is safe and useful.

        A keep-alive connection the server closed just as we sent (nginx workers quit on a
        reload) fails before any response: writing the request, or reading the answer, hits
        a closed socket. HTTP clients retry such a request on another connection; with an
        Idempotency-Key that is safe for a POST too, also when the connection closed in the
        middle of the answer (the API answers a repeated key with the answer it stored, and
        never scores twice). The other pooled connections may be closing as well, so each
        re-send opens a new one; a few attempts, all under the deadline. A 503 that says
        Retry-After (no database primary for a moment) is tried again after that wait, if the
        wait ends before the request's deadline."""
        deadline = _now() + self.timeout
        attempt = 1
        while True:
            try:
                resp = await pool.send(message, fresh=attempt > 1)
            except ClosedError:
                if attempt >= STALE_CONNECTION_ATTEMPTS:
                    raise
                attempt += 1
                self.retried += 1
                continue
            wait = _retry_after(resp)
            if wait is None or _now() + wait >= deadline - 0.05:
                return resp
            self.retried += 1
            self.waited_503 += 1
            await asyncio.sleep(wait)

    async def _send(self, kind: str, due: float, timeout: float,
                    request: Callable[[], Awaitable[Response]],
                    tasks: set[asyncio.Task[None]]) -> None:
        """Send one request under an overall deadline (waiting for a connection slot counts)
        and record its outcome. The deadline cancels the request's task, as the drain's
        force does: either is recorded as a timeout. (One timer, not asyncio.timeout's
        context manager: at a low rate each wake-up's every step costs.)"""
        task = asyncio.current_task()
        assert task is not None
        expire = asyncio.get_running_loop().call_later(timeout, task.cancel)
        sent, wall = _now(), time.time()
        status, error, backend, request_id = 0, "", "", ""
        try:
            resp = await request()
            status = resp.status
            backend = resp.headers.get("x-backend", "")
            if not 200 <= status < 300:
                error = f"http_{status // 100}xx"
            elif kind == "load":
                request_id = _request_id(resp.body)
        except asyncio.CancelledError:
            self._record(kind, due, sent, wall, _now() - sent, 0, "timeout", "", "")
            raise
        except (TimeoutError, HTTPError, OSError) as exc:
            error = classify(exc)
        finally:
            expire.cancel()
            tasks.discard(task)
        self._record(kind, due, sent, wall, _now() - sent, status, error, backend,
                     request_id)

    def _record(self, kind: str, due: float, sent: float, wall: float, latency: float,
                status: int, error: str, backend: str, request_id: str) -> None:
        counts = self.counts[kind]
        counts[0] += 1
        counts[1] += error == ""
        if kind == "load" and (sent - due >= LATE_S or error == "client_overload"):
            self.late += 1
        self.writer.write({
            "kind": kind, "t": round(due - self.t0, 6), "wall": round(wall, 6),
            "latency_s": round(latency, 6), "lag_s": round(sent - due, 6), "status": status,
            "error": error, "backend": backend, "request_id": request_id})

    async def _tick(self) -> None:
        """Once a second: flush the records file and tell the caller the counts."""
        while True:
            await asyncio.sleep(1.0)
            self.writer.flush()
            sent, ok = self.counts["load"]
            self.emit({"event": "tick", "sent": sent, "ok": ok, "late": self.late})


def _retry_after(resp: Response) -> float | None:
    """Seconds a 503 asks the client to wait (Retry-After in seconds), or None."""
    if resp.status != 503:
        return None
    try:
        return max(0.0, float(resp.headers.get("retry-after", "")))
    except ValueError:
        return None


def _request_id(data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return ""
    return str(body.get("request_id", "")) if isinstance(body, dict) else ""


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(_dumps(message) + "\n")
    sys.stdout.flush()


def _watch_stdin(engine: Engine) -> None:
    """Stop when the caller writes "stop" or goes away (end of file on stdin)."""
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    engine.stop_soon()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m stack.lab.loadgen CONFIG_JSON (started by stack.lab.traffic.Traffic)",
              file=sys.stderr)
        return 2
    try:
        engine = Engine(json.loads(args[0]), _emit)
        threading.Thread(target=_watch_stdin, args=(engine,), daemon=True).start()
        _emit(uvloop.run(engine.run()))
    except Exception as exc:  # told to the caller, which raises it
        _emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
