"""Applicability domain: how similar a molecule is to the molecules a model was trained on.

A :class:`ReferenceSet` holds the Morgan fingerprints (radius 2, 2048 bits, ECFP4) of the
training molecules; a molecule whose maximum Tanimoto similarity to all of them is below the
threshold (default 0.3) is *far from the training set*, where predictions deserve less trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import DataStructs
from rdkit.Chem import rdFingerprintGenerator

from molml.chem.parsing import parse_smiles
from molml.data.readers import read_molecules
from molml.errors import DataError, InvalidMoleculeError

DEFAULT_SIMILARITY_THRESHOLD = 0.3
"""Maximum Tanimoto similarity (ECFP4, 2048 bits) below which a molecule is far from the
training set. Random pairs of drug-like molecules mostly score 0.1-0.3 on ECFP4; close analogues
score above 0.5."""

_RADIUS, _N_BITS = 2, 2048


class ReferenceSet:
    """ECFP4 fingerprints of reference (training) molecules and a similarity threshold.

    Args:
        smiles: the reference molecules; invalid ones are skipped and counted.
        threshold: similarity below which a molecule is far from the reference set.
        source: where the molecules came from (reported by :meth:`describe`).
    """

    def __init__(
        self,
        smiles: Sequence[Any],
        threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
        source: str | None = None,
    ) -> None:
        if not 0 <= threshold <= 1:
            raise DataError(f"similarity threshold must be within [0, 1], got {threshold!r}")
        self.threshold = threshold
        self.source = source
        self._generator = rdFingerprintGenerator.GetMorganGenerator(radius=_RADIUS, fpSize=_N_BITS)
        self.fingerprints: list[DataStructs.ExplicitBitVect] = []
        self.skipped = 0
        for item in smiles:
            try:
                self.fingerprints.append(self._fingerprint(parse_smiles(item)))
            except InvalidMoleculeError:
                self.skipped += 1
        if not self.fingerprints:
            where = f" in {source}" if source else ""
            raise DataError(f"no valid reference molecule{where}")

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
        smiles_column: str | None = None,
    ) -> ReferenceSet:
        """Reference molecules from any molecule file molml reads (CSV, SMI, SDF, Parquet)."""
        frame = read_molecules(path, smiles_column=smiles_column, columns=[])
        return cls(frame["smiles"].tolist(), threshold, source=str(path))

    def _fingerprint(self, mol: Any) -> DataStructs.ExplicitBitVect:
        return self._generator.GetFingerprint(mol)

    def max_similarity(self, smiles: Sequence[Any]) -> np.ndarray:
        """Largest Tanimoto similarity of each molecule to the reference set (NaN when the
        SMILES is invalid)."""
        out = np.full(len(smiles), np.nan)
        for i, item in enumerate(smiles):
            try:
                fingerprint = self._fingerprint(parse_smiles(item))
            except InvalidMoleculeError:
                continue
            out[i] = max(DataStructs.BulkTanimotoSimilarity(fingerprint, self.fingerprints))
        return out

    def describe(self) -> dict[str, Any]:
        """What ``GET /models`` reports about the reference set."""
        return {
            "reference": self.source,
            "molecules": len(self.fingerprints),
            "skipped_invalid": self.skipped,
            "fingerprint": f"Morgan radius {_RADIUS}, {_N_BITS} bits (ECFP4)",
            "similarity": "maximum Tanimoto similarity to the reference molecules",
            "far_below": self.threshold,
        }
