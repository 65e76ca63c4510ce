"""In-process fault knobs the admin API turns: slow queries, a memory leak, random errors."""
from __future__ import annotations

import logging
import random
import threading

from stack.api.schemas import Faults
from stack.errors import InjectedFault

log = logging.getLogger(__name__)

_MB = 1024 * 1024
_PAGE = 4096

# What the leak fault allocates; nothing ever removes from it, on purpose.
LEAKED: list[bytearray] = []


class FaultState:
    """The current knobs; swapped whole, so readers never see a half-applied PUT."""

    def __init__(self, rng: random.Random | None = None):
        self._faults = Faults()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    @property
    def current(self) -> Faults:
        return self._faults

    def replace(self, faults: Faults) -> Faults:
        self._faults = faults
        log.warning("faults set: %s", faults.model_dump())
        return faults

    def on_predict(self) -> None:
        """Apply the per-request faults: leak memory, then maybe raise InjectedFault."""
        faults = self._faults
        if faults.leak_mb_per_request:
            leak(faults.leak_mb_per_request)
        if faults.error_rate:
            with self._lock:
                roll = self._rng.random()
            if roll < faults.error_rate:
                raise InjectedFault(f"injected fault (error_rate={faults.error_rate})")


def leak(mb: int) -> None:
    """Keep `mb` MB alive forever, touching every page so it counts in the RSS."""
    buf = bytearray(mb * _MB)
    buf[::_PAGE] = b"\x01" * len(range(0, len(buf), _PAGE))
    LEAKED.append(buf)


def leaked_mb() -> int:
    return sum(len(b) for b in LEAKED) // _MB
