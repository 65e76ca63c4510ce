"""Open-loop load generator and uptime prober that write one JSON line per request.

Requests leave on a fixed schedule (request i is due at start + i/rate), each in its own asyncio
task, so a stalled server cannot slow the clock and hide its own outage. `Traffic` runs the load
and the prober in a background thread so the caller can inject faults meanwhile.
"""
from __future__ import annotations

import asyncio
import socket
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import numpy as np

from stack.errors import ConfigError, StackError

log = logging.getLogger(__name__)

LATE_S = 0.1  # a request leaving this late means the client, not the server, fell behind
STALE_CONNECTION_ATTEMPTS = 3  # tries of a keyed POST whose connection closes before an answer

RECORD_FIELDS = ("kind", "t", "wall", "latency_s", "lag_s", "status", "error", "backend",
                 "request_id")
ERROR_KINDS = ("http_4xx", "http_5xx", "timeout", "connect", "read", "protocol",
               "client_overload")
CATEGORIES = ("grocery", "restaurants", "fuel", "travel", "electronics", "gaming", "gift_cards",
              "other")
CATEGORY_WEIGHTS = (0.30, 0.18, 0.14, 0.06, 0.08, 0.06, 0.04, 0.14)
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "BR", "IN", "NG")
COUNTRY_WEIGHTS = (0.45, 0.12, 0.10, 0.08, 0.05, 0.08, 0.08, 0.04)


@dataclass(frozen=True)
class TrafficResult:
    """What a finished run sent and got back; the records themselves are in `path`."""

    name: str
    path: Path
    load_sent: int
    load_ok: int
    probes_sent: int
    probes_ok: int
    duration_s: float
    load_late: int = 0  # left LATE_S or more after their slot, or never (client_overload)

    @property
    def load_failed(self) -> int:
        return self.load_sent - self.load_ok

    @property
    def probes_failed(self) -> int:
        return self.probes_sent - self.probes_ok


class Transactions:
    """Random valid /predict bodies from a seeded generator, drawn in vectorised batches."""

    def __init__(self, n_customers: int = 2000, seed: int = 0, batch: int = 1024):
        self.n_customers = n_customers
        self._rng = np.random.default_rng(seed)
        self._batch = batch
        self._buf: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        if not self._buf:
            self._buf = self._draw()
            self._buf.reverse()
        return self._buf.pop()

    def _draw(self) -> list[dict[str, Any]]:
        rng, n = self._rng, self._batch
        cat_p = np.array(CATEGORY_WEIGHTS) / sum(CATEGORY_WEIGHTS)
        country_p = np.array(COUNTRY_WEIGHTS) / sum(COUNTRY_WEIGHTS)
        customers = rng.integers(1, self.n_customers + 1, n)
        amounts = np.maximum(np.round(rng.lognormal(math.log(50.0), 1.0, n), 2), 0.01)
        cats = rng.choice(len(CATEGORIES), n, p=cat_p)
        countries = rng.choice(len(COUNTRIES), n, p=country_p)
        hours = rng.integers(0, 24, n)
        online = rng.random(n) < 0.4
        return [
            {"customer_id": int(c), "amount": float(a), "merchant_category": CATEGORIES[k],
             "country": COUNTRIES[g], "hour": int(h), "is_online": bool(o)}
            for c, a, k, g, h, o in zip(customers, amounts, cats, countries, hours, online)
        ]


class RecordWriter:
    """Writes records as JSON lines, flushing at most `flush_s` seconds apart."""

    def __init__(self, path: Path, flush_s: float = 1.0):
        self.path = path
        self._f = open(path, "w", encoding="utf-8")
        self._flush_s = flush_s
        self._last_flush = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        if time.monotonic() - self._last_flush >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _classify(exc: BaseException) -> str:
    """Map a client-side exception to an error kind."""
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return "read"
    return "protocol"


def _positive(field: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"must be > 0, got {value!r}", field=field)


class Traffic:
    """Open-loop load on POST /predict plus an uptime prober, run in a background thread.

    Records go to `<run_dir>/traffic-<name>.jsonl` (overwritten if it exists). The run ends
    by itself after `duration` seconds; in-flight requests then get at most `timeout` more.
    A request is not sent, and is recorded as "client_overload", when `max_in_flight` load
    requests are already out or its slot is more than `timeout` in the past. At most
    `max_connections` load requests are on the wire; the rest wait, and the wait counts
    towards their timeout and latency.
    """

    def __init__(self, base_url: str, run_dir: str | Path, *, rate: float = 50.0,
                 duration: float = 60.0, probe_url: str | None = None,
                 probe_path: str = "/readyz", probe_interval: float = 1.0,
                 timeout: float = 5.0, probe_timeout: float = 2.0, n_customers: int = 2000,
                 seed: int = 0, name: str = "traffic", progress: bool | None = None,
                 idempotency_keys: bool = False, max_in_flight: int = 2000,
                 max_connections: int = 500):
        for field, url in (("base_url", base_url), ("probe_url", probe_url)):
            if url is not None and not url.startswith(("http://", "https://")):
                raise ConfigError(f"must start with http:// or https://, got {url!r}",
                                  field=field)
        for field, value in (("rate", rate), ("duration", duration),
                             ("probe_interval", probe_interval), ("timeout", timeout),
                             ("probe_timeout", probe_timeout), ("n_customers", n_customers),
                             ("max_in_flight", max_in_flight),
                             ("max_connections", max_connections)):
            _positive(field, value)
        self.base_url = base_url.rstrip("/")
        self.probe_url = (probe_url or base_url).rstrip("/") + probe_path
        self.predict_url = self.base_url + "/predict"
        self.rate, self.duration = float(rate), float(duration)
        self.probe_interval, self.timeout, self.probe_timeout = (
            float(probe_interval), float(timeout), float(probe_timeout))
        self.name = name
        self.path = Path(run_dir) / f"traffic-{name}.jsonl"
        self.progress = duration > 5 if progress is None else progress
        self.idempotency_keys = idempotency_keys
        self.max_in_flight, self.max_connections = max_in_flight, max_connections
        self._tx = Transactions(n_customers, seed)
        self._counts = {"load": [0, 0], "probe": [0, 0]}  # kind -> [sent, ok]
        self._late = 0
        self.retried = 0  # re-sends after a connection closed without a response
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._schedules: list[asyncio.Task[None]] = []
        self._load_tasks: set[asyncio.Task[None]] = set()
        self._probe_tasks: set[asyncio.Task[None]] = set()
        self._t0: float | None = None
        self._ended: float | None = None
        self._writer: RecordWriter | None = None
        self._bar: Any = None
        self._exc: BaseException | None = None
        self._result: TrafficResult | None = None

    # --- caller's thread -------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since the schedule started (the same clock as the records' `t`)."""
        if self._t0 is None:
            return 0.0
        return (self._ended or time.monotonic()) - self._t0

    def start(self) -> Traffic:
        """Start the background thread; returns once the schedule's clock has started."""
        if self._thread is not None:
            raise StackError(f"traffic '{self.name}' was already started; create a new Traffic")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = RecordWriter(self.path)
        if self.progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=int(math.ceil(self.duration)), unit="s", desc=self.name)
        self._thread = threading.Thread(target=self._run_thread, name=f"traffic-{self.name}",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        log.info("traffic %s: %.0f req/s for %.0fs on %s, probing %s every %.1fs -> %s",
                 self.name, self.rate, self.duration, self.predict_url, self.probe_url,
                 self.probe_interval, self.path)
        return self

    def wait(self, timeout: float | None = None) -> TrafficResult:
        """Wait for the run to end; re-raises any error from the background thread."""
        if self._thread is None:
            raise StackError(f"traffic '{self.name}' was never started; call start() first")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise StackError(f"traffic '{self.name}' still running after {timeout}s; "
                             "call stop() to end it early")
        if self._exc is not None:
            raise self._exc
        assert self._result is not None
        return self._result

    def stop(self) -> TrafficResult:
        """End early: send nothing new, wait (bounded) for in-flight requests, return."""
        if self._thread is None:
            raise StackError(f"traffic '{self.name}' was never started; call start() first")
        with self._lock:
            self._stop_requested = True
            loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._cancel_schedules)
            except RuntimeError:  # the loop has already closed
                pass
        return self.wait(max(self.timeout, self.probe_timeout) + 10.0)

    def __enter__(self) -> Traffic:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.stop()
        except Exception:
            if exc_type is None:
                raise
            log.exception("traffic %s failed while another error was raised", self.name)

    # --- background thread -----------------------------------------------------------------

    def _run_thread(self) -> None:
        try:
            self._result = asyncio.run(self._main())
        except BaseException as exc:  # handed to the caller by wait()
            self._exc = exc
        finally:
            self._ready.set()
            if self._writer is not None:
                self._writer.close()
            if self._bar is not None:
                self._update_bar()
                self._bar.close()

    async def _main(self) -> TrafficResult:
        loop = asyncio.get_running_loop()
        load_limits = httpx.Limits(max_connections=self.max_connections,
                                   max_keepalive_connections=self.max_connections)
        async with (
            httpx.AsyncClient(limits=load_limits, timeout=self.timeout, trust_env=False,
                              transport=_transport(load_limits)) as lc,
            httpx.AsyncClient(timeout=self.probe_timeout, trust_env=False,
                              transport=_transport(httpx.Limits())) as pc,
        ):
            self._t0 = loop.time()
            self._schedules = [loop.create_task(self._load_schedule(lc)),
                               loop.create_task(self._probe_schedule(pc))]
            ticker = loop.create_task(self._tick())
            with self._lock:
                self._loop = loop
                if self._stop_requested:
                    self._cancel_schedules()
            self._ready.set()
            # 1. send on schedule until the duration is up or stop() cancels the schedules
            for outcome in await asyncio.gather(*self._schedules, return_exceptions=True):
                if isinstance(outcome, Exception):
                    raise outcome
            self._ended = loop.time()
            # 2. drain: in-flight requests end by their own timeouts; this bound is a backstop
            pending = self._load_tasks | self._probe_tasks
            if pending:
                _, pending = await asyncio.wait(
                    pending, timeout=max(self.timeout, self.probe_timeout) + 1.0)
            # 3. force: cancel what is left (each records itself as a timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        (load_sent, load_ok), (probes_sent, probes_ok) = self._counts["load"], self._counts["probe"]
        log.info("traffic %s done: load %d/%d ok, probes %d/%d ok", self.name, load_ok,
                 load_sent, probes_ok, probes_sent)
        if self._late > 0.01 * max(load_sent, 1):
            log.warning("traffic %s: %d of %d requests left late or not at all; the client "
                        "could not keep up (lower the rate or in-flight load), so some failures "
                        "may be the client's", self.name, self._late, load_sent)
        return TrafficResult(self.name, self.path, load_sent, load_ok, probes_sent, probes_ok,
                             round(self._ended - self._t0, 3), self._late)

    def _cancel_schedules(self) -> None:
        for task in self._schedules:
            task.cancel()

    async def _schedule(self, period: float, launch: Any) -> None:
        """Call `launch(due)` at t0, t0+period, ... until the duration is up; never waits on
        responses, so the clock keeps going whatever the server does."""
        loop = asyncio.get_running_loop()
        assert self._t0 is not None
        i = 0
        while i * period < self.duration - 1e-9:
            due = self._t0 + i * period
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i % 64 == 0:
                await asyncio.sleep(0)  # running late: still let responses be handled
            launch(due)
            i += 1

    async def _load_schedule(self, client: httpx.AsyncClient) -> None:
        loop = asyncio.get_running_loop()

        gate = asyncio.Semaphore(self.max_connections)

        def launch(due: float) -> None:
            now = loop.time()
            if len(self._load_tasks) >= self.max_in_flight or now - due > self.timeout:
                self._record("load", due, now, time.time(), 0.0, 0, "client_overload", "", "")
                return
            task = loop.create_task(self._send_load(client, due, gate))
            self._load_tasks.add(task)
            task.add_done_callback(self._load_tasks.discard)

        await self._schedule(1.0 / self.rate, launch)

    async def _probe_schedule(self, client: httpx.AsyncClient) -> None:
        loop = asyncio.get_running_loop()

        def launch(due: float) -> None:
            now = loop.time()
            if now - due > self.probe_timeout:
                self._record("probe", due, now, time.time(), 0.0, 0, "client_overload", "", "")
                return
            task = loop.create_task(self._send_probe(client, due))
            self._probe_tasks.add(task)
            task.add_done_callback(self._probe_tasks.discard)

        await self._schedule(self.probe_interval, launch)

    async def _send_load(self, client: httpx.AsyncClient, due: float,
                         gate: asyncio.Semaphore) -> None:
        body = self._tx.next()
        if not self.idempotency_keys:
            await self._send("load", due, self.timeout, lambda: client.post(
                self.predict_url, json=body), gate)
            return
        headers = {"Idempotency-Key": str(uuid.uuid4())}

        async def post_with_retries() -> httpx.Response:
            # A keep-alive connection the server closed just as we sent (nginx workers quit
            # on a reload) fails before any response: writing the request, or reading the
            # answer, hits a closed socket. HTTP clients retry such a request on another
            # connection; with an Idempotency-Key that is safe for a POST too. The next pooled
            # connection may be stale as well, so a few attempts, all under the deadline.
            for attempt in range(STALE_CONNECTION_ATTEMPTS):
                try:
                    return await client.post(self.predict_url, json=body, headers=headers)
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                    if attempt == STALE_CONNECTION_ATTEMPTS - 1:
                        raise
                    self.retried += 1
            raise AssertionError("unreachable")

        await self._send("load", due, self.timeout, post_with_retries, gate)

    async def _send_probe(self, client: httpx.AsyncClient, due: float) -> None:
        await self._send("probe", due, self.probe_timeout, lambda: client.get(self.probe_url))

    async def _send(self, kind: str, due: float, timeout: float,
                    request: Callable[[], Awaitable[httpx.Response]],
                    gate: asyncio.Semaphore | None = None) -> None:
        """Send one request under an overall deadline and record its outcome. Waiting for a
        connection slot at `gate` counts towards the deadline and the latency."""
        loop = asyncio.get_running_loop()
        sent, wall = loop.time(), time.time()
        status, error, backend, request_id = 0, "", "", ""
        try:
            async with asyncio.timeout(timeout):
                if gate is None:
                    resp = await request()
                else:
                    async with gate:  # queue here, not in httpcore's pool (slow when long)
                        resp = await request()
            status = resp.status_code
            backend = resp.headers.get("x-backend", "")
            if not 200 <= status < 300:
                error = f"http_{status // 100}xx"
            elif kind == "load":
                request_id = _request_id(resp)
        except asyncio.CancelledError:
            self._record(kind, due, sent, wall, loop.time() - sent, 0, "timeout", "", "")
            raise
        except (TimeoutError, httpx.HTTPError) as exc:
            error = _classify(exc)
        self._record(kind, due, sent, wall, loop.time() - sent, status, error, backend,
                     request_id)

    def _record(self, kind: str, due: float, sent: float, wall: float, latency: float,
                status: int, error: str, backend: str, request_id: str) -> None:
        assert self._t0 is not None and self._writer is not None
        counts = self._counts[kind]
        counts[0] += 1
        counts[1] += error == ""
        if kind == "load" and (sent - due >= LATE_S or error == "client_overload"):
            self._late += 1
        self._writer.write({
            "kind": kind, "t": round(due - self._t0, 6),
            "wall": round(wall, 6),
            "latency_s": round(latency, 6), "lag_s": round(sent - due, 6), "status": status,
            "error": error, "backend": backend, "request_id": request_id})

    async def _tick(self) -> None:
        """Once a second: flush the records file and update the progress bar."""
        while True:
            await asyncio.sleep(1.0)
            assert self._writer is not None
            self._writer.flush()
            if self._bar is not None:
                self._update_bar()

    def _update_bar(self) -> None:
        sent, ok = self._counts["load"]
        self._bar.n = min(int(self.elapsed), self._bar.total)
        self._bar.set_postfix(sent=sent, ok=ok, failed=sent - ok, refresh=False)
        self._bar.refresh()


def _request_id(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return ""
    return str(data.get("request_id", "")) if isinstance(data, dict) else ""


def _transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """TCP_NODELAY: httpx writes a request's headers and body separately, and with Nagle's
    algorithm the body waits for the server's delayed ACK (about 40 ms on Linux)."""
    return httpx.AsyncHTTPTransport(
        limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


def run_traffic(base_url: str, run_dir: str | Path, **kw: Any) -> TrafficResult:
    """Run `Traffic(base_url, run_dir, **kw)` to the end and return its result."""
    with Traffic(base_url, run_dir, **kw) as traffic:
        return traffic.wait()
