"""Green, yellow, red: the playbook's health states, computed from live PromQL, each with the
action the runbook asks for and the reasons that put it there.

- green: error ratio and p99 within the SLO, every replica up;
- yellow: the error budget burns faster than 1x over the short (5m) window, or a replica is
  down, or a database node is down (Patroni's metrics), or p99 is over the latency objective;
- red: a page-level burn (14.4x over 1h and 5m, or 6x over 6h and 30m), or no healthy replica
  (the uptime probe fails, or every replica is down), or no database primary.

Patroni's nodes are judged on their last three scrapes, not the latest one alone (on a busy
machine an agent can miss one scrape while its database serves on), and on their latest value
when Prometheus has not scraped them for a few seconds (it has just restarted).

`classify()` is a pure function of the numbers; `state(prom)` queries them from Prometheus
(the recording rules of `stack.analysis.slo` must be loaded).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from stack.analysis.slo import SloSettings, prom_duration, record_name

ACTIONS = {
    "green": "No action: watch the dashboard; the error budget is spent no faster than planned.",
    "yellow": ("Investigate during working hours: find the failing replica or the slow "
               "dependency on the dashboard, open a ticket, and hold deploys until green."),
    "red": ("Page the on-call now and follow the incident runbook: confirm it is not a false "
            "alarm, check (dashboard, recent deploys), decide (roll back, fail over, shed "
            "load), communicate; freeze deploys."),
}


class Queryable(Protocol):
    def query(self, expr: str) -> list: ...


@dataclass(frozen=True)
class HealthState:
    color: str
    reasons: tuple[str, ...]
    values: dict = field(default_factory=dict, compare=False)

    @property
    def action(self) -> str:
        return ACTIONS[self.color]

    def __str__(self) -> str:
        why = "; ".join(self.reasons) if self.reasons else "all within objectives"
        return f"{self.color.upper()}: {why} -> {self.action}"


def classify(error_ratio: Mapping[str, float | None], p99_s: float | None,
             api_up: Mapping[str, float], probe_success: float | None,
             s: SloSettings = SloSettings(),
             db_nodes: Mapping[str, tuple[bool, bool]] | None = None) -> HealthState:
    """The state from the numbers: error ratios by playbook window ('5m', '30m', '1h', '6h';
    None: no traffic), p99 latency in seconds (None: no traffic), up per replica, the
    latest probe_success (None: no probe), and Patroni's view of each database node,
    (Postgres running, primary) per node (None: no Patroni)."""
    budget = s.budget
    red, yellow = [], []

    def over(window: str, factor: float) -> bool:
        v = error_ratio.get(window)
        return v is not None and v > factor * budget

    for a in s.alerts:
        if a.severity == "page" and over(a.long, a.factor) and over(a.short, a.factor):
            red.append(f"page-level burn: errors {error_ratio[a.short]:.2%} over {a.short}, "
                       f"{error_ratio[a.long]:.2%} over {a.long} (> {a.factor:g}x budget)")
    down = sorted(name for name, up in api_up.items() if up < 1)
    if probe_success is not None and probe_success < 1:
        red.append("no healthy replica: the uptime probe fails")
    if api_up and len(down) == len(api_up):
        red.append(f"no replica answers scrapes: {', '.join(down)} down")
    elif down:
        yellow.append(f"replica down: {', '.join(down)} (up == 0)")
    if db_nodes:
        if not any(primary for _, primary in db_nodes.values()):
            red.append("no database primary: Patroni reports no leader, writes fail")
        lost = sorted(name for name, (running, _) in db_nodes.items() if not running)
        if lost:
            yellow.append(f"database node down: {', '.join(lost)} (one copy of the data left)")
    if over("5m", 1.0):
        yellow.append(f"error budget burning faster than 1x: {error_ratio['5m']:.2%} errors "
                      f"over 5m (budget {budget:.2%})")
    if p99_s is not None and p99_s > s.latency_objective_s:
        yellow.append(f"p99 latency {p99_s * 1000:.0f} ms over the {s.latency_objective_s * 1000:.0f}"
                      " ms objective")
    values = {"error_ratio": dict(error_ratio), "p99_s": p99_s, "api_up": dict(api_up),
              "probe_success": probe_success, "db_nodes": dict(db_nodes or {})}
    if red:
        return HealthState("red", tuple(red + yellow), values)
    if yellow:
        return HealthState("yellow", tuple(yellow), values)
    return HealthState("green", (), values)


def _one(prom: Queryable, expr: str) -> float | None:
    res = prom.query(expr)
    if not res:
        return None
    v = float(res[0].value)
    return None if v != v else v  # NaN (e.g. a quantile of nothing) counts as no data


def state(prom: Queryable, s: SloSettings = SloSettings()) -> HealthState:
    """The state now, from Prometheus."""
    ratios = {w: _one(prom, record_name("error_ratio", w)) for w in ("5m", "30m", "1h", "6h")}
    p99 = _one(prom, record_name("p99", "5m"))
    up = {r.labels.get("replica", r.labels.get("instance", "?")): float(r.value)
          for r in prom.query('up{job="api"}')}
    probe = _one(prom, 'min(probe_success{job="probe"})')
    return classify(ratios, p99, up, probe, s, db_nodes=_db_nodes(prom, s.scrape_interval_s))


# A Patroni agent that misses one scrape (its REST API slow on a busy machine) has not lost
# the database: a node counts as down, or as not the primary, only when none of its scrapes in
# the last DB_SCRAPES scrape intervals said otherwise. A real loss shows after that many seconds.
# A node with no scrape in that window at all keeps its latest value from the last
# DB_LOOKBACK_SCRAPES intervals, so it does not drop out of the picture: after a restart
# Prometheus marks every series stale and takes seconds to scrape each target again (week 3
# restarts it to load the backfilled history). A node whose agent is down is still scraped,
# with `up` 0.
DB_SCRAPES = 3
DB_LOOKBACK_SCRAPES = 30


def _db_nodes(prom: Queryable, scrape_interval_s: float = 1.0) -> dict[str, tuple[bool, bool]] | None:
    """Patroni's metrics per node, (Postgres running, primary), over the last DB_SCRAPES
    scrapes (else its latest value within DB_LOOKBACK_SCRAPES); a node whose agent answered
    none of them counts as down. None when Prometheus scrapes no Patroni."""
    window = prom_duration(DB_SCRAPES * scrape_interval_s)
    lookback = prom_duration(DB_LOOKBACK_SCRAPES * scrape_interval_s)

    def latest(metric: str) -> dict[str, float]:
        series = f'{metric}{{job="patroni"}}'
        expr = f"max_over_time({series}[{window}]) or last_over_time({series}[{lookback}])"
        return {r.labels.get("instance", "?"): float(r.value) for r in prom.query(expr)}

    up = latest("up")
    if not up:
        return None
    running, primary = latest("patroni_postgres_running"), latest("patroni_primary")
    return {inst: (u == 1 and running.get(inst) == 1, u == 1 and primary.get(inst) == 1)
            for inst, u in up.items()}
