"""The model registry: sha256-verified loading that refuses a bad file before unpickling it."""
import json
import os
import pickle

import numpy as np
import pytest

from stack.errors import ModelRejected
from stack.model.features import FEATURE_NAMES
from stack.model.registry import (
    latest_version,
    list_versions,
    load_verified,
    read_manifest,
    save_model,
    sha256_file,
)
from stack.model.train import train

SMALL = {"n_customers": 200, "n_txns": 3000}


class _Marker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _manifest(model_dir):
    return json.loads((model_dir / "manifest.json").read_text())


def _write_manifest(model_dir, manifest):
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


def test_load_verified_returns_a_working_model(tmp_path):
    entry = train(tmp_path, **SMALL)
    model = load_verified(tmp_path, "v1")
    assert model.version == "v1" and model.sha256 == entry.sha256
    assert model.feature_names == FEATURE_NAMES
    assert model.path == tmp_path / "fraud-v1.joblib"
    assert model.metrics == entry.metrics
    scores = model.predict_score(np.zeros((3, len(FEATURE_NAMES))))
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    with pytest.raises(ValueError, match="expected shape"):
        model.predict_score(np.zeros((1, 3)))


def test_manifest_records_the_file_and_its_sha(tmp_path):
    entry = train(tmp_path, **SMALL)
    raw = _manifest(tmp_path)["models"]["v1"]
    assert raw["file"] == "fraud-v1.joblib"
    assert raw["sha256"] == sha256_file(tmp_path / "fraud-v1.joblib") == entry.sha256
    assert raw["feature_names"] == list(FEATURE_NAMES)
    assert set(raw["metrics"]) >= {"roc_auc", "average_precision", "n_train", "n_test"}
    assert raw["seed"] == 7 and raw["created_at"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tampered_file_is_refused_without_unpickling(tmp_path):
    train(tmp_path, **SMALL)
    marker = tmp_path / "unpickled.marker"
    (tmp_path / "fraud-v1.joblib").write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(ModelRejected) as info:
        load_verified(tmp_path, "v1")
    message = str(info.value)
    assert "fraud-v1.joblib" in message
    assert _manifest(tmp_path)["models"]["v1"]["sha256"] in message
    assert sha256_file(tmp_path / "fraud-v1.joblib") in message
    assert not marker.exists()


def test_flipped_byte_is_refused(tmp_path):
    train(tmp_path, **SMALL)
    path = tmp_path / "fraud-v1.joblib"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelRejected, match="integrity check"):
        load_verified(tmp_path)


def test_file_without_manifest_entry_is_refused(tmp_path):
    train(tmp_path, **SMALL)
    marker = tmp_path / "unpickled.marker"
    (tmp_path / "fraud-v2.joblib").write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(ModelRejected, match="'v2' is not in .*known: v1"):
        load_verified(tmp_path, "v2")
    assert not marker.exists()


def test_missing_file_and_missing_manifest_are_refused(tmp_path):
    with pytest.raises(ModelRejected, match="no model versions"):
        load_verified(tmp_path)
    train(tmp_path, **SMALL)
    (tmp_path / "fraud-v1.joblib").unlink()
    with pytest.raises(ModelRejected, match="missing"):
        load_verified(tmp_path)


def test_manifest_file_outside_the_folder_is_refused(tmp_path):
    train(tmp_path / "models", **SMALL)
    manifest = _manifest(tmp_path / "models")
    manifest["models"]["v1"]["file"] = "../elsewhere.joblib"
    _write_manifest(tmp_path / "models", manifest)
    with pytest.raises(ModelRejected, match="outside the model directory"):
        load_verified(tmp_path / "models")


def test_feature_names_must_match(tmp_path):
    train(tmp_path, **SMALL)
    manifest = _manifest(tmp_path)
    manifest["models"]["v1"]["feature_names"] = list(reversed(FEATURE_NAMES))
    _write_manifest(tmp_path, manifest)
    with pytest.raises(ModelRejected, match="expects features"):
        load_verified(tmp_path)


def test_corrupt_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelRejected, match="cannot read"):
        read_manifest(tmp_path)


def test_latest_version_is_numeric(tmp_path):
    estimator = load_verified(_trained(tmp_path / "src")).estimator
    for version in ("v2", "v10", "v9", "candidate"):
        save_model(tmp_path, version, estimator, {"roc_auc": 0.5}, seed=1)
    assert latest_version(tmp_path) == "v10"
    assert list_versions(tmp_path) == ["v2", "v9", "v10", "candidate"]
    assert load_verified(tmp_path).version == "v10"
    assert set(read_manifest(tmp_path)["models"]) == {"v2", "v9", "v10", "candidate"}


def test_bad_version_name_is_refused(tmp_path):
    with pytest.raises(ModelRejected, match="bad model version"):
        save_model(tmp_path, "../v1", object(), {}, seed=1)
    assert not os.listdir(tmp_path)


def _trained(path):
    train(path, **SMALL)
    return path


# -- candidates and the deployed pointer --------------------------------------------------------
def test_register_candidate_copies_and_records_the_sha(tmp_path):
    from stack.model.registry import register_candidate

    src = _trained(tmp_path / "src") / "fraud-v1.joblib"
    entry = register_candidate(tmp_path / "models", src, "v2", {"roc_auc": 0.8}, FEATURE_NAMES,
                               seed=3)
    assert entry.file == "fraud-v2.joblib" and entry.sha256 == sha256_file(src)
    raw = _manifest(tmp_path / "models")["models"]["v2"]
    assert raw["sha256"] == entry.sha256 and raw["metrics"] == {"roc_auc": 0.8}
    assert raw["seed"] == 3
    assert load_verified(tmp_path / "models", "v2").version == "v2"
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".")] == []


def test_registered_versions_are_immutable(tmp_path):
    from stack.model.registry import register_candidate

    src = _trained(tmp_path / "src") / "fraud-v1.joblib"
    register_candidate(tmp_path / "m", src, "v2", {})
    with pytest.raises(ModelRejected, match="already registered.*versions are immutable"):
        register_candidate(tmp_path / "m", src, "v2", {})
    register_candidate(tmp_path / "m", src, "v2", {"roc_auc": 0.5}, replace=True)
    assert _manifest(tmp_path / "m")["models"]["v2"]["metrics"] == {"roc_auc": 0.5}


def test_register_candidate_refuses_bad_names_and_missing_files(tmp_path):
    from stack.model.registry import register_candidate

    with pytest.raises(ModelRejected, match="bad model version"):
        register_candidate(tmp_path, tmp_path / "x", "../v2", {})
    with pytest.raises(ModelRejected, match="is not a file"):
        register_candidate(tmp_path, tmp_path / "missing.joblib", "v2", {})


def test_register_candidate_never_unpickles(tmp_path):
    from stack.model.registry import register_candidate

    marker = tmp_path / "unpickled.marker"
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps(_Marker(str(marker))))
    register_candidate(tmp_path / "m", src, "v9", {})
    assert not marker.exists()


def test_deployed_pointer(tmp_path):
    from stack.model.registry import deployed_record, deployed_version, set_deployed

    _trained(tmp_path)
    assert deployed_version(tmp_path) is None and deployed_record(tmp_path) == {}
    set_deployed(tmp_path, "v1", previous=None)
    assert deployed_version(tmp_path) == "v1"
    assert deployed_record(tmp_path)["previous"] is None
    with pytest.raises(ModelRejected, match="'v7' is not in"):
        set_deployed(tmp_path, "v7")
    # the pointer survives other writes to the manifest, and does not change `latest`
    train(tmp_path, version="v2", **SMALL)
    assert deployed_version(tmp_path) == "v1" and latest_version(tmp_path) == "v2"
    assert list_versions(tmp_path) == ["v1", "v2"]
