"""What one app instance holds at run time, shared by its routes and middleware."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from stack.api.cache import CustomerCache
from stack.api.knobs import FaultState
from stack.api.metrics import ApiMetrics
from stack.api.sentry import Reporter
from stack.api.settings import ApiSettings
from stack.errors import SlotError

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from stack.model.registry import LoadedModel


SLOTS = ("blue", "green")


@dataclass
class ApiState:
    """Settings, metrics, the model slots, the pool and the cache of one app.

    Blue/green: two slots hold loaded models; `model` is the active slot's model and the one
    pointer /predict reads (once per request, so a request finishes on the model it started
    with). Staging fills the idle slot; activating or rolling back flips the pointer.
    """

    settings: ApiSettings
    metrics: ApiMetrics
    faults: FaultState
    reporter: Reporter
    cache: CustomerCache
    model: "LoadedModel | None" = None
    model_error: str | None = "not loaded yet"
    pool: "ConnectionPool | None" = None
    reload_lock: threading.Lock = field(default_factory=threading.Lock)
    slots: dict[str, "LoadedModel | None"] = field(
        default_factory=lambda: dict.fromkeys(SLOTS))
    active_slot: str = SLOTS[0]
    previous_slot: str | None = None  # where rollback flips to
    staged_at: dict[str, float] = field(default_factory=dict)
    # held for the instant of a swap; loading (seconds) is serialised by reload_lock instead
    swap_lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def model_version(self) -> str | None:
        model = self.model
        return model.version if model is not None else None

    @property
    def idle_slot(self) -> str:
        return SLOTS[1] if self.active_slot == SLOTS[0] else SLOTS[0]

    def activate(self, model: "LoadedModel") -> None:
        """Load a verified model and serve it at once (startup, /admin/model/reload): into the
        active slot if it is empty, else staged in the idle slot and flipped to."""
        with self.swap_lock:
            if self.slots[self.active_slot] is None:
                self.slots[self.active_slot] = model
                self.staged_at[self.active_slot] = time.time()
                self._point_at(self.active_slot, previous=None)
                return
            self._stage(model)
            self._point_at(self.idle_slot, previous=self.active_slot)

    def stage(self, model: "LoadedModel") -> str:
        """Put a verified model in the idle slot without serving it; returns the slot."""
        with self.swap_lock:
            return self._stage(model)

    def flip_to(self, version: str) -> bool:
        """Serve the idle slot's model, which must be `version`; False if it already serves."""
        with self.swap_lock:
            if self.model_version == version:
                return False
            staged = self.slots[self.idle_slot]
            if staged is None or staged.version != version:
                held = staged.version if staged else "nothing"
                raise SlotError(f"version {version} is not staged (the idle slot "
                                f"{self.idle_slot} holds {held}): POST /admin/model/stage first")
            self._point_at(self.idle_slot, previous=self.active_slot)
            return True

    def rollback(self) -> str:
        """Serve the previous slot's model again; returns its version."""
        with self.swap_lock:
            prev = self.previous_slot
            if prev is None or self.slots[prev] is None:
                raise SlotError("nothing to roll back to: this replica has served one model "
                                "since it started (or the previous slot was staged over)")
            self._point_at(prev, previous=self.active_slot)
            return self.slots[prev].version

    def describe(self) -> dict:
        """Both slots, for GET /admin/model."""
        out = {}
        for name in SLOTS:
            m = self.slots[name]
            state = ("active" if name == self.active_slot else
                     "previous" if name == self.previous_slot else "idle")
            out[name] = {"state": state, "version": m.version if m else None,
                         "sha256": m.sha256 if m else None,
                         "loaded_at": self.staged_at.get(name)}
        return {"active_slot": self.active_slot, "active_version": self.model_version,
                "previous_slot": self.previous_slot, "slots": out}

    # -- called with swap_lock held -------------------------------------------------------
    def _stage(self, model: "LoadedModel") -> str:
        idle = self.idle_slot
        self.slots[idle] = model
        self.staged_at[idle] = time.time()
        if self.previous_slot == idle:
            self.previous_slot = None  # what we could have rolled back to is gone
        return idle

    def _point_at(self, slot: str, previous: str | None) -> None:
        model = self.slots[slot]
        assert model is not None
        self.active_slot, self.previous_slot = slot, previous
        self.model = model  # the switch: one assignment, requests see old or new
        self.model_error = None
        self.metrics.set_model(model.version, model.sha256)  # model_info: only the active one


def get_state(request: Request) -> ApiState:
    return request.app.state.api
