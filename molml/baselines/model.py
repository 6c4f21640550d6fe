"""A fitted fingerprint baseline with the inference interface of a graph model.

On disk a baseline is a directory: ``baseline.json`` (format number, molml version, estimator,
tasks, task type, the fingerprint's config and one entry per task model) and one model file per
task (XGBoost JSON, or the random forest's node arrays as ``.npz``). Nothing is pickled, and
:func:`load_baseline` (or ``molml.load_model``) rebuilds the model from these files alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from molml._version import __version__
from molml.baselines.data import featurize
from molml.baselines.estimators import TASK_MODELS, TaskModel
from molml.chem.fingerprints import FingerprintFeaturizer, fingerprint_from_config
from molml.errors import CheckpointError

BASELINE_FORMAT = 1
SPEC_FILE = "baseline.json"
_KIND = "molml-baseline"


class BaselineModel:
    """Fingerprint features + one fitted estimator per task.

    Offers what ``molml.load_model`` gives for a graph model: ``tasks``, ``task_type``,
    ``featurizer`` and ``predict(smiles, batch_size)``.

    Args:
        featurizer: the fingerprint the estimators were trained on.
        tasks: task names, one model each.
        task_type: ``regression`` or ``classification``.
        estimator: ``xgboost`` or ``random_forest``.
        task_models: the fitted model of each task.
        fit_summaries: per task, what it was trained on (labelled rows, positives, trees, ...).
    """

    def __init__(
        self,
        featurizer: FingerprintFeaturizer,
        tasks: Sequence[str],
        task_type: str,
        estimator: str,
        task_models: Sequence[TaskModel],
        fit_summaries: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        if len(task_models) != len(tasks):
            raise ValueError(f"{len(task_models)} task models for {len(tasks)} tasks")
        self.featurizer = featurizer
        self.tasks = list(tasks)
        self.task_type = task_type
        self.estimator = estimator
        self.task_models = list(task_models)
        self.fit_summaries = list(fit_summaries or [{} for _ in tasks])

    def __repr__(self) -> str:
        return (
            f"BaselineModel(estimator={self.estimator!r}, featurizer={self.featurizer!r}, "
            f"tasks={self.tasks!r}, task_type={self.task_type!r})"
        )

    def prediction_columns(self) -> list[str]:
        """Names of the prediction columns: the tasks."""
        return list(self.tasks)

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """Predictions ``[n, tasks]`` for fingerprints ``X`` (values or probabilities)."""
        return np.stack([model.predict(X) for model in self.task_models], axis=1)

    def predict(self, smiles: Sequence[Any], batch_size: int = 1024) -> pd.DataFrame:
        """Predict for SMILES strings; one row per input, in input order.

        Columns: ``smiles``, one per task (original units or probabilities) and ``status``:
        ``ok`` or why the molecule failed (invalid SMILES, None, ...; its predictions are NaN).
        """
        smiles = list(smiles)
        values = np.full((len(smiles), len(self.tasks)), np.nan)
        status = ["ok"] * len(smiles)
        for start in range(0, len(smiles), batch_size):
            X, valid, errors = featurize(self.featurizer, smiles[start : start + batch_size])
            for position, reason in errors.items():
                status[start + position] = reason
            if valid.any():
                values[start + np.flatnonzero(valid)] = self.predict_features(X[valid])
        frame = pd.DataFrame(values, columns=self.tasks)
        frame.insert(0, "smiles", smiles)
        frame["status"] = status
        return frame

    def spec(self) -> dict[str, Any]:
        """Everything but the task models' own files, as plain data."""
        return {
            "kind": _KIND,
            "format": BASELINE_FORMAT,
            "molml_version": __version__,
            "estimator": self.estimator,
            "tasks": self.tasks,
            "task_type": self.task_type,
            "featurizer": self.featurizer.to_config(),
            "task_models": [
                {"file": _model_file(i, model), **summary}
                for i, (model, summary) in enumerate(
                    zip(self.task_models, self.fit_summaries, strict=True)
                )
            ],
        }

    def save(self, directory: str | Path) -> Path:
        """Write the model files and ``baseline.json`` (last) into ``directory``; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        spec = self.spec()
        for model, entry in zip(self.task_models, spec["task_models"], strict=True):
            model.save(directory / entry["file"])
        (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2))
        return directory


def _model_file(index: int, model: TaskModel) -> str:
    return f"task_{index:03d}{model.suffix}"


def load_baseline(path: str | Path) -> BaselineModel:
    """Load a baseline saved by :meth:`BaselineModel.save` (its directory or ``baseline.json``).

    Raises :class:`CheckpointError` with the reason for anything else.
    """
    path = Path(path)
    spec_path = path / SPEC_FILE if path.is_dir() else path
    if not spec_path.is_file():
        raise CheckpointError(f"no molml baseline at {path}: {spec_path} not found")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{spec_path}: cannot read baseline spec: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("kind") != _KIND:
        raise CheckpointError(f"{spec_path} is not a molml baseline spec")
    if spec.get("format") != BASELINE_FORMAT:
        raise CheckpointError(
            f"{spec_path} was written by molml {spec.get('molml_version', '?')} in baseline "
            f"format {spec.get('format')}; this molml {__version__} reads format {BASELINE_FORMAT}"
        )
    try:
        model_class = TASK_MODELS[spec["estimator"]]
        task_models = [model_class.load(spec_path.parent / e["file"]) for e in spec["task_models"]]
        return BaselineModel(
            featurizer=fingerprint_from_config(spec["featurizer"]),
            tasks=spec["tasks"],
            task_type=spec["task_type"],
            estimator=spec["estimator"],
            task_models=task_models,
            fit_summaries=[
                {k: v for k, v in entry.items() if k != "file"} for entry in spec["task_models"]
            ],
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise CheckpointError(f"{spec_path}: incomplete or unreadable baseline: {exc!r}") from exc
