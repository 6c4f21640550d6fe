"""Molecule embeddings of a pretrained graph encoder as baseline features.

``features: {name: pretrained, params: {model: zinc-dmpnn}}`` puts XGBoost or a random forest
on the readout embedding of a shipped pretrained encoder or of any molml checkpoint. A saved
baseline records the encoder (shipped name, or the checkpoint's absolute path) and its SHA-256,
and refuses to load when that file is gone or has changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rdkit import Chem
from tqdm.auto import tqdm

from molml.chem.fingerprints import FingerprintFeaturizer, register_fingerprint
from molml.data.graphs import GraphStore, featurize_block
from molml.data.registry import sha256_of
from molml.errors import CheckpointError, InvalidMoleculeError
from molml.models.checkpoint import load_checkpoint
from molml.models.pretrained import SHIPPED, pretrained_names, pretrained_path
from molml.options import check_int


@register_fingerprint
class PretrainedEmbedding(FingerprintFeaturizer):
    """The readout embedding of a trained molml graph model, as fixed features (computed in
    float64, so a molecule's features do not depend on the batch it is embedded in).

    Args:
        model: a shipped pretrained encoder (``zinc-dmpnn``; see
            :func:`~molml.models.pretrained.pretrained_names`) or a molml checkpoint file.
        batch_size: molecules per forward pass.
        sha256: the SHA-256 the checkpoint must have (saved baselines record it).
    """

    config_name = "pretrained"

    def __init__(self, model: str, batch_size: int = 256, sha256: str | None = None) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(
                f"pretrained features need model: one of {pretrained_names()} or a molml "
                f"checkpoint file, got {model!r}"
            )
        check_int(batch_size, "batch_size", minimum=1)
        try:
            path = pretrained_path(model)
        except CheckpointError as exc:
            if sha256 is None:
                raise
            raise CheckpointError(
                f"these features come from pretrained encoder {model!r}, which is gone: {exc}"
            ) from exc
        digest = sha256_of(path)
        if sha256 is not None and digest != sha256:
            raise CheckpointError(
                f"pretrained encoder {model!r} ({path}) has changed since these features were "
                f"made: its SHA-256 is {digest}, not {sha256}"
            )
        self.model = model if model in SHIPPED else str(path.resolve())
        self.batch_size = batch_size
        self.sha256 = digest
        network, _ = load_checkpoint(path)
        # float64: float32 sums come out in the last bits differently with the molecules a
        # batch holds, and a tree's split turns 1e-5 into a jump; float64, rounded to float32,
        # gives every molecule the same features in any batch
        self.network = network.double()
        self.name = f"pretrained_{model if model in SHIPPED else path.stem}"

    @property
    def dim(self) -> int:
        return self.network.embedding_dim

    @property
    def batched(self) -> bool:
        return True

    def _params(self) -> dict[str, Any]:
        return {"model": self.model, "batch_size": self.batch_size, "sha256": self.sha256}

    def _featurize(self, mol: Chem.Mol) -> np.ndarray:
        arrays, errors, _, _ = featurize_block(self.network.featurizer, [mol])
        if errors:
            raise InvalidMoleculeError(errors[0])
        return self._embed(arrays)[0]

    @torch.no_grad()
    def _embed(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings of the molecules of one :func:`featurize_block` result."""
        batch = GraphStore.from_arrays([arrays]).batch(0, len(arrays["positions"]))
        batch.x, batch.edge_attr = batch.x.double(), batch.edge_attr.double()
        return self.network.embed_batch(batch).float().numpy()

    def transform(
        self, smiles: Sequence[str], *, n_jobs: int = 1, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``(X, valid)`` of many SMILES, ``batch_size`` molecules per forward pass;
        NaN rows and ``valid`` False for invalid molecules. Runs in this process (``n_jobs`` is
        not used)."""
        smiles = list(smiles)
        X = np.full((len(smiles), self.dim), np.nan, dtype=np.float32)
        valid = np.zeros(len(smiles), dtype=bool)
        with tqdm(total=len(smiles), disable=not progress, desc=self.name, unit="mol") as bar:
            for start in range(0, len(smiles), self.batch_size):
                chunk = smiles[start : start + self.batch_size]
                arrays, _, _, _ = featurize_block(self.network.featurizer, chunk, start=start)
                positions = arrays["positions"]
                if len(positions):
                    X[positions] = self._embed(arrays)
                    valid[positions] = True
                bar.update(len(chunk))
        return X, valid
