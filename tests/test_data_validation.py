"""The training data path refuses what it cannot train on honestly: predefined split files with
invalid or missing rows, empty split parts, one-class training labels, non-finite targets and
split options that would be ignored; and graph models and baselines split salts and mixtures
alike when molecules are standardized. Every check runs for graph models and baselines alike."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rdkit
from rdkit import Chem
from rdkit.Chem import Crippen

from molml.baselines import (
    BaselineConfig,
    DataConfig,
    EstimatorConfig,
    FeaturesConfig,
)
from molml.baselines.data import load_fingerprint_data
from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.fingerprints import make_fingerprint
from molml.chem.parsing import parse_smiles
from molml.data.datamodule import MoleculeDataModule
from molml.data.splits import murcko_scaffold

NCI = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
FAST = {"cache_dir": None, "featurize_jobs": 1}
TOSYLATE = "Cc1ccc(cc1)S(=O)(=O)O"


def make_dm(path: Path | str, **kwargs) -> MoleculeDataModule:
    return MoleculeDataModule(path=str(path), **{**FAST, **kwargs})


def baseline_config(path: Path, **data) -> BaselineConfig:
    return BaselineConfig(
        data=DataConfig(path=str(path), **data),
        features=FeaturesConfig(name="ecfp4", params={"n_bits": 256}, n_jobs=1),
        estimator=EstimatorConfig(params={"n_estimators": 5, "n_jobs": 1}),
        tracking_uri=None,
    )


def nci_smiles(n: int, min_heavy_atoms: int = 0) -> list[str]:
    """The first ``n`` NCI molecules (shipped with RDKit) that parse, as canonical SMILES."""
    out = []
    for line in NCI.read_text().splitlines():
        mol = Chem.MolFromSmiles(line.split()[0])
        if mol is not None and mol.GetNumHeavyAtoms() >= min_heavy_atoms:
            out.append(Chem.MolToSmiles(mol))
        if len(out) == n:
            break
    return out


def logp_csv(path: Path, smiles: list[str]) -> Path:
    """A CSV of ``smiles`` with Crippen logP (computed on the parsable ones) as target ``y``."""
    targets = []
    for smi in smiles:
        mol = Chem.MolFromSmiles(smi)
        targets.append(Crippen.MolLogP(mol) if mol is not None else 0.0)
    pd.DataFrame({"smiles": smiles, "y": targets}).to_csv(path, index=False)
    return path


def warnings_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ---------------------------------------------------------------------------- standardize


def salts_and_mixtures_csv(path: Path) -> Path:
    """NCI molecules where every third one is a tosylate salt (the counterion has a ring, so
    its scaffold changes when standardization keeps the largest fragment) and every fifth one a
    hydrochloride."""
    smiles = nci_smiles(120, min_heavy_atoms=16)
    for i in range(0, len(smiles), 3):
        smiles[i] = f"{smiles[i]}.{TOSYLATE}"
    for i in range(1, len(smiles), 5):
        smiles[i] = f"{smiles[i]}.Cl"
    return logp_csv(path, smiles)


@pytest.mark.parametrize("split", ["scaffold", "scaffold_stratified"])
def test_salts_and_mixtures_split_alike_when_standardized(tmp_path, split: str) -> None:
    path = salts_and_mixtures_csv(tmp_path / "salts.csv")
    smiles = pd.read_csv(path)["smiles"].tolist()
    changed = [
        murcko_scaffold(parse_smiles(s)) != murcko_scaffold(parse_smiles(s, standardize_mol=True))
        for s in smiles
    ]
    assert sum(changed) >= 30  # the data really tells the two molecules apart

    standardized = MolGraphFeaturizer(standardize=True)
    graph = make_dm(path, split=split, split_seed=2, featurizer=standardized)
    graph.setup("fit")
    config = DataConfig(path=str(path), split=split, split_seed=2, standardize=True)
    baseline = load_fingerprint_data(config, make_fingerprint("ecfp4", n_bits=256), n_jobs=1)
    for ours, theirs in zip(baseline.split_rows().parts(), graph.split_rows().parts(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert baseline.report == graph.report
    # the parts share no scaffold of the standardized molecules
    assert graph.report["shared_scaffolds"]["total"] == 0
    parts = [
        {murcko_scaffold(parse_smiles(smiles[i], standardize_mol=True)) for i in part}
        for part in graph.split_rows().parts()
    ]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])

    # explicit hydrogens in the graph do not change how rows are grouped
    with_h = make_dm(
        path,
        split=split,
        split_seed=2,
        featurizer=MolGraphFeaturizer(standardize=True, add_hydrogens=True),
    )
    with_h.setup("fit")
    for ours, theirs in zip(with_h.split_rows().parts(), graph.split_rows().parts(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert with_h.report == graph.report
