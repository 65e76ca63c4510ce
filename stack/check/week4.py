"""The exercise checks of week 4: deploys that stop breaking prod."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from stack.check.core import (
    CLIENT_TIMEOUT_S, ExerciseFailed, task, load_module, get_function, call_with_deadline,
    expect_raised)

SMOKE_BAD = ("tampered", "constant", "nan_scores", "shuffled_labels")
SMOKE_DEADLINE_S = 60.0
_smoke_cache: dict[str, Path] = {}


def _smoke_models() -> Path:
    """A model registry with the active model v1, a good candidate v2 (retrained with
    another seed) and the course's bad models; built once per process, copied per check."""
    import atexit

    from stack.lab.lab import ensure_model
    from stack.model.train import train
    from stack.deploy.gate import make_bad_model

    if "dir" not in _smoke_cache:
        root = Path(tempfile.mkdtemp(prefix="exercise-models-"))
        atexit.register(shutil.rmtree, root, True)
        models = root / "models"
        shutil.copytree(ensure_model(), models)
        for kind in SMOKE_BAD:  # made from v1, the newest model so far
            make_bad_model(models, kind)
        train(models, version="v2", seed=8)
        _smoke_cache["dir"] = models
    return _smoke_cache["dir"]


@task("week4", "smoke", ("smoke.py",))
def check_smoke(folder: Path) -> str:
    from stack.deploy.gate import BAD_MODELS

    path = folder / "smoke.py"
    func = get_function(load_module(path), "smoke_test", path)
    source = _smoke_models()
    with tempfile.TemporaryDirectory(prefix="exercise-smoke-") as tmp:
        models = Path(tmp) / "models"
        shutil.copytree(source, models)
        verdicts: dict[str, bool] = {}
        for version in ["v2", *(f"bad-{k.replace('_', '-')}" for k in SMOKE_BAD)]:
            done, out, took = call_with_deadline(func, models, version, "v1", deadline_s=SMOKE_DEADLINE_S)
            if not done:
                raise ExerciseFailed(f"smoke_test({version!r}) ran over {SMOKE_DEADLINE_S:g} s",
                                     "a smoke test gates every deploy: keep it to seconds")
            expect_raised(out, f"smoke_test({version!r})")
            if not hasattr(out, "passed") or not hasattr(out, "checks"):
                raise ExerciseFailed(f"smoke_test({version!r}) returned {type(out).__name__}, "
                                     "without .passed and .checks",
                                     "return the starter's SmokeReport")
            verdicts[version] = bool(out.passed)
    if not verdicts["v2"]:
        raise ExerciseFailed("the good candidate v2 (retrained with another seed, its ROC AUC "
                             "0.01-0.02 below v1's) was rejected",
                             "compare quality with a margin: a retrained model is never "
                             "exactly as good as the active one")
    let_through = [v for v, ok in verdicts.items() if ok and v != "v2"]
    if let_through:
        kinds = [v[4:].replace("-", "_") for v in let_through]
        what = "; ".join(f"{v}: {BAD_MODELS[k][0]}" for v, k in zip(let_through, kinds))
        raise ExerciseFailed(f"{len(let_through)} of {len(SMOKE_BAD)} bad models passed ({what})",
                             _SMOKE_HINTS[kinds[0]])
    return (f"v2 accepted; all {len(SMOKE_BAD)} bad models rejected "
            f"({', '.join(SMOKE_BAD)})")


_SMOKE_HINTS = {
    "tampered": "check the file's sha256 against the manifest before unpickling it "
                "(stack.model.registry.load_verified does) and report the failure",
    "constant": "score the held-out set (stack.deploy.gate.holdout_set()) and reject scores that "
                "are all the same",
    "nan_scores": "score the whole held-out set and reject any score that is not finite",
    "shuffled_labels": "compare ROC AUC on the held-out set with the active model's and "
                       "reject a drop of more than 0.02",
}

ROLLOUT_DEADLINE_S = 40.0


@task("week4", "rollout", ("rollout.py",))
def check_rollout(folder: Path) -> str:
    from stack.analysis.records import load_records
    from stack.lab.lab import Lab
    from stack.lab.traffic import Traffic

    path = folder / "rollout.py"
    func = get_function(load_module(path), "restart_replicas", path)
    with Lab("after") as lab:
        before = {api.name: api.proc.pid for api in lab.apis}
        with Traffic(lab.public_url, lab.run_dir, rate=30, duration=ROLLOUT_DEADLINE_S,
                     name="exercise-rollout", progress=False, idempotency_keys=True,
                     timeout=CLIENT_TIMEOUT_S,
                     n_customers=lab.topology.postgres.n_customers) as traffic:
            while traffic.elapsed < 1.0:
                time.sleep(0.02)
            done, out, took = call_with_deadline(func, lab, deadline_s=ROLLOUT_DEADLINE_S - 4)
            t_end = traffic.elapsed + 1.5
            while traffic.elapsed < t_end:
                time.sleep(0.02)
            result = traffic.stop()
        after = {api.name: api.proc.pid if api.proc else None for api in lab.apis}
        ready = {api.name: api.ready() for api in lab.apis}
        df = load_records(result.path)
    if not done:
        raise ExerciseFailed(f"restart_replicas() did not return within "
                             f"{ROLLOUT_DEADLINE_S - 4:g} s",
                             "wait for each replica with a deadline (lab.restart waits until "
                             "it is ready)")
    expect_raised(out, "restart_replicas()")
    same = [n for n in before if before[n] == after[n]]
    if same:
        raise ExerciseFailed(f"{', '.join(same)} still run(s) the old process (pid unchanged)",
                             "restart every replica in lab.apis")
    not_ready = [n for n, ok in ready.items() if not ok]
    if not_ready:
        raise ExerciseFailed(f"{', '.join(not_ready)} not ready after the restart",
                             "wait until each replica is ready before you move on")
    load = df[df["kind"] == "load"]
    bad = load[(load["error"] != "") | ~load["status"].between(200, 299)]
    if len(bad):
        how = bad["status"].astype(str).where(bad["status"] > 0, bad["error"]).value_counts()
        raise ExerciseFailed(f"{len(bad)} failed of {len(load)} requests during the restart "
                             f"({', '.join(f'{n} {k}' for k, n in how.items())})",
                             "restart one replica at a time, and only once the other serves: "
                             "take it out of nginx (set_backends_down), restart, wait until "
                             "ready, put it back")
    return (f"both replicas restarted in {took:.1f} s; 0 failed of {len(load)} requests")

