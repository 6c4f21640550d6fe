"""Inference over screening chunks with any :class:`~molml.predict.Predictor`, on whatever
device and precision the Trainer gives.

Graph models run on the chunk's pre-featurized graphs in mini-batches (their weights are
submodules of this LightningModule, so the Trainer places them). Other models (fingerprint
baselines) are called through their ``predict_values(smiles)``. An ensemble's columns are the
members' mean plus ``<column>_std`` (population standard deviation over the members).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn

from molml.errors import NON_FINITE
from molml.predict import GraphPredictor, Predictor
from molml.screen.chunks import ScreenChunk, featurizer_key


class ScreeningModule(L.LightningModule):
    """Runs a predictor on :class:`ScreenChunk` batches (``Trainer.predict``).

    Args:
        predictor: a loaded model or ensemble (``molml.load_model``).
        batch_size: molecules per forward pass of a graph model.
    """

    def __init__(self, predictor: Predictor, batch_size: int = 128) -> None:
        super().__init__()
        self.predictor = predictor
        self.members = predictor.members
        # registered as submodules so the Trainer moves them to its device
        self.graph_models = nn.ModuleList(
            m.model for m in self.members if isinstance(m, GraphPredictor)
        )
        self.batch_size = batch_size

    @property
    def featurizers(self) -> dict[str, dict[str, Any]]:
        """Featurizer key -> config for every distinct featurization the graph models need."""
        configs = [m.featurization for m in self.members if isinstance(m, GraphPredictor)]
        return {featurizer_key(c): c for c in configs}

    @property
    def output_columns(self) -> list[str]:
        """Prediction columns of the output (with the predictor's uncertainty columns)."""
        return self.predictor.prediction_columns()

    @torch.no_grad()
    def predict_step(self, chunk: ScreenChunk, batch_idx: int) -> pd.DataFrame:
        rows = chunk.rows
        status = rows["status"].to_numpy(dtype=object)
        member_values = []
        for member in self.members:
            values, member_status = self._member_values(member, chunk)
            failed = (member_status != "ok") & (status == "ok")
            status[failed] = member_status[failed]
            member_values.append(values)
        values = self.predictor.combine_members(member_values, status)
        status[(status == "ok") & ~np.isfinite(values).all(axis=1)] = NON_FINITE
        out = rows.drop(columns="status")
        for i, column in enumerate(self.output_columns):
            out[column] = values[:, i]
        out["status"] = status
        return out

    def _member_values(
        self, member: Predictor, chunk: ScreenChunk
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(chunk.rows)
        if isinstance(member, GraphPredictor):
            store = chunk.graphs[featurizer_key(member.featurization)]
            values = np.full((n, len(member.prediction_columns())), np.nan)
            values[store.rows.cpu().numpy()] = member.predict_store(store, self.batch_size)
            return values, np.full(n, "ok", dtype=object)
        values, status = member.predict_values(chunk.rows["smiles"].tolist(), self.batch_size)
        return np.array(values, dtype=np.float64), np.asarray(status, dtype=object)
