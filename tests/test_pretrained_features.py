"""A pretrained graph encoder's embeddings as baseline features: fitted through ``molml
baseline fit``, equal to the encoder's own ``embed``, saved with the encoder they came from,
reloaded with ``molml.load_model``, combined with fingerprints, and refused when the encoder is
unknown, gone or changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml
from conftest import INVALID_SMILES, REPO, nci_smiles, require_dataset, write_property_csv

import molml
from molml.baselines import (
    BaselineConfig,
    BaselineModel,
    DataConfig,
    EstimatorConfig,
    FeaturesConfig,
    PretrainedEmbedding,
    fit_baseline,
    load_baseline,
)
from molml.baselines.cli import run as baseline_command
from molml.baselines.estimators import XGBoostTaskModel
from molml.chem.fingerprints import make_fingerprint
from molml.cli import main
from molml.errors import CheckpointError
from molml.models.pretrained import SHIPPED, WEIGHTS_DIR

XGB_FAST = {"n_estimators": 30, "max_depth": 3, "n_jobs": 1}
SHIPPED_CONFIG = REPO / "configs" / "esol_xgb_pretrained.yaml"


@pytest.fixture(scope="module")
def encoder(graph_run: dict) -> Path:
    """A small trained D-MPNN checkpoint."""
    return graph_run["ckpt"]


@pytest.fixture(scope="module")
def logp_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 NCI molecules with Crippen logP, and three invalid SMILES rows."""
    return write_property_csv(tmp_path_factory.mktemp("pretrained") / "logp.csv", 150)


def baseline_config(data: Path, encoder: Path, output_dir: Path) -> dict:
    return {
        "data": {"path": str(data), "target_columns": ["logp"], "split": "random"},
        "features": {"name": "pretrained", "params": {"model": str(encoder)}, "n_jobs": 1},
        "estimator": {"name": "xgboost", "params": XGB_FAST, "early_stopping_rounds": 10},
        "name": "logp_pretrained",
        "output_dir": str(output_dir),
        "tracking_uri": None,
    }


@pytest.fixture(scope="module")
def cli_run(logp_csv: Path, encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``molml baseline fit`` with ``features: pretrained``; its run directory."""
    root = tmp_path_factory.mktemp("pretrained_run")
    (root / "config.yaml").write_text(yaml.safe_dump(baseline_config(logp_csv, encoder, root)))
    return baseline_command(["fit", "--config", str(root / "config.yaml")])


def test_features_are_the_encoders_embeddings(logp_csv: Path, encoder: Path, tmp_path) -> None:
    config = baseline_config(logp_csv, encoder, tmp_path)
    result = fit_baseline(
        BaselineConfig(
            data=DataConfig(**config["data"]),
            features=FeaturesConfig(**config["features"]),
            estimator=EstimatorConfig(**config["estimator"]),
            tracking_uri=None,
        )
    )
    smiles = pd.read_csv(logp_csv)["smiles"]
    assert sorted(smiles[list(result.data.errors)]) == sorted(INVALID_SMILES)
    expected = molml.load_model(encoder).embed(smiles[result.data.valid].tolist())
    assert result.data.features.shape == expected.shape
    np.testing.assert_allclose(result.data.features, expected, rtol=1e-5, atol=1e-6)


def test_cli_fit_saves_the_encoder_and_reloads(cli_run: Path, encoder: Path) -> None:
    spec = json.loads((cli_run / "model" / "baseline.json").read_text())
    assert spec["featurizer"]["class"] == "pretrained"
    assert spec["featurizer"]["model"] == str(encoder.resolve())
    assert len(spec["featurizer"]["sha256"]) == 64
    fitted = pd.read_csv(cli_run / "predictions.csv")
    assert (fitted["status"] == "ok").all()
    loaded = molml.load_model(cli_run / "model")
    again = loaded.predict(fitted["smiles"].tolist())
    np.testing.assert_allclose(again["logp"], fitted["logp"], rtol=1e-6)
    bad = loaded.predict(["not_a_smiles", None, "CCO"])
    assert bad["status"][0] != "ok" and bad["status"][1] != "ok" and bad["status"][2] == "ok"
    assert np.isnan(bad["logp"][:2]).all() and np.isfinite(bad["logp"][2])


def test_single_molecules_and_concatenation(encoder: Path) -> None:
    smiles = ["CCO", "C1CC", "c1ccccc1O", None]
    embedding = PretrainedEmbedding(str(encoder), batch_size=2)
    X, valid = embedding.transform(smiles)
    assert valid.tolist() == [True, False, True, False] and np.isnan(X[~valid]).all()
    np.testing.assert_allclose(embedding("c1ccccc1O"), X[2], rtol=1e-5, atol=1e-6)

    both = make_fingerprint(
        "concat",
        parts=[{"class": "morgan", "n_bits": 64}, {"class": "pretrained", "model": str(encoder)}],
    )
    assert both.dim == 64 + embedding.dim
    combined, combined_valid = both.transform(smiles, n_jobs=2)
    ecfp, _ = make_fingerprint("ecfp4", n_bits=64).transform(smiles)
    assert combined_valid.tolist() == valid.tolist()
    np.testing.assert_array_equal(combined[valid, :64], ecfp[valid])
    np.testing.assert_allclose(combined[valid, 64:], X[valid], rtol=1e-5, atol=1e-6)
    assert np.isnan(combined[~valid]).all()
    np.testing.assert_allclose(both("CCO"), combined[0], rtol=1e-5, atol=1e-6)


def test_a_molecules_features_do_not_depend_on_its_batch() -> None:
    """A tree's split turns the last bits of a float32 sum into a jump of the prediction:
    every molecule's embedding is the same bits alone, in pairs or in one batch of all."""
    smiles = pd.read_csv(require_dataset("esol"))["smiles"].tolist()[:200]
    embedding = PretrainedEmbedding("zinc-dmpnn", batch_size=256)
    together, _ = embedding.transform(smiles)
    alone = np.stack([embedding(s) for s in smiles])
    pairs = np.concatenate([embedding.transform(smiles[i : i + 2])[0] for i in range(0, 200, 2)])
    np.testing.assert_array_equal(alone, together)
    np.testing.assert_array_equal(pairs, together)


def test_missing_encoder_lists_the_available_names() -> None:
    with pytest.raises(CheckpointError, match="no-such-encoder.*available: zinc-dmpnn"):
        FeaturesConfig(name="pretrained", params={"model": "no-such-encoder"}).make()


def test_saved_baseline_refuses_a_gone_or_changed_encoder(encoder: Path, tmp_path: Path) -> None:
    copy = shutil.copy(encoder, tmp_path / "encoder.ckpt")
    embedding = PretrainedEmbedding(str(copy))
    smiles = nci_smiles(40)
    X, _ = embedding.transform(smiles)
    booster = xgb.XGBRegressor(n_estimators=5, n_jobs=1).fit(X, np.arange(40.0)).get_booster()
    model = BaselineModel(embedding, ["y"], "regression", "xgboost", [XGBoostTaskModel(booster)])
    saved = model.save(tmp_path / "model")
    np.testing.assert_allclose(load_baseline(saved).predict_features(X), model.predict_features(X))

    Path(copy).write_bytes(Path(copy).read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="encoder.ckpt.*has changed"):
        load_baseline(saved)
    Path(copy).unlink()
    with pytest.raises(CheckpointError, match="encoder.ckpt.*gone"):
        molml.load_model(saved)


def test_shipped_config_parses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["baseline", "fit", "--config", str(SHIPPED_CONFIG), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "esol_xgb_pretrained"
    assert printed["features"]["name"] == "pretrained"
    assert printed["features"]["params"]["model"] in SHIPPED


@pytest.mark.skipif(
    not (WEIGHTS_DIR / SHIPPED["zinc-dmpnn"]).is_file(), reason="zinc-dmpnn weights not shipped"
)
def test_shipped_config_builds_its_features() -> None:
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    features = FeaturesConfig(**config["features"]).make()
    assert features.transform(["CCO"])[0].shape == (1, features.dim)
