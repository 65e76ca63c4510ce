"""Train the fraud model on synthetic data and save it to a model directory.

    python -m stack.model.train --model-dir models --version v1 [--seed 7] [--force]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from stack.model.data import generate_customers, generate_transactions
from stack.model.features import build_matrix
from stack.model.registry import ModelEntry, get_entry, read_manifest, save_model, verify_version

log = logging.getLogger(__name__)


def train(model_dir: str | os.PathLike[str], version: str = "v1", seed: int = 7,
          n_customers: int = 2000, n_txns: int = 40000) -> ModelEntry:
    """Generate data, fit, evaluate on a held-out split and save; same seed, same metrics."""
    customers = generate_customers(n_customers, seed=seed)
    txns, labels = generate_transactions(customers, n_txns, seed=seed)
    X = build_matrix(txns, {c["customer_id"]: c for c in customers})
    X_train, X_test, y_train, y_test = train_test_split(
        X, labels, test_size=0.25, random_state=seed, stratify=labels)
    estimator = HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, max_leaf_nodes=31, l2_regularization=1.0,
        early_stopping=False, random_state=seed)
    # One OpenMP thread: on a small or busy machine, more threads spin against each other
    # and training gets several times slower.
    with threadpool_limits(limits=1, user_api="openmp"):
        estimator.fit(X_train, y_train)
        scores = estimator.predict_proba(X_test)[:, 1]
    metrics = {
        "roc_auc": round(float(roc_auc_score(y_test, scores)), 6),
        "average_precision": round(float(average_precision_score(y_test, scores)), 6),
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "fraud_rate": round(float(np.mean(labels)), 6),
    }
    log.info("trained %s: roc_auc=%.4f average_precision=%.4f", version, metrics["roc_auc"],
             metrics["average_precision"])
    return save_model(model_dir, version, estimator, metrics, seed)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; does nothing if the version exists and verifies, unless --force."""
    parser = argparse.ArgumentParser(prog="python -m stack.model.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="folder for models and manifest.json")
    parser.add_argument("--version", default="v1", help="model version, e.g. v1 (default v1)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--n-customers", type=int, default=2000)
    parser.add_argument("--n-txns", type=int, default=40000)
    parser.add_argument("--force", action="store_true", help="retrain even if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if (not args.force and args.version in read_manifest(args.model_dir)["models"]
            and verify_version(args.model_dir, args.version)):
        entry = get_entry(args.model_dir, args.version)
        log.info("model %s already exists in %s and verifies (sha256 %s); nothing to do "
                 "(use --force to retrain)", args.version, args.model_dir, entry.sha256[:12])
        return 0
    entry = train(args.model_dir, version=args.version, seed=args.seed,
                  n_customers=args.n_customers, n_txns=args.n_txns)
    log.info("saved %s (%s) roc_auc=%s", entry.version, entry.file, entry.metrics["roc_auc"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
