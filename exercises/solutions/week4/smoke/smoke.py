"""Week 4 exercise: the smoke test a candidate model must pass (a solution).

Each check answers one way a model breaks in production, cheapest first: the file (was it
changed after it was registered?), the outputs (numbers a caller can use?), the quality
(as good as what serves now, within a margin?). The project's full version, with features
and latency too, is stack/deploy/gate.py.

Run the checker: `python -m stack.check week4 smoke --solutions`
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import roc_auc_score

from stack.errors import ModelRejected
from stack.model.registry import load_verified
from stack.deploy.gate import holdout_set

MAX_AUC_DROP = 0.02  # a retrained model is never exactly as good; a broken one is far worse
MIN_AUC = 0.70       # the floor when nothing serves yet


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SmokeReport:
    version: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def smoke_test(model_dir: str | os.PathLike[str], candidate_version: str,
               active_version: str | None = None) -> SmokeReport:
    """May `candidate_version` replace `active_version`? Never raises: every problem is a
    failed check in the report."""
    report = SmokeReport(candidate_version)
    checks = report.checks
    # 1. integrity: load_verified compares the sha256 with the manifest before unpickling
    try:
        model = load_verified(model_dir, candidate_version)
    except ModelRejected as exc:
        checks.append(Check("load", False, str(exc)))
        return report
    checks.append(Check("load", True, f"sha256 verified, loaded {model.path.name}"))

    # 2. outputs: a score per row, finite, in [0, 1], and not the same for everyone
    X, y = holdout_set()
    try:
        scores = np.asarray(model.predict_score(X), dtype=float)
    except Exception as exc:
        checks.append(Check("predictions", False, f"predict failed: {exc}"))
        return report
    if scores.shape != (len(X),) or not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum()) if scores.shape == (len(X),) else len(X)
        checks.append(Check("predictions", False, f"{bad} of {len(X)} scores are not finite"))
        return report
    if scores.min() < 0 or scores.max() > 1 or np.ptp(scores) == 0:
        checks.append(Check("predictions", False, f"scores from {scores.min():.3g} to "
                                                  f"{scores.max():.3g}: not usable"))
        return report
    checks.append(Check("predictions", True, f"{len(X)} finite scores in [0, 1]"))

    # 3. quality: ROC AUC on the held-out set against the active model's
    auc = float(roc_auc_score(y, scores))
    if active_version is None:
        checks.append(Check("quality", auc >= MIN_AUC, f"roc_auc {auc:.3f} (floor {MIN_AUC})"))
        return report
    try:
        active = load_verified(model_dir, active_version)
        active_auc = float(roc_auc_score(y, active.predict_score(X)))
    except (ModelRejected, ValueError) as exc:
        checks.append(Check("quality", False, f"cannot score the active model: {exc}"))
        return report
    checks.append(Check("quality", active_auc - auc <= MAX_AUC_DROP,
                        f"roc_auc {auc:.3f} vs the active model's {active_auc:.3f}"))
    return report
