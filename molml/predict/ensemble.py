"""An ensemble of trained models predicting the same columns: their mean and spread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from molml._version import __version__
from molml.errors import CheckpointError, PredictorError
from molml.predict.base import Predictor, checked_input


class EnsemblePredictor(Predictor):
    """The mean of several predictors (graph models and baselines may be mixed).

    ``predict`` returns the members' mean in each point column plus ``<column>_std``, the
    population standard deviation over the members; where the members predict a standard
    deviation themselves (mean-variance models, MC dropout), ``<column>_std`` is the total:
    ``sqrt(var over members of the means + mean over members of their variances)``. A molecule
    is ``ok`` only if every member could score it; otherwise its status is the first member's
    reason.
    """

    kind = "ensemble"

    def __init__(self, members: Sequence[Predictor]) -> None:
        for member in members:
            if member.kind == "calibrated":
                raise CheckpointError(
                    "a calibrated model cannot be an ensemble member (its calibration would be "
                    "lost); calibrate the ensemble instead: molml calibrate --model A --model B"
                )
        flat = [single for member in members for single in member.members]
        if len(flat) < 2:
            raise CheckpointError("an ensemble needs at least two models")
        columns = flat[0].prediction_columns()
        for member in flat[1:]:
            same_tasks = member.point_columns() == flat[0].point_columns()
            if (
                same_tasks
                and member.task_type == flat[0].task_type
                and (member.prediction_columns() != columns)
            ):
                first_has_std = len(columns) > len(member.prediction_columns())
                with_std, without = (flat[0], member) if first_has_std else (member, flat[0])
                raise PredictorError(
                    "ensemble members must all predict their own standard deviation or none: "
                    f"{_named(with_std)} does (a mean-variance model), {_named(without)} not"
                )
            if member.prediction_columns() != columns or member.task_type != flat[0].task_type:
                raise PredictorError(
                    "ensemble members predict different things: "
                    f"{flat[0].task_type} {columns} vs {member.task_type} "
                    f"{member.prediction_columns()}"
                )
        self._members = flat

    @property
    def members(self) -> list[Predictor]:
        return list(self._members)

    @property
    def tasks(self) -> list[str]:
        return self._members[0].tasks

    @property
    def task_type(self) -> str:
        return self._members[0].task_type

    def prediction_columns(self) -> list[str]:
        columns = self._members[0].point_columns()
        return [*columns, *(f"{c}_std" for c in columns)]

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "molml_version": __version__,
            "tasks": self.tasks,
            "task_type": self.task_type,
            "members": [member.metadata for member in self._members],
        }

    def combine_members(
        self, member_values: Sequence[np.ndarray], status: np.ndarray
    ) -> np.ndarray:
        """Mean and standard deviation over the members' ``[n, member columns]`` values, NaN
        where ``status`` is not ``ok``; returns ``[n, len(prediction_columns())]``."""
        stacked = np.stack(member_values).astype(np.float64)
        stacked[:, status != "ok"] = np.nan
        columns = self._members[0].prediction_columns()
        points = self._members[0].point_columns()
        means = stacked[:, :, [columns.index(c) for c in points]]
        variance = means.var(axis=0)
        for k, column in enumerate(points):
            if f"{column}_std" in columns:
                variance[:, k] += (stacked[:, :, columns.index(f"{column}_std")] ** 2).mean(axis=0)
        return np.concatenate([means.mean(axis=0), np.sqrt(variance)], axis=1)

    def predict_values(self, smiles: list[Any], batch_size: int) -> tuple[np.ndarray, list[str]]:
        smiles = checked_input(smiles, batch_size)
        status = np.full(len(smiles), "ok", dtype=object)
        member_values = []
        for member in self._members:
            values, member_status = member.predict_values(smiles, batch_size)
            failed = (np.asarray(member_status, dtype=object) != "ok") & (status == "ok")
            status[failed] = np.asarray(member_status, dtype=object)[failed]
            member_values.append(values)
        return self.combine_members(member_values, status), status.tolist()


def _named(member: Predictor) -> str:
    """A member as a message names it: its file, else its kind."""
    source = getattr(member, "source", None)
    return str(source) if source is not None else f"a {member.kind} model"
