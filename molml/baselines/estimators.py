"""One fitted estimator per task, saved without pickle.

XGBoost models are kept as their ``Booster`` and saved in XGBoost's own JSON format. A
scikit-learn random forest is turned into plain node arrays (``.npz``, read back with
``allow_pickle=False``) and predicted by a vectorized traversal of all its trees at once, which
reproduces scikit-learn's predictions (missing values follow each node's learned direction).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xgboost as xgb
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from molml.baselines.config import EstimatorConfig
from molml.errors import DataError


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
    def load(cls, path: Path) -> XGBoostTaskModel:
        """Read a model written by :meth:`save`."""
        booster = xgb.Booster()
        booster.load_model(path)
        return cls(booster)


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
        if isinstance(forest, RandomForestClassifier):
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
    def load(cls, path: Path) -> ForestTaskModel:
        """Read a model written by :meth:`save` (plain arrays only, no pickle)."""
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in _FOREST_ARRAYS}
            return cls(**arrays, depth=int(stored["depth"]))


_NODE_ARRAYS = ("feature", "threshold", "left", "right", "missing_left", "value")
_FOREST_ARRAYS = (*_NODE_ARRAYS, "roots")
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
    if classification:
        n_positive = int(y_train.sum())
        if n_positive in (0, len(y_train)):
            raise DataError(
                f"task {task!r}: its {len(y_train)} training labels are all "
                f"{int(y_train[0]) if len(y_train) else 'missing'}; a classifier needs both classes"
            )
        summary["n_positive"] = n_positive
    if config.name == "random_forest":
        forest_class = RandomForestClassifier if classification else RandomForestRegressor
        forest = forest_class(**{"random_state": seed, **config.params})
        return ForestTaskModel.from_sklearn(forest.fit(X_train, y_train)), summary

    params: dict[str, Any] = {"random_state": seed, **config.params}
    if classification:
        n_negative = len(y_train) - summary["n_positive"]
        params.setdefault("scale_pos_weight", n_negative / summary["n_positive"])
        summary["scale_pos_weight"] = params["scale_pos_weight"]
    stop_early = config.early_stopping_rounds is not None and len(y_val) > 0
    params["early_stopping_rounds"] = config.early_stopping_rounds if stop_early else None
    model = (xgb.XGBClassifier if classification else xgb.XGBRegressor)(**params)
    model.fit(X_train, y_train, eval_set=[(X_val, y_val)] if stop_early else None, verbose=False)
    booster = model.get_booster()
    if stop_early:
        booster = booster[: model.best_iteration + 1]
    summary["n_trees"] = booster.num_boosted_rounds()
    return XGBoostTaskModel(booster), summary
