"""Saved baselines that were tampered with or broken, bad baseline configs and the inputs
``BaselineModel.predict`` / ``embed`` take. Data: RDKit's NCI molecules with Crippen logP."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    FitResult,
    fit_baseline,
)
from molml.errors import DataError

NCI = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
N_BITS = 256
FEATURES = FeaturesConfig(name="ecfp4", params={"n_bits": N_BITS}, n_jobs=1)
XGB_SMALL = EstimatorConfig(
    params={"n_estimators": 10, "max_depth": 3, "n_jobs": 1}, early_stopping_rounds=None
)
RF_SMALL = EstimatorConfig(
    name="random_forest", params={"n_estimators": 4, "max_depth": 6, "n_jobs": 1}
)


@pytest.fixture(scope="module")
def logp_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 NCI molecules with Crippen logP and a binary ``active`` (logP above the median)."""
    rows = []
    for line in NCI.read_text().splitlines()[:220]:
        smiles = line.split()[0]
        mol = Chem.MolFromSmiles(smiles)
        if mol is not None:
            rows.append((smiles, Crippen.MolLogP(mol)))
    frame = pd.DataFrame(rows[:200], columns=["smiles", "logp"])
    frame["active"] = (frame["logp"] > frame["logp"].median()).astype(int)
    path = tmp_path_factory.mktemp("data") / "logp.csv"
    frame.to_csv(path, index=False)
    return path


def fit(path: Path, estimator: EstimatorConfig, **data: Any) -> FitResult:
    options = {"target_columns": ["logp"], "split": "random", **data}
    return fit_baseline(
        BaselineConfig(
            data=DataConfig(path=str(path), **options),
            features=FEATURES,
            estimator=estimator,
            tracking_uri=None,
        )
    )


@pytest.fixture(scope="module")
def xgb_fit(logp_csv: Path) -> FitResult:
    return fit(logp_csv, XGB_SMALL)


@pytest.fixture(scope="module")
def saved(
    xgb_fit: FitResult, logp_csv: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A saved XGBoost and a saved random forest baseline (copy before changing them)."""
    root = tmp_path_factory.mktemp("saved")
    return {
        "xgboost": xgb_fit.model.save(root / "xgboost"),
        "random_forest": fit(logp_csv, RF_SMALL).model.save(root / "random_forest"),
    }


@pytest.fixture
def copy_model(saved: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    def copy(estimator: str) -> Path:
        return Path(shutil.copytree(saved[estimator], tmp_path / "model"))

    return copy


def edit_spec(directory: Path, change: Callable[[dict], Any]) -> None:
    spec = json.loads((directory / "baseline.json").read_text())
    change(spec)
    (directory / "baseline.json").write_text(json.dumps(spec))


# ---------------------------------------------------------------------------- predict, embed


def test_predict_takes_one_string_a_generator_and_nothing(xgb_fit: FitResult) -> None:
    model = xgb_fit.model
    one = model.predict("CCO")
    assert one["smiles"].tolist() == ["CCO"] and one["status"].tolist() == ["ok"]
    from_generator = model.predict(s for s in ["CCO", "c1ccccc1"])
    pd.testing.assert_frame_equal(from_generator, model.predict(["CCO", "c1ccccc1"]))
    empty = model.predict([])
    assert list(empty.columns) == ["smiles", "logp", "status"] and len(empty) == 0
    assert empty["smiles"].dtype == one["smiles"].dtype  # text, as for any input
    assert empty["status"].dtype == one["status"].dtype and empty["logp"].dtype == np.float64


@pytest.mark.parametrize("bad", [None, 42])
def test_predict_refuses_what_is_not_smiles(xgb_fit: FitResult, bad: Any) -> None:
    with pytest.raises(DataError, match="SMILES"):
        xgb_fit.model.predict(bad)
    with pytest.raises(DataError, match="SMILES"):
        xgb_fit.model.embed(bad)


def test_embed_is_the_fingerprint_the_estimator_sees(xgb_fit: FitResult) -> None:
    model = xgb_fit.model
    smiles = ["CCO", "not a smiles", None, math.nan, "c1ccccc1O"]
    X = model.embed(smiles, batch_size=2)
    assert X.dtype == np.float32 and X.shape == (5, N_BITS)
    assert np.isnan(X[1:4]).all() and not np.isnan(X[[0, 4]]).any()
    np.testing.assert_array_equal(X[0], model.featurizer("CCO"))
    np.testing.assert_allclose(
        model.predict_features(X[[0, 4]])[:, 0],
        model.predict(smiles)["logp"].to_numpy()[[0, 4]],
    )
    assert model.embed("CCO").shape == (1, N_BITS)
    assert model.embed([]).shape == (0, N_BITS)
