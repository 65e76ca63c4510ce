"""Week 4 exercise: restart every API replica (a new release, a config change) while users
keep sending requests, without failing one of them.

The checker starts an AFTER lab (nginx in front of api1 and api2), sends 30 POST /predict per
second with an Idempotency-Key each, calls `restart_replicas(lab)`, and counts failed requests.
This first version is what a deploy script usually does: stop the service, start it again.

What you can use (stack/lab/lab.py, stack/components/apiserver.py, stack/components/nginx.py):
- lab.apis: the replicas; api.name, api.stop(), api.start(), api.wait_ready(), api.ready()
- lab.restart(name): stop one component, start it, and wait until it is ready
- lab.component("nginx").set_backends_down({"api1"}): reload nginx with api1 out of the
  upstream (in-flight requests finish, new ones go elsewhere); set_backends_down(set())
  puts every replica back

Run the checker: `python -m stack.check week4 rollout`
"""
from __future__ import annotations

from typing import Any


def restart_replicas(lab: Any) -> None:
    """Restart every replica in `lab.apis`; return once all of them are serving again."""
    for api in lab.apis:
        api.stop()
    for api in lab.apis:
        api.start()
    for api in lab.apis:
        api.wait_ready()
