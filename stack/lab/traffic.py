"""Open-loop load generator and uptime prober that write one JSON line per request.

Requests leave on a fixed schedule (request i is due at start + i/rate), each in its own asyncio
task, so a stalled server cannot slow the clock and hide its own outage. `Traffic` runs the load
and the prober in a process of its own (`stack.lab.loadgen`), so that neither the caller (a notebook
kernel, a test, the code that injects faults) nor its GIL can make the client send late; the
caller injects faults meanwhile and reads the schedule's clock with `elapsed`.

A client that falls behind its schedule proves nothing about the server: `TrafficResult.
client_behind` says so (more than 1% of the load requests left late or not at all), and the
verdicts built on such a run say INCONCLUSIVE.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.analysis.fields import behind_note
from stack.errors import ConfigError, StackError

log = logging.getLogger(__name__)
_compact = json.JSONEncoder(separators=(",", ":")).encode  # one encoder for every record

START_DEADLINE_S = 20.0  # for the client's process to start its clock
STALE_CONNECTION_ATTEMPTS = 3  # tries of a keyed POST whose connection closes before an answer

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
    retried: int = 0  # keyed POSTs re-sent: connection closed unanswered, or a 503's Retry-After
    client_cpu_s: float = 0.0  # CPU seconds the client's process used
    waited_503: int = 0  # of the retried: a 503 said Retry-After, the client waited and re-sent

    @property
    def load_failed(self) -> int:
        return self.load_sent - self.load_ok

    @property
    def client_behind(self) -> bool:
        """The client itself fell behind its schedule: failures may be the client's."""
        return bool(self.client_note())

    def client_note(self) -> str:
        """Why a verdict on this run is INCONCLUSIVE ("" when the client kept up)."""
        return behind_note(self.load_late, self.load_sent)

    @property
    def probes_failed(self) -> int:
        return self.probes_sent - self.probes_ok


class Transactions:
    """Random valid /predict bodies from a seeded generator (the standard library's: the load
    client's process never imports numpy), drawn `batch` at a time."""

    def __init__(self, n_customers: int = 2000, seed: int = 0, batch: int = 1024):
        self.n_customers = n_customers
        self._rng = random.Random(seed)
        self._batch = batch
        self._buf: list[dict[str, Any]] = []
        self._cat_cum = list(itertools.accumulate(CATEGORY_WEIGHTS))
        self._country_cum = list(itertools.accumulate(COUNTRY_WEIGHTS))

    def next(self) -> dict[str, Any]:
        if not self._buf:
            self._buf = [self._one() for _ in range(self._batch)]
            self._buf.reverse()
        return self._buf.pop()

    def _one(self) -> dict[str, Any]:
        rng = self._rng
        return {"customer_id": rng.randint(1, self.n_customers),
                "amount": max(round(rng.lognormvariate(math.log(50.0), 1.0), 2), 0.01),
                "merchant_category": rng.choices(CATEGORIES, cum_weights=self._cat_cum)[0],
                "country": rng.choices(COUNTRIES, cum_weights=self._country_cum)[0],
                "hour": rng.randrange(24), "is_online": rng.random() < 0.4}


class RecordWriter:
    """Writes records as JSON lines, flushing at most `flush_s` seconds apart."""

    def __init__(self, path: Path, flush_s: float = 1.0):
        self.path = path
        self._f = open(path, "w", encoding="utf-8")
        self._flush_s = flush_s
        self._last_flush = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(_compact(record) + "\n")
        if time.monotonic() - self._last_flush >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _positive(field: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"must be > 0, got {value!r}", field=field)


class Traffic:
    """Open-loop load on POST /predict plus an uptime prober, in a process of its own.

    Records go to `<run_dir>/traffic-<name>.jsonl` (overwritten if it exists). The run ends
    by itself after `duration` seconds; in-flight requests then get at most `timeout` more.
    A request is not sent, and is recorded as "client_overload", when `max_in_flight` load
    requests are already out or its slot is more than `timeout` in the past. At most
    `max_connections` load requests are on the wire; the rest wait, and the wait counts
    towards their timeout and latency. The client's own log is `<run_dir>/traffic-<name>.log`.
    """

    def __init__(self, base_url: str, run_dir: str | Path, *, rate: float = 50.0,
                 duration: float = 60.0, probe_url: str | None = None,
                 probe_path: str = "/readyz", probe_interval: float = 1.0,
                 timeout: float = 5.0, probe_timeout: float = 2.0, n_customers: int = 2000,
                 seed: int = 0, name: str = "traffic", progress: bool | None = None,
                 idempotency_keys: bool = False, max_in_flight: int = 2000,
                 max_connections: int = 500, load_path: str = "/predict",
                 method: str = "POST", body: str | None = None,
                 headers: dict[str, str] | None = None, load: bool = True,
                 probe: bool = True):
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
        self.predict_url = self.base_url + load_path
        # another API than the course's: one fixed request (method, body, headers) instead of
        # random /predict bodies; `load` or `probe` False runs the other schedule alone
        self.method, self.body, self.headers = method.upper(), body, dict(headers or {})
        self.load, self.probe = bool(load), bool(probe)
        self.fixed = (body is not None or headers is not None or self.method != "POST"
                      or load_path != "/predict")
        if not (self.load or self.probe):
            raise ConfigError("nothing to send: both load and probe are off", field="load")
        self.rate, self.duration = float(rate), float(duration)
        self.probe_interval, self.timeout, self.probe_timeout = (
            float(probe_interval), float(timeout), float(probe_timeout))
        self.name = name
        self.path = Path(run_dir) / f"traffic-{name}.jsonl"
        self.log_path = Path(run_dir) / f"traffic-{name}.log"
        self.progress = duration > 5 if progress is None else progress
        self.idempotency_keys = idempotency_keys
        self.max_in_flight, self.max_connections = max_in_flight, max_connections
        self.n_customers, self.seed = int(n_customers), int(seed)
        self.sent = self.ok = self.late = 0  # the client's counts, once a second
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._started = threading.Event()
        self._t0: float | None = None
        self._ended: float | None = None
        self._bar: Any = None
        self._error: str | None = None
        self._result: TrafficResult | None = None
        self._lock = threading.Lock()

    @property
    def retried(self) -> int:
        """Keyed POSTs re-sent after a connection closed unanswered or a 503's Retry-After
        (known at the end)."""
        return self._result.retried if self._result else 0

    @property
    def pid(self) -> int | None:
        """The client's process, once started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def elapsed(self) -> float:
        """Seconds since the schedule started (the same clock as the records' `t`)."""
        if self._t0 is None:
            return 0.0
        return (self._ended or time.monotonic()) - self._t0

    def config(self) -> dict[str, Any]:
        """What the client's process is told to do."""
        return {"predict_url": self.predict_url, "probe_url": self.probe_url,
                "rate": self.rate, "duration": self.duration,
                "probe_interval": self.probe_interval, "timeout": self.timeout,
                "probe_timeout": self.probe_timeout, "n_customers": self.n_customers,
                "seed": self.seed, "idempotency_keys": self.idempotency_keys,
                "max_in_flight": self.max_in_flight, "max_connections": self.max_connections,
                "path": str(self.path), "method": self.method, "body": self.body,
                "headers": self.headers, "fixed": self.fixed, "load": self.load,
                "probe": self.probe}

    def start(self) -> Traffic:
        """Start the client's process; returns once the schedule's clock has started."""
        if self._proc is not None:
            raise StackError(f"traffic '{self.name}' was already started; create a new Traffic")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        with open(self.log_path, "w") as log_file:
            # its own session: a Ctrl-C in the notebook reaches the caller, which stops it
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "stack.lab.loadgen", json.dumps(self.config())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
                bufsize=1, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if self.progress:
            # a text bar: a notebook widget would be stored frozen at its first state
            from tqdm import tqdm
            self._bar = tqdm(total=int(math.ceil(self.duration)), unit="s", desc=self.name)
        self._reader = threading.Thread(target=self._read, name=f"traffic-{self.name}",
                                        daemon=True)
        self._reader.start()
        if not self._started.wait(START_DEADLINE_S) or self._t0 is None:
            self._kill()
            self._reader.join(5.0)
            raise StackError(f"the load client '{self.name}' did not start within "
                             f"{START_DEADLINE_S:g} s: {self._error or 'no word from it'}"
                             f"{self._log_tail()}")
        log.info("traffic %s: %.0f req/s for %.0fs on %s, probing %s every %.1fs -> %s "
                 "(client pid %d)", self.name, self.rate, self.duration, self.predict_url,
                 self.probe_url, self.probe_interval, self.path, self._proc.pid)
        return self

    @property
    def finished(self) -> bool:
        """The client's process has ended (its run done, stopped, or failed)."""
        return self._reader is not None and not self._reader.is_alive()

    def wait(self, timeout: float | None = None) -> TrafficResult:
        """Wait for the run to end; raises StackError if the client's process failed."""
        if self._proc is None or self._reader is None:
            raise StackError(f"traffic '{self.name}' was never started; call start() first")
        self._reader.join(timeout)
        if self._reader.is_alive():
            raise StackError(f"traffic '{self.name}' still running after {timeout}s; "
                             "call stop() to end it early")
        try:
            self._proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self._kill()
        if self._result is None:
            raise StackError(f"the load client '{self.name}' failed (exit status "
                             f"{self._proc.returncode}): {self._error or 'it ended without a result'}"
                             f"{self._log_tail()}")
        return self._result

    def stop(self) -> TrafficResult:
        """End early: send nothing new, wait (bounded) for in-flight requests, return."""
        if self._proc is None:
            raise StackError(f"traffic '{self.name}' was never started; call start() first")
        self._tell("stop")
        try:
            return self.wait(max(self.timeout, self.probe_timeout) + 10.0)
        except StackError:
            self._kill()
            raise

    def __enter__(self) -> Traffic:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.stop()
        except Exception:
            if exc_type is None:
                raise
            log.exception("traffic %s failed while another error was raised", self.name)

    # --- the client's process ------------------------------------------------------------

    def _tell(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.closed:
            return
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):  # it has ended already
            pass

    def _kill(self) -> None:
        """The client's process only, by its PID (it leads its own session)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5.0)

    def _read(self) -> None:
        """The reader thread: the client's events, until it closes its stdout."""
        assert self._proc is not None and self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = event.get("event")
                if kind == "started":
                    self._t0 = float(event["t0"])
                    self._started.set()
                elif kind == "tick":
                    self.sent, self.ok, self.late = event["sent"], event["ok"], event["late"]
                    self._update_bar()
                elif kind == "done":
                    self._ended = self._t0 + float(event["duration_s"]) if self._t0 else None
                    self._result = TrafficResult(
                        self.name, self.path, event["load_sent"], event["load_ok"],
                        event["probes_sent"], event["probes_ok"], event["duration_s"],
                        event["load_late"], event["retried"], event["cpu_s"],
                        event["waited_503"])
                    self.sent, self.ok, self.late = (event["load_sent"], event["load_ok"],
                                                     event["load_late"])
                elif kind == "error":
                    self._error = str(event.get("message"))
        finally:
            if self._ended is None and self._t0 is not None:
                self._ended = time.monotonic()
            self._started.set()
            for pipe in (self._proc.stdin, self._proc.stdout):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass
            if self._bar is not None:
                self._update_bar()
                self._bar.close()
            self._finish_log()

    def _finish_log(self) -> None:
        result = self._result
        if result is None:
            return
        log.info("traffic %s done: load %d/%d ok, probes %d/%d ok", self.name, result.load_ok,
                 result.load_sent, result.probes_ok, result.probes_sent)
        if result.client_behind:
            log.warning("traffic %s: %s", self.name, result.client_note())

    def _update_bar(self) -> None:
        if self._bar is None:
            return
        self._bar.n = min(int(self.elapsed), self._bar.total)
        self._bar.set_postfix(sent=self.sent, ok=self.ok, failed=self.sent - self.ok,
                              refresh=False)
        self._bar.refresh()

    def _log_tail(self, lines: int = 10) -> str:
        try:
            tail = deque(self.log_path.read_text(errors="replace").splitlines(), lines)
        except OSError:
            tail = deque()
        if not tail:
            return f" (its log {self.log_path} is empty)"
        return f"\n  last lines of {self.log_path}:\n    " + "\n    ".join(tail)


def run_traffic(base_url: str, run_dir: str | Path, **kw: Any) -> TrafficResult:
    """Run `Traffic(base_url, run_dir, **kw)` to the end and return its result."""
    with Traffic(base_url, run_dir, **kw) as traffic:
        return traffic.wait()
