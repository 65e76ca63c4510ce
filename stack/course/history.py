"""A failover history in the style of Jepsen, on the AFTER lab's Patroni pair under write load
through nginx:

    lose the primary's node -> the replica is promoted -> the old node returns and rejoins
    -> lose the new primary's node -> promotion again -> it returns and rejoins

A sampler asks each node every `sample_s` whether it accepts writes (it answers and is not in
recovery). Checked at every sampled moment: at most one node accepts writes. Checked at the
end: every request id that got a 200 is in the final primary, and every stored prediction was
written on a node that accepted writes around that moment (each row records the port of the
server that took it). Week 2 prints the report; the integration test asserts it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import psycopg

from stack.analysis import records as analysis
from stack.components.patroni import LOOP_WAIT_S, TTL_S
from stack.components.postgres import SUPERUSER, conninfo
from stack.errors import StackError
from stack.lab import faults
from stack.lab.lab import Lab
from stack.lab.traffic import Traffic

NODES = ("postgres", "standby")


@dataclass
class Sample:
    wall: float
    writable: tuple[str, ...]  # the nodes that answered and were not in recovery


class Sampler:
    """Asks each node, every `interval` seconds, whether it accepts writes."""

    def __init__(self, lab: Lab, interval: float = 0.2):
        self.lab, self.interval = lab, interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._conns: dict[str, psycopg.Connection | None] = {n: None for n in NODES}
        self._thread = threading.Thread(target=self._run, name="writable-sampler", daemon=True)

    def _writable(self, name: str) -> bool:
        node = self.lab.component(name)
        conn = self._conns[name]
        try:
            if conn is None or conn.closed:
                conn = self._conns[name] = psycopg.connect(
                    conninfo(node.port, self.lab.secrets[SUPERUSER], user=SUPERUSER,
                             dbname="postgres", connect_timeout=1), autocommit=True)
                conn.execute("SET statement_timeout = 1000")
            return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error:
            if conn is not None:
                conn.close()
            self._conns[name] = None
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            self.samples.append(Sample(t, tuple(n for n in NODES if self._writable(n))))
            self._stop.wait(max(0.0, self.interval - (time.time() - t)))

    def writable_now(self) -> tuple[str, ...]:
        return self.samples[-1].writable if self.samples else ()

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns.values():
            if conn is not None:
                conn.close()


@dataclass
class History:
    steps: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    records: pd.DataFrame | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def _wait_until(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise StackError(f"failover history: {what} did not happen within {timeout:g} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def run(lab: Lab, *, rate: float = 40.0, rounds: int = 2, settle_s: float = 3.0,
        progress: bool = False) -> History:
    """Run the history; returns its steps, samples, records and figures."""
    hist = History()
    promote_timeout = TTL_S + 10 * LOOP_WAIT_S + 15
    with Sampler(lab) as sampler, Traffic(
            lab.public_url, lab.run_dir, rate=rate, duration=600, name="failover-history",
            progress=progress, idempotency_keys=True, timeout=5.0,
            n_customers=lab.topology.postgres.n_customers) as traffic:
        _wait_until(lambda: len(sampler.writable_now()) == 1, 10, "a writable primary")
        time.sleep(settle_s)
        for _ in range(rounds):
            old = sampler.writable_now()[0]
            new = next(n for n in NODES if n != old)
            if lab.topology.postgres.synchronous:
                # In synchronous_mode Patroni promotes only the synchronous standby (another
                # replica may lack acknowledged commits): after a restart or a lost standby,
                # wait until the replica is named synchronous again.
                _wait_until(lambda: lab.component(new).check("/sync"), promote_timeout,
                            f"{new} as the synchronous standby")
            lost_at = time.time()
            applied = faults.apply(lab, "node_loss", target=old)
            try:
                waited = _wait_until(lambda: sampler.writable_now() == (new,),
                                     promote_timeout, f"promotion of {new}")
            except StackError:
                faults.undo(lab, applied)  # leave the lab with both nodes, then report
                raise
            hist.steps.append({"action": f"node loss of the primary {old}", "wall": lost_at})
            hist.steps.append({"action": f"{new} promoted", "wall": lost_at + waited,
                               "after_s": round(waited, 1)})
            time.sleep(settle_s)
            back_at = time.time()
            faults.undo(lab, applied)  # the node comes back and rejoins as a replica
            node = lab.component(old)
            _wait_until(lambda: node.check("/replica"), promote_timeout,
                        f"{old} rejoining as a replica")
            rejoined = time.time()
            hist.steps.append({"action": f"{old} brought back", "wall": back_at})
            hist.steps.append({"action": f"{old} rejoined as a replica", "wall": rejoined,
                               "after_s": round(rejoined - back_at, 1)})
            if lab.topology.postgres.synchronous:
                _wait_until(lambda: node.check("/sync"), promote_timeout,
                            f"{old} as the synchronous standby")
            time.sleep(settle_s)
        result = traffic.stop()
    hist.samples = list(sampler.samples)
    hist.records = analysis.load_records(result.path)
    hist.figures = check(lab, hist)
    return hist


def _writable_intervals(samples: list[Sample], interval: float) -> dict[str, list[tuple]]:
    """For each node, the (start, end) walls of its runs of writable samples, widened by one
    sampling interval on each side (a write may land between two samples)."""
    spans: dict[str, list[tuple[float, float]]] = {n: [] for n in NODES}
    for node in NODES:
        start = prev = None
        for s in samples:
            if node in s.writable:
                start = s.wall if start is None else start
                prev = s.wall
            elif start is not None:
                spans[node].append((start - interval, prev + interval))
                start = None
        if start is not None:
            spans[node].append((start - interval, prev + interval))
    return spans


def check(lab: Lab, hist: History, interval: float = 0.2) -> dict[str, Any]:
    """The history's checks and figures."""
    samples = hist.samples
    load = hist.records[hist.records["kind"] == "load"]
    acked = load[load["status"] == 200]["request_id"].tolist()
    final = [n for n in NODES if lab.component(n).role == "primary"]
    if len(final) != 1:
        raise StackError(f"failover history: {len(final)} primaries at the end: {final}")
    ports = {lab.component(n).port: n for n in NODES}
    with lab.component(final[0]).connect() as conn:
        found = {str(r[0]) for r in conn.execute(
            "SELECT request_id FROM predictions WHERE request_id = ANY(%s::uuid[])", (acked,))}
        rows = conn.execute(
            "SELECT extract(epoch FROM created_at), written_on FROM predictions "
            "WHERE created_at >= to_timestamp(%s)", (samples[0].wall,)).fetchall()
    spans = _writable_intervals(samples, interval)
    misplaced = [(float(t), ports.get(p, str(p))) for t, p in rows
                 if not any(a <= float(t) <= b for a, b in spans.get(ports.get(p, ""), []))]
    no_primary = sum(b.wall - a.wall for a, b in zip(samples, samples[1:]) if not a.writable)
    promotions = [s["after_s"] for s in hist.steps if s["action"].endswith("promoted")]
    return {
        "samples": len(samples),
        "max_writable_at_once": max((len(s.writable) for s in samples), default=0),
        "requests": len(load), "acknowledged": len(acked),
        "failed": int((load["status"] != 200).sum()),
        "lost": len(set(acked) - found),
        "rows_checked": len(rows), "writes_on_a_non_leader": len(misplaced),
        "promotion_after_s": promotions,
        "seconds_without_primary": round(no_primary, 1),
        "final_primary": final[0],
    }


def report(hist: History) -> str:
    """The steps in time order, then the figures."""
    t0 = hist.samples[0].wall if hist.samples else 0.0
    lines = [f"t+{s['wall'] - t0:5.1f}s  {s['action']}"
             + (f" (after {s['after_s']:g} s)" if "after_s" in s else "")
             for s in sorted(hist.steps, key=lambda s: s["wall"])]
    f = hist.figures
    lines += ["",
              f"{f['samples']} samples: at most {f['max_writable_at_once']} node accepted "
              "writes at any sampled moment",
              f"{f['requests']} requests, {f['acknowledged']} acknowledged, {f['failed']} "
              f"failed; {f['lost']} acknowledged predictions missing from the final primary "
              f"({f['final_primary']})",
              f"{f['rows_checked']} stored predictions, {f['writes_on_a_non_leader']} written "
              "on a node that was not accepting writes",
              f"promotions after {', '.join(f'{p:g} s' for p in f['promotion_after_s'])}; "
              f"{f['seconds_without_primary']:g} s without a writable primary in all"]
    return "\n".join(lines)
