"""A model directory: `fraud-<version>.joblib` files and one manifest.json with their sha256.

A model file is only unpickled after its sha256 matches the manifest, because joblib.load
runs code from the file.

A model trained by the project (a HistGradientBoostingClassifier) also gets its trees exported
to `fraud-<version>.trees.npz`, plain arrays recorded in the manifest with their own sha256
(`trees_file`, `trees_sha256`). `load_verified` serves that file with the numpy-only
TreeEnsemble: a replica then imports neither scikit-learn nor joblib, which takes seconds of
CPU at start-up. Other models (older manifests, the course's bad models) are unpickled with
joblib, imported only then.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stack.errors import ModelRejected, NotExportable
from stack.model.features import FEATURE_NAMES
from stack.model.trees import TreeEnsemble, probe_rows

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_VERSION_RE = re.compile(r"^v(\d+)$")
_SAFE_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# an export whose scores differ from the estimator's by more than this is not written
EXPORT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ModelEntry:
    """One model's manifest record; `trees_file`/`trees_sha256` only if its trees were
    exported (see the module docstring)."""

    version: str
    file: str
    sha256: str
    feature_names: tuple[str, ...]
    metrics: dict[str, float]
    created_at: str
    seed: int
    trees_file: str | None = None
    trees_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        raw = {"file": self.file, "sha256": self.sha256,
               "feature_names": list(self.feature_names), "metrics": dict(self.metrics),
               "created_at": self.created_at, "seed": self.seed}
        if self.trees_file is not None:
            raw.update(trees_file=self.trees_file, trees_sha256=self.trees_sha256)
        return raw

    @classmethod
    def from_json(cls, version: str, raw: dict[str, Any]) -> "ModelEntry":
        trees_file, trees_sha = raw.get("trees_file"), raw.get("trees_sha256")
        if (trees_file is None) != (trees_sha is None):
            raise ValueError("trees_file and trees_sha256 go together")
        return cls(version=version, file=str(raw["file"]), sha256=str(raw["sha256"]),
                   feature_names=tuple(raw["feature_names"]), metrics=dict(raw["metrics"]),
                   created_at=str(raw["created_at"]), seed=int(raw["seed"]),
                   trees_file=None if trees_file is None else str(trees_file),
                   trees_sha256=None if trees_sha is None else str(trees_sha))

    @property
    def served_file(self) -> str:
        """The file `load_verified` loads: the exported trees if any, else the pickle."""
        return self.trees_file if self.trees_file is not None else self.file


@dataclass
class LoadedModel:
    """A verified model ready to score: a TreeEnsemble, or an unpickled estimator.

    `path` and `sha256` are the model's registered file (the manifest's `file`);
    `loaded_from` is the file actually read (the trees file when there is one).
    """

    version: str
    estimator: Any
    feature_names: tuple[str, ...]
    sha256: str
    metrics: dict[str, float]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    loaded_from: Path | None = None

    def predict_score(self, X: np.ndarray) -> np.ndarray:
        """Probability of fraud (class 1) for each row of X.

        A pickled estimator runs with one OpenMP thread: the API scores a row at a time from
        many threads, and per-thread OpenMP teams would spin against each other for hundreds
        of ms. A TreeEnsemble is plain numpy and needs no limit.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"expected shape (n, {len(self.feature_names)}), got {X.shape}")
        if isinstance(self.estimator, TreeEnsemble):
            return self.estimator.predict_score(X)
        with _threadpools().limit(limits=1, user_api="openmp"):
            return self.estimator.predict_proba(X)[:, 1]


@lru_cache(maxsize=1)
def _threadpools() -> "ThreadpoolController":
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_filename(version: str) -> str:
    return f"fraud-{version}.joblib"


def trees_filename(version: str) -> str:
    return f"fraud-{version}.trees.npz"


def read_manifest(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest as a dict; `{"models": {}}` if there is none yet."""
    path = Path(model_dir) / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {"models": {}}
    except (OSError, ValueError) as exc:
        raise ModelRejected(f"cannot read {path}: {exc}; retrain with "
                            "`python -m stack.model.train --force`") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ModelRejected(f"{path} has no 'models' object; retrain with "
                            "`python -m stack.model.train --force`")
    return raw


def _write_manifest(model_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically: a temp file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=model_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, model_dir / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_versions(model_dir: str | os.PathLike[str]) -> list[str]:
    """Versions in the manifest, v<N> sorted numerically (others after, by name)."""
    names = list(read_manifest(model_dir)["models"])

    def key(name: str) -> tuple[int, int, str]:
        m = _VERSION_RE.match(name)
        return (0, int(m.group(1)), name) if m else (1, 0, name)

    return sorted(names, key=key)


def latest_version(model_dir: str | os.PathLike[str]) -> str:
    """The highest v<N> in the manifest."""
    numbered = [(int(m.group(1)), v) for v in read_manifest(model_dir)["models"]
                if (m := _VERSION_RE.match(v))]
    if not numbered:
        raise ModelRejected(f"no model versions in {Path(model_dir) / MANIFEST}: train one with "
                            f"`python -m stack.model.train --model-dir {model_dir}`")
    return max(numbered)[1]


def get_entry(model_dir: str | os.PathLike[str], version: str) -> ModelEntry:
    """The manifest record for a version, or ModelRejected naming the known versions."""
    models = read_manifest(model_dir)["models"]
    if version not in models:
        known = ", ".join(sorted(models)) or "none"
        raise ModelRejected(f"model version '{version}' is not in {Path(model_dir) / MANIFEST} "
                            f"(known: {known})")
    try:
        return ModelEntry.from_json(version, models[version])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelRejected(f"manifest entry for '{version}' is malformed: {exc}") from exc


def save_model(model_dir: str | os.PathLike[str], version: str, estimator: Any,
               metrics: dict[str, float], seed: int) -> ModelEntry:
    """Write `fraud-<version>.joblib`, and `fraud-<version>.trees.npz` if the estimator's trees
    can be exported (see export_trees), and record them in the manifest."""
    if not _SAFE_VERSION_RE.match(version):
        raise ModelRejected(f"bad model version '{version}': use letters, digits, '.', '_', '-' "
                            "(e.g. v2)")
    import joblib

    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    filename = model_filename(version)
    digest = _write_atomic(directory, filename, lambda fh: joblib.dump(estimator, fh))
    trees_file = trees_sha = None
    ensemble = export_trees(estimator, FEATURE_NAMES)
    if ensemble is not None:
        trees_file = trees_filename(version)
        trees_sha = _write_atomic(directory, trees_file, ensemble.save)
    else:  # an earlier save of this version may have left one: it is not this model
        (directory / trees_filename(version)).unlink(missing_ok=True)
    entry = ModelEntry(version=version, file=filename, sha256=digest,
                       feature_names=FEATURE_NAMES, metrics=dict(metrics),
                       created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       seed=int(seed), trees_file=trees_file, trees_sha256=trees_sha)
    manifest = read_manifest(directory)
    manifest["models"][version] = entry.to_json()
    _write_manifest(directory, manifest)
    log.info("saved model %s to %s (sha256 %s)%s", version, directory / filename, digest[:12],
             f" and its trees to {trees_file} (sha256 {trees_sha[:12]})" if trees_sha else "")
    return entry


def _write_atomic(directory: Path, filename: str, write: Any) -> str:
    """`write(binary file)` into a temp file in `directory`, fsync, rename it to `filename`;
    returns the file's sha256."""
    fd, tmp = tempfile.mkstemp(prefix=".fraud-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        digest = sha256_file(Path(tmp))
        os.replace(tmp, directory / filename)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def export_trees(estimator: Any,
                 feature_names: tuple[str, ...] = FEATURE_NAMES) -> TreeEnsemble | None:
    """The estimator's trees as a TreeEnsemble, or None if it is not a model TreeEnsemble
    reproduces (not a fitted binary HistGradientBoostingClassifier on numeric features), or
    if the copy's scores differ from the estimator's on probe rows (then it is logged)."""
    try:
        ensemble = TreeEnsemble.from_sklearn(estimator, feature_names)
    except NotExportable as exc:
        log.info("trees not exported (the model is served by unpickling it): %s", exc)
        return None
    if ensemble is estimator:
        return ensemble
    X = probe_rows(ensemble)
    with _threadpools().limit(limits=1, user_api="openmp"):
        expected = np.asarray(estimator.predict_proba(X), dtype=np.float64)[:, 1]
    diff = float(np.max(np.abs(ensemble.predict_score(X) - expected)))
    if not diff <= EXPORT_TOLERANCE:
        log.warning("trees not exported: their scores differ from the estimator's by up to "
                    "%.3g on probe rows (the model is served by unpickling it)", diff)
        return None
    return ensemble


def verify_file(model_dir: str | os.PathLike[str], entry: ModelEntry) -> Path:
    """Check the entry's file exists and its sha256 matches; return its path."""
    return _verify(model_dir, entry, entry.file, entry.sha256)


def verify_entry(model_dir: str | os.PathLike[str], entry: ModelEntry) -> Path:
    """Check every file of the entry (the pickle and, if any, the trees file) against its
    sha256; return the path of the one `load_verified` loads (entry.served_file)."""
    path = verify_file(model_dir, entry)
    if entry.trees_file is not None:
        path = _verify(model_dir, entry, entry.trees_file, str(entry.trees_sha256))
    return path


def _verify(model_dir: str | os.PathLike[str], entry: ModelEntry, filename: str,
            sha256: str) -> Path:
    if Path(filename).name != filename:
        raise ModelRejected(f"manifest entry '{entry.version}' names a file outside the model "
                            f"directory: {filename!r}")
    path = Path(model_dir) / filename
    if not path.is_file():
        raise ModelRejected(f"model file {path} is missing; retrain with "
                            f"`python -m stack.model.train --version {entry.version} --force`")
    actual = sha256_file(path)
    if actual != sha256:
        raise ModelRejected(f"model file {path} failed its integrity check: expected sha256 "
                            f"{sha256}, actual {actual}; it was not loaded")
    return path


def verify_version(model_dir: str | os.PathLike[str], version: str) -> bool:
    """True if the version is in the manifest and its files match their sha256."""
    try:
        verify_entry(model_dir, get_entry(model_dir, version))
    except ModelRejected:
        return False
    return True


def load_verified(model_dir: str | os.PathLike[str], version: str | None = None) -> LoadedModel:
    """Verify then load a model (default: the latest), and smoke-test it.

    Every file of the entry must match its sha256 before anything is read. The trees file, if
    the entry has one, is loaded as plain arrays (no unpickling, no scikit-learn); otherwise the
    pickle is loaded with joblib.
    """
    version = version or latest_version(model_dir)
    entry = get_entry(model_dir, version)
    if tuple(entry.feature_names) != FEATURE_NAMES:
        raise ModelRejected(f"model {version} expects features {list(entry.feature_names)}, "
                            f"this code builds {list(FEATURE_NAMES)}")
    path = verify_entry(model_dir, entry)
    estimator = _load_trees(path, entry) if entry.trees_file is not None else _unpickle(path)
    model = LoadedModel(version=version, estimator=estimator, feature_names=entry.feature_names,
                        sha256=entry.sha256, metrics=entry.metrics,
                        path=Path(model_dir) / entry.file, loaded_from=path)
    _smoke_test(model)
    log.info("loaded model %s from %s", version, path)
    return model


def _load_trees(path: Path, entry: ModelEntry) -> TreeEnsemble:
    try:
        ensemble = TreeEnsemble.load(path)
    except Exception as exc:
        raise ModelRejected(f"model file {path} could not be loaded: {exc}") from exc
    if ensemble.feature_names != tuple(entry.feature_names):
        raise ModelRejected(f"model file {path} has features {list(ensemble.feature_names)}, "
                            f"its manifest entry {list(entry.feature_names)}")
    return ensemble


def _unpickle(path: Path) -> Any:
    try:
        import joblib  # here only: importing it (and unpickling scikit-learn) takes seconds

        return joblib.load(path)
    except Exception as exc:
        raise ModelRejected(f"model file {path} could not be loaded: {exc}") from exc


def _smoke_test(model: LoadedModel) -> None:
    """Score one neutral row; the result must be a probability."""
    try:
        score = model.predict_score(np.zeros((1, len(model.feature_names))))
    except Exception as exc:
        raise ModelRejected(f"model {model.version} ({model.path}) failed its smoke test: "
                            f"{exc}") from exc
    if score.shape != (1,) or not np.all(np.isfinite(score)) or not 0.0 <= score[0] <= 1.0:
        raise ModelRejected(f"model {model.version} ({model.path}) failed its smoke test: "
                            f"score {score!r} is not a probability")


# -- candidates and the deployed pointer (week 4) ------------------------------------------------
DEPLOYED = "deployed"  # manifest key: {"version", "previous", "at"}, written by stack.deploy.rollout


def register_candidate(model_dir: str | os.PathLike[str], src_file: str | os.PathLike[str],
                       version: str, metrics: dict[str, float],
                       feature_names: tuple[str, ...] | list[str] = FEATURE_NAMES, *,
                       seed: int = 0, replace: bool = False) -> ModelEntry:
    """Copy a model file into the registry as `fraud-<version>.joblib` and record its sha256
    (a pickle only: no trees file, so replicas load it with joblib).

    The file is hashed as it is copied, never unpickled: registering is bookkeeping, the smoke
    tests (stack.deploy.gate) decide whether it may serve. A registered version is immutable unless
    `replace=True`, so a deploy can never pick up different bytes under a name it tested.
    """
    if not _SAFE_VERSION_RE.match(version):
        raise ModelRejected(f"bad model version '{version}': use letters, digits, '.', '_', '-' "
                            "(e.g. v2)")
    src = Path(src_file)
    if not src.is_file():
        raise ModelRejected(f"cannot register {version}: {src} is not a file")
    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if not replace and version in read_manifest(directory)["models"]:
        raise ModelRejected(f"model version '{version}' is already registered in "
                            f"{directory / MANIFEST}: pick a new version (versions are "
                            "immutable) or pass replace=True")
    filename = model_filename(version)
    fd, tmp = tempfile.mkstemp(prefix=".fraud-", suffix=".joblib", dir=directory)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            for chunk in iter(lambda: inp.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, directory / filename)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # a replaced version's exported trees are not this file's: the entry has none
    (directory / trees_filename(version)).unlink(missing_ok=True)
    entry = ModelEntry(version=version, file=filename, sha256=digest.hexdigest(),
                       feature_names=tuple(feature_names), metrics=dict(metrics),
                       created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       seed=int(seed))
    manifest = read_manifest(directory)
    manifest["models"][version] = entry.to_json()
    _write_manifest(directory, manifest)
    log.info("registered candidate %s from %s (sha256 %s)", version, src, entry.sha256[:12])
    return entry


def deployed_version(model_dir: str | os.PathLike[str]) -> str | None:
    """The version the last deploy or rollback made active on every replica, or None.

    A replica that (re)starts loads this one, so a restart never undoes a deploy (nor
    deploys the newest file, which may be a candidate that failed its smoke tests)."""
    record = read_manifest(model_dir).get(DEPLOYED)
    if isinstance(record, dict) and isinstance(record.get("version"), str):
        return record["version"]
    return None


def deployed_record(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """`{"version", "previous", "at"}` of the last deploy or rollback; {} if none."""
    record = read_manifest(model_dir).get(DEPLOYED)
    return dict(record) if isinstance(record, dict) else {}


def set_deployed(model_dir: str | os.PathLike[str], version: str,
                 previous: str | None = None) -> None:
    """Record which version serves (and which served before it) in the manifest."""
    directory = Path(model_dir)
    get_entry(directory, version)  # refuses a version the manifest does not know
    manifest = read_manifest(directory)
    manifest[DEPLOYED] = {"version": version, "previous": previous,
                          "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_manifest(directory, manifest)
    log.info("deployed pointer in %s: %s (previous %s)", directory, version, previous)
