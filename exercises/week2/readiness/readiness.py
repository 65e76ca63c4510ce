"""Week 2 exercise: the readiness check behind GET /readyz.

nginx's /health and the lab's restarts trust this answer: a replica that says "ready" gets
traffic. Fill in `readiness` so that it says ready only when the model is loaded AND the
database answers, and so that it always answers within `timeout_s`, even when the database
has frozen (a SIGSTOPped Postgres accepts nothing and refuses nothing: a query just waits).

Run the checker: `python -m stack.check week2 readiness`
"""
from __future__ import annotations

from typing import Any, Callable


def readiness(model: Any, ping_db: Callable[[float], None],
              timeout_s: float = 1.0) -> tuple[bool, list[str]]:
    """(ready, reasons): ready is True only if `model` is not None and `ping_db(timeout_s)`
    returns within `timeout_s`; reasons has one line per problem ('model not loaded',
    'database unreachable: ...'), and is empty when ready.

    `ping_db(timeout_s)` runs SELECT 1; it raises when the database refuses, and it may also
    never return.
    """
    # The playbook's /health: "healthy" as long as the process can answer.
    if model is None:
        return False, ["model not loaded"]
    return True, []
