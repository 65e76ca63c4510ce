"""Week 2's nginx audit: the playbook's nginx settings against the project's `tuned` preset,
one claim at a time, each measured on the real nginx in front of the real replicas.

Every claim takes a running AFTER lab (`audit_lab(preset)` starts one), breaks at most one thing,
puts it back, and returns an `AuditResult`: figures (numbers vary run to run) and a verdict
line whose wording depends only on the outcome, so a notebook can print and compare it.
"""
from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pandas as pd

from stack.analysis import records as analysis
from stack.errors import StackError
from stack.course.week2 import run_with_fault
from stack.lab.lab import Lab
from stack.components.nginx import PLAYBOOK
from stack.runtime.procfs import children, tcp_sockets, TCP_LISTEN
from stack.topology import AFTER
from stack.lab.traffic import Transactions

PRESETS = ("playbook", "tuned")
_TCP_STATES = {"01": "established", "06": "time_wait"}
# nginx's error log: "2024/05/01 12:00:00 [error] 1234#1234: *5 connect() failed (111: ..."
_ERROR_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] (\d+)#\d+: (.*)$")


@dataclass
class AuditResult:
    """One claim measured on one preset."""

    claim: str
    preset: str
    ok: bool
    verdict: str
    figures: dict[str, Any] = field(default_factory=dict)


# A tuned claim that is expected to come out as a finding: a limit the preset keeps on purpose
# (nginx never retries a POST that carries no Idempotency-Key: it might run twice).
TUNED_LIMITS = frozenset({"hung replica, without Idempotency-Key"})


def _result(lab: Lab, claim: str, ok: bool, detail: str, **figures: Any) -> AuditResult:
    """The verdict line: PASS, or, where the audit expects it (every playbook claim, and the
    tuned preset's known limits), "finding: ..." rather than FAIL; a tuned claim that should
    hold and does not is a FAIL."""
    p = preset_of(lab)
    if not ok and (p == "playbook" or claim in TUNED_LIMITS):
        line = f"finding: {p}: {claim}: {detail}"
    else:
        line = analysis.verdict(f"{p}: {claim}", ok, detail)
    return AuditResult(claim, p, ok, line, figures)


def preset_of(lab: Lab) -> str:
    return lab.topology.nginx.preset


@contextmanager
def audit_lab(preset: str, run_dir: str | Path | None = None, *,
              model_dir: str | Path | None = None) -> Iterator[Lab]:
    """An AFTER lab with this nginx preset, torn down on leaving (also on error)."""
    if preset not in PRESETS:
        raise StackError(f"unknown nginx preset {preset!r}: use one of {', '.join(PRESETS)}")
    # no supervisor: each claim measures nginx against a replica that stays dead or frozen
    topo = AFTER.with_changes(**{"name": f"after-{preset}", "nginx.preset": preset,
                                 "supervise": False})
    with Lab(topo, run_dir, model_dir=model_dir) as lab:
        yield lab


# -- helpers ---------------------------------------------------------------------------------
def _api_connections(api_ports: set[int]) -> dict[tuple[int, int], str]:
    """TCP connections on loopback with an API port at one end, keyed (api port, other port)
    so that both ends of one connection count once; value: the state seen."""
    conns: dict[tuple[int, int], str] = {}
    for local, remote, state, _ in tcp_sockets():
        if state == TCP_LISTEN:
            continue
        if local in api_ports:
            key = (local, remote)
        elif remote in api_ports:
            key = (remote, local)
        else:
            continue
        conns[key] = _TCP_STATES.get(state, conns.get(key, "other"))
    return conns


def _both_replicas_serve(lab: Lab, deadline_s: float = 20.0) -> bool:
    """GET /readyz through nginx until every replica has answered once (X-Backend)."""
    want, seen = {a.name for a in lab.apis}, set()
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while seen != want and time.monotonic() < deadline:
            try:
                resp = client.get(lab.public_url + "/readyz",
                                  headers={"Connection": "close"})
                if resp.status_code == 200:
                    seen.add(resp.headers.get("x-backend", ""))
                    continue
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    return seen >= want


def restore(lab: Lab) -> None:
    """Put the lab back after a claim: every replica running and ready, nginx's failure
    counts forgotten, and both replicas answering through nginx."""
    for api in lab.apis:
        api.proc.resume()
        if not api.proc.alive() or not api.ready(timeout=2.0):
            lab.restart(api.name)
    if preset_of(lab) == "playbook":
        # fail_timeout=30s: a reload starts workers with fresh counts instead of waiting it out
        lab.component("nginx").reload()
    else:
        time.sleep(lab.topology.nginx.fail_timeout_s + 0.2)
    if not _both_replicas_serve(lab):
        raise StackError("after restoring, nginx does not reach both replicas: see "
                         f"{lab.component('nginx').dir / 'error.log'}")


def _traffic_run(lab: Lab, name: str, duration: float, at: float, fault, undo=None,
                 undo_at: float | None = None, idempotency_keys: bool = False,
                 rate: float = 40.0) -> pd.DataFrame:
    df = run_with_fault(lab, f"audit-{preset_of(lab)}-{name}", duration, at, fault, undo,
                         undo_at, rate=rate, idempotency_keys=idempotency_keys)
    return df[df["kind"] == "load"]


def _error_lines(path: Path, offset: int) -> list[tuple[str, int, str]]:
    """(level, pid, message) of the error log's lines after `offset` bytes."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    return [(m[1], int(m[2]), m[3]) for m in map(_ERROR_LINE.match, text.splitlines()) if m]


def _failed(df: pd.DataFrame) -> pd.Series:
    return (df["error"] != "") | ~df["status"].between(200, 299)


# -- 1. upstream keep-alive ----------------------------------------------------------------
def upstream_keepalive(lab: Lab, n: int = 200) -> AuditResult:
    """Send n sequential requests through nginx; count the TCP connections nginx opened to
    the replicas meanwhile. `keepalive 32` alone keeps none: nginx (before 1.29.7) speaks
    HTTP/1.0 with `Connection: close` to upstreams unless told otherwise.

    The count is of new connections to the replicas' ports from any process (TIME_WAIT
    sockets have no owner to tell them apart), so nothing else should call them meanwhile."""
    api_ports = {a.port for a in lab.apis}
    before = set(_api_connections(api_ports))
    failed = 0
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        for _ in range(n):
            failed += client.get(lab.public_url + "/readyz").status_code != 200
    new = {k: s for k, s in _api_connections(api_ports).items() if k not in before}
    states = list(new.values())
    ok = len(new) <= max(8, n // 10)
    detail = ("upstream connections are reused" if ok else
              "a new upstream connection per request: keepalive needs proxy_http_version 1.1 "
              "and an empty Connection header")
    return _result(lab, "upstream keep-alive", ok, detail, requests=n, failed=failed,
                   connections=len(new), established=states.count("established"),
                   time_wait=states.count("time_wait"))


# -- 2. a hung replica -------------------------------------------------------------------------
def hung_replica(lab: Lab, idempotency_keys: bool = True, *, hang_s: float = 6.0,
                 at: float = 1.5, rate: float = 40.0) -> AuditResult:
    """SIGSTOP api1 for `hang_s` under open-loop POST /predict traffic, then SIGCONT.

    The default hang is longer than the client's 5 s timeout: shorter, and under the
    playbook every request to the hung replica just waits it out and succeeds late."""
    api1 = lab.apis[0]
    marks: dict[str, float] = {}

    def stop() -> None:
        marks["stop"] = time.time()
        api1.proc.pause()

    def cont() -> None:
        api1.proc.resume()
        marks["cont"] = time.time()

    try:
        df = _traffic_run(lab, f"hung-keys{int(idempotency_keys)}", at + hang_s + 1.5, at, stop,
                          cont, at + hang_s, idempotency_keys=idempotency_keys, rate=rate)
    finally:
        api1.proc.resume()
    during = df[(df["wall"] >= marks["stop"]) & (df["wall"] < marks["cont"])]
    bad = df[_failed(df)]
    # how they failed: the HTTP status nginx gave, or "timeout" when the client gave up first
    how = bad["status"].astype(str).where(bad["status"] > 0, bad["error"])
    kinds = {str(k): int(v) for k, v in how.value_counts().items()}
    ok = bad.empty
    if ok:
        detail = "no request failed while a replica hung"
    elif kinds.get("timeout", 0) >= len(bad) / 2:
        detail = ("requests to the hung replica were not retried and the client gave up "
                  "before nginx's read timeout")
    else:
        detail = ("requests to the hung replica failed with 5xx at nginx's read timeout: "
                  "a POST is not retried")
    waited = df[~_failed(df) & (df["latency_s"] > 1.0)]
    return _result(
        lab, f"hung replica, {'with' if idempotency_keys else 'without'} Idempotency-Key", ok,
        detail, requests=len(df), failed=len(bad), failed_how=kinds,
        p99_during_ms=round(analysis.latency_percentiles(during, ps=(99,))["p99"]),
        failed_latency_median_ms=round(bad["latency_s"].median() * 1000) if len(bad) else None,
        ok_but_slow=len(waited))


# -- 3. a killed replica ---------------------------------------------------------------------
def killed_replica(lab: Lab, idempotency_keys: bool = False, *, at: float = 2.0,
                   duration: float = 6.0, rate: float = 40.0) -> AuditResult:
    """SIGKILL api1 under traffic; restart it afterwards. A refused connection means the
    request was never sent, so nginx retries even a POST. Requests api1 had already been sent
    when it died are the exception: a failure sent between the SIGKILL and the moment the
    process was gone, and ended after the SIGKILL, counts as in flight."""
    api1 = lab.apis[0]
    error_log = lab.component("nginx").dir / "error.log"
    offset = error_log.stat().st_size
    marks: dict[str, float] = {}

    def kill() -> None:
        marks["kill"] = time.time()
        api1.proc.record.send(signal.SIGKILL)
        api1.proc.record.wait_gone(5, api1.proc.popen)
        marks["gone"] = time.time()

    try:
        df = _traffic_run(lab, "killed", duration, at, kill, idempotency_keys=idempotency_keys,
                          rate=rate)
    finally:
        lab.restart(api1.name)
    bad = df[_failed(df)]
    in_flight = bad[(bad["wall"] <= marks["gone"]) & (bad["wall"] + bad["latency_s"]
                                                       >= marks["kill"])]
    others = len(bad) - len(in_flight)
    # nginx's own word that a request was cut off mid-response, not refused
    cut = sum(1 for _lvl, _pid, msg in _error_lines(error_log, offset)
              if f"127.0.0.1:{api1.port}" in msg and ("prematurely closed" in msg
                                                     or "reset by peer" in msg))
    ok = others == 0
    detail = ("refused connections were retried on the other replica; only requests in "
              "flight at the kill can fail" if ok else
              "requests failed that were not in flight at the kill")
    return _result(lab, "killed replica", ok, detail, requests=len(df), failed=len(bad),
                   failed_in_flight_at_kill=len(in_flight), failed_after_kill=others,
                   cut_off_mid_request=cut, kill_took_ms=round((marks["gone"] - marks["kill"])
                                                               * 1000),
                   p99_ms=round(analysis.latency_percentiles(df, ps=(99,))["p99"]))


# -- 4. /health with every replica down -----------------------------------------------------
def health_when_all_down(lab: Lab) -> AuditResult:
    """SIGSTOP every replica, GET /health through nginx, SIGCONT them."""
    try:
        for api in lab.apis:
            api.proc.pause()
        t0 = time.monotonic()
        try:
            resp = httpx.get(lab.public_url + "/health", timeout=8.0, trust_env=False)
            status, body = resp.status_code, resp.text.strip()
        except httpx.HTTPError as exc:
            status, body = 0, type(exc).__name__
        took = time.monotonic() - t0
    finally:
        for api in lab.apis:
            api.proc.resume()
    ok = status != 200
    detail = ("/health reports no ready replica" if ok else
              "/health answers 200 while every replica is down")
    return _result(lab, "/health with every replica down", ok, detail, status=status,
                   body=body, seconds=round(took, 2))


# -- 5. failure counts per worker ------------------------------------------------------------
def per_worker_failure_counts(lab: Lab, n: int = 40, concurrency: int = 2) -> AuditResult:
    """Kill api1, send n POSTs on fresh connections (so several workers take them), and count
    per nginx worker the failed connects to api1 its error log shows. Without a shared
    `zone`, every worker spends its own max_fails on a dead replica.

    Verdict: one failure budget for all workers, i.e. at most max_fails attempts per
    fail_timeout that the requests took (after fail_timeout nginx tries the replica again),
    plus the requests already in flight when the budget ran out: a refused connect is reported
    to nginx after connect() returns, so up to `concurrency - 1` other requests may have picked
    the replica meanwhile. Two concurrent requests keep that overshoot at one while still
    spreading the connections over the workers."""
    nginx, api1 = lab.component("nginx"), lab.apis[0]
    error_log = nginx.dir / "error.log"
    workers = children(nginx.proc.record.pid)
    tx = Transactions(lab.topology.postgres.n_customers, seed=1)
    bodies = [tx.next() for _ in range(n)]
    addr = f"127.0.0.1:{api1.port}"
    if preset_of(lab) == "playbook":
        max_fails, fail_timeout = PLAYBOOK["max_fails"], int(PLAYBOOK["fail_timeout"][:-1])
    else:
        max_fails, fail_timeout = lab.topology.nginx.max_fails, lab.topology.nginx.fail_timeout_s
    # no keep-alive on the client side: each request a new connection, any worker may take it
    client = httpx.Client(timeout=5.0, trust_env=False,
                          limits=httpx.Limits(max_keepalive_connections=0))

    def post(body: dict) -> int:
        try:
            return client.post(lab.public_url + "/predict", json=body).status_code
        except httpx.HTTPError:
            return 0

    try:
        api1.proc.record.send(signal.SIGKILL)
        api1.proc.record.wait_gone(5, api1.proc.popen)
        offset = error_log.stat().st_size
        t0 = time.monotonic()
        with client, ThreadPoolExecutor(concurrency) as pool:
            statuses = list(pool.map(post, bodies))
        took = time.monotonic() - t0
        lines = [ln for ln in _error_lines(error_log, offset) if addr in ln[2]]
    finally:
        lab.restart(api1.name)
    attempts = {pid: 0 for pid in workers}
    disabled = {pid: 0 for pid in workers}
    for _level, pid, msg in lines:
        if "connect() failed" in msg:
            attempts[pid] = attempts.get(pid, 0) + 1
        if "temporarily disabled" in msg:
            disabled[pid] = disabled.get(pid, 0) + 1
    total = sum(attempts.values())
    budget = (max_fails + concurrency - 1) * (1 + int(took // fail_timeout))
    ok = total <= budget
    detail = ("failures are counted once for all workers (shared zone)" if ok else
              "each worker counts failures on its own: a dead replica gets max_fails attempts "
              "per worker")
    return _result(lab, "failure counts per worker", ok, detail, requests=n,
                   failed=sum(s != 200 for s in statuses), seconds=round(took, 2),
                   max_fails=max_fails, attempts_budget=budget, attempts_total=total,
                   workers_attempting=sum(1 for v in attempts.values() if v),
                   attempts_per_worker=sorted(attempts.values(), reverse=True),
                   disabled_per_worker=sorted(disabled.values(), reverse=True))


# -- all of them -------------------------------------------------------------------------------
def claims(preset: str) -> list[tuple[Any, dict[str, Any]]]:
    """The claims run_all runs for a preset: (function, keyword arguments)."""
    hung = [(hung_replica, {"idempotency_keys": True})]
    if preset == "tuned":  # the playbook never retries a POST, keys or not
        hung.append((hung_replica, {"idempotency_keys": False}))
    return [(upstream_keepalive, {}), *hung, (killed_replica, {}),
            (health_when_all_down, {}), (per_worker_failure_counts, {})]


def run_claims(lab: Lab) -> list[AuditResult]:
    """Every claim on a running AFTER lab, with the lab's own nginx preset, restoring the lab
    between them."""
    results = []
    for func, kw in claims(preset_of(lab)):
        results.append(func(lab, **kw))
        restore(lab)
    return results


def run_all(preset: str, run_dir: str | Path | None = None, *,
            model_dir: str | Path | None = None) -> list[AuditResult]:
    """Every claim on a new AFTER lab with this nginx preset, torn down afterwards."""
    with audit_lab(preset, run_dir, model_dir=model_dir) as lab:
        return run_claims(lab)


def _figures_text(r: AuditResult) -> str:
    """The figures that decide a claim, in a few words."""
    f = r.figures
    if r.claim == "upstream keep-alive":
        return f"{f['connections']} new connections, {f['requests']} requests"
    if r.claim.startswith("hung replica"):
        return f"{f['failed']} of {f['requests']} failed, p99 {f['p99_during_ms']} ms"
    if r.claim == "killed replica":
        return f"{f['failed']} of {f['requests']} failed, {f['failed_in_flight_at_kill']} in flight"
    if r.claim == "/health with every replica down":
        return f"HTTP {f['status']} {f['body']!r}"
    if r.claim == "failure counts per worker":
        return f"{f['attempts_total']} connects to the dead one, budget {f['attempts_budget']}"
    return ", ".join(f"{k} {v}" for k, v in f.items())


def table(results: list[AuditResult]) -> pd.DataFrame:
    """One row per claim, one column per preset: "ok", "finding" (expected: see `_result`) or
    "FAIL", and the figures that decide it, short enough to read whole (every figure is in
    each result's `figures`)."""
    rows: dict[str, dict[str, str]] = {}
    for r in results:
        outcome = "ok" if r.ok else ("finding" if r.verdict.startswith("finding") else "FAIL")
        rows.setdefault(r.claim, {})[r.preset] = f"{outcome}: {_figures_text(r)}"
    presets = [p for p in PRESETS if any(r.preset == p for r in results)]
    df = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=presets)
    df.index.name = "claim"
    return df.fillna("not run")


# Why the tuned preset differs where it does; printed with the diff.
TUNED_NOTES = (
    "Why http_500 left the general proxy_next_upstream: a 500 is the application's own "
    "answer (a bug on a code path, a model that failed to score), not a replica that failed; "
    "retrying every request after it doubles the cost of a bug both replicas share. Only a "
    "POST with an Idempotency-Key is retried after a 500 (the key makes it safe): a replica "
    "whose own state fails a share of its requests is passed over for fail_timeout, and the "
    "same replicas listed again as `backup` keep serving if every one is passed over. 502, "
    "503 and 504 (no answer, unavailable, too slow) are retried for every request.",
    "A POST is retried only with an Idempotency-Key (`non_idempotent` in the named location "
    "@predict_idempotent): the API stores each key's answer, so a retry cannot score twice.",
    "keepalive needs `proxy_http_version 1.1` and an empty Connection header; `zone` shares "
    "the failure counts between workers; the read timeout sits near the API's own p99, not "
    "10 s; /health asks the replicas' /readyz instead of answering 200 itself.",
)


def tuned_diff(context: int = 1) -> str:
    """The tuned preset's nginx.conf as a unified diff against the playbook's (both rendered
    from the AFTER topology, on the same ports), after the notes on why."""
    import difflib
    import textwrap

    from stack.components.nginx import render_config

    backends = [("api1", 8001), ("api2", 8002)]
    conf = {}
    for preset in PRESETS:
        spec = AFTER.nginx.model_copy(update={"preset": preset})
        conf[preset] = render_config(spec, port=8080, status_port=8081,
                                     backends=backends).splitlines()
    diff = difflib.unified_diff(conf["playbook"], conf["tuned"], "nginx.conf (playbook)",
                                "nginx.conf (tuned)", n=context, lineterm="")
    notes = [textwrap.fill(n, 92, initial_indent="- ", subsequent_indent="  ")
             for n in TUNED_NOTES]
    return "\n".join(notes + [""] + list(diff))
