"""A fitted fingerprint baseline with the inference interface of a graph model.

On disk a baseline is a directory: ``baseline.json`` (format number, molml version, estimator,
tasks, task type, the fingerprint's config and one entry per task model) and one model file per
task (XGBoost JSON, or the random forest's node arrays as ``.npz``). Nothing is pickled, and
:func:`load_baseline` (or ``molml.load_model``) rebuilds the model from these files alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from molml._version import __version__
from molml.baselines.data import featurize
from molml.baselines.estimators import TASK_MODELS, TaskModel
from molml.chem.fingerprints import FingerprintFeaturizer, fingerprint_from_config
from molml.errors import NON_FINITE, CheckpointError, DataError
from molml.options import check_int

BASELINE_FORMAT = 1
SPEC_FILE = "baseline.json"
TASK_TYPES = ("regression", "classification")
_KIND = "molml-baseline"
_SPEC_KEYS = (
    "kind",
    "format",
    "molml_version",
    "estimator",
    "tasks",
    "task_type",
    "featurizer",
    "task_models",
)


class BaselineModel:
    """Fingerprint features + one fitted estimator per task.

    Offers what ``molml.load_model`` gives for a graph model: ``tasks``, ``task_type``,
    ``featurizer``, ``predict(smiles, batch_size)`` and ``embed(smiles, batch_size)``.

    Args:
        featurizer: the fingerprint the estimators were trained on.
        tasks: task names, one model each.
        task_type: ``regression`` or ``classification``.
        estimator: ``xgboost`` or ``random_forest``.
        task_models: the fitted model of each task.
        fit_summaries: per task, what it was trained on (labelled rows, positives, trees, ...).
        train_sha256: fingerprint of the training part (``training_part_fingerprint``), by
            which a later test on other data or another split is noticed.
    """

    def __init__(
        self,
        featurizer: FingerprintFeaturizer,
        tasks: Sequence[str],
        task_type: str,
        estimator: str,
        task_models: Sequence[TaskModel],
        fit_summaries: Sequence[dict[str, Any]] | None = None,
        train_sha256: str | None = None,
    ) -> None:
        if len(task_models) != len(tasks):
            raise ValueError(f"{len(task_models)} task models for {len(tasks)} tasks")
        self.featurizer = featurizer
        self.tasks = list(tasks)
        self.task_type = task_type
        self.estimator = estimator
        self.task_models = list(task_models)
        self.fit_summaries = list(fit_summaries or [{} for _ in tasks])
        self.train_sha256 = train_sha256

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

    def predict(self, smiles: str | Iterable[Any], batch_size: int = 1024) -> pd.DataFrame:
        """Predict for SMILES strings (one string is one molecule); one row per input, in order.

        Columns: ``smiles``, one per task (original units or probabilities) and ``status``:
        ``ok`` or why the molecule failed (invalid SMILES, None, ...; its predictions are NaN).
        """
        smiles = _smiles_list(smiles)
        _check_batch_size(batch_size)
        values = np.full((len(smiles), len(self.tasks)), np.nan)
        status = ["ok"] * len(smiles)
        for start in range(0, len(smiles), batch_size):
            X, valid, errors = featurize(self.featurizer, smiles[start : start + batch_size])
            for position, reason in errors.items():
                status[start + position] = reason
            if valid.any():
                values[start + np.flatnonzero(valid)] = self.predict_features(X[valid])
        finite = np.isfinite(values).all(axis=1)
        status = [
            NON_FINITE if s == "ok" and not ok else s for s, ok in zip(status, finite, strict=True)
        ]
        frame = pd.DataFrame(values, columns=self.tasks)
        frame.insert(0, "smiles", _text_column(smiles))
        frame["status"] = _text_column(status)
        return frame

    def embed(self, smiles: str | Iterable[Any], batch_size: int = 1024) -> np.ndarray:
        """The representation the estimators see: fingerprint features, float32
        ``[n, featurizer.dim]``, in input order, with NaN rows for invalid SMILES (None, ...).

        A baseline learns no embedding of its own; this is its featurizer's output.
        """
        smiles = _smiles_list(smiles)
        _check_batch_size(batch_size)
        X = np.empty((len(smiles), self.featurizer.dim), dtype=np.float32)
        for start in range(0, len(smiles), batch_size):
            X[start : start + batch_size] = self.featurizer.transform(
                smiles[start : start + batch_size]
            )[0]
        return X

    def spec(self) -> dict[str, Any]:
        """Everything but the task models' own files, as plain data."""
        recorded = {"train_sha256": self.train_sha256} if self.train_sha256 else {}
        return {
            **recorded,
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


def _smiles_list(smiles: str | Iterable[Any]) -> list[Any]:
    """The molecules of a ``predict`` / ``embed`` call: one SMILES string or an iterable."""
    if isinstance(smiles, str):
        return [smiles]
    if not isinstance(smiles, Iterable):
        raise DataError(
            f"expected a SMILES string or an iterable of SMILES strings, got "
            f"{type(smiles).__name__}"
        )
    return list(smiles)


def _check_batch_size(batch_size: int) -> None:
    check_int(batch_size, "batch_size", minimum=1)  # numpy integers too, as graph models


def _text_column(values: list[Any]) -> pd.Series:
    """A column of text; when empty, still text rather than pandas' default float."""
    return pd.Series(values, dtype=None if values else "str")


def load_baseline(path: str | Path) -> BaselineModel:
    """Load a baseline saved by :meth:`BaselineModel.save` (its directory or ``baseline.json``).

    The spec is checked entry by entry, task files must be plain file names inside the model
    directory, and every task model is checked against the fingerprint before it is used.
    Raises :class:`CheckpointError` with the reason for anything else.
    """
    path = Path(path)
    spec_path = path / SPEC_FILE if path.is_dir() else path
    if not spec_path.is_file():
        hint = ""
        if path.is_dir() and (path / "checkpoints").is_dir():
            hint = f" ({path} is a graph model's run: its model is checkpoints/best.ckpt)"
        elif path.is_dir() and (saved := sorted(p.name for p in path.glob("*.ckpt"))):
            hint = f" ({path} holds graph checkpoints: load one of them, e.g. {saved[0]})"
        raise CheckpointError(f"no molml baseline at {path}: {spec_path} not found{hint}")
    if path.suffix in (".ckpt", ".onnx", ".pt2"):
        raise CheckpointError(
            f"{path} is a graph model file, not a baseline (a directory with {SPEC_FILE}); "
            "graph models are used by molml predict, screen, explain or molml.load_model"
        )
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{spec_path}: cannot read baseline spec: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("kind") != _KIND:
        raise CheckpointError(f"{spec_path} is not a molml baseline spec")
    if type(spec.get("format")) is not int or spec["format"] != BASELINE_FORMAT:
        raise CheckpointError(
            f"{spec_path} was written by molml {spec.get('molml_version', '?')} in baseline "
            f"format {spec.get('format')!r}; this molml {__version__} reads format "
            f"{BASELINE_FORMAT}"
        )
    _check_spec(spec, spec_path)
    featurizer = _featurizer(spec["featurizer"], spec_path)
    model_class = TASK_MODELS[spec["estimator"]]
    task_models = [
        model_class.load(_task_file(spec_path, entry["file"]), n_features=featurizer.dim)
        for entry in spec["task_models"]
    ]
    return BaselineModel(
        featurizer=featurizer,
        tasks=spec["tasks"],
        task_type=spec["task_type"],
        estimator=spec["estimator"],
        task_models=task_models,
        fit_summaries=[
            {k: v for k, v in entry.items() if k != "file"} for entry in spec["task_models"]
        ],
        train_sha256=spec.get("train_sha256"),
    )


def _check_spec(spec: dict[str, Any], spec_path: Path) -> None:
    """Refuse a spec whose keys, types or values :meth:`BaselineModel.spec` would not write."""

    def refuse(reason: str) -> CheckpointError:
        return CheckpointError(f"{spec_path}: {reason}")

    missing = [key for key in _SPEC_KEYS if key not in spec]
    if missing:
        raise refuse(f"missing keys {missing}; a baseline spec has {list(_SPEC_KEYS)}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS) - {"train_sha256"})
    if unknown:
        raise refuse(f"unknown keys {unknown}; a baseline spec has {list(_SPEC_KEYS)}")
    if not isinstance(spec.get("train_sha256", ""), str):
        raise refuse(f"train_sha256 must be a string, got {spec['train_sha256']!r}")
    if not isinstance(spec["molml_version"], str):
        raise refuse(f"molml_version must be a string, got {spec['molml_version']!r}")
    if spec["estimator"] not in TASK_MODELS:
        raise refuse(f"estimator {spec['estimator']!r} is not one of {sorted(TASK_MODELS)}")
    if spec["task_type"] not in TASK_TYPES:
        raise refuse(f"task_type {spec['task_type']!r} is not one of {list(TASK_TYPES)}")
    tasks = spec["tasks"]
    if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) and t for t in tasks)):
        raise refuse(f"tasks must be a non-empty list of task names, got {tasks!r}")
    if len(set(tasks)) != len(tasks):
        raise refuse(f"tasks must be unique, got {tasks!r}")
    entries = spec["task_models"]
    if not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
        raise refuse(f"task_models must be a list of objects, one per task, got {entries!r}")
    if len(entries) != len(tasks):
        raise refuse(f"{len(tasks)} tasks but {len(entries)} task model entries")
    for entry in entries:
        if not isinstance(entry.get("file"), str):
            raise refuse(f"task model entry {entry!r} has no file name")
    if not isinstance(spec["featurizer"], dict):
        raise refuse(f"featurizer must be a fingerprint config object, got {spec['featurizer']!r}")


def _featurizer(config: dict[str, Any], spec_path: Path) -> FingerprintFeaturizer:
    """The stored fingerprint, checked on one molecule: it must give ``dim`` features."""
    try:
        featurizer = fingerprint_from_config(config)
        features = featurizer("C")
    except (TypeError, ValueError, KeyError) as exc:  # InvalidMoleculeError is a ValueError
        raise CheckpointError(f"{spec_path}: featurizer {config!r} cannot be built: {exc}") from exc
    if np.shape(features) != (featurizer.dim,):
        raise CheckpointError(
            f"{spec_path}: featurizer {config!r} gives {np.shape(features)} features for "
            f"methane, not {featurizer.dim!r}"
        )
    return featurizer


def _task_file(spec_path: Path, name: str) -> Path:
    """The task file ``name`` of the model directory; only a plain file name in it is taken."""
    directory = spec_path.parent
    if name in ("", ".", "..") or Path(name).name != name or any(c in name for c in "/\\\0"):
        raise CheckpointError(
            f"{spec_path}: task file {name!r} is not a plain file name in the model directory"
        )
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise CheckpointError(
            f"{spec_path}: task file {name!r} leads outside the model directory "
            f"(to {path.resolve()})"
        )
    return path
