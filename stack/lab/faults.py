"""Faults that reproduce the boring, repeatable causes of ML API outages.

Each fault is applied to one component of a running lab and can be undone. They act on the
real thing: signals to the real process, real slow queries in Postgres, real connections
taken from Postgres, a real broken file over the live model.
"""
from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import httpx
import psycopg

from stack.errors import ConfigError, StackError, UnknownName
from stack.components import patroni
from stack.components.supervisor import LIVENESS_TICK_S, LIVENESS_TIMEOUT_S
from stack.components.postgres import BATCH_ROLE

if TYPE_CHECKING:
    from stack.lab.lab import Lab

log = logging.getLogger(__name__)

# The shortest windows that can show the lab healing by itself (stack.analysis.week's rule:
# healed in the window's first half, then clean traffic); a scenario runner lengthens shorter
# ones. A supervised crash: back within the supervisor's 1 s loop.
CRASH_HEAL_WINDOW_S = 3.0
# A crashed Patroni node's Postgres: its agent sees it down on its next loop and starts it
# (measured: writes back 2.2-3.2 s after the kill with a 2 s loop); twice that.
PATRONI_CRASH_HEAL_WINDOW_S = 2 * (patroni.LOOP_WAIT_S + 1.5)
# A lost or hung Patroni primary: its leader key lives out its TTL, the standby sees it gone on
# its next loop and promotes (operations retried up to retry_timeout on the way); twice that,
# and two seconds of clean traffic.
FAILOVER_HEAL_WINDOW_S = 2 * (patroni.TTL_S + 2 * patroni.LOOP_WAIT_S
                              + patroni.RETRY_TIMEOUT_S) + 2.0


def liveness_heal_window_s(stop_timeout_s: float) -> float:
    """A hung process with a liveness check: the next tick, the check's timeout, the stop's
    wait before the kill, two seconds to start (measured: 1 s); twice that, and two seconds."""
    return 2 * (LIVENESS_TICK_S + LIVENESS_TIMEOUT_S + stop_timeout_s + 2.0) + 2.0


@dataclass
class Applied:
    """A fault in force: what undo needs to put things back."""

    fault: str
    target: str
    params: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    state: dict[str, Any] = field(default_factory=dict)


class Fault:
    """Base class: a name, what it does, apply and undo."""

    name = ""
    summary = ""
    targets = ("api",)  # component kinds it applies to
    params: dict[str, Any] = {}

    def check(self, lab: "Lab", target: str, params: dict[str, Any]) -> dict[str, Any]:
        comp = lab.component(target)
        if comp.kind not in self.targets:
            raise ConfigError(f"fault '{self.name}' applies to {', '.join(self.targets)} "
                              f"components, not {target} ({comp.kind})", field="target")
        return self.check_params(params)

    # what a parameter may be, beyond the type of its default: (low, high) or the choices
    limits: dict[str, tuple[float, float] | tuple[str, ...]] = {}

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters merged over the defaults; a ConfigError names the first bad one
        (field 'params.<name>'), so that a scenario is refused before anything starts."""
        for key in params:
            if key not in self.params:
                raise ConfigError(f"fault '{self.name}' has no parameter '{key}'; it takes: "
                                  f"{', '.join(self.params) or 'none'}", field=f"params.{key}")
        for key, value in params.items():
            default, limit = self.params[key], self.limits.get(key)
            if isinstance(default, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"not a number: {value!r}", field=f"params.{key}")
                low, high = limit if limit else (0, float("inf"))
                if not low <= value <= high:
                    raise ConfigError(f"{value!r} is outside {low:g}..{high:g}",
                                      field=f"params.{key}")
            elif limit and value not in limit:
                raise ConfigError(f"{value!r} is not one of: {', '.join(map(str, limit))}",
                                  field=f"params.{key}")
        return {**self.params, **params}

    def apply(self, lab: "Lab", target: str, params: dict[str, Any]) -> Applied:
        raise NotImplementedError

    def heal_window_s(self, lab: "Lab", target: str) -> float:
        """The shortest replay window in which this lab can show that it heals this fault
        by itself (0: it does not, or at once): its healing in the first half, then clean
        traffic (stack.analysis.week's rule). A scenario runner lengthens shorter windows."""
        return 0.0

    def undo(self, lab: "Lab", applied: Applied) -> None:
        raise NotImplementedError


REGISTRY: dict[str, Fault] = {}


def register(cls: type[Fault]) -> type[Fault]:
    REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Fault:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownName("fault", name, list(REGISTRY)) from None


def names() -> list[str]:
    return sorted(REGISTRY)


def scenario_checks() -> dict[str, Any]:
    """What load_scenario checks every event against before a lab starts: the faults' names,
    the component kinds each applies to, and each one's parameters."""
    return {"known_faults": names(),
            "fault_targets": {n: f.targets for n, f in REGISTRY.items()},
            "fault_params": {n: f.check_params for n, f in REGISTRY.items()}}


def apply(lab: "Lab", name: str, target: str = "api1", **params: Any) -> Applied:
    """Apply a fault by name; returns what `undo` needs. The target may be an alias the lab
    resolves ('api', 'edge'); the result names the component itself."""
    fault = get(name)
    target = lab.resolve(target)
    merged = fault.check(lab, target, params)
    log.info("fault %s on %s %s", name, target, merged or "")
    applied = fault.apply(lab, target, merged)
    return applied


def undo(lab: "Lab", applied: Applied) -> None:
    log.info("undo %s on %s", applied.fault, applied.target)
    get(applied.fault).undo(lab, applied)


def _restart_if_down(lab: "Lab", target: str) -> None:
    """The on-call restart: start the component again unless it is already running. Under a
    supervisor nobody restarts it by hand: the supervisor has started it already, and this
    waits (bounded by its start deadline) until it is ready again."""
    comp = lab.component(target)
    if getattr(comp.proc, "supervised", False):
        comp.proc.wait_ready(comp.ready, comp.start_deadline_s)
        return
    if comp.proc is None or not comp.proc.alive() or not comp.ready():
        lab.restart(target)


def _admin_faults(lab: "Lab", target: str, **knobs: Any) -> dict[str, Any]:
    """Set the replica's in-process fault knobs through its admin port; returns the old ones."""
    api = lab.component(target)
    try:
        old = api.admin("GET", "/admin/faults", timeout=5).json()
        new = {k: v for k, v in {**old, **knobs}.items() if k != "leaked_mb"}
        resp = api.admin("PUT", "/admin/faults", json=new, timeout=5)
    except httpx.HTTPError as exc:
        raise StackError(f"{target}'s admin port did not answer: {exc}") from exc
    if resp.status_code != 200:
        raise StackError(f"{target} refused fault knobs {knobs}: {resp.text}")
    return old


def _wait_node(lab: "Lab", target: str, path: str = "/health") -> None:
    """Wait (bounded by the node's start deadline) until a Patroni node passes a REST check;
    if its agent is gone, start it again."""
    node = lab.component(target)
    if node.proc is None or not node.proc.alive():
        lab.restart(target, wait=False)
    node.proc.wait_ready(lambda: node.check(path), node.start_deadline_s)


@register
class Crash(Fault):
    name = "crash"
    summary = ("SIGKILL the process, as a segfault or the OOM killer would; undo restarts it "
               "(on a Patroni node, Postgres is killed and its agent restarts it in place)")
    targets = ("api", "postgres", "patroni", "redis", "nginx")

    def apply(self, lab, target, params):
        comp = lab.component(target)
        if comp.kind == "patroni":
            comp.crash_postgres()
            return Applied(self.name, target, params)
        comp.proc.record.send(signal.SIGKILL)
        comp.proc.record.wait_gone(5, comp.proc.popen)
        return Applied(self.name, target, params)

    def undo(self, lab, applied):
        if lab.component(applied.target).kind == "patroni":
            _wait_node(lab, applied.target)  # the agent restarts it; nobody else should
            return
        _restart_if_down(lab, applied.target)

    def heal_window_s(self, lab, target):
        comp = lab.component(target)
        if comp.kind == "patroni":
            return PATRONI_CRASH_HEAL_WINDOW_S
        if comp.supervisor is not None:
            return CRASH_HEAL_WINDOW_S
        return 0.0


@register
class NodeLoss(Fault):
    name = "node_loss"
    summary = ("a Postgres node's machine dies: its Patroni agent and its Postgres end at "
               "once; a primary's leader key expires after its TTL and the replica takes "
               "over; undo brings the node back and it rejoins as a replica (pg_rewind)")
    targets = ("patroni",)

    def apply(self, lab, target, params):
        lab.component(target).lose()
        return Applied(self.name, target, params)

    def undo(self, lab, applied):
        _wait_node(lab, applied.target)  # its agent is gone: started again, then waited for

    def heal_window_s(self, lab, target):
        return FAILOVER_HEAL_WINDOW_S


@register
class Hang(Fault):
    name = "hang"
    summary = ("SIGSTOP the process: it holds its connections but answers nothing; undo "
               "SIGCONT (on a Patroni node, its Postgres hangs and the agent watches)")
    targets = ("api", "postgres", "patroni", "redis", "nginx")

    def apply(self, lab, target, params):
        comp = lab.component(target)
        if comp.kind == "patroni":
            pm = comp.postmaster()
            if pm is None:
                raise StackError(f"{target}'s Postgres is not running: nothing to hang")
            pm.pause()
            return Applied(self.name, target, params, state={"postmaster": pm})
        comp.proc.pause()
        return Applied(self.name, target, params)

    def undo(self, lab, applied):
        if "postmaster" in applied.state:
            applied.state["postmaster"].resume()
            return
        lab.component(applied.target).proc.resume()

    def heal_window_s(self, lab, target):
        comp = lab.component(target)
        if comp.kind == "patroni":  # its agent stops renewing the leader key: a failover
            return FAILOVER_HEAL_WINDOW_S
        if comp.supervisor is not None and comp.liveness_url:  # restarted by its liveness check
            return liveness_heal_window_s(comp.stop_timeout_s)
        return 0.0


@register
class SlowDb(Fault):
    name = "slow_db"
    summary = "every feature lookup runs a real pg_sleep in Postgres (a slow query)"
    params = {"delay_ms": 800}

    def apply(self, lab, target, params):
        old = _admin_faults(lab, target, db_delay_ms=int(params["delay_ms"]))
        return Applied(self.name, target, params, state={"old": old})

    def undo(self, lab, applied):
        _admin_faults(lab, applied.target, db_delay_ms=applied.state["old"]["db_delay_ms"])


@register
class MemoryLeak(Fault):
    name = "memory_leak"
    summary = ("each /predict keeps some memory for good; the lab's memory limit kills the "
               "process when it is reached; undo stops the leak and restarts a killed process")
    params = {"mb_per_request": 2.0}

    def apply(self, lab, target, params):
        _admin_faults(lab, target, leak_mb_per_request=float(params["mb_per_request"]))
        return Applied(self.name, target, params)

    def undo(self, lab, applied):
        api = lab.component(applied.target)
        if api.proc.alive() and api.ready():
            # the leaked memory stays until the process restarts, as in production
            _admin_faults(lab, applied.target, leak_mb_per_request=0.0)
        lab.restart(applied.target)


@register
class ConnectionExhaustion(Fault):
    name = "connection_exhaustion"
    summary = ("a batch job takes Postgres' free connection slots while a traffic spike of "
               "slower queries needs more connections than the API's pool holds")
    targets = ("postgres", "patroni")
    params = {"spike_rate": 120.0, "query_ms": 100, "leave_free": 0}

    def apply(self, lab, target, params):
        from stack.lab.traffic import Traffic

        pg = lab.component(target)
        with pg.connect(dbname="postgres") as probe:
            max_conn = int(probe.execute("SHOW max_connections").fetchone()[0])
        conns: list[psycopg.Connection] = []
        while len(conns) < max_conn:  # until Postgres (or the role's limit) says no
            try:
                conns.append(pg.connect(user=BATCH_ROLE))
            except psycopg.OperationalError:
                break
        for _ in range(min(int(params["leave_free"]), len(conns))):
            conns.pop().close()
        old = {api.name: _admin_faults(lab, api.name, db_delay_ms=int(params["query_ms"]))
               for api in lab.apis if api.proc and api.proc.alive()}
        spike = Traffic(lab.public_url, lab.run_dir, rate=float(params["spike_rate"]),
                        duration=3600, name=f"spike-{int(time.time())}", progress=False,
                        timeout=2.0, probe_interval=60, n_customers=lab.topology.postgres.n_customers,
                        seed=99)
        spike.start()
        return Applied(self.name, target, params,
                       state={"conns": conns, "taken": len(conns), "old": old, "spike": spike})

    def undo(self, lab, applied):
        applied.state["spike"].stop()
        for name, old in applied.state["old"].items():
            try:
                _admin_faults(lab, name, db_delay_ms=old["db_delay_ms"])
            except (StackError, OSError) as exc:
                log.warning("could not reset %s: %s", name, exc)
        for conn in applied.state.pop("conns", []):
            try:
                conn.close()
            except psycopg.Error:
                pass


@register
class ErrorRate(Fault):
    name = "error_rate"
    summary = "a share of /predict calls fails with an internal error (a bug in one code path)"
    params = {"rate": 0.2}
    limits = {"rate": (0.0, 1.0)}

    def apply(self, lab, target, params):
        _admin_faults(lab, target, error_rate=float(params["rate"]))
        return Applied(self.name, target, params)

    def undo(self, lab, applied):
        _admin_faults(lab, applied.target, error_rate=0.0)


@register
class BadModel(Fault):
    name = "bad_model"
    summary = ("a broken model file is copied over the live one and the API restarted to "
               "pick it up (a hand-made deploy); undo puts the good file back and restarts")
    params = {"kind": "truncated"}
    limits = {"kind": ("truncated", "garbage")}

    def apply(self, lab, target, params):
        from stack.model import registry

        api = lab.component(target)
        model_dir = Path(api.settings["model_dir"])
        version = api.settings.get("model_version") or registry.latest_version(model_dir)
        live = model_dir / registry.read_manifest(model_dir)["models"][version]["file"]
        backup = live.with_suffix(".good")
        shutil.copy2(live, backup)
        data = live.read_bytes()
        if params["kind"] == "truncated":
            live.write_bytes(data[: len(data) // 3])
        elif params["kind"] == "garbage":
            live.write_bytes(b"not a model\n" * 64)
        else:
            raise ConfigError("kind is 'truncated' or 'garbage'", field="params.kind")
        state = {"live": str(live), "backup": str(backup)}
        try:
            lab.restart(target, wait=False)
            state["restart"] = "started"
        except StackError as exc:
            state["restart"] = str(exc)
        return Applied(self.name, target, params, state=state)

    def undo(self, lab, applied):
        shutil.copy2(applied.state["backup"], applied.state["live"])
        Path(applied.state["backup"]).unlink(missing_ok=True)
        lab.restart(applied.target)


@register
class Restart(Fault):
    name = "restart"
    summary = ("a plain restart (a deploy, a config change): the API is down for as long as "
               "it takes to start and load the model")

    def apply(self, lab, target, params):
        state: dict[str, Any] = {}

        def run() -> None:
            try:
                state["seconds"] = lab.restart(target)
            except StackError as exc:
                state["error"] = str(exc)

        thread = threading.Thread(target=run, name=f"restart-{target}", daemon=True)
        thread.start()
        state["thread"] = thread
        return Applied(self.name, target, params, state=state)

    def undo(self, lab, applied):
        applied.state["thread"].join(timeout=60)
        _restart_if_down(lab, applied.target)


def describe() -> list[tuple[str, str]]:
    """(name, summary) of every fault, for `stackctl fault --list` and the notebooks."""
    return [(n, REGISTRY[n].summary) for n in names()]


Callback = Callable[[str, Applied], None]
