"""One fitted estimator per task, saved without pickle.

XGBoost models are kept as their ``Booster`` and saved in XGBoost's own JSON format. A
scikit-learn random forest is turned into plain node arrays (``.npz``, read back with
``allow_pickle=False``) and predicted by a vectorized traversal of all its trees at once, which
reproduces scikit-learn's predictions (missing values follow each node's learned direction).

Loading checks a model against the fingerprint it is used with: a file that was broken or
crafted is refused with a :class:`CheckpointError` rather than failing or looping at predict time.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # imported where used: loading a graph model never pays for XGBoost
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from molml.baselines.config import EstimatorConfig
from molml.errors import CheckpointError, DataError


class TaskModel(Protocol):
    """A fitted single-task model: values (regression) or positive-class probabilities."""

    suffix: str  # file name ending of the saved model

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions ``[n]`` (float64) for features ``X`` ``[n, dim]``."""
        ...

    def save(self, path: Path) -> None:
        """Write the model to ``path``."""
        ...


@dataclass
class XGBoostTaskModel:
    """An XGBoost booster, cut to its best iteration."""

    booster: xgb.Booster
    suffix = ".json"

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(X), dtype=np.float64)

    def save(self, path: Path) -> None:
        self.booster.save_model(path)

    @classmethod
    def load(cls, path: Path, n_features: int) -> XGBoostTaskModel:
        """Read a model written by :meth:`save` for fingerprints of ``n_features`` features.

        XGBoost's loader does not check tree structure, and a crafted tree crashes the process
        at predict time; the JSON is checked first (see :func:`_check_xgboost_json`).
        """
        try:
            model = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise CheckpointError(
                f"{path}: cannot read it as an XGBoost JSON model: {_first_line(exc)}"
            ) from exc
        try:
            _check_xgboost_json(model, n_features)
        except KeyError as exc:
            raise CheckpointError(f"{path}: not an XGBoost JSON model: no entry {exc}") from exc
        except TypeError as exc:
            raise CheckpointError(f"{path}: not an XGBoost JSON model: {exc}") from exc
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(path)
        except xgb.core.XGBoostError as exc:
            raise CheckpointError(
                f"{path}: XGBoost cannot read this model file: {_first_line(exc)}"
            ) from exc
        return cls(booster)


def _check_xgboost_json(model: dict[str, Any], n_features: int) -> None:
    """ValueError unless an XGBoost JSON model takes ``n_features`` features, gives one value
    per molecule and its trees are trees: every child in range with one parent, none of them
    the root (so every path ends on a leaf), split features below ``n_features``."""
    learner = model["learner"]
    params = learner["learner_model_param"]
    if int(params["num_feature"]) != n_features:
        raise ValueError(
            f"the booster takes {params['num_feature']} features, the fingerprint gives "
            f"{n_features}"
        )
    outputs = max(int(params.get("num_class", 0)), int(params.get("num_target", 1)))
    if outputs != 1:
        raise ValueError(
            f"the booster predicts {outputs} values per molecule; a task model gives one value "
            "per molecule"
        )
    booster = learner["gradient_booster"]
    if booster["name"] not in ("gbtree", "dart"):
        raise ValueError(f"booster {booster['name']!r} is not a tree booster (gbtree, dart)")
    trees_model = (booster["gbtree"] if booster["name"] == "dart" else booster)["model"]
    trees = trees_model["trees"]
    if list(trees_model["tree_info"]) != [0] * len(trees):
        raise ValueError("tree_info must give output group 0 for each tree")
    indptr = np.asarray(trees_model["iteration_indptr"])
    if indptr.dtype.kind not in "iu" or indptr[0] != 0 or indptr[-1] != len(trees):
        raise ValueError("iteration_indptr must run from 0 to the number of trees")
    if (np.diff(indptr) < 0).any():
        raise ValueError("iteration_indptr must not decrease")
    for number, tree in enumerate(trees):
        reason = _xgboost_tree_problem(tree, n_features)
        if reason:
            raise ValueError(f"tree {number}: {reason}")


def _xgboost_tree_problem(tree: dict[str, Any], n_features: int) -> str | None:
    """What is wrong with one tree of an XGBoost JSON model, or None."""
    n = int(tree["tree_param"]["num_nodes"])
    if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1:
        return "vector leaves (several outputs) are not a single-task model"
    arrays = {key: np.asarray(tree[key]) for key in _XGBOOST_TREE_ARRAYS}
    lengths = {key: len(array) for key, array in arrays.items()}
    if n < 1 or set(lengths.values()) != {n}:
        return f"node arrays must have num_nodes = {n} entries, got lengths {lengths}"
    left, right, split = (arrays[k] for k in ("left_children", "right_children", "split_indices"))
    if any(a.ndim != 1 or a.dtype.kind not in "iu" for a in (left, right, split)):
        return "children and split indices must be integers"
    if (arrays["split_type"] != 0).any():
        return "categorical splits are not supported"
    internal = left != -1
    if (internal != (right != -1)).any():
        return "a node has one child; a node has two or none (-1)"
    children = np.concatenate([left[internal], right[internal]])
    if ((children < 1) | (children >= n)).any():
        return f"a child index is outside the non-root nodes [1, {n})"
    if (np.bincount(children, minlength=n) > 1).any():
        return "a node has two parents"
    bad = internal & ((split < 0) | (split >= n_features))
    if bad.any():
        return f"split feature {split[bad][0]} is outside the fingerprint's {n_features} features"
    return None


@dataclass
class ForestTaskModel:
    """A random forest as flat node arrays; all trees share one node numbering.

    Leaves point to themselves, so ``depth`` steps of "go left or right" bring every molecule
    from its trees' roots to their leaves. ``value`` is the leaf's prediction: the mean target
    (regression) or the fraction of positives (classification).
    """

    feature: np.ndarray  # int64 [nodes]
    threshold: np.ndarray  # float64 [nodes]: go left when x <= threshold
    left: np.ndarray  # int64 [nodes]
    right: np.ndarray  # int64 [nodes]
    missing_left: np.ndarray  # bool [nodes]: where a missing value (NaN) goes
    value: np.ndarray  # float64 [nodes]
    roots: np.ndarray  # int64 [trees]
    depth: int
    suffix = ".npz"

    @classmethod
    def from_sklearn(
        cls, forest: RandomForestRegressor | RandomForestClassifier
    ) -> ForestTaskModel:
        """Node arrays of a fitted scikit-learn forest (single output; binary if a classifier)."""
        parts: dict[str, list[np.ndarray]] = {name: [] for name in _NODE_ARRAYS}
        roots, offset = [], 0
        positive = None
        if hasattr(forest, "classes_"):  # a classifier
            positive = int(np.flatnonzero(forest.classes_ == 1)[0])
        for estimator in forest.estimators_:
            tree = estimator.tree_
            nodes = np.arange(tree.node_count)
            leaf = tree.children_left < 0
            parts["feature"].append(np.where(leaf, 0, tree.feature))
            parts["threshold"].append(np.where(leaf, np.inf, tree.threshold))
            parts["left"].append(np.where(leaf, nodes, tree.children_left) + offset)
            parts["right"].append(np.where(leaf, nodes, tree.children_right) + offset)
            parts["missing_left"].append(tree.missing_go_to_left.astype(bool))
            values = tree.value[:, 0, :]
            if positive is None:
                parts["value"].append(values[:, 0])
            else:
                parts["value"].append(values[:, positive] / values.sum(axis=1))
            roots.append(offset)
            offset += tree.node_count
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(
            feature=arrays["feature"].astype(np.int64),
            threshold=arrays["threshold"].astype(np.float64),
            left=arrays["left"].astype(np.int64),
            right=arrays["right"].astype(np.int64),
            missing_left=arrays["missing_left"],
            value=arrays["value"].astype(np.float64),
            roots=np.asarray(roots, dtype=np.int64),
            depth=max(estimator.tree_.max_depth for estimator in forest.estimators_),
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        blocks = range(0, len(X), _MOLECULES_PER_BLOCK)  # bounds the [trees, molecules] arrays
        out = [self._predict_block(X[i : i + _MOLECULES_PER_BLOCK]) for i in blocks]
        return np.concatenate(out) if out else np.zeros(0)

    def _predict_block(self, X: np.ndarray) -> np.ndarray:
        molecules = np.arange(len(X))
        node = np.repeat(self.roots[:, None], len(X), axis=1)  # [trees, molecules]
        for _ in range(self.depth):
            x = X[molecules, self.feature[node]].astype(np.float64)
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        return self.value[node].mean(axis=0)

    def save(self, path: Path) -> None:
        arrays = {name: getattr(self, name) for name in _FOREST_ARRAYS}
        with open(path, "wb") as handle:  # a file handle: numpy would append ".npz" to a path
            np.savez_compressed(handle, depth=np.int64(self.depth), **arrays)

    @classmethod
    def load(cls, path: Path, n_features: int) -> ForestTaskModel:
        """Read a model written by :meth:`save` (plain arrays only, no pickle) for fingerprints
        of ``n_features`` features.

        The arrays are checked for what :meth:`predict` relies on: node arrays of one length and
        dtype, indices in range, internal nodes whose children come after them and have no other
        parent (so every path ends on a leaf), ``depth`` equal to the deepest leaf's depth, and
        thresholds that are numbers and finite leaf values.
        """
        try:
            stored = np.load(path, allow_pickle=False)
            if not isinstance(stored, np.lib.npyio.NpzFile):
                raise ValueError("one array, not an .npz archive of node arrays")
            with stored:
                arrays = {name: stored[name] for name in stored.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise CheckpointError(
                f"{path}: not a random forest node file: {_first_line(exc)}"
            ) from exc
        try:
            return _checked_forest(arrays, n_features)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc


def _checked_forest(arrays: dict[str, np.ndarray], n_features: int) -> ForestTaskModel:
    """A :class:`ForestTaskModel` of stored ``arrays``; ValueError naming what is wrong."""
    expected = {*_FOREST_ARRAYS, "depth"}
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise ValueError(f"missing arrays {missing}, unexpected arrays {extra}")
    for name, kinds in _DTYPE_KINDS.items():
        array = arrays[name]
        if array.ndim != 1 or array.dtype.kind not in kinds:
            raise ValueError(
                f"{name} must be a 1-D array of {_KIND_NAMES[kinds]}, got {array.dtype} "
                f"of shape {array.shape}"
            )
    depth = arrays["depth"]
    if depth.ndim != 0 or depth.dtype.kind not in "iu":
        raise ValueError(f"depth must be one integer, got {depth.dtype} of shape {depth.shape}")
    n = len(arrays["feature"])
    lengths = {name: len(arrays[name]) for name in _NODE_ARRAYS}
    if n == 0 or set(lengths.values()) != {n} or len(arrays["roots"]) == 0:
        raise ValueError(f"node arrays must have one non-zero length, got lengths {lengths}")
    for name, bound in (("roots", n), ("left", n), ("right", n), ("feature", n_features)):
        bad = np.flatnonzero((arrays[name] < 0) | (arrays[name] >= bound))
        if len(bad):
            where = f"roots[{bad[0]}]" if name == "roots" else f"{name}[{bad[0]}] (node {bad[0]})"
            of = "the fingerprint's features" if name == "feature" else "the nodes"
            raise ValueError(f"index {where} = {arrays[name][bad[0]]} is outside {of} [0, {bound})")
    feature, left, right, roots = (
        arrays[name].astype(np.int64) for name in ("feature", "left", "right", "roots")
    )
    nodes = np.arange(n)
    leaf = (left == nodes) & (right == nodes)
    backward = np.flatnonzero(~leaf & ((left <= nodes) | (right <= nodes)))
    if len(backward):
        i = backward[0]
        raise ValueError(
            f"node {i} has children {left[i]} and {right[i]}: children must come after their "
            f"parent, and only a leaf points to itself"
        )
    if len(np.unique(roots)) != len(roots):
        raise ValueError("roots must be distinct nodes")
    parents = np.bincount(np.concatenate([left[~leaf], right[~leaf]]), minlength=n)
    is_root = np.zeros(n, dtype=bool)
    is_root[roots] = True
    wrong = np.flatnonzero(parents != np.where(is_root, 0, 1))
    if len(wrong):
        i = wrong[0]
        raise ValueError(
            f"node {i} has {parents[i]} parent(s){' and is a root' if is_root[i] else ''}: "
            f"each root has no parent and every other node exactly one, once"
        )
    level, tree_depth = roots, 0  # a forest now: every node is on exactly one level
    while len(level := level[~leaf[level]]):
        level = np.concatenate([left[level], right[level]])
        tree_depth += 1
    if int(depth) != tree_depth:
        raise ValueError(f"depth {int(depth)} does not match the trees' depth {tree_depth}")
    threshold, value = arrays["threshold"], arrays["value"]
    # an infinite threshold is scikit-learn's split of missing from present values; NaN is none
    for name, values, bad in (
        ("threshold", threshold, ~leaf & np.isnan(threshold)),
        ("leaf value", value, leaf & ~np.isfinite(value)),
    ):
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise ValueError(f"the {name} of node {i} is {values[i]}")
    return ForestTaskModel(
        feature=feature,
        threshold=threshold.astype(np.float64),
        left=left,
        right=right,
        missing_left=arrays["missing_left"],
        value=value.astype(np.float64),
        roots=roots,
        depth=tree_depth,
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_NODE_ARRAYS = ("feature", "threshold", "left", "right", "missing_left", "value")
_FOREST_ARRAYS = (*_NODE_ARRAYS, "roots")
_DTYPE_KINDS = {
    "feature": "iu",
    "threshold": "f",
    "left": "iu",
    "right": "iu",
    "missing_left": "b",
    "value": "f",
    "roots": "iu",
}
_KIND_NAMES = {"iu": "integers", "f": "floats", "b": "booleans"}
_XGBOOST_TREE_ARRAYS = (
    "left_children",
    "right_children",
    "parents",
    "split_indices",
    "split_conditions",
    "split_type",
    "default_left",
    "base_weights",
    "loss_changes",
    "sum_hessian",
)
_MOLECULES_PER_BLOCK = 2048
TASK_MODELS: dict[str, type[XGBoostTaskModel] | type[ForestTaskModel]] = {
    "xgboost": XGBoostTaskModel,
    "random_forest": ForestTaskModel,
}


def fit_task_model(
    config: EstimatorConfig,
    task_type: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    seed: int,
    task: str,
) -> tuple[TaskModel, dict[str, Any]]:
    """Fit one task's model on its labelled training rows ``(X, y)``; XGBoost stops early on
    the labelled validation rows. Returns the model and a summary of the fit."""
    X_train, y_train = train
    X_val, y_val = val
    classification = task_type == "classification"
    summary: dict[str, Any] = {"task": task, "n_train": len(y_train), "n_val": len(y_val)}
    if len(y_train) == 0:
        raise DataError(f"task {task!r} has no labelled rows in the train split")
    if classification:
        n_positive = int(y_train.sum())
        if n_positive in (0, len(y_train)):
            raise DataError(
                f"task {task!r}: all {len(y_train)} labelled rows of the train split are class "
                f"{int(y_train[0])}; a binary classifier needs both classes (0 and 1) there"
            )
        summary["n_positive"] = n_positive
    if config.name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        forest_class = RandomForestClassifier if classification else RandomForestRegressor
        try:
            forest = forest_class(**{"random_state": seed, **config.params})
        except TypeError as exc:  # e.g. class_weight on a regression task
            raise DataError(f"estimator.params for {forest_class.__name__}: {exc}") from exc
        try:
            forest.fit(X_train, y_train)
        except ValueError as exc:  # sklearn checks parameter values (and the data) when fitting
            raise DataError(f"{forest_class.__name__} could not be fitted: {exc}") from exc
        return ForestTaskModel.from_sklearn(forest), summary

    params: dict[str, Any] = {"random_state": seed, **config.params}
    if classification:
        n_negative = len(y_train) - summary["n_positive"]
        params.setdefault("scale_pos_weight", n_negative / summary["n_positive"])
        summary["scale_pos_weight"] = params["scale_pos_weight"]
    stop_early = config.early_stopping_rounds is not None and len(y_val) > 0
    params["early_stopping_rounds"] = config.early_stopping_rounds if stop_early else None
    import xgboost as xgb

    model = (xgb.XGBClassifier if classification else xgb.XGBRegressor)(**params)
    try:
        model.fit(
            X_train, y_train, eval_set=[(X_val, y_val)] if stop_early else None, verbose=False
        )
    except xgb.core.XGBoostError as exc:  # XGBoost checks parameter values when fitting
        raise DataError(f"XGBoost could not be fitted: {_first_line(exc)}") from exc
    booster = model.get_booster()
    if stop_early and booster.num_boosted_rounds():  # none: n_estimators 0
        booster = booster[: model.best_iteration + 1]
    summary["n_trees"] = booster.num_boosted_rounds()
    return XGBoostTaskModel(booster), summary
