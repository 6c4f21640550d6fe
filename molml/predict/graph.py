"""Predictions of a trained graph model (:class:`~molml.models.MoleculeModel`) from SMILES."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from molml._version import __version__
from molml.callbacks import TEST_METRICS_FILE
from molml.data.graphs import GraphStore, featurize_block
from molml.errors import PredictorError
from molml.models.module import MoleculeModel
from molml.models.precision import bucketed_rows
from molml.options import check_int
from molml.predict.base import (
    DEFAULT_BATCH_SIZE,
    SingleModelPredictor,
    as_smiles_list,
    checked_input,
)

MC_DROPOUT_SEED = 0


class GraphPredictor(SingleModelPredictor):
    """A trained :class:`MoleculeModel` that featurizes SMILES itself.

    Args:
        model: the trained model (put in eval mode).
        spec: the checkpoint's spec (training data, versions), if loaded from a file.
        source: the checkpoint file it came from, if any.
        mc_dropout: if > 0, Monte Carlo dropout: predictions are the mean of this many
            forward passes with every dropout of the model active (the model in training mode,
            except batch norm, which keeps its running statistics), and every prediction column
            gets a ``<column>_std`` (the passes' standard deviation; for a mean-variance model
            combined with its predicted variance). The passes are seeded, so the same molecules
            in the same batches give the same numbers; other batch sizes draw other masks.
    """

    kind = "graph"

    model: MoleculeModel

    def __init__(
        self,
        model: MoleculeModel,
        spec: dict[str, Any] | None = None,
        source: str | Path | None = None,
        mc_dropout: int = 0,
    ) -> None:
        super().__init__(model.eval(), source)
        self.spec = spec or model.spec()
        check_int(mc_dropout, "mc_dropout", minimum=0)
        if mc_dropout == 1:
            raise PredictorError(
                "mc_dropout 1 is one pass, which has no spread between passes: use 0 (off) or "
                "at least 2 passes"
            )
        if mc_dropout and not _has_dropout(model):
            raise PredictorError(
                "MC dropout needs a model trained with dropout; this one has none (set "
                "model.dropout and/or the encoder's dropout when training)"
            )
        self.mc_dropout = mc_dropout

    def prediction_columns(self) -> list[str]:
        columns = self.model.prediction_columns()
        if not self.mc_dropout or self.model.hparams.mean_variance:
            return columns
        return [*columns, *(f"{c}_std" for c in columns)]

    @property
    def featurization(self) -> dict[str, Any]:
        """What must be computed per molecule: the graph featurizer's config and the
        molecule-level features' config (or None)."""
        features = self.model.molecule_features
        return {
            "graph": self.model.featurizer.to_config(),
            "molecule_features": features.to_config() if features is not None else None,
        }

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": str(self.source) if self.source else None,
            "molml_version": __version__,
            "trained_with_molml": self.spec.get("molml_version"),
            "encoder": self.spec["encoder"]["class_path"].rsplit(".", 1)[-1],
            "encoder_args": dict(self.spec["encoder"].get("init_args", {})),
            "tasks": self.tasks,
            "task_type": self.task_type,
            "training_data": self.spec.get("training_data"),
            "pretrained_from": self.spec.get("pretrained_from"),
            "test_metrics": self._recorded_test_metrics(),
            "featurizer": self.featurization,
            "mc_dropout": self.mc_dropout,
        }

    def _recorded_test_metrics(self) -> dict[str, float] | None:
        """Test metrics of this checkpoint as its own run recorded them (``molml fit``, or
        tune/cv testing their fits); a later ``molml test`` records in its own run."""
        if self.source is None:
            return None
        record = self.source.parent.parent / TEST_METRICS_FILE
        if not record.is_file():
            return None
        try:
            metrics = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        return metrics.get(self.source.name) if isinstance(metrics, dict) else None

    @torch.no_grad()
    def predict_store(self, store: GraphStore, batch_size: int) -> np.ndarray:
        """Predictions ``[len(store), columns]`` for featurized molecules, on the model's
        device (and precision, under the caller's autocast; then with bucketed row counts, see
        :mod:`molml.models.precision`)."""
        model = self.model
        store = store.to(model.device)
        passes = max(1, self.mc_dropout)
        out = np.empty((passes, len(store), len(model.prediction_columns())), dtype=np.float64)
        with _dropout_active(model, self.mc_dropout > 0), _autocast_shapes(model):
            for sample in range(passes):
                for start in range(0, len(store), batch_size):
                    stop = min(start + batch_size, len(store))
                    values = model.to_prediction(model(store.batch(start, stop)))
                    out[sample, start:stop] = values.reshape(stop - start, -1).float().cpu().numpy()
        if not self.mc_dropout:
            return out[0]
        n_point = len(self.point_columns())
        variance = out[:, :, :n_point].var(axis=0)
        if self.model.hparams.mean_variance:  # the model's own (aleatoric) variance
            variance += (out[:, :, n_point:] ** 2).mean(axis=0)
        return np.concatenate([out[:, :, :n_point].mean(axis=0), np.sqrt(variance)], axis=1)

    @torch.no_grad()
    def _embed_store(self, store: GraphStore, batch_size: int) -> np.ndarray:
        model = self.model
        store = store.to(model.device)
        out = np.empty((len(store), model.embedding_dim), dtype=np.float32)
        with _autocast_shapes(model):
            for start in range(0, len(store), batch_size):
                stop = min(start + batch_size, len(store))
                out[start:stop] = model.embed_batch(store.batch(start, stop)).float().cpu().numpy()
        return out

    def _featurize(self, smiles: list[Any]) -> tuple[GraphStore, np.ndarray, list[str]]:
        arrays, errors, _, _ = featurize_block(
            self.model.featurizer, smiles, molecule_features=self.model.molecule_features
        )
        status = [errors.get(i, "ok") for i in range(len(smiles))]
        return GraphStore.from_arrays([arrays]), arrays["positions"], status

    def predict_values(self, smiles: list[Any], batch_size: int) -> tuple[np.ndarray, list[str]]:
        smiles = checked_input(smiles, batch_size)
        store, positions, status = self._featurize(smiles)
        values = np.full((len(smiles), len(self.prediction_columns())), np.nan)
        values[positions] = self.predict_store(store, batch_size)
        return values, status

    def embed(
        self, smiles: str | Iterable[Any], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """Learned molecule embeddings (the readout's output) ``[n, dim]``; NaN rows for
        invalid SMILES."""
        check_int(batch_size, "batch_size", minimum=1)
        smiles = as_smiles_list(smiles)
        store, positions, _ = self._featurize(smiles)
        values = np.full((len(smiles), self.model.embedding_dim), np.nan, dtype=np.float32)
        values[positions] = self._embed_store(store, batch_size)
        return values


def _has_dropout(model: MoleculeModel) -> bool:
    """Whether any dropout (a layer, or an encoder's attention dropout) is non-zero."""
    layers = (m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd))
    encoder = model.encoder.config
    return any(m.p > 0 for m in layers) or encoder.get("attention_dropout", 0) > 0


def _autocast_shapes(model: MoleculeModel) -> AbstractContextManager[None]:
    """Bucketed linear-layer rows while autocast (reduced precision) is on for the model's
    device: a bounded set of kernel shapes instead of one per batch."""
    if torch.is_autocast_enabled(model.device.type):
        return bucketed_rows(model)
    return nullcontext()


_MC_DROPOUT_LOCK = threading.Lock()


@contextmanager
def _dropout_active(model: MoleculeModel, active: bool) -> Iterator[None]:
    """The model in training mode (so functional and attention dropout are active too) but
    batch norm in eval mode, under a fixed seed, without touching the caller's random state;
    the model is back in eval mode afterwards."""
    if not active:
        yield
        return
    devices = [model.device] if model.device.type != "cpu" else []
    # the seed and the mode are process-wide state: one MC-dropout call at a time
    with _MC_DROPOUT_LOCK, torch.random.fork_rng(devices=devices, device_type=model.device.type):
        torch.manual_seed(MC_DROPOUT_SEED)
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
        try:
            yield
        finally:
            model.eval()
