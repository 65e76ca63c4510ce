"""The exported trees: the numpy-only TreeEnsemble scores like scikit-learn, its file is verified
before it is read and never unpickled, and a replica serving it imports no scikit-learn."""
import io
import json
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest

from stack.errors import ModelRejected, NotExportable
from stack.model.data import generate_customers, generate_transactions
from stack.model.features import FEATURE_NAMES, build_matrix
from stack.model.registry import (
    ModelEntry,
    get_entry,
    load_verified,
    read_manifest,
    save_model,
    sha256_file,
    verify_version,
)
from stack.model.train import train
from stack.model.trees import TreeEnsemble, probe_rows

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The project's model, trained as `make setup` trains it (default sizes, seed 7)."""
    src = tmp_path_factory.mktemp("models")
    train(src, "v1", seed=7)
    return src


@pytest.fixture
def model_dir(trained, tmp_path):
    import shutil

    shutil.copytree(trained, tmp_path / "models")
    return tmp_path / "models"


@pytest.fixture(scope="module")
def sklearn_model(trained):
    return joblib.load(trained / "fraud-v1.joblib")


@pytest.fixture(scope="module")
def rows():
    """A few thousand rows drawn like the project's data, with seeds no training run uses."""
    customers = generate_customers(1500, seed=99)
    txns, _ = generate_transactions(customers, 4000, seed=99)
    return build_matrix(txns, {c["customer_id"]: c for c in customers})


def _sklearn_scores(estimator, X):
    return estimator.predict_proba(X)[:, 1]


def test_training_writes_the_trees_file_and_records_it(trained):
    raw = read_manifest(trained)["models"]["v1"]
    assert raw["trees_file"] == "fraud-v1.trees.npz"
    assert raw["trees_sha256"] == sha256_file(trained / "fraud-v1.trees.npz")
    assert raw["file"] == "fraud-v1.joblib"
    with np.load(trained / "fraud-v1.trees.npz", allow_pickle=False) as data:
        assert all(data[k].dtype.kind in "iufbU" for k in data)
        assert tuple(data["feature_names"]) == FEATURE_NAMES


def test_load_verified_serves_the_trees(trained, sklearn_model, rows):
    model = load_verified(trained, "v1")
    assert isinstance(model.estimator, TreeEnsemble)
    assert model.loaded_from == trained / "fraud-v1.trees.npz"
    assert model.path == trained / "fraud-v1.joblib"
    assert model.sha256 == get_entry(trained, "v1").sha256
    diff = np.abs(model.predict_score(rows) - _sklearn_scores(sklearn_model, rows))
    assert diff.max() <= TOLERANCE
    with pytest.raises(ValueError, match="expected shape"):
        model.predict_score(np.zeros((1, 3)))


def test_scores_match_sklearn_on_project_rows(trained, sklearn_model, rows):
    ensemble = TreeEnsemble.load(trained / "fraud-v1.trees.npz")
    assert ensemble.n_trees == len(sklearn_model._predictors)
    ours = ensemble.predict_proba(rows)
    theirs = sklearn_model.predict_proba(rows)
    assert ours.shape == theirs.shape == (len(rows), 2)
    assert np.abs(ours - theirs).max() <= TOLERANCE
    assert np.abs(ensemble.decision_function(rows)
                  - sklearn_model.decision_function(rows)).max() <= TOLERANCE


def test_scores_match_sklearn_with_missing_and_extreme_values(trained, sklearn_model, rows):
    ensemble = TreeEnsemble.load(trained / "fraud-v1.trees.npz")
    X = np.array(rows, dtype=np.float64)
    rng = np.random.default_rng(5)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[0] = np.nan  # a row with nothing known
    X[1, :] = np.inf
    X[2, :] = -np.inf
    assert np.isnan(X).any(axis=1).mean() > 0.5
    diff = np.abs(ensemble.predict_score(X) - _sklearn_scores(sklearn_model, X))
    assert diff.max() <= TOLERANCE


def test_scores_match_sklearn_on_and_around_every_threshold(trained, sklearn_model):
    """`x <= threshold` goes left: rows exactly on the thresholds and one ulp either side."""
    ensemble = TreeEnsemble.load(trained / "fraud-v1.trees.npz")
    X = probe_rows(ensemble, n=3000, seed=3)
    diff = np.abs(ensemble.predict_score(X) - _sklearn_scores(sklearn_model, X))
    assert diff.max() <= TOLERANCE


def test_single_rows_and_batches_agree(trained, rows):
    ensemble = TreeEnsemble.load(trained / "fraud-v1.trees.npz")
    batch = ensemble.predict_score(rows[:300])
    one_by_one = np.concatenate([ensemble.predict_score(rows[i:i + 1]) for i in range(300)])
    np.testing.assert_array_equal(batch, one_by_one)
    assert ensemble.predict_score(rows[:0]).shape == (0,)


def test_from_sklearn_refuses_what_it_cannot_reproduce(sklearn_model):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(NotExportable, match="not a HistGradientBoostingClassifier"):
        TreeEnsemble.from_sklearn(LogisticRegression())
    with pytest.raises(NotExportable, match="not fitted"):
        TreeEnsemble.from_sklearn(HistGradientBoostingClassifier())
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    multi = HistGradientBoostingClassifier(max_iter=3).fit(X, rng.integers(0, 3, 300))
    with pytest.raises(NotExportable, match="binary"):
        TreeEnsemble.from_sklearn(multi)
    X[:, 2] = rng.integers(0, 4, 300)
    categorical = HistGradientBoostingClassifier(max_iter=3, categorical_features=[2]).fit(
        X, rng.integers(0, 2, 300))
    with pytest.raises(NotExportable, match="categorical"):
        TreeEnsemble.from_sklearn(categorical)
    ensemble = TreeEnsemble.from_sklearn(sklearn_model, FEATURE_NAMES)
    assert TreeEnsemble.from_sklearn(ensemble) is ensemble


def test_a_model_that_is_not_exported_is_served_by_unpickling(tmp_path, rows):
    """Older manifests and the course's wrapper models have no trees file: joblib loads them."""
    from stack.deploy.gate import ConstantModel

    entry = save_model(tmp_path, "c1", ConstantModel(0.25), {}, seed=0)
    assert entry.trees_file is None and "trees_file" not in read_manifest(tmp_path)["models"]["c1"]
    assert not (tmp_path / "fraud-c1.trees.npz").exists()
    model = load_verified(tmp_path, "c1")
    assert isinstance(model.estimator, ConstantModel)
    assert model.loaded_from == model.path == tmp_path / "fraud-c1.joblib"
    np.testing.assert_array_equal(model.predict_score(rows[:3]), [0.25] * 3)


def test_an_entry_without_trees_falls_back_to_joblib(model_dir, sklearn_model, rows):
    manifest = json.loads((model_dir / "manifest.json").read_text())
    del manifest["models"]["v1"]["trees_file"], manifest["models"]["v1"]["trees_sha256"]
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    model = load_verified(model_dir, "v1")
    assert type(model.estimator).__name__ == "HistGradientBoostingClassifier"
    assert model.loaded_from == model_dir / "fraud-v1.joblib"
    np.testing.assert_array_equal(model.predict_score(rows[:50]),
                                  _sklearn_scores(sklearn_model, rows[:50]))


def test_model_entry_round_trips_with_and_without_trees(trained):
    entry = get_entry(trained, "v1")
    assert entry.trees_file == "fraud-v1.trees.npz" and entry.served_file == entry.trees_file
    assert ModelEntry.from_json("v1", entry.to_json()) == entry
    old = {k: v for k, v in entry.to_json().items() if not k.startswith("trees_")}
    legacy = ModelEntry.from_json("v1", old)
    assert legacy.trees_file is None and legacy.served_file == "fraud-v1.joblib"
    assert legacy.to_json() == old
    with pytest.raises(ValueError, match="go together"):
        ModelEntry.from_json("v1", {**old, "trees_file": "fraud-v1.trees.npz"})


def test_a_tampered_trees_file_is_refused_before_it_is_read(model_dir, monkeypatch):
    path = model_dir / "fraud-v1.trees.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    def never(*args, **kwargs):
        raise AssertionError("a file was read before its sha256 was checked")

    monkeypatch.setattr(TreeEnsemble, "load", classmethod(never))
    monkeypatch.setattr(np, "load", never)
    monkeypatch.setattr(joblib, "load", never)
    with pytest.raises(ModelRejected) as info:
        load_verified(model_dir, "v1")
    message = str(info.value)
    assert "fraud-v1.trees.npz" in message and "integrity check" in message
    assert get_entry(model_dir, "v1").trees_sha256 in message
    assert sha256_file(path) in message
    assert not verify_version(model_dir, "v1")


def test_a_missing_trees_file_is_refused(model_dir):
    (model_dir / "fraud-v1.trees.npz").unlink()
    with pytest.raises(ModelRejected, match=r"fraud-v1\.trees\.npz is missing"):
        load_verified(model_dir, "v1")


def test_a_registered_trees_file_with_a_pickle_inside_is_never_unpickled(model_dir,
                                                                         unpickle_marker):
    """Even with a matching sha256, the trees file is read with allow_pickle=False."""
    payload, marker = unpickle_marker
    path = model_dir / "fraud-v1.trees.npz"
    buf = io.BytesIO()
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data}
    arrays["value"] = np.array([payload] * len(arrays["value"]), dtype=object)
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["models"]["v1"]["trees_sha256"] = sha256_file(path)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRejected, match=r"fraud-v1\.trees\.npz could not be loaded"):
        load_verified(model_dir, "v1")
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as data:  # control: unpickling it runs the marker
        data["value"]
    assert marker.exists()


def test_trees_with_other_feature_names_are_refused(model_dir):
    path = model_dir / "fraud-v1.trees.npz"
    ensemble = TreeEnsemble.load(path)
    ensemble.feature_names = tuple(reversed(FEATURE_NAMES))
    ensemble.save(path)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["models"]["v1"]["trees_sha256"] = sha256_file(path)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRejected, match="has features"):
        load_verified(model_dir, "v1")


def test_a_pickled_tree_ensemble_is_exported_again(trained, tmp_path, rows):
    """save_model of a loaded TreeEnsemble (what tests and notebooks do) writes its trees."""
    ensemble = load_verified(trained, "v1").estimator
    entry = save_model(tmp_path, "v2", ensemble, {"roc_auc": 0.8}, seed=7)
    assert entry.trees_file == "fraud-v2.trees.npz"
    again = load_verified(tmp_path, "v2").estimator
    np.testing.assert_array_equal(again.predict_score(rows), ensemble.predict_score(rows))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ensemble)).predict_score(rows),
                                  ensemble.predict_score(rows))


def test_a_replica_imports_no_sklearn_nor_joblib(trained):
    code = ("import stack.api.serve, sys; from stack.model.registry import load_verified; "
            f"m = load_verified({str(trained)!r}, 'v1'); "
            "m.predict_score([[0.0] * len(m.feature_names)]); "
            "print(sorted({k.split('.')[0] for k in sys.modules} "
            "& {'sklearn', 'joblib', 'threadpoolctl', 'scipy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stderr
