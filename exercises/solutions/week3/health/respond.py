"""Week 3, task 3: what each health state asks of people (a solution).

The colour decides who is told and what happens to deploys; the reasons decide the first
steps, as the runbook's "Decide" table does. See the starter for what `state` holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NOTIFY = ("none", "ticket", "page")
DEPLOYS = ("allowed", "hold", "freeze")
STEPS = ("check_dashboard", "restart_replica", "rejoin_db_node", "wait_for_failover",
         "promote_standby_by_hand", "rollback")

# green: nobody is woken, deploys go on; yellow: a ticket for working hours and no new
# deploy until it is green again; red: page the on-call now, only rollbacks ship.
BY_COLOR = {"green": ("none", "allowed"), "yellow": ("ticket", "hold"), "red": ("page", "freeze")}


@dataclass
class Response:
    notify: str
    deploys: str
    steps: list[str] = field(default_factory=list)


def _over(ratio, factor: float, budget: float = 0.001) -> bool:
    return ratio is not None and ratio > factor * budget


def respond(state) -> Response:
    notify, deploys = BY_COLOR[state.color]
    if state.color == "green":
        return Response(notify, deploys)  # watching the dashboard is no step
    v = state.values
    ratios = v.get("error_ratio") or {}
    up = v.get("api_up") or {}
    db = v.get("db_nodes") or {}
    steps: list[str] = []
    if db and not any(primary for _, primary in db.values()):
        # Patroni promotes the standby within the leader key's TTL; promoting by hand as
        # well can leave two primaries
        steps.append("wait_for_failover")
    page_burn = ((_over(ratios.get("1h"), 14.4) and _over(ratios.get("5m"), 14.4))
                 or (_over(ratios.get("6h"), 6) and _over(ratios.get("30m"), 6)))
    if page_burn:
        steps.append("rollback")  # users fail now: undo the last change first, explain later
    if any(u < 1 for u in up.values()):
        steps.append("restart_replica")
    if any(not running for running, _ in db.values()):
        steps.append("rejoin_db_node")
    if state.color == "red" or not steps:
        steps.append("check_dashboard")
    return Response(notify, deploys, steps)
