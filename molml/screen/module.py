"""Inference over screening chunks with one model or an ensemble, on whatever the Trainer gives.

Graph models run on the chunk's graphs in mini-batches on the Trainer's device and precision.
Other models (fingerprint baselines) are called through their ``predict(smiles)``. With several
models, each prediction column becomes the ensemble mean and gains a ``<column>_std`` column
(population standard deviation over the members).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn

from molml.errors import CheckpointError
from molml.models.module import MoleculeModel
from molml.screen.chunks import ScreenChunk, featurizer_key


def featurization_config(model: MoleculeModel) -> dict[str, Any]:
    """What a graph model needs computed per molecule: its graph featurizer and, if it uses
    them, its molecule-level features."""
    features = model.molecule_features
    return {
        "graph": model.featurizer.to_config(),
        "molecule_features": features.to_config() if features is not None else None,
    }


def prediction_columns(model: Any) -> list[str]:
    """The prediction columns a model's ``predict`` returns, in order."""
    if isinstance(model, MoleculeModel):
        return model.prediction_columns()
    if model.task_type == "multiclass":
        raise CheckpointError("multiclass models other than graph models cannot be screened")
    return list(model.tasks)


class ScreeningModule(L.LightningModule):
    """Runs the given models on :class:`ScreenChunk` batches (``Trainer.predict``).

    Args:
        models: loaded models (``molml.load_model``); they must predict the same columns.
        batch_size: molecules per forward pass of a graph model.
    """

    def __init__(self, models: Sequence[Any], batch_size: int = 128) -> None:
        super().__init__()
        if not models:
            raise ValueError("screening needs at least one model")
        self.columns = prediction_columns(models[0])
        for model in models[1:]:
            if prediction_columns(model) != self.columns:
                raise CheckpointError(
                    "ensemble members predict different columns: "
                    f"{self.columns} vs {prediction_columns(model)}"
                )
        self.graph_models = nn.ModuleList(m for m in models if isinstance(m, MoleculeModel))
        self.other_models = [m for m in models if not isinstance(m, MoleculeModel)]
        self.batch_size = batch_size

    @property
    def featurizers(self) -> dict[str, dict]:
        """Featurizer key -> config for every distinct featurization the graph models need."""
        configs = [featurization_config(m) for m in self.graph_models]
        return {featurizer_key(c): c for c in configs}

    @property
    def output_columns(self) -> list[str]:
        """Prediction columns of the output (``_std`` columns for an ensemble)."""
        if len(self.graph_models) + len(self.other_models) == 1:
            return list(self.columns)
        return [*self.columns, *(f"{c}_std" for c in self.columns)]

    @torch.no_grad()
    def predict_step(self, chunk: ScreenChunk, batch_idx: int) -> pd.DataFrame:
        rows = chunk.rows
        status = rows["status"].to_numpy(dtype=object)
        members = [self._graph_predictions(m, chunk, len(rows)) for m in self.graph_models]
        for model in self.other_models:
            frame = model.predict(rows["smiles"].tolist(), batch_size=self.batch_size)
            failed = (frame["status"] != "ok").to_numpy() & (status == "ok")
            status[failed] = frame["status"].to_numpy()[failed]
            members.append(frame[self.columns].to_numpy(dtype=np.float64))
        stacked = np.stack(members)
        stacked[:, status != "ok"] = np.nan
        out = rows.drop(columns="status")
        mean = stacked.mean(axis=0)
        for i, column in enumerate(self.columns):
            out[column] = mean[:, i]
        if len(members) > 1:
            std = stacked.std(axis=0)
            for i, column in enumerate(self.columns):
                out[f"{column}_std"] = std[:, i]
        out["status"] = status
        return out

    def _graph_predictions(self, model: MoleculeModel, chunk: ScreenChunk, n: int) -> np.ndarray:
        store = chunk.graphs[featurizer_key(featurization_config(model))]
        values = np.full((n, len(self.columns)), np.nan)
        positions = store.rows.cpu().numpy()
        for start in range(0, len(store), self.batch_size):
            stop = min(start + self.batch_size, len(store))
            out = model.to_prediction(model(store.batch(start, stop)))
            values[positions[start:stop]] = out.reshape(stop - start, -1).float().cpu().numpy()
        return values
