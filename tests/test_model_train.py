"""Training: deterministic, quick, and an idempotent CLI."""
import json
import logging

from stack.model.registry import load_verified, read_manifest
from stack.model.train import main, train

SMALL = {"n_customers": 300, "n_txns": 6000}


def test_train_saves_a_model_with_useful_metrics(tmp_path):
    entry = train(tmp_path, version="v1", seed=7, **SMALL)
    assert (tmp_path / "fraud-v1.joblib").is_file()
    assert entry.metrics["n_train"] + entry.metrics["n_test"] == SMALL["n_txns"]
    assert entry.metrics["roc_auc"] > 0.7
    assert 0 < entry.metrics["average_precision"] <= 1
    assert read_manifest(tmp_path)["models"]["v1"]["metrics"] == entry.metrics
    model = load_verified(tmp_path)
    assert model.version == "v1"


def test_same_seed_same_metrics(tmp_path):
    a = train(tmp_path / "a", seed=11, **SMALL)
    b = train(tmp_path / "b", seed=11, **SMALL)
    c = train(tmp_path / "c", seed=12, **SMALL)
    assert a.metrics == b.metrics
    assert a.metrics != c.metrics


def test_cli_is_idempotent_unless_forced(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    args = ["--model-dir", str(tmp_path), "--version", "v1", "--n-customers", "200",
            "--n-txns", "3000"]
    assert main(args) == 0
    created = json.loads((tmp_path / "manifest.json").read_text())["models"]["v1"]["created_at"]
    mtime = (tmp_path / "fraud-v1.joblib").stat().st_mtime_ns

    caplog.clear()
    assert main(args) == 0
    assert "already exists" in caplog.text
    assert (tmp_path / "fraud-v1.joblib").stat().st_mtime_ns == mtime

    caplog.clear()
    assert main(args + ["--force"]) == 0
    assert "already exists" not in caplog.text
    assert (tmp_path / "fraud-v1.joblib").stat().st_mtime_ns != mtime
    assert json.loads((tmp_path / "manifest.json").read_text())["models"]["v1"]["created_at"] \
        >= created


def test_cli_retrains_a_file_that_no_longer_verifies(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    args = ["--model-dir", str(tmp_path), "--n-customers", "200", "--n-txns", "3000"]
    assert main(args) == 0
    (tmp_path / "fraud-v1.joblib").write_bytes(b"garbage")
    caplog.clear()
    assert main(args) == 0
    assert "already exists" not in caplog.text
    assert load_verified(tmp_path).version == "v1"
