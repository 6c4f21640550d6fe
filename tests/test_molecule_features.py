"""Molecule-level features (RDKit 2D descriptors) next to the graph, and the Set2Set readout."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_task_csv
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
    write_task_csv(root / "logp.csv", 120)  # NCI molecules with Crippen logP
    dm = MoleculeDataModule(
        path=str(root / "logp.csv"),
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
    std = np.nanstd(train.astype(np.float64), axis=0)
    varied = np.isfinite(std) & (std > 1e-6)
    assert varied.sum() > 100  # most descriptors vary over 96 molecules
    assert np.allclose(model.feature_std.numpy()[varied], std[varied], rtol=1e-3, atol=1e-6)
    assert (model.feature_std.numpy()[~varied] == 1.0).all()  # constant ones are left as they are


def test_the_head_sees_the_standardized_clipped_descriptors(fitted) -> None:
    model = fitted["model"].eval()
    batch = fitted["dm"].graphs.batch(0, 4)
    mean, std = model.feature_mean, model.feature_std

    def forward(features: torch.Tensor) -> torch.Tensor:
        changed = batch.clone()
        changed.features = features.to(batch.features.dtype)
        with torch.no_grad():
            return model(changed)

    with torch.no_grad():  # embedding + standardized descriptors (NaN -> 0, clipped at 10 sd)
        scaled = torch.nan_to_num((batch.features - mean) / std, nan=0.0).clamp(-10, 10)
        expected = model.head(torch.cat([model.embed_batch(batch), scaled.float()], dim=1))
    assert torch.allclose(forward(batch.features), expected, atol=1e-6)

    k = int(torch.argmax((model.head[1].weight[:, -len(mean) :]).abs().sum(0)))  # one that counts
    at = batch.features.clone()
    at[:, k] = mean[k]
    missing = at.clone()
    missing[:, k] = float("nan")
    assert torch.allclose(forward(missing), forward(at))  # a missing value sits at the mean
    far, clipped, moved = at.clone(), at.clone(), at.clone()
    far[:, k], clipped[:, k], moved[:, k] = (
        mean[k] + 1e4 * std[k],
        mean[k] + 10 * std[k],
        mean[k] + 5 * std[k],
    )
    assert torch.allclose(forward(far), forward(clipped))  # extreme values are clipped
    assert not torch.allclose(forward(moved), forward(at))  # and the head does use them


def test_checkpoint_round_trip_predicts_identically_and_screens(fitted, tmp_path: Path) -> None:
    model, loaded = fitted["model"], molml.load_model(fitted["ckpt"])
    assert loaded.model.molecule_features.to_config() == fitted["dm"].molecule_features_config
    assert loaded.model.hparams.readout == "set2set" and loaded.embed(["CCO"]).shape == (1, 64)
    model.load_state_dict(loaded.model.state_dict())
    expected, got = GraphPredictor(model).predict(SMILES), loaded.predict(SMILES)
    assert got["status"].tolist()[2].startswith("SMILES 'not a smiles' contains whitespace")
    assert np.allclose(got["logp"], expected["logp"], equal_nan=True)

    library = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": SMILES}).to_csv(library, index=False)
    screen_library(
        [fitted["ckpt"]],
        library,
        tmp_path / "out.csv",
        num_workers=1,
        accelerator="cpu",
        precision="32-true",
        progress=False,
    )
    screened = pd.read_csv(tmp_path / "out.csv")
    assert screened["status"].tolist() == got["status"].tolist()
    assert np.allclose(screened["logp"], got["logp"], atol=1e-5, equal_nan=True)
