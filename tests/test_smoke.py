"""Smoke tests: a good candidate passes; each bad kind is rejected with its reason; a tampered
file is refused without being unpickled."""
import pickle
import re
import shutil

import numpy as np
import pytest

from stack.errors import UnknownName
from stack.model.registry import get_entry, register_candidate
from stack.model.train import train
from stack.deploy.gate import BAD_MODELS, holdout_set, make_bad_model, smoke_test


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    src = tmp_path_factory.mktemp("models")
    train(src, "v1", seed=7)
    train(src, "v2", seed=8)
    return src


@pytest.fixture
def model_dir(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "models")
    return tmp_path / "models"


def _failed(report):
    return {c.name: c.detail for c in report.checks if not c.ok}


def test_good_candidate_passes_every_check(model_dir):
    report = smoke_test(model_dir, "v2", "v1")
    assert report.passed, report.summary()
    assert [c.name for c in report.checks] == ["integrity", "features", "load", "predictions",
                                                "quality", "latency"]
    assert report.reasons == []


def test_without_an_active_model_the_floor_applies(model_dir):
    assert smoke_test(model_dir, "v1", None).passed
    bad = make_bad_model(model_dir, "shuffled_labels")
    assert "below the floor" in _failed(smoke_test(model_dir, bad, None))["quality"]


@pytest.mark.parametrize("kind, check, reason", [
    ("tampered", "integrity", r"failed its integrity check: expected sha256 [0-9a-f]{64}, "
                              r"actual [0-9a-f]{64}; it was not loaded"),
    ("shuffled_labels", "quality", r"roc_auc 0\.\d\d is 0\.\d\d below the active model's "
                                   r"0\.8\d \(margin 0\.02\)"),
    ("constant", "predictions", r"all 8000 scores are 0\.05: the model ignores its input"),
    ("nan_scores", "predictions", r"\d+ of 8000 scores on the held-out set are not finite"),
    ("wrong_features", "features", r"the model expects features \['chargebacks_1y', .*the API "
                                   r"builds \['amount_log', .*retrain it"),
    ("slow", "latency", r"single-row p99 is over the budget of 50 ms: 3 of the first 3 calls"),
])
def test_each_bad_kind_is_rejected_with_its_reason(model_dir, kind, check, reason):
    version = make_bad_model(model_dir, kind)
    assert version == f"bad-{kind.replace('_', '-')}"
    report = smoke_test(model_dir, version, "v1")
    assert not report.passed
    failed = _failed(report)
    assert list(failed) == [check], report.summary()
    assert any(r.startswith(f"{check}: ") for r in report.reasons)
    assert re.search(reason, failed[check]), failed[check]


def test_every_bad_kind_is_tested():
    assert set(BAD_MODELS) == {"tampered", "shuffled_labels", "constant", "nan_scores",
                               "wrong_features", "slow"}


def test_unknown_bad_kind_names_the_known_ones(model_dir):
    with pytest.raises(UnknownName, match="unknown bad model kind 'oops'; known: constant"):
        make_bad_model(model_dir, "oops")


def test_tampered_file_is_refused_without_unpickling(model_dir, unpickle_marker):
    payload, marker = unpickle_marker
    register_candidate(model_dir, model_dir / "fraud-v2.joblib", "v3", {"roc_auc": 0.8})
    (model_dir / get_entry(model_dir, "v3").file).write_bytes(
        pickle.dumps(payload))
    report = smoke_test(model_dir, "v3", "v1")
    assert _failed(report).keys() == {"integrity"} and len(report.checks) == 1
    assert not marker.exists()


def test_file_without_a_manifest_entry_is_refused_without_unpickling(model_dir,
                                                                     unpickle_marker):
    payload, marker = unpickle_marker
    (model_dir / "fraud-v3.joblib").write_bytes(pickle.dumps(payload))
    report = smoke_test(model_dir, "v3", "v1")
    assert "'v3' is not in" in _failed(report)["integrity"]
    assert not marker.exists()


def test_a_correctly_registered_marker_is_the_only_way_to_unpickle(model_dir, tmp_path,
                                                                   unpickle_marker):
    """Control for the two tests above: the marker does fire once it is registered."""
    payload, marker = unpickle_marker
    src = tmp_path / "marker.pkl"
    src.write_bytes(pickle.dumps(payload))
    register_candidate(model_dir, src, "v3", {})
    report = smoke_test(model_dir, "v3", "v1")
    assert marker.exists() and "load" in _failed(report)


def test_the_holdout_set_is_fixed_and_unseen():
    X, y = holdout_set()
    X2, y2 = holdout_set()
    assert X is X2 and X.shape == (8000, 10) and 0.02 < y.mean() < 0.08
    assert not X.flags.writeable
    from stack.model.data import generate_customers, generate_transactions
    from stack.model.features import build_matrix

    customers = generate_customers(2000, seed=7)
    txns, _ = generate_transactions(customers, 2000, seed=7)
    train_rows = build_matrix(txns, {c["customer_id"]: c for c in customers})
    assert not np.array_equal(train_rows[:100], X[:100])


def test_a_tighter_margin_can_reject_a_good_model(model_dir):
    report = smoke_test(model_dir, "v2", "v1", max_auc_drop=0.0)
    assert "below the active model's" in _failed(report)["quality"]
