"""A lean predictor for the project's gradient-boosted trees: plain numpy arrays, no scikit-learn.

`TreeEnsemble.from_sklearn(estimator)` copies the trees of a fitted binary
HistGradientBoostingClassifier (numeric features, no categorical splits) into flat node arrays;
`save` writes them to an .npz of plain arrays, which `load` reads with `allow_pickle=False`, so
loading runs no code from the file and imports nothing but numpy. The raw scores equal the
estimator's bit for bit (the leaves are added in scikit-learn's order); the probabilities
`estimator.predict_proba(X)[:, 1]` to within an ulp or so (numpy's exp, not scipy's expit).

All trees of the ensemble are walked at once, one level per step, for a batch of rows: a node's
children are global indices into the flat arrays, and a leaf points to itself, so after
`max_depth` steps every (row, tree) pair sits on its leaf.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from stack.errors import NotExportable

FORMAT_VERSION = 1
# arrays in the file, and their dtypes there (indices are widened to intp on load)
_FILE_DTYPES = {
    "feature": np.int32, "threshold": np.float64, "left": np.int32, "right": np.int32,
    "missing_go_to_left": np.uint8, "value": np.float64, "roots": np.int32,
}
_ROW_CHUNK = 256  # rows scored per step: (rows x trees) temporaries that stay in cache


class TreeEnsemble:
    """The trees of a binary gradient-boosted classifier as flat arrays.

    Node i tests `X[:, feature[i]] <= threshold[i]` (left if true; NaN goes left if
    `missing_go_to_left[i]`); a leaf has `left[i] == right[i] == i` and adds `value[i]`.
    `roots[t]` is tree t's first node. Score = expit(baseline + sum of the leaves reached).
    """

    def __init__(self, *, feature: Any, threshold: Any, left: Any, right: Any,
                 missing_go_to_left: Any, value: Any, roots: Any, baseline: float,
                 feature_names: tuple[str, ...] | list[str]):
        self.feature = np.ascontiguousarray(feature, dtype=np.intp)
        self.threshold = np.ascontiguousarray(threshold, dtype=np.float64)
        self.left = np.ascontiguousarray(left, dtype=np.intp)
        self.right = np.ascontiguousarray(right, dtype=np.intp)
        self.missing_go_to_left = np.ascontiguousarray(missing_go_to_left, dtype=bool)
        self.value = np.ascontiguousarray(value, dtype=np.float64)
        self.roots = np.ascontiguousarray(roots, dtype=np.intp)
        self.baseline = float(baseline)
        self.feature_names = tuple(str(n) for n in feature_names)
        self._validate()
        # children[2 * node + went_left]: one gather per level instead of a select
        self._children = np.column_stack([self.right, self.left]).ravel()
        self.max_depth = self._depth()

    # -- the sklearn-like interface --------------------------------------------------------------
    @property
    def n_features_in_(self) -> int:
        return len(self.feature_names)

    @property
    def feature_names_in_(self) -> np.ndarray:
        return np.asarray(self.feature_names, dtype=object)

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores (log-odds): baseline + the sum of every tree's leaf, shape (n,)."""
        X = self._check_X(X)
        n = X.shape[0]
        if n <= _ROW_CHUNK:
            return self._raw(X)
        return np.concatenate([self._raw(X[i:i + _ROW_CHUNK]) for i in range(0, n, _ROW_CHUNK)])

    def predict_score(self, X: Any) -> np.ndarray:
        """Probability of class 1 for each row, shape (n,)."""
        raw = self.decision_function(X)
        with np.errstate(over="ignore"):  # exp(-raw) -> inf for raw << 0 gives 0.0, as expit
            return 1.0 / (1.0 + np.exp(-raw))

    def predict_proba(self, X: Any) -> np.ndarray:
        """[[P(0), P(1)], ...] like the classifier's predict_proba, shape (n, 2)."""
        p1 = self.predict_score(X)
        return np.column_stack([1.0 - p1, p1])

    def _check_X(self, X: Any) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected shape (n, {self.n_features_in_}), got {X.shape}")
        return X

    def _raw(self, X: np.ndarray) -> np.ndarray:
        n, n_features = X.shape
        n_trees = len(self.roots)
        if n == 0:
            return np.zeros(0)
        x_flat = X.ravel()
        # (row, tree) pairs, row-major: pair r * n_trees + t
        node = np.tile(self.roots, n)
        offset = None if n == 1 else np.repeat(np.arange(n) * n_features, n_trees)
        has_nan = bool(np.isnan(x_flat).any())
        feature, threshold, children = self.feature, self.threshold, self._children
        mgl = self.missing_go_to_left
        for _ in range(self.max_depth):
            cols = feature[node]
            x = x_flat[cols] if offset is None else x_flat[cols + offset]
            go_left = x <= threshold[node]  # False for NaN
            if has_nan:
                go_left |= np.isnan(x) & mgl[node]
            node = children[2 * node + go_left]
        # baseline + tree 0 + tree 1 + ... in this order, as scikit-learn adds them up
        terms = np.empty((n, n_trees + 1))
        terms[:, 0] = self.baseline
        terms[:, 1:] = self.value[node].reshape(n, n_trees)
        return np.cumsum(terms, axis=1)[:, -1]

    # -- structure --------------------------------------------------------------------------------
    def _validate(self) -> None:
        n = len(self.feature)
        arrays = (self.threshold, self.left, self.right, self.missing_go_to_left, self.value)
        if n == 0 or any(a.ndim != 1 or len(a) != n for a in (self.feature, *arrays)):
            raise ValueError("node arrays must be 1-D, non-empty and of one length")
        if self.roots.ndim != 1 or len(self.roots) == 0:
            raise ValueError("roots must be a non-empty 1-D array")
        for name, idx in (("left", self.left), ("right", self.right), ("roots", self.roots)):
            if idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"{name} has node indices outside 0..{n - 1}")
        if self.feature.min() < 0 or self.feature.max() >= len(self.feature_names):
            raise ValueError(f"feature indices outside 0..{len(self.feature_names) - 1}")
        if not np.all(np.isfinite(self.value)) or not np.isfinite(self.baseline):
            raise ValueError("leaf values and the baseline must be finite")

    def _is_leaf(self) -> np.ndarray:
        nodes = np.arange(len(self.feature))
        return (self.left == nodes) & (self.right == nodes)

    def _depth(self) -> int:
        """Levels from the roots to the deepest leaf; refuses cycles and half-leaves."""
        nodes = np.arange(len(self.feature))
        half = ((self.left == nodes) != (self.right == nodes))
        if half.any():
            raise ValueError(f"node {int(np.flatnonzero(half)[0])} points to itself on one "
                             "side only")
        is_leaf = self._is_leaf()
        frontier = self.roots[~is_leaf[self.roots]]
        depth = 0
        while len(frontier):
            depth += 1
            if depth > len(nodes):
                raise ValueError("the trees have a cycle")
            children = np.concatenate([self.left[frontier], self.right[frontier]])
            frontier = children[~is_leaf[children]]
        return depth

    # -- conversion and files ---------------------------------------------------------------------
    @classmethod
    def from_sklearn(cls, estimator: Any,
                     feature_names: tuple[str, ...] | list[str] | None = None) -> "TreeEnsemble":
        """The trees of a fitted binary HistGradientBoostingClassifier with numeric features.

        Raises NotExportable for anything else (another estimator, more than two classes,
        categorical features or splits), so a caller can fall back to pickling it. Reads the
        fitted attributes only: scikit-learn is not imported here.
        """
        if isinstance(estimator, TreeEnsemble):
            return estimator
        kind = type(estimator)
        if kind.__name__ != "HistGradientBoostingClassifier" or \
                not kind.__module__.startswith("sklearn."):
            raise NotExportable(f"{kind.__module__}.{kind.__qualname__} is not a "
                                "HistGradientBoostingClassifier")
        predictors = getattr(estimator, "_predictors", None)
        if not predictors:
            raise NotExportable("the estimator is not fitted")
        classes = getattr(estimator, "classes_", ())
        if len(classes) != 2 or getattr(estimator, "n_trees_per_iteration_", None) != 1:
            raise NotExportable(f"only binary classifiers are supported (classes {classes!r})")
        is_categorical = getattr(estimator, "is_categorical_", None)
        if getattr(estimator, "_preprocessor", None) is not None or \
                (is_categorical is not None and np.any(is_categorical)):
            raise NotExportable("categorical features are not supported")
        baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64)
        if baseline.size != 1:
            raise NotExportable(f"expected one baseline value, got {baseline.shape}")
        n_features = int(estimator.n_features_in_)
        if feature_names is None:
            fitted = getattr(estimator, "feature_names_in_", None)
            feature_names = (tuple(fitted) if fitted is not None
                             else tuple(f"x{i}" for i in range(n_features)))
        if len(feature_names) != n_features:
            raise NotExportable(f"{len(feature_names)} feature names for {n_features} features")

        parts: dict[str, list[np.ndarray]] = {k: [] for k in _FILE_DTYPES if k != "roots"}
        roots = []
        offset = 0
        try:  # a scikit-learn whose node records differ from these is not exported
            for iteration in predictors:
                (predictor,) = iteration
                nodes = predictor.nodes
                if np.any(nodes["is_categorical"]):
                    raise NotExportable("the trees have categorical splits")
                n = len(nodes)
                leaf = nodes["is_leaf"].astype(bool)
                own = np.arange(n, dtype=np.int64) + offset
                parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]))
                parts["threshold"].append(np.where(leaf, 0.0, nodes["num_threshold"]))
                parts["left"].append(np.where(leaf, own, nodes["left"].astype(np.int64) + offset))
                parts["right"].append(np.where(leaf, own,
                                               nodes["right"].astype(np.int64) + offset))
                parts["missing_go_to_left"].append(nodes["missing_go_to_left"].astype(bool))
                parts["value"].append(np.where(leaf, nodes["value"], 0.0))
                roots.append(offset)
                offset += n
            return cls(**{k: np.concatenate(v) for k, v in parts.items()},
                       roots=np.asarray(roots), baseline=float(baseline.ravel()[0]),
                       feature_names=tuple(feature_names))
        except NotExportable:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise NotExportable(f"the trees cannot be exported: {exc!r}") from exc

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays `save` writes: numbers and fixed-width strings, nothing pickled."""
        if self.n_nodes > np.iinfo(np.int32).max:
            raise ValueError(f"{self.n_nodes} nodes do not fit the file's int32 indices")
        arrays = {k: getattr(self, k).astype(dtype) for k, dtype in _FILE_DTYPES.items()}
        arrays["baseline"] = np.array(self.baseline, dtype=np.float64)
        arrays["feature_names"] = np.array(self.feature_names, dtype=np.str_)
        arrays["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
        return arrays

    def save(self, file: str | os.PathLike[str] | BinaryIO) -> None:
        """Write the arrays with np.savez (to a path, or an open binary file)."""
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as fh:  # a path would get ".npz" appended by np.savez
                np.savez(fh, **self.to_arrays())
        else:
            np.savez(file, **self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "TreeEnsemble":
        """Read a file `save` wrote; never unpickles (allow_pickle=False). ValueError if the
        file is not a tree file this code can read."""
        with np.load(Path(path), allow_pickle=False) as data:
            missing = {*_FILE_DTYPES, "baseline", "feature_names", "format_version"} - set(data)
            if missing:
                raise ValueError(f"not a tree file: no {', '.join(sorted(missing))}")
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ValueError(f"tree file format {version}, this code reads "
                                 f"{FORMAT_VERSION}")
            arrays = {k: data[k] for k in _FILE_DTYPES}
            for name, arr in arrays.items():
                expected = "f" if np.dtype(_FILE_DTYPES[name]).kind == "f" else "iub"
                if arr.dtype.kind not in expected:
                    raise ValueError(f"array {name} has dtype {arr.dtype}, expected "
                                     f"{np.dtype(_FILE_DTYPES[name]).name}")
            return cls(**arrays, baseline=float(data["baseline"]),
                       feature_names=tuple(str(n) for n in data["feature_names"]))

    def __repr__(self) -> str:
        return (f"TreeEnsemble({self.n_trees} trees, {self.n_nodes} nodes, depth "
                f"{self.max_depth}, {self.n_features_in_} features)")


def probe_rows(ensemble: TreeEnsemble, n: int = 2048, seed: int = 0) -> np.ndarray:
    """Rows that exercise every split: values drawn from each feature's thresholds (exactly
    on them, or just either side), some NaN, some far outside. For checking an export."""
    rng = np.random.default_rng(seed)
    F = ensemble.n_features_in_
    X = rng.normal(size=(n, F))
    splits = ~ensemble._is_leaf()
    for f in range(F):
        thresholds = ensemble.threshold[splits & (ensemble.feature == f)]
        if len(thresholds):
            picked = rng.choice(thresholds, size=n)
            nudge = rng.choice([-np.inf, 0.0, np.inf], size=n)  # one ulp down, on it, one up
            X[:, f] = np.where(nudge == 0, picked, np.nextafter(picked, nudge))
    X[rng.random(size=X.shape) < 0.05] = np.nan
    X[rng.random(size=X.shape) < 0.01] = 1e300
    X[rng.random(size=X.shape) < 0.01] = -1e300
    return X
