"""The exercise checks of week 2: remove the single points of failure."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from stack.errors import ConfigError
from stack.check.core import (
    CLIENT_TIMEOUT_S, ExerciseFailed, call_with_deadline, get_function, read_mapping,
    load_module, expect_raised, task)

NGINX_KEYS = ("connect_timeout_s", "send_timeout_s", "read_timeout_s", "max_fails",
              "fail_timeout_s", "next_upstream_tries", "next_upstream_timeout_s", "keepalive")
NGINX_P99_MS = 2000.0
NGINX_MIN_READ_TIMEOUT_S = 0.5


def _hang_under_traffic(lab: Any, target: str, *, at: float, hold: float, duration: float,
                        rate: float, name: str) -> Any:
    """SIGSTOP `target` from `at` to `at + hold` under POST /predict traffic with an
    Idempotency-Key per request; the load records."""
    from stack.analysis.records import load_records
    from stack.lab.traffic import Traffic

    proc = lab.component(target).proc
    try:
        with Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration, name=name,
                     progress=False, idempotency_keys=True, timeout=CLIENT_TIMEOUT_S,
                     n_customers=lab.topology.postgres.n_customers) as traffic:
            while traffic.elapsed < at:
                time.sleep(0.02)
            proc.pause()
            while traffic.elapsed < at + hold:
                time.sleep(0.02)
            proc.resume()
            result = traffic.wait()
    finally:
        proc.resume()
    df = load_records(result.path)
    return df[df["kind"] == "load"]


@task("week2", "nginx", ("nginx.yaml",))
def check_nginx(folder: Path) -> str:
    from stack.analysis.records import latency_percentiles
    from stack.lab.lab import Lab
    from stack.topology import AFTER

    data = read_mapping(folder / "nginx.yaml")
    unknown = sorted(set(data) - set(NGINX_KEYS))
    if unknown:
        raise ExerciseFailed(f"nginx.yaml sets {', '.join(unknown)}, which this exercise does "
                             "not tune", f"use only: {', '.join(NGINX_KEYS)}")
    try:
        topo = AFTER.with_changes(name="week2-nginx",
                                  **{f"nginx.{k}": v for k, v in data.items()})
    except ConfigError as exc:
        raise ExerciseFailed(str(exc).replace("changes, ", "nginx.yaml, "),
                             "see the field's limits in stack/topology.py (NginxSpec)") from None
    spec = topo.nginx
    if spec.read_timeout_s < NGINX_MIN_READ_TIMEOUT_S:
        raise ExerciseFailed(f"read_timeout_s {spec.read_timeout_s:g} s would cut off healthy "
                             "requests that are merely slow (a cold cache, a busy database)",
                             f"keep read_timeout_s at {NGINX_MIN_READ_TIMEOUT_S:g} s or more")
    with Lab(topo) as lab:
        load = _hang_under_traffic(lab, "api2", at=1.5, hold=4.0, duration=7.0, rate=40.0,
                                   name="exercise-nginx")
    bad = load[(load["error"] != "") | ~load["status"].between(200, 299)]
    p99 = latency_percentiles(load, kind=None, ps=(99,))["p99"]
    how = bad["status"].astype(str).where(bad["status"] > 0, bad["error"]).value_counts()
    kinds = ", ".join(f"{n} {k}" for k, n in how.items())
    if len(bad):
        if how.get("timeout", 0) >= len(bad) / 2:
            hint = ("the client gives up after 3 s; nginx must give up on the hung replica "
                    "sooner (read_timeout_s) and retry on the other one")
        elif spec.next_upstream_tries == 1:
            hint = "next_upstream_tries 1 means one try and no retry: allow 2"
        else:
            hint = ("nginx answered with errors instead of retrying: check next_upstream_tries "
                    "and that next_upstream_timeout_s leaves time for a second try")
        raise ExerciseFailed(f"{len(bad)} failed of {len(load)} requests while api2 hung "
                             f"({kinds}); p99 {p99:.0f} ms", hint)
    if p99 > NGINX_P99_MS:
        raise ExerciseFailed(f"0 failed of {len(load)} requests while api2 hung, but p99 "
                             f"{p99:.0f} ms is over {NGINX_P99_MS:.0f} ms",
                             "every request sent to the hung replica waits read_timeout_s "
                             "before its retry: shorten it")
    return f"0 failed of {len(load)} requests while api2 hung; p99 {p99:.0f} ms"


READY_TIMEOUT_S = 1.0
READY_SLACK_S = 0.75


class _FakeModel:
    version = "v1"


def _ping_ok(timeout_s: float) -> None:
    return None


def _ping_refused(timeout_s: float) -> None:
    raise ConnectionRefusedError("connection to 127.0.0.1:5432 refused")


def _ping_hangs(timeout_s: float) -> None:
    time.sleep(30)  # a database that accepted the connection and then froze


def _readiness_case(func: Callable, label: str, model: Any, ping: Callable,
                    want_ready: bool, want_words: tuple[str, ...]) -> float:
    deadline = READY_TIMEOUT_S + READY_SLACK_S
    done, out, took = call_with_deadline(func, model, ping, timeout_s=READY_TIMEOUT_S, deadline_s=deadline + 5)
    if not done or took > deadline:
        raise ExerciseFailed(f"{label}: readiness() took {took:.1f} s, more than "
                             f"timeout_s + {READY_SLACK_S:g} s",
                             "a frozen database never answers and never raises: run the ping "
                             "in a helper thread and stop waiting after timeout_s")
    expect_raised(out, f"{label}: readiness()")
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list)):
        raise ExerciseFailed(f"{label}: readiness() returned {out!r}",
                             "return a tuple (ready: bool, reasons: list[str])")
    ready, reasons = out
    text = " ".join(map(str, reasons)).lower()
    if bool(ready) != want_ready:
        raise ExerciseFailed(f"{label}: readiness() said {'ready' if ready else 'not ready'} "
                             f"(reasons {reasons})",
                             "not ready when the model is missing or the database does not "
                             "answer; ready when both are fine" if want_ready is False else
                             "with a model and a database that answers, say ready")
    if want_ready and reasons:
        raise ExerciseFailed(f"{label}: ready, but with reasons {reasons}",
                             "a ready replica has no reasons")
    missing = [w for w in want_words if w not in text]
    if missing:
        raise ExerciseFailed(f"{label}: the reasons {reasons} do not mention "
                             f"{' and '.join(repr(w) for w in missing)}",
                             "give one reason per problem, naming it: 'model ...', "
                             "'database ...'")
    return took


@task("week2", "readiness", ("readiness.py",))
def check_readiness(folder: Path) -> str:
    import psycopg

    from stack.lab import faults
    from stack.lab.lab import Lab
    from stack.components.postgres import API_ROLE

    path = folder / "readiness.py"
    func = get_function(load_module(path), "readiness", path)
    model = _FakeModel()
    cases = [
        ("model and database fine", model, _ping_ok, True, ()),
        ("model not loaded", None, _ping_ok, False, ("model",)),
        ("database refuses connections", model, _ping_refused, False, ("database",)),
        ("no model and no database", None, _ping_refused, False, ("model", "database")),
        ("database frozen", model, _ping_hangs, False, ("database",)),
    ]
    for case in cases:
        _readiness_case(func, *case)
    # the same function against a real Postgres: answering, then frozen by SIGSTOP (the hang
    # fault stops the postmaster and every backend). Each ping opens its own connection.
    with Lab("before") as lab:
        conninfo = lab.db.url_for(API_ROLE, connect_timeout=10)

        def ping(timeout_s: float) -> None:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("SELECT 1").fetchone()

        _readiness_case(func, "live Postgres answering", model, ping, True, ())
        applied = faults.apply(lab, "hang", "postgres")
        try:
            took = _readiness_case(func, "live Postgres frozen (SIGSTOP)", model, ping,
                                   False, ("database",))
        finally:
            faults.undo(lab, applied)
    return (f"{len(cases)} cases right, and not ready {took:.2f} s after asking a frozen "
            "Postgres in a live lab")
