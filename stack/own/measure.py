"""Week 1's instruments pointed at a team's own API: the uptime probe (`stackctl probe`) and
the open-loop load client (`stackctl load`), both the course's own client
(`stack.lab.traffic.Traffic`, in a process of its own), analysed like week 1
(`stack.analysis.records`).

Both are bounded: a probe run by its length and its number of probes, a load run by its rate,
its length and its number of requests; out-of-range values are refused before anything
starts. A URL whose host does not take a TCP connection is refused too, in one line.
"""
from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from stack.analysis import records as analysis
from stack.errors import ConfigError, StackError
from stack.lab.traffic import Traffic, TrafficResult
from stack.own.durations import format_duration

log = logging.getLogger(__name__)

# probe: at least 0.1 s apart, runs of at most 7 days and 100,000 probes
PROBE_INTERVAL_S = (0.1, 3600.0)
PROBE_FOR_S = (0.0, 7 * 86400.0)
MAX_PROBES = 100_000
# load: at most 2,000 req/s, one hour, 1,000,000 requests
MAX_RATE = 2000.0
LOAD_DURATION_S = (0.0, 3600.0)
MAX_REQUESTS = 1_000_000
MAX_BODY_BYTES = 1_000_000
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CONNECT_CHECK_S = 5.0


def check_url(url: str, field: str = "URL") -> str:
    """An http(s) URL with a host, or a ConfigError that says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{url!r} is not an http:// or https:// URL (scheme "
                          f"{parts.scheme or 'missing'!r})", field=field)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{url!r} has a bad port", field=field) from None
    if not parts.hostname:
        raise ConfigError(f"{url!r} names no host", field=field)
    del port
    return url


def check_answers(url: str, timeout: float = CONNECT_CHECK_S) -> None:
    """One TCP connection to the URL's host and port (nothing is sent): a StackError in one
    line when nothing takes it, so a run never starts against a dead address."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except socket.gaierror as exc:
        raise StackError(f"{url} does not answer: cannot resolve {parts.hostname!r} "
                         f"({exc.strerror})") from None
    except TimeoutError:
        raise StackError(f"{url} does not answer: no TCP connection to {parts.hostname}:{port} "
                         f"within {timeout:g} s") from None
    except OSError as exc:
        raise StackError(f"{url} does not answer: {exc.strerror or exc} "
                         f"({parts.hostname}:{port})") from None


def read_body(path: str | Path) -> str:
    """A request body file's text; it must hold JSON (the course's API and most others take
    JSON), else a ConfigError naming the file and where it stops being JSON."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the body file: {exc.strerror}", source=str(p)) from None
    if len(raw) > MAX_BODY_BYTES:
        raise ConfigError(f"the body file is {len(raw):,} bytes; at most {MAX_BODY_BYTES:,}",
                          source=str(p))
    try:
        text = raw.decode("utf-8")
        json.loads(text)
    except UnicodeDecodeError:
        raise ConfigError("the body file is not UTF-8 text, so not JSON", source=str(p)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc.msg} (column {exc.colno})", source=str(p),
                          line=exc.lineno) from None
    return text


def parse_headers(pairs: list[str] | None) -> dict[str, str]:
    """"Name: value" pairs as a dict; a ConfigError for one without a colon or a name."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ConfigError(f"expected 'Name: value', got {pair!r}", field="--header")
        out[name.strip()] = value.strip()
    return out


def _split(url: str) -> tuple[str, str]:
    """(base, tail) with tail the trailing slashes Traffic would strip from a base URL."""
    base = url.rstrip("/")
    return base, url[len(base):]


def default_out_dir(kind: str) -> Path:
    from stack.lab.lab import runs_root

    return runs_root() / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}-{time.monotonic_ns() % 10**6:06d}"


@dataclass
class Measurement:
    """A finished probe or load run: its records and the week-1 figures of them."""

    kind: str  # "probe" or "load"
    url: str
    records_path: Path
    records: pd.DataFrame
    result: TrafficResult | None
    settings: dict[str, Any]
    interrupted: bool = False
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.summary = analysis.summary(self.records)

    def outages(self) -> list[analysis.Incident]:
        """Windows of failed probes (failures closer than 1.5 intervals apart are one)."""
        gap = 1.5 * self.settings.get("interval_s", 1.0)
        return analysis.incidents(self.records, kind="probe", min_gap_s=gap)

    def client_note(self) -> str:
        return analysis.client_note(self.records)


def probe(url: str, interval_s: float, for_s: float, *, timeout_s: float | None = None,
          out_dir: str | Path | None = None, progress: bool | None = None) -> Measurement:
    """GET `url` every `interval_s` for `for_s` seconds (Ctrl-C ends it early, with figures)."""
    check_url(url)
    lo, hi = PROBE_INTERVAL_S
    if not lo <= interval_s <= hi:
        raise ConfigError(f"must be between {format_duration(lo)} and {format_duration(hi)}, "
                          f"got {format_duration(interval_s)}", field="--interval")
    if not PROBE_FOR_S[0] < for_s <= PROBE_FOR_S[1]:
        raise ConfigError(f"must be more than 0 and at most {format_duration(PROBE_FOR_S[1])}, "
                          f"got {format_duration(for_s)}", field="--for")
    if for_s / interval_s > MAX_PROBES:
        raise ConfigError(f"{for_s / interval_s:,.0f} probes; at most {MAX_PROBES:,}: probe less "
                          "often or for less long", field="--for")
    timeout = timeout_s if timeout_s is not None else min(interval_s, 10.0)
    if not 0 < timeout <= 60:
        raise ConfigError(f"must be more than 0 and at most 60s, got {timeout!r}",
                          field="--timeout")
    check_answers(url, min(timeout, CONNECT_CHECK_S))
    base, tail = _split(url)
    out = Path(out_dir) if out_dir else default_out_dir("probe")
    traffic = Traffic(base, out, probe_url=base, probe_path=tail, probe_interval=interval_s,
                      duration=for_s, probe_timeout=timeout, load=False, name="probe",
                      progress=progress)
    res, interrupted = _run(traffic)
    return Measurement("probe", url, traffic.path, analysis.load_records(traffic.path), res,
                       {"interval_s": interval_s, "for_s": for_s, "timeout_s": timeout},
                       interrupted)


def load(url: str, rate: float | None, duration_s: float | None, *, method: str | None = None,
         body: str | None = None, headers: dict[str, str] | None = None,
         timeout_s: float = 5.0, out_dir: str | Path | None = None,
         progress: bool | None = None, max_connections: int = 500) -> Measurement:
    """Open-loop load: one request every 1/rate s for `duration_s`, each recorded."""
    check_url(url)
    if rate is None or duration_s is None:
        raise ConfigError("a load run needs both bounds: --rate and --duration",
                          field="--rate" if rate is None else "--duration")
    if not 0 < rate <= MAX_RATE:
        raise ConfigError(f"must be more than 0 and at most {MAX_RATE:g} req/s, got {rate:g}",
                          field="--rate")
    if not LOAD_DURATION_S[0] < duration_s <= LOAD_DURATION_S[1]:
        raise ConfigError(f"must be more than 0 and at most "
                          f"{format_duration(LOAD_DURATION_S[1])}, got "
                          f"{format_duration(duration_s)}", field="--duration")
    if rate * duration_s > MAX_REQUESTS:
        raise ConfigError(f"{rate * duration_s:,.0f} requests; at most {MAX_REQUESTS:,}: lower "
                          "the rate or the duration", field="--duration")
    if not 0 < timeout_s <= 60:
        raise ConfigError(f"must be more than 0 and at most 60s, got {timeout_s!r}",
                          field="--timeout")
    method = (method or ("POST" if body is not None else "GET")).upper()
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}",
                          field="--method")
    if body is not None and method in ("GET", "HEAD"):
        raise ConfigError(f"a {method} request takes no body: use --method POST (or PUT, "
                          "PATCH)", field="--body")
    check_answers(url, CONNECT_CHECK_S)
    base, tail = _split(url)
    out = Path(out_dir) if out_dir else default_out_dir("load")
    traffic = Traffic(base, out, load_path=tail, rate=rate, duration=duration_s,
                      timeout=timeout_s, method=method, body=body,
                      headers={"User-Agent": "stackctl-load", **(headers or {})},
                      probe=False, name="load", progress=progress,
                      max_connections=max_connections)
    res, interrupted = _run(traffic)
    return Measurement("load", url, traffic.path, analysis.load_records(traffic.path), res,
                       {"rate": rate, "duration_s": duration_s, "method": method,
                        "timeout_s": timeout_s}, interrupted)


def _run(traffic: Traffic) -> tuple[TrafficResult | None, bool]:
    """Start the client, wait for its end; on Ctrl-C stop it (bounded) and keep the records."""
    traffic.start()
    try:
        return traffic.wait(), False
    except KeyboardInterrupt:
        log.warning("interrupted: stopping the client, keeping what it recorded")
        return traffic.stop(), True
    except BaseException:
        try:
            traffic.stop()
        except StackError:
            pass
        raise


# -- what the commands print (like week 1) ----------------------------------------------------
def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.3%}"


def _min(x: float) -> str:
    return "n/a" if x != x else f"{x:,.0f} min"


def report_lines(m: Measurement, slo: float = 0.999) -> list[str]:
    """The figures, the outage timeline (probe) or failures by kind (load), and one verdict."""
    s = m.summary
    lines = []
    if m.kind == "probe":
        lines.append(f"probe {m.url} every {format_duration(m.settings['interval_s'])} for "
                     f"{format_duration(m.settings['for_s'])}"
                     + (" (interrupted)" if m.interrupted else ""))
        pl = analysis.latency_percentiles(m.records, kind="probe")
        lines += [
            f"  probes sent                      {s['probes']}",
            f"  failed probes                    {s['probes'] - s['probes_ok']}",
            f"  availability (uptime probe)      {_pct(s['probe_availability'])}",
            f"  downtime per 30 days (probe)     {_min(s['probe_downtime_min_per_30d'])}",
            f"  probe latency p50 / p95 / p99    {pl['p50']:.1f} / {pl['p95']:.1f} / "
            f"{pl['p99']:.1f} ms",
        ]
        outages = m.outages()
        offset = float((m.records["wall"] - m.records["t"]).median()) if len(m.records) else 0.0
        interval = m.settings["interval_s"]
        lines.append(f"  outages                          {len(outages)}")
        probes = m.records[m.records["kind"] == "probe"]
        for inc in outages:
            window = probes[(probes["t"] >= inc.start_t) & (probes["t"] <= inc.end_t)]
            kinds = window.loc[window["error"] != "", "error"].value_counts()
            how = ", ".join(f"{k} {v}" for k, v in kinds.items())
            at = datetime.fromtimestamp(offset + inc.start_t).strftime("%H:%M:%S")
            lines.append(f"    at {at} (t+{inc.start_t:.0f}s) down about "
                         f"{format_duration(inc.duration_s + interval)}: {inc.failed} failed "
                         f"probes ({how})")
        avail, what = s["probe_availability"], "probes"
    else:
        lines.append(f"load {m.settings['method']} {m.url} at {m.settings['rate']:g} req/s for "
                     f"{format_duration(m.settings['duration_s'])}"
                     + (" (interrupted)" if m.interrupted else ""))
        load_df = m.records[m.records["kind"] == "load"]
        late = int(((load_df["lag_s"] >= 0.1) | (load_df["error"] == "client_overload")).sum())
        lines += [
            f"  requests sent                    {s['requests']}",
            f"  failed requests                  {s['failed']}",
            f"  availability (requests)          {_pct(s['availability'])}",
            f"  downtime per 30 days (requests)  {_min(s['downtime_min_per_30d'])}",
            f"  p50 / p95 / p99 latency          {s['p50_ms']:.1f} / {s['p95_ms']:.1f} / "
            f"{s['p99_ms']:.1f} ms",
            f"  late requests (client behind)    {late} (lag p99 {s['lag_p99_ms']:.1f} ms)",
        ]
        if s["failed_by_kind"]:
            lines.append("  failed by kind")
            for kind, n in sorted(s["failed_by_kind"].items(), key=lambda kv: -kv[1]):
                lines.append(f"    {kind:<16} {n}")
        statuses = load_df["status"].value_counts().sort_index()
        lines.append("  status codes                     "
                     + ", ".join(f"{'none' if k == 0 else k}: {v}" for k, v in statuses.items()))
        avail, what = s["availability"], "requests"
    lines.append(f"records: {m.records_path}")
    ok = avail == avail and avail >= slo
    lines.append(analysis.verdict(
        f"{m.kind}: meets a {slo:.1%} availability objective", ok,
        f"{_pct(avail)} of {what} answered 2xx", inconclusive=m.client_note()))
    return lines
