"""Week 4 exercise: restart every replica without failing a request (a solution).

One replica at a time, and only while another one serves: take it out of nginx, let it finish
what it has, restart it, wait until it is ready, and only then move on. The project's version,
with a deadline on each step and a report, is stack.deploy.rollout.rolling_restart.

Run the checker: `python -m stack.check week4 rollout --solutions`
"""
from __future__ import annotations

import time
from typing import Any

import httpx

DRAIN_DEADLINE_S = 10.0


def _in_flight(api: Any) -> float:
    """Requests the replica is working on now, from its own /metrics (which counts this very
    request too)."""
    text = httpx.get(api.url + "/metrics", timeout=2.0).text
    gauge = sum(float(line.split()[1]) for line in text.splitlines()
                if line.startswith("http_requests_in_flight "))
    return max(gauge - 1, 0)


def restart_replicas(lab: Any) -> None:
    """Restart every replica in `lab.apis`, one at a time; return once all serve again."""
    nginx = lab.component("nginx")
    for api in lab.apis:
        # 1. drain: nginx stops sending it new requests (the others take them)
        nginx.set_backends_down({api.name})
        # 2. let it finish the requests it already has, under a deadline (past it, uvicorn's
        #    graceful shutdown still finishes them)
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        while time.monotonic() < deadline:
            try:
                if _in_flight(api) == 0:
                    break
            except httpx.HTTPError:
                break
            time.sleep(0.05)
        # 3. restart: SIGTERM (stop accepting, finish in flight), start, wait until ready
        lab.restart(api.name)
    # 4. every replica back in nginx's upstream
    nginx.set_backends_down(set())
