"""`make bench`: the lab's performance figures, printed (never asserted).

For /predict on the BEFORE lab at a fixed arrival rate: p50, p99 and throughput through HTTP,
beside the floor, the bare in-process cost of the same requests' feature lookup plus
model.predict (and, apart, the same with the prediction's durable INSERT), measured in the same
run against the same Postgres. On the AFTER lab: nginx against a replica called directly, and
the CPU each process spends per request (from /proc), the load client's included, over a fresh
lab's first seconds and the steady window after, with a replica restarted under the traffic and
the machine's pace beside it; the AFTER lab's throughput at 500 req/s, once it has settled, with
its first seconds apart, the same at 650 req/s (past the target: how it degrades), and its
capacity closed loop (hey -c 16); the load client alone on one core against a static nginx (its
CPU per request at 80 req/s, and whether it holds 1,000 req/s); and the no-fault AFTER lab
beside a busy loop.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stack.analysis import records as analysis
from stack.lab.lab import Lab
from stack.lab.traffic import Traffic, Transactions
from stack.runtime import binaries, procfs
from stack.runtime.ports import free_port, is_listening
from stack.runtime.processes import ManagedProcess


def measure_floor(lab: Lab, n: int = 500, seed: int = 1, insert: bool = False) -> list[float]:
    """Seconds per request, in process over one connection: SELECT the customer's features,
    build them, model.predict; with `insert`, also INSERT the prediction (committed, durable,
    as /predict does)."""
    import uuid

    from psycopg.types.json import Jsonb

    from stack.api.db import INSERT_PREDICTION
    from stack.model import build_features, load_verified

    model = load_verified(lab.apis[0].settings["model_dir"])
    txns = Transactions(n_customers=lab.topology.postgres.n_customers, seed=seed)
    cols = ("customer_id", "home_country", "account_age_days", "avg_amount_30d",
            "txn_count_30d", "chargebacks_1y")
    samples = []
    with lab.db.connect(user="api") as conn:
        conn.autocommit = True  # as the API: each insert commits on its own
        for i in range(n + 50):
            txn = txns.next()
            t0 = time.perf_counter()
            row = conn.execute(f"SELECT {', '.join(cols)} FROM customers WHERE customer_id = %s",
                               (txn["customer_id"],)).fetchone()
            customer = dict(zip(cols, row))
            score = float(model.predict_score(build_features(txn, customer))[0])
            if insert:
                conn.execute(INSERT_PREDICTION, (uuid.uuid4(), txn["customer_id"], Jsonb(txn),
                                                 score, model.version, "bench-floor"))
            if i >= 50:  # the first ones warm caches
                samples.append(time.perf_counter() - t0)
    return samples


def run(rate: float = 50.0, duration: float = 20.0, topology: str = "before") -> dict:
    t0 = time.monotonic()
    lab = Lab(topology)
    lab.up()
    try:
        cold_start = time.monotonic() - t0
        floor = measure_floor(lab)
        floor_insert = measure_floor(lab, insert=True)
        with Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration,
                     name="bench") as traffic:
            result = traffic.wait()
        df = analysis.load_records(result.path)
        load = df[df["kind"] == "load"]
        ok = load[load["status"] == 200]
        lat = analysis.latency_percentiles(df, ok_only=True)
        figures = {
            "rate": rate, "duration_s": duration, "requests": len(load), "ok": len(ok),
            "throughput_rps": len(ok) / duration,
            "http_p50_ms": lat["p50"], "http_p99_ms": lat["p99"],
            "floor_p50_ms": statistics.median(floor) * 1000,
            "floor_p99_ms": float(np.percentile(floor, 99)) * 1000,
            "floor_insert_p50_ms": statistics.median(floor_insert) * 1000,
            "cold_start_s": cold_start, "lab_up_s": lab.timings["up"],
        }
    finally:
        figures_down = lab.down()
    figures["teardown_s"] = figures_down
    figures["http_over_floor"] = figures["http_p50_ms"] / figures["floor_p50_ms"]
    figures["http_over_floor_insert"] = figures["http_p50_ms"] / figures["floor_insert_p50_ms"]
    return figures


def _p50(lab: Lab, url: str, name: str, rate: float, duration: float) -> tuple[float, float]:
    with Traffic(url, lab.run_dir, rate=rate, duration=duration, name=name,
                 progress=False) as traffic:
        result = traffic.wait()
    lat = analysis.latency_percentiles(analysis.load_records(result.path), ok_only=True)
    return lat["p50"], lat["p99"]


def run_after(rate: float = 50.0, duration: float = 15.0) -> dict:
    """p50 of /predict through the tuned nginx vs the same replicas called directly, the
    two runs interleaved in halves so drift on a busy machine hits both alike."""
    with Lab("after") as lab:
        direct = lab.apis[0].url
        half = duration / 2
        runs = {"nginx": [], "direct": []}
        for i in range(2):
            runs["nginx"].append(_p50(lab, lab.public_url, f"bench-nginx-{i}", rate, half))
            runs["direct"].append(_p50(lab, direct, f"bench-direct-{i}", rate, half))
    f = {k: (statistics.mean(p for p, _ in v), statistics.mean(q for _, q in v))
         for k, v in runs.items()}
    return {"rate": rate, "duration_s": duration, "nginx_p50_ms": f["nginx"][0],
            "nginx_p99_ms": f["nginx"][1], "direct_p50_ms": f["direct"][0],
            "direct_p99_ms": f["direct"][1], "ratio": f["nginx"][0] / f["direct"][0]}


# The lab's background daemons: what runs whether or not a request comes
DAEMONS = ("etcd", "postgres (agent)", "standby (agent)", "supervisor", "nginx liveness",
           "watchdog")
CLIENT = "load client"
# A fresh lab's first seconds under traffic (customers not yet cached, statements not yet
# prepared on each pooled connection): reported beside the steady window, never mixed into it.
FRESH_S = 10.0


def pace_ms(repeat: int = 5) -> float:
    """CPU milliseconds this machine takes for a fixed pure-Python loop, best of `repeat`: the
    CPU figures scale with it, so two runs' figures compare only at a like pace (a virtual
    machine's pace drifts with what its host runs)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        sum(i * i for i in range(300_000))
        best = min(best, time.process_time() - t)
    return 1000 * best


def per_request(before: dict[str, float], after: dict[str, float], load) -> dict:
    """CPU milliseconds per request of each process between two snapshots of CPU seconds,
    over the load requests sent between them (`load`: their records); and each replica's per
    request it served itself."""
    n = max(len(load), 1)
    served = load["backend"].value_counts().to_dict()
    return {"requests": len(load),
            "ms": {name: 1000 * (after[name] - before[name]) / n for name in before},
            "per_served": {name: 1000 * (after[name] - before[name]) / served[name]
                           for name in before if served.get(name)}}


def run_cpu(rate: float = 80.0, window: float = 20.0) -> dict:
    """CPU milliseconds per request of every AFTER component and of the load client, at an
    open-loop rate: over a fresh lab's first FRESH_S of traffic, then over the steady `window`
    that follows; then api1 is restarted under the traffic (its restart-to-ready, and the CPU
    the new process spent to start, are reported apart). The machine's pace is measured before
    the lab starts.

    supervisord counts its own CPU only: its children (replicas, nginx, Redis) have rows of
    their own, and a child it reaped would count in its cumulative children's time."""
    pace = pace_ms()
    duration = FRESH_S + window + 10.0
    with Lab("after") as lab:
        groups = {name: comp.proc.record.pgid for name, comp in lab.components.items()
                  if comp.proc and comp.proc.record}
        for name, comp in lab.components.items():
            if comp.kind == "patroni":  # its Postgres runs in a group of its own
                groups[f"{name} (agent)"] = groups.pop(name)
                groups[f"{name} (pg)"] = comp.postmaster().pgid
        own = {name for name, comp in lab.components.items() if comp.kind == "supervisor"}
        nginx = lab.components.get("nginx")
        live = getattr(nginx.proc, "liveness_pid", lambda: None)() if nginx else None
        if live:  # its liveness check's listener, a process group of its own
            groups["nginx liveness"] = procfs.pgid_of(live) or live

        def cpu(name: str) -> float:
            return (procfs.own_cpu_seconds(groups[name]) if name in own
                    else procfs.group_cpu_seconds(groups[name]))

        with Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration, name="bench-cpu",
                     progress=False, idempotency_keys=True) as traffic:
            marks = []  # (the traffic's clock, every process's CPU seconds)
            for at in (0.0, FRESH_S, FRESH_S + window):
                while traffic.elapsed < at:
                    time.sleep(0.05)
                snap = {name: cpu(name) for name in groups}
                snap[CLIENT] = procfs.cpu_seconds(traffic.pid)
                marks.append((traffic.elapsed, snap))
            restart_s = lab.restart("api1")
            groups["api1"] = lab.components["api1"].proc.record.pgid
            start_cpu = cpu("api1")  # what the new process spent to get ready
            result = traffic.wait()
    records = analysis.load_records(result.path)
    load = records[records["kind"] == "load"]
    windows = {}
    for label, (t0, a), (t1, b) in (("fresh", marks[0], marks[1]), ("steady", marks[1], marks[2])):
        windows[label] = per_request(a, b, load[(load["t"] >= t0) & (load["t"] < t1)])
        windows[label]["seconds"] = t1 - t0
    return {"rate": rate, "duration_s": duration, "windows": windows, "pace_ms": pace,
            "requests": result.load_sent, "failed": result.load_failed,
            "late": result.load_late,
            "client_whole_ms": 1000 * result.client_cpu_s / max(result.load_sent, 1),
            "restart_s": restart_s, "restart_cpu_s": start_cpu}


def report_cpu(f: dict) -> str:
    fresh, steady = f["windows"]["fresh"], f["windows"]["steady"]
    rows = sorted(name for name in steady["ms"] if name != CLIENT) + [CLIENT]

    def total(w: dict) -> float:
        return sum(w["ms"].values())

    def daemons(w: dict) -> float:
        return sum(ms for name, ms in w["ms"].items() if name in DAEMONS) * f["rate"] / 10

    lines = [f"AFTER lab at {f['rate']:g} req/s for {f['duration_s']:g} s ({f['requests']} "
             f"requests, {f['failed']} failed, {f['late']} sent late; api1 restarted at the "
             f"end); machine pace {f['pace_ms']:.1f} ms of CPU for a fixed Python loop (the "
             "figures scale with it). CPU per request:",
             f"  {'':<17} {'steady':>9} {'fresh lab':>10}",
             f"  {'':<17} {'next ' + format(steady['seconds'], '.0f') + ' s':>9} "
             f"{'first ' + format(fresh['seconds'], '.0f') + ' s':>10}"]
    lines += [f"  {name:<17} {steady['ms'][name]:6.2f} ms {fresh['ms'][name]:7.2f} ms"
              for name in rows]
    lines += [f"  {'total':<17} {total(steady):6.2f} ms {total(fresh):7.2f} ms   (target at "
              f"most 5 ms; steady = {total(steady) * f['rate'] / 10:.0f}% of one core)",
              f"  load client: target at most 0.5 ms; its whole run, start-up included: "
              f"{f['client_whole_ms']:.2f} ms",
              "  one replica, per request it served, steady: "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in sorted(steady["per_served"].items()))
              + " (target at most 3 ms); fresh lab: "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in sorted(fresh["per_served"].items())),
              f"  daemons ({', '.join(DAEMONS)}): {daemons(steady):.1f}% of one core steady, "
              f"{daemons(fresh):.1f}% fresh (target at most 2%)",
              f"  api1 restart to ready under the traffic: {f['restart_s']:.2f} s "
              f"(target: within 2 s), {f['restart_cpu_s']:.2f} s of CPU to start (not in the "
              "figures above)"]
    return "\n".join(lines)


# How long the throughput run lets a ready lab finish starting (the replicas' pools opening
# their connections, the last daemons importing) before the traffic. Measured at 500 req/s:
# started at once, the first 4 s queued to a p50 of 240-280 ms; 10 s after ready, the first
# 2 s had a p50 of 40 ms and the rest 2-3 ms.
SETTLE_S = 5.0
RAMP_S = 4.0  # the throughput run's first seconds, reported apart: every customer a cache miss


def run_throughput(rate: float = 500.0, duration: float = 20.0) -> dict:
    """The AFTER lab through nginx at an open-loop rate, every prediction committed on the
    primary and its synchronous standby, SETTLE_S after the lab is ready: what was answered,
    and how fast, over the whole run and over its first RAMP_S and the rest apart."""
    with Lab("after") as lab:
        time.sleep(SETTLE_S)
        with Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration,
                     name="bench-throughput", progress=False, idempotency_keys=True) as traffic:
            result = traffic.wait()
    df = analysis.load_records(result.path)
    lat = analysis.latency_percentiles(df, ok_only=True)
    return {"rate": rate, "duration_s": duration, "requests": result.load_sent,
            "ok": result.load_ok, "late": result.load_late, "p50_ms": lat["p50"],
            "p99_ms": lat["p99"], "ok_per_s": result.load_ok / duration,
            "parts": ramp_and_rest(df), "outcomes": outcomes(df),
            "last_p50_ms": last_seconds_p50(df, duration), "client_note": result.client_note()}


OVERLOAD_RATE = 650.0  # past what the 2-core machine serves: how the lab degrades
LAST_S = 5.0  # the overload run's last seconds: back to a few ms, or still queued


def outcomes(df) -> dict[str, int]:
    """The load requests by outcome: 'ok', '503' (answered at once when every replica's
    max_conns was taken, or a replica's own 503), other statuses by number, and the client's
    error kinds (timeout, read, connect)."""
    load = df[df["kind"] == "load"]
    out: dict[str, int] = {}
    for status, error in zip(load["status"], load["error"].fillna("")):
        key = ("ok" if 200 <= status < 300 else str(int(status))) if status else (error or "?")
        out[key] = out.get(key, 0) + 1
    return out


def last_seconds_p50(df, duration: float) -> float:
    """The answered load requests' p50 in ms over the run's last LAST_S seconds."""
    load = df[(df["kind"] == "load") & (df["t"] >= duration - LAST_S)]
    return analysis.latency_percentiles(load, ok_only=True)["p50"]


def ramp_and_rest(df) -> dict[str, dict]:
    """The load requests sent in the first RAMP_S and after: how many, how many failed, and
    the answered ones' p50 and p99 in ms."""
    load = df[df["kind"] == "load"]
    parts = {}
    for label, part in (("ramp", load[load["t"] < RAMP_S]), ("rest", load[load["t"] >= RAMP_S])):
        lat = analysis.latency_percentiles(part, ok_only=True)
        ok = round(analysis.availability(part) * len(part)) if len(part) else 0
        parts[label] = {"requests": len(part), "failed": len(part) - ok,
                        "p50_ms": lat["p50"], "p99_ms": lat["p99"]}
    return parts


def report_throughput(f: dict) -> str:
    ramp, rest = f["parts"]["ramp"], f["parts"]["rest"]
    lines = [f"AFTER lab throughput at {f['rate']:g} req/s for {f['duration_s']:g} s through "
             f"nginx, {SETTLE_S:g} s after the lab was ready: {f['ok']} of {f['requests']} ok = "
             f"{f['ok_per_s']:.0f} ok/s, p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, "
             f"{f['late']} sent late (target: at least 500 req/s)",
             f"  first {RAMP_S:g} s (caches cold): {ramp['failed']} of {ramp['requests']} failed, "
             f"p50 {ramp['p50_ms']:.1f} ms, p99 {ramp['p99_ms']:.1f} ms; the rest: "
             f"{rest['failed']} of {rest['requests']} failed, p50 {rest['p50_ms']:.1f} ms, "
             f"p99 {rest['p99_ms']:.1f} ms"]
    if f["client_note"]:
        lines.append(f"  {f['client_note']}")
    return "\n".join(lines)


def report_overload(f: dict) -> str:
    o = dict(f["outcomes"])
    ok = o.pop("ok", 0)
    rest = ", ".join(f"{n} {k}" for k, n in sorted(o.items(), key=lambda kv: -kv[1])) or "none"
    return (f"AFTER lab past the target, {f['rate']:g} req/s open loop for {f['duration_s']:g} "
            f"s through nginx: {ok} ok = {ok / f['duration_s']:.0f} ok/s; not ok: {rest}; p50 "
            f"{f['p50_ms']:.1f} ms, over the last {LAST_S:g} s {f['last_p50_ms']:.1f} ms (no "
            "target; when the lab falls behind, nginx answers the excess 503 at once past each "
            "replica's max_conns, so it goes on serving near its capacity instead of queueing "
            "into timeouts and re-sends; an answered request's latency includes the client's "
            "wait for a 503's Retry-After)")


# hey's summary: its rate, its latency percentiles and its count per status code
_HEY_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_HEY_PCT = re.compile(r"(\d+)% in ([0-9.]+) secs")
_HEY_STATUS = re.compile(r"\[(\d+)\]\s+(\d+) responses")
CAPACITY_BODY = {"customer_id": 7, "amount": 12.5, "merchant_category": "fuel",
                 "country": "US", "hour": 9, "is_online": False}


def parse_hey(text: str) -> dict:
    """Requests per second, p50/p99 in ms and the count of each status from hey's summary."""
    rate = _HEY_RATE.search(text)
    if rate is None:
        raise ValueError(f"hey printed no Requests/sec line: {text[-300:]!r}")
    pct = {int(p): 1000 * float(s) for p, s in _HEY_PCT.findall(text)}
    return {"rps": float(rate.group(1)), "p50_ms": pct.get(50, float("nan")),
            "p99_ms": pct.get(99, float("nan")),
            "statuses": {int(code): int(n) for code, n in _HEY_STATUS.findall(text)}}


def run_capacity(requests: int = 8000, concurrency: int = 16) -> dict:
    """Closed loop: `hey -c 16` POSTs /predict through nginx as fast as the AFTER lab answers
    (each prediction committed on the primary and its synchronous standby), SETTLE_S after the
    lab is ready: the most the lab serves, measured as the issue that set the 500 req/s target
    measured it. One customer, so every lookup after the first is a cache hit."""
    hey = binaries.find("hey")
    with Lab("after") as lab:
        time.sleep(SETTLE_S)
        out = subprocess.run([hey, "-n", str(requests), "-c", str(concurrency), "-m", "POST",
                              "-T", "application/json", "-d", json.dumps(CAPACITY_BODY),
                              lab.public_url + "/predict"],
                             capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"hey failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return {"requests": requests, "concurrency": concurrency, **parse_hey(out.stdout)}


def report_capacity(f: dict) -> str:
    ok = f["statuses"].get(200, 0)
    return (f"AFTER lab capacity, closed loop (hey -c {f['concurrency']}, {f['requests']} POST "
            f"/predict through nginx): {f['rps']:.0f} req/s, {ok} of {f['requests']} answered "
            f"200, p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms (target: at least 500 "
            "req/s)")


_STATIC_NGINX = """daemon off;
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path client_body_temp;
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{ default_type application/json; return 200 '{{"request_id": "bench"}}'; }}
    }}
}}
"""


def run_client(rate: float = 1000.0, duration: float = 10.0, cpu: int | None = None) -> dict:
    """The load client alone, pinned to one core, against an nginx that answers every request
    with a fixed body: how many requests a second it holds open loop, and at what CPU cost."""
    cores = sorted(os.sched_getaffinity(0))
    cpu = cores[-1] if cpu is None else cpu
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(_STATIC_NGINX.format(port=port))
        nginx = ManagedProcess("bench-nginx", [binaries.find("nginx"), "-p", f"{tmp}/", "-c",
                                               str(conf)], Path(tmp) / "nginx.log")
        nginx.start()
        try:
            nginx.wait_ready(lambda: is_listening(port), 10.0)
            os.sched_setaffinity(0, {cpu})  # the client's process inherits this one core
            try:
                with Traffic(f"http://127.0.0.1:{port}", tmp, rate=rate, duration=duration,
                             name="bench-client", progress=False,
                             idempotency_keys=True) as traffic:
                    start_cpu = procfs.cpu_seconds(traffic.pid)  # its start-up, till the clock
                    result = traffic.wait()
            finally:
                os.sched_setaffinity(0, cores)
        finally:
            nginx.stop()
    n = max(result.load_sent, 1)
    return {"rate": rate, "duration_s": duration, "cpu": cpu, "requests": result.load_sent,
            "ok": result.load_ok, "late": result.load_late,
            "late_fraction": result.load_late / n, "start_cpu_s": start_cpu,
            "client_ms": 1000 * (result.client_cpu_s - start_cpu) / n,
            "whole_ms": 1000 * result.client_cpu_s / n,
            "core_share": (result.client_cpu_s - start_cpu) / duration}


def report_client(f: dict) -> str:
    target = " (target at most 0.5 ms)" if f["rate"] <= 100 else ""
    return (f"Load client alone on core {f['cpu']}, {f['rate']:g} req/s open loop for "
            f"{f['duration_s']:g} s against a static nginx: {f['ok']} of {f['requests']} ok, "
            f"{f['late']} sent late ({f['late_fraction']:.2%}; target under 1%), "
            f"{f['client_ms']:.2f} ms CPU per request{target} = {f['core_share']:.0%} of its "
            f"core; its start-up {f['start_cpu_s']:.2f} s of CPU besides ({f['whole_ms']:.2f} "
            "ms per request with it)")


def run_noisy(rate: float = 100.0, duration: float = 20.0) -> dict:
    """The noisy neighbour: the AFTER lab with no fault at the course's highest rate, while
    one busy loop at normal priority (a process of this bench, ended by its PID) takes a core,
    as another program on a learner's laptop would."""
    with Lab("after") as lab:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                start_new_session=True)
        try:
            with Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration,
                         name="bench-noisy", progress=False, idempotency_keys=True) as traffic:
                result = traffic.wait()
        finally:
            busy.kill()
            busy.wait(5)
    summary = analysis.summary(analysis.load_records(result.path))
    return {"rate": rate, "duration_s": duration, "requests": result.load_sent,
            "failed": result.load_failed, "availability": summary["availability"],
            "client_note": result.client_note()}


def report_noisy(f: dict) -> str:
    verdict = analysis.verdict("no-fault AFTER lab beside a busy loop keeps 99.9%",
                               f["availability"] >= 0.999,
                               f"{f['availability']:.3%}: {f['failed']} failed of "
                               f"{f['requests']} at {f['rate']:g} req/s for "
                               f"{f['duration_s']:g} s", inconclusive=f["client_note"])
    return "Noisy neighbour: " + verdict


def report_after(f: dict) -> str:
    return "\n".join([
        f"AFTER lab, POST /predict at {f['rate']:g} req/s, {f['duration_s']:g} s each way:",
        f"  through tuned nginx: p50 {f['nginx_p50_ms']:7.2f} ms   p99 {f['nginx_p99_ms']:7.2f} ms",
        f"  replica directly:    p50 {f['direct_p50_ms']:7.2f} ms   p99 {f['direct_p99_ms']:7.2f} ms",
        f"  nginx p50 / direct p50 = {f['ratio']:.2f}x   (target: within 1.2x)",
    ])


def report(f: dict) -> str:
    return "\n".join([
        f"BEFORE lab, POST /predict at {f['rate']:g} req/s for {f['duration_s']:g} s "
        f"(open loop): {f['ok']} of {f['requests']} ok",
        f"  through HTTP:  p50 {f['http_p50_ms']:7.2f} ms   p99 {f['http_p99_ms']:7.2f} ms   "
        f"throughput {f['throughput_rps']:.1f} req/s",
        f"  floor:         p50 {f['floor_p50_ms']:7.2f} ms   p99 {f['floor_p99_ms']:7.2f} ms   "
        "(feature SELECT + model.predict, in process)",
        f"  HTTP p50 / floor p50 = {f['http_over_floor']:.2f}x   (target: within 2x)",
        f"  floor with the prediction's durable INSERT: p50 {f['floor_insert_p50_ms']:.2f} ms; "
        f"HTTP p50 / that = {f['http_over_floor_insert']:.2f}x",
        f"  cold start {f['cold_start_s']:.2f} s (target < 5 s), "
        f"teardown {f['teardown_s']:.2f} s (target < 2 s)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.bench", description=__doc__)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    text = report(run(args.rate, args.duration))
    print(text, flush=True)
    after = report_after(run_after(args.rate, args.duration))
    print(after, flush=True)
    cpu = report_cpu(run_cpu(80.0, args.duration))
    print(cpu, flush=True)
    throughput = report_throughput(run_throughput(500.0, args.duration))
    print(throughput, flush=True)
    overload = report_overload(run_throughput(OVERLOAD_RATE, args.duration))
    print(overload, flush=True)
    capacity = report_capacity(run_capacity())
    print(capacity, flush=True)
    client = "\n".join(report_client(run_client(rate, duration))
                       for rate, duration in ((80.0, args.duration), (1000.0, 10.0)))
    print(client, flush=True)
    noisy = report_noisy(run_noisy(100.0, args.duration))
    print(noisy)
    out = Path("reports")
    out.mkdir(exist_ok=True)
    (out / "bench.txt").write_text("\n".join([text, after, cpu, throughput, overload, capacity,
                                              client, noisy])
                                   + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
