"""Every shipped graph-model config runs: ``molml fit`` for two training and two validation
batches on its real dataset, with its own encoder, readout, featurizer, loggers and
callbacks; the best checkpoint then loads with ``load_model`` and predicts. The baseline
configs are checked in tests/test_baselines.py."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, require_dataset

from molml import load_model
from molml.cli import main


def _is_dataset_config(path: Path) -> bool:
    """A `molml fit` config on a registry dataset (not the quickstart, not `molml pretrain`'s,
    which the README command tests run)."""
    config = yaml.safe_load(path.read_text())
    return "trainer" in config and "dataset" in config["data"] and path.stem != "quickstart"


GRAPH_CONFIGS = sorted(
    path for path in (REPO / "configs").glob("*.yaml") if _is_dataset_config(path)
)


def test_every_encoder_has_an_example_config() -> None:
    encoders = {
        yaml.safe_load(p.read_text())["model"]["encoder"]["class_path"].rsplit(".", 1)[1]
        for p in GRAPH_CONFIGS
    }
    assert encoders >= {"DMPNN", "GINE", "GATv2", "AttentiveFP", "PNA", "GPS", "Graphormer"}


@pytest.mark.parametrize("config", GRAPH_CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_fits_and_predicts(
    config: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    require_dataset(yaml.safe_load(config.read_text())["data"]["dataset"])
    cache = tmp_path_factory.getbasetemp() / "config_cache"  # shared: one featurization each
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "fit",
                "--config",
                str(config),
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "2",
                "--trainer.limit_val_batches",
                "2",
                "--trainer.enable_progress_bar",
                "false",
                "--data.cache_dir",
                str(cache),
                "--data.featurize_jobs",
                "1",
            ]
        )
    (checkpoint,) = tmp_path.glob("runs/*/version_0/checkpoints/best.ckpt")
    predictions = load_model(checkpoint).predict(["CCO", "c1ccccc1O"])
    assert (predictions["status"] == "ok").all()
    assert np.isfinite(predictions.drop(columns=["smiles", "status"]).to_numpy(float)).all()
