"""Predictions of a fitted fingerprint baseline (:class:`~molml.baselines.BaselineModel`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from molml._version import __version__
from molml.baselines.model import BaselineModel
from molml.options import check_int
from molml.predict.base import (
    DEFAULT_BATCH_SIZE,
    SingleModelPredictor,
    as_smiles_list,
    checked_input,
)

RUN_METRICS_FILE = "metrics.json"  # written by ``molml baseline fit`` beside ``model/``


class BaselinePredictor(SingleModelPredictor):
    """A fingerprint + XGBoost / random-forest model.

    Args:
        model: the fitted baseline.
        source: the model directory it was loaded from, if any.
    """

    kind = "baseline"

    model: BaselineModel

    @property
    def metadata(self) -> dict[str, Any]:
        run = self._run_record()
        return {
            "kind": self.kind,
            "source": str(self.source) if self.source else None,
            "molml_version": __version__,
            "estimator": self.model.estimator,
            "tasks": self.tasks,
            "task_type": self.task_type,
            "training_data": {
                "train_sha256": self.model.train_sha256,
                "per_task": self.model.fit_summaries,
            },
            "test_metrics": run.get("test") if run else None,
            "featurizer": self.model.featurizer.to_config(),
        }

    def _run_record(self) -> dict[str, Any] | None:
        if self.source is None:
            return None
        directory = self.source if self.source.is_dir() else self.source.parent
        record = directory.parent / RUN_METRICS_FILE
        try:
            return json.loads(record.read_text()) if record.is_file() else None
        except (OSError, ValueError):
            return None

    def predict_values(self, smiles: list[Any], batch_size: int) -> tuple[np.ndarray, list[str]]:
        frame = self.model.predict(checked_input(smiles, batch_size), batch_size=batch_size)
        return frame[self.prediction_columns()].to_numpy(dtype=np.float64), frame["status"].tolist()

    def embed(
        self, smiles: str | Iterable[Any], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """The fingerprint features ``[n, dim]`` the estimators see (NaN rows for invalid
        SMILES)."""
        check_int(batch_size, "batch_size", minimum=1)
        return self.model.embed(as_smiles_list(smiles), batch_size=batch_size)
