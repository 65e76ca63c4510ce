"""Week 2 exercise: the readiness check behind GET /readyz (a solution).

Run the checker: `python -m stack.check week2 readiness --solutions`
"""
from __future__ import annotations

import threading
from typing import Any, Callable


def _ping_with_deadline(ping_db: Callable[[float], None], timeout_s: float) -> str | None:
    """None if the database answered within timeout_s, else the reason it is not ready.

    The ping runs in a helper thread: a frozen database never answers and never raises, and
    the caller must not wait for it. The thread is a daemon, so one stuck ping never keeps the
    process from exiting (the real app also bounds it with the pool's own timeout).
    """
    outcome: list[str | None] = []

    def run() -> None:
        try:
            ping_db(timeout_s)
            outcome.append(None)
        except Exception as exc:  # any failure means: not ready, and say why
            outcome.append(f"database unreachable: {type(exc).__name__}: {exc}")

    worker = threading.Thread(target=run, name="readiness-ping", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        return f"database unreachable: SELECT 1 took longer than {timeout_s:g} s"
    return outcome[0]


def readiness(model: Any, ping_db: Callable[[float], None],
              timeout_s: float = 1.0) -> tuple[bool, list[str]]:
    """(ready, reasons): ready only when the model is loaded and the database answers within
    timeout_s; one reason per problem, so the 503 body says everything that is wrong."""
    reasons = []
    if model is None:
        reasons.append("model not loaded")
    db_reason = _ping_with_deadline(ping_db, timeout_s)
    if db_reason:
        reasons.append(db_reason)
    return not reasons, reasons
