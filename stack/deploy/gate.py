"""Smoke tests a candidate model must pass before any replica stages it, and the course's bad
models to show them failing.

    report = smoke_test(model_dir, "v2", "v1")
    report.passed, report.reasons   # ["quality: roc_auc 0.51 is 0.31 below ..."]

Checks, in order (the first three stop at the first failure, since nothing after can run):

1. integrity: the sha256 of each of its files (the pickle, and the exported trees if any)
   matches its manifest entry (a file with no entry, or another sha256, is never loaded:
   joblib.load runs code from the file);
2. features: the model expects the features this code builds;
3. load: `load_verified` loads it as a replica does (the trees file with numpy, else the pickle
   with joblib) and scores one neutral row;
4. predictions: finite probabilities in [0, 1], not all the same, on a fixed held-out set
   generated with a seed no training run uses;
5. quality: ROC AUC on that set at most `max_auc_drop` below the active model's;
6. latency: single-row predict p99 within `latency_budget_ms` (each row timed as the best of
   three calls, so a pause caused by other threads or processes is not blamed on the model).

Bad models (`make_bad_model(model_dir, kind)`) are generated, never committed: see BAD_MODELS.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from stack.errors import ModelRejected, UnknownName
from stack.model.features import FEATURE_NAMES
from stack.model.registry import (
    LoadedModel,
    deployed_version,
    get_entry,
    latest_version,
    load_verified,
    register_candidate,
    verify_entry,
)

log = logging.getLogger(__name__)

# The held-out set: its own seed (training uses 7, 8, ...; data.py draws transactions with
# seed + 1), so no model has seen these rows.
HOLDOUT_SEED = 4242
HOLDOUT_CUSTOMERS = 2000
HOLDOUT_TXNS = 8000
MAX_AUC_DROP = 0.02
MIN_AUC = 0.70  # the floor when there is no active model to compare with
LATENCY_BUDGET_MS = 50.0
LATENCY_SAMPLES = 200


class Check(NamedTuple):
    """One smoke check's outcome."""

    name: str
    ok: bool
    detail: str


@dataclass
class SmokeReport:
    """Whether a candidate may be staged, and why (not)."""

    version: str
    active_version: str | None
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        """'name: detail' of every failed check."""
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]

    def summary(self) -> str:
        head = (f"smoke tests of {self.version} (against {self.active_version or 'no active model'}): "
                f"{'PASSED' if self.passed else 'FAILED'} in {self.seconds:.1f} s")
        lines = [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        return "\n".join([head, *lines])


@lru_cache(maxsize=4)
def holdout_set(seed: int = HOLDOUT_SEED, n_customers: int = HOLDOUT_CUSTOMERS,
                n_txns: int = HOLDOUT_TXNS) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of the fixed held-out set; the same seed gives the same rows."""
    from stack.model.data import generate_customers, generate_transactions
    from stack.model.features import build_matrix

    customers = generate_customers(n_customers, seed=seed)
    txns, labels = generate_transactions(customers, n_txns, seed=seed)
    X = build_matrix(txns, {c["customer_id"]: c for c in customers})
    X.setflags(write=False)
    labels.setflags(write=False)
    return X, labels


def smoke_test(model_dir: str | os.PathLike[str], candidate_version: str,
               active_version: str | None = None, *, max_auc_drop: float = MAX_AUC_DROP,
               min_auc: float = MIN_AUC, latency_budget_ms: float = LATENCY_BUDGET_MS,
               latency_samples: int = LATENCY_SAMPLES,
               holdout: tuple[np.ndarray, np.ndarray] | None = None,
               clock: Callable[[], float] = time.perf_counter) -> SmokeReport:
    """Run the checks above on `candidate_version` in this process; see the module docstring."""
    t0 = clock()
    report = SmokeReport(candidate_version, active_version)
    checks = report.checks
    try:
        model = _gate(model_dir, candidate_version, checks)
        if model is None:
            return report
        X, y = holdout if holdout is not None else holdout_set()
        scores = _check_predictions(model, X, checks)
        if scores is not None:
            _check_quality(model_dir, model, active_version, X, y, scores, checks,
                           max_auc_drop=max_auc_drop, min_auc=min_auc)
        _check_latency(model, X, checks, budget_ms=latency_budget_ms, samples=latency_samples,
                       clock=clock)
        return report
    finally:
        report.seconds = clock() - t0
        log.info("%s", report.summary())  # the caller prints the report; no second copy


def _gate(model_dir: str | os.PathLike[str], version: str,
          checks: list[Check]) -> LoadedModel | None:
    """Integrity, features, load: each must pass before the next runs."""
    # 1. integrity, before anything is loaded
    try:
        entry = get_entry(model_dir, version)
        verify_entry(model_dir, entry)
    except ModelRejected as exc:
        checks.append(Check("integrity", False, str(exc)))
        return None
    checks.append(Check("integrity", True, f"sha256 {entry.sha256[:12]}... matches the manifest"))
    # 2. features, from the manifest (still nothing unpickled)
    if tuple(entry.feature_names) != FEATURE_NAMES:
        checks.append(Check("features", False, _feature_diff(entry.feature_names)))
        return None
    # 3. load the verified file as a replica does, and score one neutral row
    try:
        model = load_verified(model_dir, version)
    except ModelRejected as exc:
        checks.append(Check("load", False, str(exc)))
        return None
    fitted = getattr(model.estimator, "feature_names_in_", None)
    if fitted is not None and tuple(fitted) != FEATURE_NAMES:  # the manifest was wrong
        checks.append(Check("features", False, _feature_diff(tuple(fitted))))
        return None
    checks.append(Check("features", True, f"the {len(FEATURE_NAMES)} features this code builds"))
    checks.append(Check("load", True, f"loaded {(model.loaded_from or model.path).name}"))
    return model


def _feature_diff(expected: tuple[str, ...]) -> str:
    return (f"the model expects features {list(expected)}, the API builds "
            f"{list(FEATURE_NAMES)}: retrain it on the current features")


def _check_predictions(model: LoadedModel, X: np.ndarray,
                       checks: list[Check]) -> np.ndarray | None:
    """Scores on the held-out set, or None (and a failed check) if they are not usable."""
    try:
        scores = np.asarray(model.predict_score(X), dtype=np.float64)
    except Exception as exc:
        checks.append(Check("predictions", False, f"predict failed on the held-out set: {exc}"))
        return None
    n = len(X)
    if scores.shape != (n,):
        checks.append(Check("predictions", False, f"expected {n} scores, got shape "
                                                  f"{scores.shape}"))
        return None
    bad = ~np.isfinite(scores)
    if bad.any():
        checks.append(Check("predictions", False, f"{int(bad.sum())} of {n} scores on the "
                                                  "held-out set are not finite (NaN or inf)"))
        return None
    out = (scores < 0) | (scores > 1)
    if out.any():
        checks.append(Check("predictions", False, f"{int(out.sum())} of {n} scores are outside "
                                                  f"[0, 1] (min {scores.min():.3g}, max "
                                                  f"{scores.max():.3g})"))
        return None
    if np.ptp(scores) == 0:
        checks.append(Check("predictions", False, f"all {n} scores are {scores[0]:.4g}: the "
                                                  "model ignores its input"))
        return None
    checks.append(Check("predictions", True, f"{n} finite scores in [0, 1] "
                                             f"(mean {scores.mean():.3f})"))
    return scores


def _check_quality(model_dir: str | os.PathLike[str], model: LoadedModel,
                   active_version: str | None, X: np.ndarray, y: np.ndarray,
                   scores: np.ndarray, checks: list[Check], *, max_auc_drop: float,
                   min_auc: float) -> None:
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, scores))
    if active_version is None:
        ok = auc >= min_auc
        detail = (f"roc_auc {auc:.3f} on the held-out set (no active model; floor {min_auc:g})"
                  if ok else f"roc_auc {auc:.2f} is below the floor of {min_auc:g} (no active "
                  "model to compare with)")
        checks.append(Check("quality", ok, detail))
        return
    try:
        active = load_verified(model_dir, active_version)
        active_auc = float(roc_auc_score(y, active.predict_score(X)))
    except (ModelRejected, ValueError) as exc:
        checks.append(Check("quality", False, f"cannot score the active model "
                                              f"{active_version} to compare with: {exc}"))
        return
    drop = active_auc - auc
    if drop > max_auc_drop:
        checks.append(Check("quality", False, f"roc_auc {auc:.2f} is {drop:.2f} below the active "
                                              f"model's {active_auc:.2f} (margin "
                                              f"{max_auc_drop:g})"))
    else:
        checks.append(Check("quality", True, f"roc_auc {auc:.3f} vs the active model's "
                                             f"{active_auc:.3f} (margin {max_auc_drop:g})"))


def _check_latency(model: LoadedModel, X: np.ndarray, checks: list[Check], *, budget_ms: float,
                   samples: int, clock: Callable[[], float], repeats: int = 3) -> None:
    rows = [X[i:i + 1] for i in range(min(samples, len(X)))]
    # more calls than this over budget and the p99 is over budget whatever the rest do
    allowed_over = int(len(rows) * 0.01)
    try:
        for row in rows[:10]:  # warm up: first calls pay for imports and allocations
            model.predict_score(row)
        took: list[float] = []
        over = 0
        for row in rows:
            # best of `repeats`: a slow model is slow every time, while a pause from another
            # thread (the GIL) or process (the CPU) rarely hits the same row twice
            best = math.inf
            for _ in range(repeats):
                t = clock()
                model.predict_score(row)
                best = min(best, (clock() - t) * 1000.0)
                if best <= budget_ms:
                    break
            took.append(best)
            over += best > budget_ms
            if over > allowed_over:
                checks.append(Check("latency", False, (
                    f"single-row p99 is over the budget of {budget_ms:g} ms: {over} of the "
                    f"first {len(took)} calls took longer (slowest {max(took):.1f} ms, "
                    f"median {float(np.median(took)):.1f} ms)")))
                return
    except Exception as exc:
        checks.append(Check("latency", False, f"single-row predict failed: {exc}"))
        return
    p50, p99 = (float(v) for v in np.percentile(took, [50, 99]))
    checks.append(Check("latency", True, f"single-row p99 {p99:.1f} ms within "
                                         f"{budget_ms:g} ms (p50 {p50:.1f} ms)"))


# -- the course's bad models ----------------------------------------------------------------------
# Wrappers are module-level classes so their pickles load in any process that imports stack.


class ConstantModel:
    """Scores every transaction the same (a model exported before it was fitted, say)."""

    def __init__(self, p: float = 0.05):
        self.p = float(p)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        n = len(X)
        return np.column_stack([np.full(n, 1 - self.p), np.full(n, self.p)])


class NaNOnLargeAmounts:
    """A good model with a bug: NaN for amounts far above the customer's average."""

    def __init__(self, estimator: Any, ratio: float = 3.0):
        self.estimator, self.ratio = estimator, float(ratio)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        proba = np.array(self.estimator.predict_proba(X), dtype=np.float64)
        proba[np.asarray(X)[:, FEATURE_NAMES.index("amount_ratio")] > self.ratio] = np.nan
        return proba


class SlowModel:
    """A good model that takes `delay_s` per call (a model 50 times the size, say)."""

    def __init__(self, estimator: Any, delay_s: float = 0.1):
        self.estimator, self.delay_s = estimator, float(delay_s)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.estimator.predict_proba(X)


def _fit(seed: int, *, shuffle_labels: bool = False, reverse_features: bool = False,
         n_customers: int = 2000, n_txns: int = 20000) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from stack.model.data import generate_customers, generate_transactions
    from stack.model.features import build_matrix

    customers = generate_customers(n_customers, seed=seed)
    txns, labels = generate_transactions(customers, n_txns, seed=seed)
    X = build_matrix(txns, {c["customer_id"]: c for c in customers})
    if shuffle_labels:  # the labels no longer belong to their rows: a join gone wrong
        labels = np.random.default_rng(seed).permutation(labels)
    if reverse_features:  # an older feature pipeline, columns in another order
        X = X[:, ::-1]
    estimator = HistGradientBoostingClassifier(max_iter=50, early_stopping=False,
                                               random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        estimator.fit(X, labels)
    return estimator


def _base(model_dir: Path) -> LoadedModel:
    return load_verified(model_dir, deployed_version(model_dir) or latest_version(model_dir))


def _register(model_dir: Path, version: str, obj: Any, note: str,
              feature_names: tuple[str, ...] = FEATURE_NAMES) -> None:
    """Pickle `obj` and register it: a joblib-only model, as a hand-made one would be."""
    import joblib

    fd, tmp = tempfile.mkstemp(prefix=".bad-", suffix=".joblib", dir=model_dir)
    os.close(fd)
    try:
        joblib.dump(obj, tmp)
        register_candidate(model_dir, tmp, version, {"bad_model": 1.0}, feature_names,
                           seed=0, replace=True)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("made bad model %s: %s", version, note)


def _tampered(model_dir: Path, version: str) -> None:
    base = _base(model_dir)
    register_candidate(model_dir, base.path, version, dict(base.metrics), replace=True)
    path = model_dir / get_entry(model_dir, version).file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a bad disk, a bad copy, or an attacker
    path.write_bytes(bytes(data))


BAD_MODELS: dict[str, tuple[str, Callable[[Path, str], None]]] = {
    "tampered": ("a copy of the serving model with one byte flipped after it was registered "
                 "(its sha256 no longer matches)", _tampered),
    "shuffled_labels": ("trained on shuffled labels: well-formed, ROC AUC about 0.5",
                        lambda d, v: _register(d, v, _fit(11, shuffle_labels=True),
                                               "shuffled labels")),
    "constant": ("scores every transaction 0.05",
                 lambda d, v: _register(d, v, ConstantModel(0.05), "constant")),
    "nan_scores": ("the serving model, but NaN for amounts over 3x the customer's average",
                   lambda d, v: _register(d, v, NaNOnLargeAmounts(_base(d).estimator),
                                          "NaN on large amounts")),
    "wrong_features": ("trained on the features in reverse order (an older pipeline)",
                       lambda d, v: _register(d, v, _fit(12, reverse_features=True),
                                              "wrong features", tuple(reversed(FEATURE_NAMES)))),
    "slow": ("the serving model, 100 ms per call",
             lambda d, v: _register(d, v, SlowModel(_base(d).estimator, 0.1), "slow")),
}


def make_bad_model(model_dir: str | os.PathLike[str], kind: str,
                   version: str | None = None) -> str:
    """Generate and register one of BAD_MODELS (replacing an earlier one of the same version);
    returns its version (default `bad-<kind>`, which `latest_version` never picks)."""
    try:
        _, make = BAD_MODELS[kind]
    except KeyError:
        raise UnknownName("bad model kind", kind, list(BAD_MODELS)) from None
    version = version or f"bad-{kind.replace('_', '-')}"
    make(Path(model_dir), version)
    return version
