"""A predictor calibrated on held-out molecules: conformal intervals (regression) or calibrated
probabilities (binary classification), saved as a small JSON file next to the model."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from molml._version import __version__
from molml.errors import CheckpointError, DataError
from molml.predict.base import DEFAULT_BATCH_SIZE, Predictor, manifest_entry
from molml.uncertainty import (
    ConformalInterval,
    ProbabilityCalibration,
    calibration_from_dict,
)

log = logging.getLogger(__name__)

CALIBRATED_KEY = "calibrated"
Calibration = ConformalInterval | ProbabilityCalibration


def check_calibratable(base: Predictor) -> None:
    """Refuse a model whose predictions molml cannot calibrate (multiclass)."""
    if base.task_type == "multiclass":
        raise DataError(
            "calibration supports regression and binary classification models; this one is "
            "multiclass"
        )


class CalibratedPredictor(Predictor):
    """A predictor whose outputs are calibrated per task.

    Regression: the base predictions plus ``<task>_lower`` / ``<task>_upper``, a split-conformal
    interval at the fitted level (``mu +- margin * <task>_std`` when the base model predicts a
    standard deviation, else ``mu +- margin``). Binary classification: the probability columns
    hold calibrated probabilities (Platt or isotonic); an ensemble's ``<task>_std`` stays the
    spread of its members' uncalibrated probabilities.

    Args:
        base: the predictor that is calibrated (a model, an ensemble, MC dropout).
        calibrations: task -> its fitted calibration.
        fitted_on: a record of the calibration data (source, split, molecules).
        source: the calibration file, if loaded from one.
    """

    kind = "calibrated"

    def __init__(
        self,
        base: Predictor,
        calibrations: dict[str, Calibration],
        fitted_on: dict[str, Any] | None = None,
        source: str | Path | None = None,
    ) -> None:
        check_calibratable(base)
        unknown = sorted(set(calibrations) - set(base.tasks))
        if unknown or not calibrations:
            raise CheckpointError(
                f"calibrated tasks {unknown or '[]'} are not among the model's tasks {base.tasks}"
            )
        expected = ConformalInterval if base.task_type == "regression" else ProbabilityCalibration
        for task, calibration in calibrations.items():
            if not isinstance(calibration, expected):
                raise CheckpointError(
                    f"task {task!r}: a {base.task_type} model needs a {expected.__name__}"
                )
            normalized = isinstance(calibration, ConformalInterval) and calibration.normalized
            if normalized and f"{task}_std" not in base.prediction_columns():
                raise CheckpointError(
                    f"task {task!r}: the interval scales a predicted standard deviation, "
                    "which this model does not give"
                )
        self.base = base
        self.calibrations = dict(calibrations)
        self.fitted_on = fitted_on or {}
        self.source = Path(source) if source is not None else None

    @property
    def members(self) -> list[Predictor]:
        return self.base.members

    @property
    def tasks(self) -> list[str]:
        return self.base.tasks

    @property
    def task_type(self) -> str:
        return self.base.task_type

    def prediction_columns(self) -> list[str]:
        columns = self.base.prediction_columns()
        if self.task_type != "regression":
            return columns
        bounds = [f"{t}_{side}" for t in self.calibrations for side in ("lower", "upper")]
        return [*columns, *bounds]

    @property
    def metadata(self) -> dict[str, Any]:
        base = self.base.metadata
        return {
            **base,  # what the calibrated model is: its training data, test metrics, ...
            "kind": self.kind,
            "source": str(self.source) if self.source else None,
            "calibrates": {"kind": base["kind"], "source": base.get("source")},
            "calibration": {t: c.to_dict() for t, c in self.calibrations.items()},
            "calibrated_on": self.fitted_on,
        }

    def calibrate(self, values: np.ndarray) -> np.ndarray:
        """The base predictor's ``[n, base columns]`` values -> this predictor's."""
        columns = self.base.prediction_columns()
        values = np.array(values, dtype=np.float64)
        bounds = []
        for task, calibration in self.calibrations.items():
            mu = values[:, columns.index(task)]
            if isinstance(calibration, ProbabilityCalibration):
                values[:, columns.index(task)] = calibration.transform(mu)
                continue
            sigma = values[:, columns.index(f"{task}_std")] if calibration.normalized else None
            bounds += list(calibration.bounds(mu, sigma))
        return np.column_stack([values, *bounds]) if bounds else values

    def combine_members(
        self, member_values: Sequence[np.ndarray], status: np.ndarray
    ) -> np.ndarray:
        return self.calibrate(self.base.combine_members(member_values, status))

    def predict_values(self, smiles: list[Any], batch_size: int) -> tuple[np.ndarray, list[str]]:
        values, status = self.base.predict_values(smiles, batch_size)
        return self.calibrate(values), status

    def embed(self, smiles: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        return self.base.embed(smiles, batch_size)

    @classmethod
    def fit(
        cls,
        base: Predictor,
        smiles: Sequence[str],
        targets: np.ndarray,
        *,
        level: float | None = None,
        method: str | None = None,
        normalized: bool | None = None,
        fitted_on: dict[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> CalibratedPredictor:
        """Calibrate ``base`` on labelled held-out molecules (``targets``: ``[n, tasks]`` in
        the base's task order, NaN = unlabelled).

        Regression: a conformal interval at ``level`` (default 0.9) per task, normalized by the
        base's ``<task>_std`` when it has one (``normalized=None``) or as asked.
        Classification: ``method`` ``isotonic`` (default) or ``platt``. A setting that does not
        apply to the model's task type is refused.
        """
        check_calibratable(base)
        regression = base.task_type == "regression"
        given = {"method": method} if regression else {"level": level, "normalized": normalized}
        for name, value in given.items():
            if value is not None:
                raise DataError(
                    f"{name}={value!r} does not apply to a {base.task_type} model ("
                    + ("its predictions get conformal intervals: see level and normalized)"
                       if regression else "its probabilities are calibrated: see method)")
                )  # fmt: skip
        targets = np.asarray(targets, dtype=float)
        n, width = len(smiles), len(base.tasks)
        if targets.size != n * width or (targets.ndim == 2 and targets.shape != (n, width)):
            raise DataError(
                f"targets must hold one value per molecule and task, shape ({n}, {width}) for "
                f"{n} molecules and tasks {base.tasks}; got shape {targets.shape}"
            )
        targets = targets.reshape(n, width)
        frame = base.predict(list(smiles), batch_size=batch_size)
        ok = (frame["status"] == "ok").to_numpy()
        columns = base.prediction_columns()
        calibrations: dict[str, Calibration] = {}
        left_out: dict[str, str] = {}  # task -> why it cannot be calibrated on these molecules
        for j, task in enumerate(base.tasks):
            y, mu = targets[ok, j], frame[task].to_numpy(dtype=float)[ok]
            labels = np.unique(y[np.isfinite(y)])
            if len(base.tasks) > 1 and (
                labels.size == 0 or (base.task_type != "regression" and labels.size < 2)
            ):  # sparse multitask labels: this task passes through uncalibrated
                left_out[task] = (
                    "no labelled calibration molecule"
                    if labels.size == 0
                    else f"one class only ({int(labels[0])}) among the calibration molecules"
                )
                continue
            try:
                if base.task_type != "regression":
                    calibrations[task] = ProbabilityCalibration.fit(y, mu, method or "isotonic")
                    continue
                has_std = f"{task}_std" in columns
                if normalized and not has_std:
                    raise DataError(
                        "normalized intervals need a model that predicts a standard deviation "
                        "(a mean-variance model, an ensemble or MC dropout)"
                    )
                use_std = has_std if normalized is None else normalized
                sigma = frame[f"{task}_std"].to_numpy(dtype=float)[ok] if use_std else None
                calibrations[task] = ConformalInterval.fit(
                    y, mu, sigma, 0.9 if level is None else level
                )
            except DataError as exc:
                raise DataError(f"task {task!r}: {exc}") from exc
        if not calibrations:
            raise DataError(
                "no task can be calibrated: "
                + "; ".join(f"task {task!r}: {why}" for task, why in left_out.items())
            )
        record = {"molecules": int(len(smiles)), "scored": int(ok.sum()), **(fitted_on or {})}
        if left_out:  # the others are: sparse multitask labels leave some tasks without data
            note = (
                f"{len(left_out)} of {len(base.tasks)} tasks are left uncalibrated (their "
                "predictions pass through as the model gives them): "
                + "; ".join(f"{task!r}: {why}" for task, why in left_out.items())
            )
            log.warning("calibrate: %s", note)
            record["warnings"] = [*record.get("warnings", []), note]
            record["uncalibrated_tasks"] = left_out
        return cls(base, calibrations, record)

    def save(self, path: str | Path) -> Path:
        """Write the calibration file: the files the base predictor's models were loaded from
        (stored relative to it) and its MC dropout passes, so that :func:`molml.load_model`
        opens it again as this predictor. A base model built in memory, with no file behind
        it, is refused."""
        path = Path(path)
        members = self.base.members
        unsaved = [m.kind for m in members if getattr(m, "source", None) is None]
        if unsaved:
            raise CheckpointError(
                f"cannot save a calibration of a {unsaved[0]} model that was not loaded from a "
                "file: load the model with molml.load_model, then calibrate it"
            )
        passes = {getattr(m, "mc_dropout", 0) for m in members if hasattr(m, "mc_dropout")}
        if len(passes) > 1:
            raise CheckpointError(
                f"the models are run with different MC dropout passes {sorted(passes)}; a "
                "calibration file records one"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = {
            CALIBRATED_KEY: {
                "models": [
                    os.path.relpath(Path(m.source).resolve(), path.parent.resolve())
                    for m in members
                ],
                "mc_dropout": passes.pop() if passes else 0,
                "tasks": {t: c.to_dict() for t, c in self.calibrations.items()},
                "fitted_on": self.fitted_on,
                "molml_version": __version__,
            }
        }
        path.write_text(json.dumps(manifest, indent=2) + "\n")
        return path


def read_calibration_file(
    path: Path,
) -> tuple[list[Path], int, dict[str, Calibration], dict[str, Any]] | None:
    """The model paths, MC dropout passes, calibrations and record of a calibration file, or
    None if ``path`` is not one."""
    body = manifest_entry(path, CALIBRATED_KEY)
    if body is None:
        return None
    try:
        models = [path.parent / m for m in body["models"]]
        tasks = {t: calibration_from_dict(c) for t, c in body["tasks"].items()}
        return models, int(body.get("mc_dropout", 0)), tasks, dict(body.get("fitted_on", {}))
    except (KeyError, TypeError, AttributeError, DataError) as exc:
        raise CheckpointError(f"{path}: not a valid calibration file ({exc})") from exc
