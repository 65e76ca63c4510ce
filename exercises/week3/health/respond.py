"""Week 3, task 3: what each health state asks of people.

`respond(state)` gets the lab's health state, a `stack.analysis.health.HealthState`:

    state.color     "green", "yellow" or "red"
    state.reasons   why, one line each, e.g. "replica down: api2 (up == 0)"
    state.values    the numbers behind it:
                      error_ratio    {"5m": 0.002, "30m": ..., "1h": ..., "6h": ...} (None: no traffic)
                      p99_s          p99 latency over 5m in seconds (None: no traffic)
                      api_up         {"api1": 1.0, "api2": 0.0}   (1: answers scrapes)
                      probe_success  1.0, 0.0 or None (no probe)
                      db_nodes       {"postgres": (running, primary), "standby": (running, primary)}
                                     ({} when the lab runs no Patroni)

and returns a `Response`: who is told, what happens to deploys, and the first steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NOTIFY = ("none", "ticket", "page")     # ticket: working hours; page: wakes the on-call now
DEPLOYS = ("allowed", "hold", "freeze")  # hold: no new deploy until green; freeze: rollbacks only
STEPS = (
    "check_dashboard",          # find the failing part: errors by cause, latency, DB connections
    "restart_replica",          # stackctl restart --rolling: one replica at a time
    "rejoin_db_node",           # bring a lost database node back; Patroni rejoins it as a replica
    "wait_for_failover",        # Patroni promotes the standby once the leader key's TTL runs out
    "promote_standby_by_hand",  # pg_promote() on the standby
    "rollback",                 # stackctl rollback: the previous model or release on every replica
)


@dataclass
class Response:
    notify: str
    deploys: str
    steps: list[str] = field(default_factory=list)  # from STEPS, first step first


def respond(state) -> Response:
    # The starter treats every state that is not green as an emergency.
    if state.color == "green":
        return Response("none", "allowed")
    return Response("page", "freeze", ["rollback"])
