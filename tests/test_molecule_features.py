"""Molecule-level features (RDKit 2D descriptors) next to the graph, and the Set2Set readout."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require_dataset
from lightning.pytorch.callbacks import ModelCheckpoint

import molml
from molml.chem.fingerprints import make_fingerprint
from molml.data.datamodule import MoleculeDataModule
from molml.models import DMPNN, MoleculeModel
from molml.predict import GraphPredictor
from molml.screen import screen_library

SMILES = ["CCO", "c1ccccc1O", "not a smiles", "CC(=O)Nc1ccc(O)cc1", "[Na+].[Cl-]"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("features")
    pd.read_csv(require_dataset("esol")).head(120).to_csv(root / "esol.csv", index=False)
    dm = MoleculeDataModule(
        path=str(root / "esol.csv"),
        split="random",
        batch_size=32,
        cache_dir=str(root / "cache"),
        featurize_jobs=1,
        molecule_features="rdkit2d",
    )
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=32, depth=2),
        ffn_hidden_dim=32,
        readout="set2set",
        tasks=dm.tasks,
        featurizer=dm.featurizer_config,
        molecule_features=dm.molecule_features_config,
    )
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", filename="best", monitor="val/loss")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L.seed_everything(0)
        L.Trainer(
            accelerator="cpu",
            max_epochs=2,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[checkpoint],
            default_root_dir=str(root),
        ).fit(model, datamodule=dm)
    return {"root": root, "dm": dm, "model": model, "ckpt": Path(checkpoint.best_model_path)}


def test_descriptors_are_standardized_with_training_statistics(fitted) -> None:
    dm, model = fitted["dm"], fitted["model"]
    descriptors = make_fingerprint("rdkit2d")
    assert dm.graphs.features.shape == (len(dm.graphs), descriptors.dim)
    train = np.stack([descriptors(s) for s in dm.table["smiles"].iloc[dm.split_rows().train]])
    mean = np.nanmean(train.astype(np.float64), axis=0)
    finite = np.isfinite(mean)
    assert np.allclose(model.feature_mean.numpy()[finite], mean[finite], rtol=1e-4, atol=1e-4)
    assert (model.feature_std > 0).all()


def test_the_head_sees_the_descriptors(fitted) -> None:
    model = fitted["model"].eval()
    batch = fitted["dm"].graphs.batch(0, 4)
    with torch.no_grad():
        before = model(batch)
        batch.features = batch.features + 5 * model.feature_std
        after = model(batch)
    assert not torch.allclose(before, after)


def test_checkpoint_round_trip_predicts_identically_and_screens(fitted, tmp_path: Path) -> None:
    model, loaded = fitted["model"], molml.load_model(fitted["ckpt"])
    assert loaded.model.molecule_features.to_config() == fitted["dm"].molecule_features_config
    assert loaded.model.hparams.readout == "set2set" and loaded.embed(["CCO"]).shape == (1, 64)
    model.load_state_dict(loaded.model.state_dict())
    expected, got = GraphPredictor(model).predict(SMILES), loaded.predict(SMILES)
    assert got["status"].tolist()[2].startswith("SMILES 'not a smiles' contains whitespace")
    assert np.allclose(got["logSolubility"], expected["logSolubility"], equal_nan=True)

    library = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": SMILES}).to_csv(library, index=False)
    screen_library(
        [fitted["ckpt"]],
        library,
        tmp_path / "out.csv",
        num_workers=1,
        accelerator="cpu",
        progress=False,
    )
    screened = pd.read_csv(tmp_path / "out.csv")
    assert screened["status"].tolist() == got["status"].tolist()
    assert np.allclose(screened["logSolubility"], got["logSolubility"], atol=1e-5, equal_nan=True)
