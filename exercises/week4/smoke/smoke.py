"""Week 4 exercise: the smoke test a candidate model must pass before any replica serves it.

The playbook's model registry rejects a candidate "if smoke tests fail" and never says what
they are. This first version is the usual one: load the file and check it predicts something.
The checker gives it a good candidate (v2, retrained with another seed) and four bad ones:
a file changed after it was registered, a model that scores every transaction the same, one
that returns NaN for large amounts, and one trained on shuffled labels (ROC AUC about 0.5).
Make it accept the good one and reject all four, without raising.

Useful: stack.model.registry.load_verified(model_dir, version) checks the file's sha256
against the manifest before unpickling it and raises ModelRejected; LoadedModel.predict_score(X)
gives fraud probabilities; stack.deploy.gate.holdout_set() gives (X, y), a held-out set no model
has seen; sklearn.metrics.roc_auc_score(y, scores).

Run the checker: `python -m stack.check week4 smoke`
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from stack.model.registry import load_verified


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
    model = load_verified(model_dir, candidate_version)
    row = np.zeros((1, len(model.feature_names)))
    score = float(model.predict_score(row)[0])
    report.checks.append(Check("predicts", 0.0 <= score <= 1.0, f"score {score:.3f}"))
    return report
