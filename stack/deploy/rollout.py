"""Deploy a model to every replica of a lab (all or none), roll it back, restart without downtime.

    report = deploy(lab, "v2")      # smoke tests here, then stage, activate, verify everywhere
    report = rollback(lab)          # the same all or none: stage where needed, then flip all
    report = rolling_restart(lab)   # one replica at a time: drain, wait, restart, put back

Each returns a DeployReport (`ok`, a one-line `message`, timed `steps`) rather than raising, so a
notebook or `stackctl` can print what was done and what was left as it was. They work on a lab
attached from its state file (`Lab.attach()`), so `stackctl deploy v2` works from a shell.

What serves after a deploy or rollback is recorded in the model manifest (the deployed pointer,
stack.model.registry.set_deployed); a replica that restarts loads that version.

A deploy or rollback never reloads nginx: it flips a pointer inside each replica. A rolling
restart reloads nginx once per replica plus once. Before it stops a drained replica it waits
until nginx's old workers have exited (they proxy what they had already read by the old
upstream list) and the replica has nothing in flight. nginx (before 1.27.4's
`keepalive_min_timeout`) closes idle keep-alive client connections when old workers quit: a
client that sends on such a connection at that instant gets a reset, and must retry (safe with
an Idempotency-Key). See https://github.com/nginx/nginx/pull/456.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from stack.errors import DeployError, StackError
from stack.model.registry import deployed_record, set_deployed
from stack.deploy.gate import SmokeReport, smoke_test

if TYPE_CHECKING:
    from stack.components.apiserver import ApiReplica
    from stack.lab.lab import Lab

log = logging.getLogger(__name__)

LOCK_FILE = "deploy.lock"
VERIFY_DEADLINE_S = 10.0
DRAIN_DEADLINE_S = 30.0
ADMIN_TIMEOUT_S = 30.0  # staging loads a model file: seconds on a busy machine


@dataclass
class Step:
    """One timed step on one target (a replica, nginx, or "local" for the smoke tests)."""

    step: str
    target: str
    ok: bool
    detail: str
    seconds: float
    at: float = 0.0  # wall-clock start (time.time()), to line steps up with traffic records


@dataclass
class DeployReport:
    """What a deploy, rollback or rolling restart did, step by step."""

    action: str
    version: str | None = None
    ok: bool = False
    message: str = ""
    before: dict[str, str | None] = field(default_factory=dict)
    after: dict[str, str | None] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    smoke: SmokeReport | None = None
    pids: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        head = f"{self.action} {self.version or ''}".strip()
        lines = [f"{head}: {'OK' if self.ok else 'FAILED'} in {self.seconds:.1f} s: "
                 f"{self.message}"]
        lines += [f"  [{'ok' if s.ok else 'FAIL'}] {s.step:<9} {s.target:<6} {s.seconds:6.2f} s"
                  f"  {s.detail}" for s in self.steps]
        if self.smoke is not None:
            lines.append(self.smoke.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "version": self.version, "ok": self.ok,
                "message": self.message, "before": self.before, "after": self.after,
                "seconds": round(self.seconds, 3), "pids": self.pids,
                "steps": [vars(s) for s in self.steps],
                "smoke": None if self.smoke is None else {
                    "passed": self.smoke.passed, "checks": [list(c) for c in self.smoke.checks]}}


class _Run:
    """Records steps into a report, timing each from a clock."""

    def __init__(self, report: DeployReport, clock: Callable[[], float]):
        self.report, self.clock = report, clock
        self.t0 = clock()

    @contextmanager
    def step(self, name: str, target: str) -> Iterator[list]:
        """`with run.step("stage", "api1") as out: ...; out[:] = [ok, detail]`."""
        t, at = self.clock(), time.time()
        out: list = [False, "did not finish"]
        try:
            yield out
        except (StackError, httpx.HTTPError, OSError) as exc:
            out[:] = [False, f"{type(exc).__name__}: {exc}"]
            raise
        finally:
            self.report.steps.append(Step(name, target, bool(out[0]), str(out[1]),
                                          round(self.clock() - t, 3), at))
            # INFO either way: the report carries every step, and its caller prints it
            log.info("%s %s %s: %s%s", self.report.action, name, target,
                     "" if out[0] else "FAILED: ", out[1])

    def finish(self, ok: bool, message: str) -> DeployReport:
        self.report.ok, self.report.message = ok, message
        self.report.seconds = round(self.clock() - self.t0, 3)
        log.info("%s: %s: %s", self.report.action, "OK" if ok else "FAILED", message)
        return self.report


# -- the replicas' admin API -----------------------------------------------------------------
def _admin(api: "ApiReplica", method: str, path: str, **kw: Any) -> tuple[bool, Any]:
    """(ok, body or reason) of an admin call; never raises for HTTP trouble."""
    try:
        resp = api.admin(method, path, timeout=ADMIN_TIMEOUT_S, **kw)
    except httpx.HTTPError as exc:
        return False, f"{api.name}'s admin port {api.admin_url} did not answer: {exc}"
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text[:200]}
    if resp.status_code != 200:
        return False, f"{resp.status_code} {body.get('error', '')}: {body.get('detail', body)}"
    return True, body


def _slots(api: "ApiReplica") -> dict[str, Any]:
    ok, body = _admin(api, "GET", "/admin/model")
    if not ok:
        raise DeployError(f"cannot read {api.name}'s model slots: {body}")
    return body


def _serving(api: "ApiReplica") -> str | None:
    return _slots(api)["active_version"]


def _wait_serving(api: "ApiReplica", version: str, deadline_s: float) -> tuple[bool, str]:
    """Poll the replica's public /readyz until it is ready and reports `version`."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    while True:
        try:
            resp = httpx.get(api.url + "/readyz", timeout=2.0)
            body = resp.json()
            if resp.status_code == 200 and body.get("model_version") == version:
                return True, f"/readyz: ready, model_version {version}"
            last = (f"/readyz {resp.status_code}: model_version {body.get('model_version')}"
                    f"{'; ' + '; '.join(body['reasons']) if body.get('reasons') else ''}")
        except (httpx.HTTPError, ValueError) as exc:
            last = f"/readyz did not answer: {exc}"
        if time.monotonic() > end:
            return False, f"{last} (after {deadline_s:g} s)"
        time.sleep(0.1)


def _in_flight(api: "ApiReplica") -> int:
    """Requests the replica is serving, from its /metrics, not counting that request itself."""
    resp = httpx.get(api.admin_url + "/metrics", timeout=2.0)
    for line in resp.text.splitlines():
        if line.startswith("http_requests_in_flight "):
            return max(int(float(line.split()[1])) - 1, 0)
    raise StackError(f"{api.name}'s /metrics has no http_requests_in_flight")


@contextmanager
def _exclusive(lab: "Lab", action: str) -> Iterator[None]:
    """One deploy, rollback or rolling restart at a time per lab, across processes."""
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    path = lab.run_dir / LOCK_FILE
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise DeployError(f"another deploy, rollback or rolling restart is running on "
                              f"{lab.run_dir} ({fh.read().strip() or 'unknown'}): wait for it "
                              "to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{action} by pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


def _model_dir(lab: "Lab") -> Path:
    if not lab.apis:
        raise DeployError(f"the lab in {lab.run_dir} has no API replicas")
    return Path(lab.apis[0].settings["model_dir"])


def _common(versions: dict[str, str | None]) -> str | None:
    """The version most replicas serve (they all should)."""
    counts = Counter(v for v in versions.values() if v is not None)
    return counts.most_common(1)[0][0] if counts else None


# -- deploy ------------------------------------------------------------------------------------
def deploy(lab: "Lab", version: str, *, smoke_kw: dict[str, Any] | None = None,
           verify_deadline_s: float = VERIFY_DEADLINE_S,
           clock: Callable[[], float] = time.monotonic) -> DeployReport:
    """Serve `version` on every replica, or on none of them.

    1. smoke tests, in this process: a candidate that fails is never staged anywhere;
    2. stage it in every replica's idle slot; if one refuses, stop (nothing was activated);
    3. activate it on every replica; if one fails, roll the others back;
    4. verify each replica's /readyz reports it; if not, roll every replica back;
    5. record it as the deployed version, which replicas load when they restart.
    """
    report = DeployReport("deploy", version)
    run = _Run(report, clock)
    with _exclusive(lab, f"deploy {version}"):
        model_dir = _model_dir(lab)
        apis = lab.apis
        # 0. where we start from
        with run.step("inspect", "all") as out:
            try:
                report.before = {api.name: _serving(api) for api in apis}
            except DeployError as exc:
                out[:] = [False, str(exc)]
                return run.finish(False, f"{exc}; nothing was changed")
            out[:] = [True, ", ".join(f"{n} serves {v}" for n, v in report.before.items())]
        active = _common(report.before)
        if all(v == version for v in report.before.values()):
            set_deployed(model_dir, version, deployed_record(model_dir).get("previous"))
            report.after = dict(report.before)
            return run.finish(True, f"{version} already serves on every replica; nothing to do")

        # 1. smoke tests here: a model that fails them never reaches a replica
        with run.step("smoke", "local") as out:
            report.smoke = smoke_test(model_dir, version, active, **(smoke_kw or {}))
            out[:] = [report.smoke.passed, "passed" if report.smoke.passed
                      else "; ".join(report.smoke.reasons)]
        if not report.smoke.passed:
            report.after = dict(report.before)
            return run.finish(False, f"{version} rejected by smoke tests: "
                              f"{'; '.join(report.smoke.reasons)}; it was not staged on any "
                              f"replica, which still serve {_serving_text(report.before)}")

        # 2. stage everywhere (loads and verifies the file in each replica, serves nothing)
        for api in apis:
            with run.step("stage", api.name) as out:
                ok, body = _admin(api, "POST", "/admin/model/stage", json={"version": version})
                out[:] = [ok, f"slot {body['slot']}, {body['seconds']:.2f} s" if ok else body]
            if not ok:
                report.after = dict(report.before)
                return run.finish(False, f"staging {version} failed on {api.name} ({body}); "
                                  "nothing was activated, the replicas still serve "
                                  f"{_serving_text(report.before)}")

        # 3. activate everywhere: one pointer swap per replica; all or none
        flipped: list[ApiReplica] = []
        for api in apis:
            with run.step("activate", api.name) as out:
                ok, body = _admin(api, "POST", "/admin/model/activate",
                                  json={"version": version})
                out[:] = [ok, f"{body['previous']} -> {body['version']}" if ok else body]
            if not ok:
                undone = _undo(run, flipped)
                report.after = _versions(apis)
                return run.finish(False, f"activating {version} failed on {api.name} ({body}); "
                                  f"rolled back {undone or 'no replica'}")
            if body["changed"]:
                flipped.append(api)

        # 4. verify: each replica's /readyz reports the new version
        for api in apis:
            with run.step("verify", api.name) as out:
                ok, detail = _wait_serving(api, version, verify_deadline_s)
                out[:] = [ok, detail]
            if not ok:
                undone = _undo(run, flipped)
                report.after = _versions(apis)
                return run.finish(False, f"{api.name} does not report {version} ({detail}); "
                                  f"rolled back {undone or 'no replica'}")

        # 5. record it: a replica that restarts loads the deployed version
        set_deployed(model_dir, version, previous=active)
        report.after = {api.name: version for api in apis}
        return run.finish(True, f"{version} serves on every replica ({len(apis)}), "
                          f"previously {_serving_text(report.before)}")


def _undo(run: _Run, flipped: list["ApiReplica"], step: str = "rollback") -> str:
    """Flip these replicas back to their previous slot; returns what was done."""
    done = []
    for api in flipped:
        with run.step(step, api.name) as out:
            ok, body = _admin(api, "POST", "/admin/model/rollback")
            out[:] = [ok, f"{body['previous']} -> {body['version']}" if ok else body]
        done.append(f"{api.name}" if ok else f"{api.name} (FAILED: {body})")
    return ", ".join(done)


def _versions(apis: list["ApiReplica"]) -> dict[str, str | None]:
    out = {}
    for api in apis:
        try:
            out[api.name] = _serving(api)
        except DeployError:
            out[api.name] = None
    return out


def _serving_text(versions: dict[str, str | None]) -> str:
    distinct = set(versions.values())
    if len(distinct) == 1:
        return str(distinct.pop())
    return ", ".join(f"{n}: {v}" for n, v in versions.items())


# -- rollback ----------------------------------------------------------------------------------
def rollback(lab: "Lab", *, verify_deadline_s: float = VERIFY_DEADLINE_S,
             clock: Callable[[], float] = time.monotonic) -> DeployReport:
    """Serve the previous version on every replica again, or on none of them, like a deploy.

    The target is the `previous` of the deployed record, else what the replicas' previous slots
    hold.

    1. stage: a replica that no longer holds the target in a slot (it restarted since the
       deploy) loads it into its idle slot; if one refuses, stop: nothing was flipped;
    2. flip every replica to the target, back to back (one pointer swap each: the previous
       slot, or the slot just staged); if one fails, flip the others back (all or none);
    3. verify each replica's /readyz reports the target; if not, flip every replica back;
    4. record the target as the deployed version.
    """
    report = DeployReport("rollback")
    run = _Run(report, clock)
    with _exclusive(lab, "rollback"):
        model_dir = _model_dir(lab)
        apis = lab.apis
        with run.step("inspect", "all") as out:
            try:
                slots = {api.name: _slots(api) for api in apis}
            except DeployError as exc:
                out[:] = [False, str(exc)]
                return run.finish(False, f"{exc}; nothing was changed")
            report.before = {n: s["active_version"] for n, s in slots.items()}
            out[:] = [True, ", ".join(f"{n} serves {v}" for n, v in report.before.items())]
        current = _common(report.before)
        target = deployed_record(model_dir).get("previous")
        if not target:
            held = {s["slots"][s["previous_slot"]]["version"] for s in slots.values()
                    if s["previous_slot"]}
            target = held.pop() if len(held) == 1 else None
        report.version = target
        if not target:
            report.after = dict(report.before)
            return run.finish(False, "nothing to roll back to: no deploy has been recorded "
                              "and the replicas hold no common previous model")
        todo = [api for api in apis if slots[api.name]["active_version"] != target]
        if not todo:
            # a restart must load what serves: record it, and what the record held before
            recorded = deployed_record(model_dir).get("version")
            set_deployed(model_dir, target, previous=recorded if recorded != target else None)
            report.after = dict(report.before)
            return run.finish(True, f"{target} already serves on every replica; nothing to do")

        # 1. stage where the previous model is no longer loaded; nothing serves it yet
        for api in todo:
            s = slots[api.name]
            prev = s["previous_slot"]
            if prev and s["slots"][prev]["version"] == target:
                continue  # still loaded in its previous slot: the flip is all it needs
            with run.step("stage", api.name) as out:
                ok, body = _admin(api, "POST", "/admin/model/stage", json={"version": target})
                out[:] = [ok, f"slot {body['slot']}, {body['seconds']:.2f} s" if ok else body]
            if not ok:
                report.after = _versions(apis)
                return run.finish(False, f"staging {target} failed on {api.name} ({body}); "
                                  "nothing was flipped, the replicas still serve "
                                  f"{_serving_text(report.after)}")

        # 2. flip every replica, back to back: the rollback's one instant
        flipped: list[ApiReplica] = []
        for api in todo:
            s = slots[api.name]
            prev = s["previous_slot"]
            with run.step("flip", api.name) as out:
                if prev and s["slots"][prev]["version"] == target:
                    ok, body = _admin(api, "POST", "/admin/model/rollback")
                else:
                    ok, body = _admin(api, "POST", "/admin/model/activate",
                                      json={"version": target})
                out[:] = [ok, f"{body['previous']} -> {body['version']}" if ok else body]
            if not ok:
                undone = _undo(run, flipped, step="undo")
                report.after = _versions(apis)
                return run.finish(False, f"flipping {api.name} to {target} failed ({body}); "
                                  f"flipped back {undone or 'no replica'}: the replicas "
                                  f"serve {_serving_text(report.after)}")
            flipped.append(api)

        # 3. verify: each replica's /readyz reports the target
        for api in apis:
            with run.step("verify", api.name) as out:
                ok, detail = _wait_serving(api, target, verify_deadline_s)
                out[:] = [ok, detail]
            if not ok:
                undone = _undo(run, flipped, step="undo")
                report.after = _versions(apis)
                return run.finish(False, f"{api.name} does not report {target} ({detail}); "
                                  f"flipped back {undone or 'no replica'}")

        # 4. record it: a replica that restarts loads the target
        set_deployed(model_dir, target, previous=current)
        report.after = {api.name: target for api in apis}
        return run.finish(True, f"{target} serves on every replica again "
                          f"(was {_serving_text(report.before)})")


# -- rolling restart ---------------------------------------------------------------------------
def rolling_restart(lab: "Lab", *, drain_deadline_s: float = DRAIN_DEADLINE_S,
                    verify_deadline_s: float = VERIFY_DEADLINE_S,
                    clock: Callable[[], float] = time.monotonic) -> DeployReport:
    """Restart every replica, one at a time, without failing a request.

    Needs nginx in front and at least two replicas: while one restarts the others serve. A
    replica that does not come back is left drained (out of nginx's upstream) and the restart
    stops there, so the rest keep serving.
    """
    report = DeployReport("rolling_restart")
    run = _Run(report, clock)
    apis = lab.apis
    nginx = lab.components.get("nginx")
    if nginx is None or len(apis) < 2:
        return run.finish(False, f"a restart without downtime needs nginx and two or more "
                          f"replicas; topology {lab.topology.name} has "
                          f"{'nginx' if nginx else 'no nginx'} and {len(apis)} replica(s): "
                          "restart it with `stackctl restart api` and accept the downtime")
    with _exclusive(lab, "rolling restart"):
        try:
            report.before = {api.name: _serving(api) for api in apis}
        except DeployError as exc:
            return run.finish(False, f"{exc}; nothing was restarted")
        for api in apis:
            old_pid = api.proc.pid if api.proc else None
            version = report.before[api.name]

            # 1. drain: mark it `down` in nginx's upstream and reload nginx. Old nginx workers
            #    finish the requests they have; new requests go to the other replicas. `down`
            #    is the whole set, so this same reload puts the previous replica back: one
            #    reload per replica plus one at the end (each reload closes idle client
            #    connections, which a client can race; see the module docstring).
            with run.step("drain", api.name) as out:
                took = nginx.set_backends_down({api.name})
                out[:] = [True, f"nginx reloaded in {took:.2f} s; new requests go elsewhere"]

            # 2. wait until the old nginx workers are gone (one that had read a request
            #    before the reload still proxies it by the old upstream list, possibly to
            #    this replica), then until the replica's own requests are finished. Past the
            #    deadline uvicorn's graceful shutdown still drains what it has.
            with run.step("wait_idle", api.name) as out:
                gone, waited = nginx.wait_retired(drain_deadline_s)
                _, detail = _wait_idle(api, drain_deadline_s)
                out[:] = [True, (f"old nginx workers gone after {waited:.2f} s" if gone else
                                 f"old nginx workers still finishing after {waited:.2f} s")
                          + f"; {detail}"]

            # 3. restart: SIGTERM makes uvicorn stop accepting, finish what is in flight
            #    (timeout_graceful_shutdown) and run the app's shutdown; then a new process
            #    starts, loads the deployed model and turns ready (/readyz 200).
            with run.step("restart", api.name) as out:
                try:
                    took = lab.restart(api.name)
                except StackError as exc:
                    out[:] = [False, str(exc)]
                    report.after = _versions(apis)
                    return run.finish(False, f"{api.name} did not come back: it is left "
                                      "drained, the others serve; fix it and run the rolling "
                                      f"restart again. {exc}")
                new_pid = api.proc.pid if api.proc else None
                report.pids[api.name] = (old_pid, new_pid)
                out[:] = [True, f"pid {old_pid} -> {new_pid}, ready in {took:.2f} s"]

            # 4. check it serves what it served before (the deployed version)
            if version is not None:
                with run.step("verify", api.name) as out:
                    ok, detail = _wait_serving(api, version, verify_deadline_s)
                    out[:] = [ok, detail]
                if not ok:
                    report.after = _versions(apis)
                    return run.finish(False, f"{api.name} restarted but does not serve "
                                      f"{version} ({detail}); it is left drained")

        # 5. put the last one back: no replica down.
        with run.step("undrain", apis[-1].name) as out:
            took = nginx.set_backends_down(set())
            out[:] = [True, f"every replica is in nginx's upstream again ({took:.2f} s)"]
        report.after = _versions(apis)
        return run.finish(True, f"restarted {len(apis)} replicas one at a time: "
                          + ", ".join(f"{n} pid {o} -> {p}" for n, (o, p) in report.pids.items()))


def _wait_idle(api: "ApiReplica", deadline_s: float,
               interval_s: float = 0.05) -> tuple[bool, str]:
    """Poll the replica's http_requests_in_flight until it is 0, under one deadline."""
    t0 = time.monotonic()
    seen = None
    while True:
        try:
            seen = _in_flight(api)
            if seen == 0:
                return True, f"0 in flight after {time.monotonic() - t0:.2f} s"
        except (httpx.HTTPError, StackError) as exc:
            seen = f"unknown ({exc})"
        if time.monotonic() - t0 > deadline_s:
            return False, (f"still {seen} in flight after {deadline_s:g} s; uvicorn's graceful "
                           "shutdown gets them")
        time.sleep(interval_s)
