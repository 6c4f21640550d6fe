"""Training data of a baseline: the graph models' table, validation and split, with fingerprints.

Reading, target validation, invalid-molecule reports and splitting are
:class:`~molml.data.datamodule.MoleculeTable`'s, as in the graph data module. Splits are made
over the molecules that parse, with the same scaffolds (:func:`~molml.data.splits.split_keys`
of the molecule, standardized with ``data.standardize`` as a graph featurizer with
``standardize: true`` does) and the same seed, so a baseline and a graph model given the same
data options get the same split indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from molml.baselines.config import DataConfig
from molml.chem.fingerprints import FingerprintFeaturizer
from molml.chem.parsing import parse_smiles
from molml.data.datamodule import MoleculeTable, split_rows
from molml.data.splits import Split, split_keys, training_part_fingerprint
from molml.errors import InvalidMoleculeError


def featurize(
    featurizer: FingerprintFeaturizer, smiles: Sequence[Any], n_jobs: int = 1
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Fingerprints of many molecules: ``(X, valid, errors)``.

    ``X`` is float32 ``[n, dim]`` (NaN rows where invalid), ``valid`` bool ``[n]`` and ``errors``
    maps the position of each invalid input (bad SMILES, None, NaN, ...) to the reason.
    """
    smiles = list(smiles)
    X, valid = featurizer.transform(smiles, n_jobs=n_jobs)
    errors = {int(i): _failure_reason(featurizer, smiles[i]) for i in np.flatnonzero(~valid)}
    return X, valid, errors


def _failure_reason(featurizer: FingerprintFeaturizer, smiles: Any) -> str:
    try:
        featurizer(smiles)
    except InvalidMoleculeError as exc:
        return str(exc)
    return f"{featurizer.name} featurization failed"


def _split_keys_of_rows(
    smiles: Sequence[Any], valid: np.ndarray, errors: dict[int, str], *, standardize: bool
) -> tuple[list[str], list[str]]:
    """Canonical SMILES and scaffolds of the valid rows (:func:`~molml.data.splits.split_keys`
    of the molecule standardized when ``standardize``, as a graph featurizer with
    ``standardize=True`` reads it). A row that fails standardization is marked invalid in
    ``valid`` and ``errors``, as the graph featurization leaves it out."""
    canonical, scaffolds = [], []
    for position in np.flatnonzero(valid):
        try:
            keys = split_keys(parse_smiles(smiles[position], standardize_mol=standardize))
        except InvalidMoleculeError as exc:
            valid[position] = False
            errors[int(position)] = str(exc)
            continue
        canonical.append(keys[0])
        scaffolds.append(keys[1])
    return canonical, scaffolds


@dataclass
class FingerprintData:
    """A molecule table with fingerprints of its valid molecules and their split.

    ``features`` and the split's indices refer to the valid molecules in input order;
    ``errors`` maps the input position of each invalid molecule to the reason.
    """

    molecules: MoleculeTable
    features: np.ndarray
    valid: np.ndarray
    errors: dict[int, str]
    split: Split
    report: dict[str, Any]
    train_fingerprint: str  # of the training part, as graph checkpoints record it

    @property
    def tasks(self) -> list[str]:
        return self.molecules.tasks

    @property
    def task_type(self) -> str:
        return self.molecules.task_type

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and targets (NaN = missing label) of split part ``name``."""
        index = self.split.named_parts()[name]
        return self.features[index], self.molecules.targets[self.valid][index]

    def labelled(self, name: str, task: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of the rows of part ``name`` where task ``task`` is labelled."""
        X, y = self.part(name)
        known = ~np.isnan(y[:, task])
        return X[known], y[known, task]

    def split_rows(self) -> Split:
        """The split as 0-based row positions of the input table."""
        return split_rows(self.split, self.valid)

    def write_split_files(self, directory: Path) -> None:
        """``split_report.json``, ``split.json`` and ``invalid_rows.csv`` (if any)."""
        self.molecules.write_split_files(
            directory, self.split, self.valid, self.report, self.errors
        )


def load_fingerprint_data(
    config: DataConfig, featurizer: FingerprintFeaturizer, n_jobs: int = -1
) -> FingerprintData:
    """Read, validate, featurize and split the data that ``config`` describes.

    Invalid molecules are reported with their row numbers and left out (``strict``: an error).
    """
    molecules = MoleculeTable.read(
        config.dataset,
        config.path,
        data_dir=config.data_dir,
        smiles_column=config.smiles_column,
        target_columns=config.target_columns,
        task_type=config.task_type,
        split_column=config.split_column,
    )
    smiles = molecules.frame["smiles"].tolist()
    X, valid, errors = featurize(featurizer, smiles, n_jobs=n_jobs)
    standardize = config.standardize
    canonical, scaffolds = _split_keys_of_rows(smiles, valid, errors, standardize=standardize)
    molecules.report_invalid(errors, "training data", strict=config.strict)
    split = molecules.make_split(
        valid,
        scaffolds,
        method=config.split,
        sizes=config.split_sizes,
        seed=config.split_seed,
        split_file=config.split_file,
        split_index=config.split_index,
    )
    report = molecules.split_report(
        split,
        valid,
        scaffolds,
        canonical,
        method=config.split,
        seed=config.split_seed,
        n_invalid=len(errors),
    )
    trained_on = training_part_fingerprint(canonical[i] for i in split.train)
    return FingerprintData(molecules, X[valid], valid, errors, split, report, trained_on)
