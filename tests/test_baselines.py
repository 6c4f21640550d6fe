"""Fingerprint baselines on real data with real XGBoost and scikit-learn: saving without pickle,
the same splits as the graph data module, per-task label masking, honest accuracy bars, bad
input, the ``molml baseline`` CLI and ``molml.load_model``."""

from __future__ import annotations

import json
import logging
import math
import sys
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, require_dataset
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

import molml
from molml.baselines import (
    BaselineConfig,
    DataConfig,
    EstimatorConfig,
    FeaturesConfig,
    FitResult,
    estimators,
    fit_baseline,
    load_baseline,
)
from molml.baselines.estimators import ForestTaskModel, fit_task_model
from molml.cli import main
from molml.data.datamodule import MoleculeDataModule
from molml.errors import CheckpointError, DataError
from molml.predict import BaselinePredictor

# small and single-threaded: the tests share two cores
XGB_FAST = {"n_estimators": 80, "learning_rate": 0.15, "max_depth": 5, "n_jobs": 1}
FEATURES = FeaturesConfig(name="ecfp4", params={"n_bits": 1024, "counts": True}, n_jobs=1)
INVALID = {5: "C1CC", 17: "not_a_smiles", 40: "C(C)(C)(C)(C)C"}  # file positions -> SMILES


def config(data: DataConfig, estimator: EstimatorConfig | None = None) -> BaselineConfig:
    return BaselineConfig(
        data=data,
        features=FEATURES,
        estimator=estimator or EstimatorConfig(params=XGB_FAST, early_stopping_rounds=20),
        tracking_uri=None,
    )


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def esol_xgb() -> FitResult:
    require_dataset("esol")
    return fit_baseline(config(DataConfig(dataset="esol", split_seed=1)))


@pytest.fixture(scope="module")
def esol_head() -> pd.DataFrame:
    return pd.read_csv(require_dataset("esol")).head(200).reset_index(drop=True)


@pytest.fixture
def invalid_csv(esol_head: pd.DataFrame, tmp_path: Path) -> Path:
    """200 ESOL rows, three of them invalid SMILES (file lines = position + 2)."""
    frame = esol_head.copy()
    for position, smiles in INVALID.items():
        frame.loc[position, "smiles"] = smiles
    path = tmp_path / "with_invalid.csv"
    frame.to_csv(path, index=False)
    return path


def saved_files_are_plain(directory: Path) -> None:
    """Every saved file is JSON or an .npz of plain (non-object) arrays: no pickle anywhere."""
    files = sorted(directory.iterdir())
    assert files
    for path in files:
        raw = path.read_bytes()
        assert not raw.startswith(b"\x80"), f"{path.name} looks like a pickle"
        if path.suffix == ".json":
            json.loads(raw)
        else:
            assert path.suffix == ".npz"
            with zipfile.ZipFile(path) as archive:
                assert all(name.endswith(".npy") for name in archive.namelist())
            with np.load(path, allow_pickle=False) as arrays:  # raises on object arrays
                assert all(arrays[name].dtype != object for name in arrays.files)


# ---------------------------------------------------------------------------- saving


def test_xgboost_round_trip_without_pickle(esol_xgb: FitResult, tmp_path: Path) -> None:
    model = esol_xgb.model
    model.save(tmp_path / "model")
    saved_files_are_plain(tmp_path / "model")
    spec = json.loads((tmp_path / "model" / "baseline.json").read_text())
    assert spec["format"] == 1 and spec["molml_version"] == molml.__version__
    assert spec["featurizer"] == FEATURES.make().to_config()
    assert spec["tasks"] == ["logSolubility"] and spec["task_type"] == "regression"
    booster = json.loads((tmp_path / "model" / "task_000.json").read_text())
    assert "learner" in booster  # XGBoost's own JSON model format

    loaded = molml.load_model(tmp_path / "model")
    assert isinstance(loaded, BaselinePredictor)
    assert loaded.tasks == model.tasks and loaded.task_type == "regression"
    assert loaded.featurizer.to_config() == model.featurizer.to_config()
    smiles = esol_xgb.data.molecules.frame["smiles"].head(300).tolist()
    before, after = model.predict(smiles), loaded.predict(smiles, batch_size=64)
    pd.testing.assert_frame_equal(before, after)
    # the booster is saved cut to its best iteration; the fit summary travels with the model
    assert loaded.model.fit_summaries == model.fit_summaries
    assert (
        loaded.model.task_models[0].booster.num_boosted_rounds()
        == model.fit_summaries[0]["n_trees"]
    )
    assert molml.load_model(tmp_path / "model" / "baseline.json").tasks == model.tasks


@pytest.mark.parametrize("task_type", ["regression", "classification"])
def test_forest_arrays_match_scikit_learn(
    esol_xgb: FitResult, task_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = esol_xgb.data.labelled("train", 0)
    X = X.copy()
    X[np.random.default_rng(0).random(X.shape) < 0.05] = np.nan  # missing values take a side
    if task_type == "classification":
        forest = RandomForestClassifier(n_estimators=15, random_state=0)
        forest.fit(X, (y > np.median(y)).astype(float))
    else:
        forest = RandomForestRegressor(n_estimators=15, max_features=0.3, random_state=0)
        forest.fit(X, y)
    X_test, _ = esol_xgb.data.part("test")
    X_test = X_test.copy()
    X_test[np.random.default_rng(1).random(X_test.shape) < 0.05] = np.nan
    expected = (
        forest.predict_proba(X_test)[:, 1]
        if task_type == "classification"
        else forest.predict(X_test)
    )
    arrays = ForestTaskModel.from_sklearn(forest)
    np.testing.assert_allclose(arrays.predict(X_test), expected, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(estimators, "_MOLECULES_PER_BLOCK", 10)  # predicted block by block
    np.testing.assert_allclose(arrays.predict(X_test), expected, rtol=1e-12, atol=1e-12)
    arrays.save(tmp_path / "forest.npz")
    saved_files_are_plain(tmp_path)
    np.testing.assert_array_equal(
        ForestTaskModel.load(tmp_path / "forest.npz", n_features=X_test.shape[1]).predict(X_test),
        arrays.predict(X_test),
    )


def test_random_forest_baseline_round_trip(tmp_path: Path) -> None:
    require_dataset("bbbp")
    result = fit_baseline(
        config(
            DataConfig(dataset="bbbp"),
            EstimatorConfig(name="random_forest", params={"n_estimators": 20, "random_state": 3}),
        )
    )
    assert result.metrics["test"]["roc_auc"] > 0.75
    result.model.save(tmp_path / "model")
    saved_files_are_plain(tmp_path / "model")
    loaded = molml.load_model(tmp_path / "model")
    smiles = result.data.molecules.frame["smiles"].head(200).tolist()
    pd.testing.assert_frame_equal(loaded.predict(smiles), result.model.predict(smiles))
    assert loaded.predict(smiles)["p_np"].between(0, 1).all()


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"a": 1}')
    for missing in ("missing.json", "missing.ckpt", "missing.onnx"):
        with pytest.raises(CheckpointError, match=f"model not found: .*{missing}"):
            molml.load_model(tmp_path / missing)
    with pytest.raises(CheckpointError, match="not a molml baseline"):
        molml.load_model(tmp_path / "other.json")
    with pytest.raises(CheckpointError, match="baseline.json not found"):
        load_baseline(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="graph model's run: its model is checkpoints/best"):
        molml.load_model(tmp_path)
    (tmp_path / "best.ckpt").write_bytes(b"\x80\x02")
    with pytest.raises(CheckpointError, match="best.ckpt is a graph model file, not a baseline"):
        load_baseline(tmp_path / "best.ckpt")
    # a run's checkpoints/ folder: the hint names a checkpoint in it
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"\x80\x02")
    with pytest.raises(CheckpointError, match=r"holds graph checkpoints: load one .*last\.ckpt"):
        molml.load_model(tmp_path / "checkpoints")
    with pytest.raises(DataError, match="no model path given"):
        molml.load_model([])


@pytest.mark.parametrize(
    ("uri", "kept"),
    [
        (None, None),
        ("none", None),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("http://h:5000", "http://h:5000"),
    ],
)
def test_tracking_uri_off_or_kept(uri: str | None, kept: str | None) -> None:
    assert BaselineConfig(tracking_uri=uri).tracking_uri == kept


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "mlruns", "./runs/mlruns", "C:/mlruns"])
def test_mlflow_file_store_is_refused(uri: str) -> None:
    with pytest.raises(DataError, match="MLflow file store, which molml cannot log to"):
        BaselineConfig(tracking_uri=uri)


# ---------------------------------------------------------------------------- data and splits


@pytest.mark.parametrize("split", ["scaffold", "scaffold_stratified"])
def test_same_split_as_the_graph_data_module(invalid_csv: Path, split: str) -> None:
    data = DataConfig(path=str(invalid_csv), split=split, split_seed=3)
    graph = MoleculeDataModule(
        path=data.path, split=split, split_seed=3, cache_dir=None, featurize_jobs=1
    )
    graph.setup("fit")
    baseline = fit_baseline(config(data)).data
    for ours, theirs in zip(baseline.split_rows().parts(), graph.split_rows().parts(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert baseline.report == graph.report  # sizes, labels, scaffolds, invalid count


def test_same_split_on_a_registry_dataset(esol_xgb: FitResult) -> None:
    graph = MoleculeDataModule(dataset="esol", split_seed=1, cache_dir=None, featurize_jobs=1)
    graph.setup("fit")
    pairs = zip(esol_xgb.data.split_rows().parts(), graph.split_rows().parts(), strict=True)
    for ours, theirs in pairs:
        np.testing.assert_array_equal(ours, theirs)


def test_invalid_smiles_are_counted_and_reported(invalid_csv: Path, caplog, tmp_path) -> None:
    with caplog.at_level(logging.WARNING, logger="molml"):
        result = fit_baseline(config(DataConfig(path=str(invalid_csv), split="random")))
    assert sorted(result.data.errors) == sorted(INVALID)
    assert result.data.report["invalid_molecules"] == 3
    assert sum(len(part) for part in result.data.split.parts()) == 197
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert all(f"row {position + 2}:" in warning for position in INVALID)
    result.data.write_split_files(tmp_path)
    invalid_rows = pd.read_csv(tmp_path / "invalid_rows.csv")
    assert invalid_rows["row"].tolist() == [position + 2 for position in sorted(INVALID)]
    assert invalid_rows["position"].tolist() == sorted(INVALID)  # split.json's numbering
    with pytest.raises(DataError, match=r"so the run stops \(data.strict\)"):
        fit_baseline(config(DataConfig(path=str(invalid_csv), strict=True)))


def test_missing_column_lists_the_columns(invalid_csv: Path) -> None:
    with pytest.raises(DataError, match=r"\['nope'\] not found.*logSolubility"):
        fit_baseline(config(DataConfig(path=str(invalid_csv), target_columns=["nope"])))


def test_multitask_models_train_only_on_labelled_rows(esol_head: pd.DataFrame, tmp_path) -> None:
    frame = esol_head[["smiles", "logSolubility"]].copy()
    # task "sparse" is 5.0 on every third row and missing elsewhere: a model that saw only its
    # labels predicts 5.0 everywhere; one that took missing labels for anything else would not
    frame["sparse"] = np.where(np.arange(len(frame)) % 3 == 0, 5.0, np.nan)
    path = tmp_path / "two_tasks.csv"
    frame.to_csv(path, index=False)
    result = fit_baseline(config(DataConfig(path=str(path), split="random")))
    _, y_train = result.data.part("train")
    _, y_val = result.data.part("val")
    summaries = result.model.fit_summaries
    assert summaries[0]["n_train"] == len(y_train) == int((~np.isnan(y_train[:, 0])).sum())
    assert summaries[1]["n_train"] == int((~np.isnan(y_train[:, 1])).sum()) < len(y_train) / 2
    assert summaries[1]["n_val"] == int((~np.isnan(y_val[:, 1])).sum())
    predictions = result.model.predict(frame["smiles"].tolist())
    np.testing.assert_allclose(predictions["sparse"], 5.0, atol=1e-4)
    assert predictions["logSolubility"].std() > 0.5
    # metrics only count labelled entries
    assert result.metrics["test"]["rmse/sparse"] < 1e-4


def test_class_imbalance_weight_from_training_labels() -> None:
    require_dataset("bbbp")
    result = fit_baseline(config(DataConfig(dataset="bbbp")))
    train, val = result.data.labelled("train", 0), result.data.labelled("val", 0)
    summary = result.model.fit_summaries[0]
    assert summary["scale_pos_weight"] == pytest.approx((train[1] == 0).sum() / train[1].sum())
    # an honest, loose bar on a scaffold split: far better than chance
    assert result.metrics["test"]["roc_auc"] > 0.8
    given = EstimatorConfig(params={**XGB_FAST, "scale_pos_weight": 1.0}, early_stopping_rounds=5)
    _, summary = fit_task_model(given, "classification", train, val, seed=0, task="p_np")
    assert summary["scale_pos_weight"] == 1.0


def test_clearly_better_than_the_training_mean(esol_xgb: FitResult) -> None:
    _, y_train = esol_xgb.data.part("train")
    _, y_test = esol_xgb.data.part("test")
    mean_rmse = rmse(y_test[:, 0], np.full(len(y_test), y_train.mean()))
    assert esol_xgb.metrics["test"]["rmse"] < 0.75 * mean_rmse
    assert esol_xgb.metrics["test"]["r2"] > 0.4
    assert esol_xgb.metrics["train"]["rmse"] < esol_xgb.metrics["test"]["rmse"]


def test_predict_is_robust_to_bad_entries(esol_xgb: FitResult) -> None:
    inputs = ["CCO", None, math.nan, "", "not a smiles", "C1CC", "c1ccccc1O", 42]
    frame = esol_xgb.model.predict(inputs, batch_size=3)
    assert list(frame.columns) == ["smiles", "logSolubility", "status"]
    assert len(frame) == len(inputs)
    ok = frame["status"] == "ok"
    assert ok.tolist() == [True, False, False, False, False, False, True, False]
    assert frame.loc[ok, "logSolubility"].notna().all()
    assert frame.loc[~ok, "logSolubility"].isna().all()
    assert "whitespace" in frame["status"][4] and "empty" in frame["status"][3]
    single = esol_xgb.model.predict(["c1ccccc1O"])["logSolubility"][0]
    assert frame["logSolubility"][6] == pytest.approx(single)
    assert len(esol_xgb.model.predict([])) == 0


# ---------------------------------------------------------------------------- CLI


def test_cli_fit_test_predict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, caplog: pytest.LogCaptureFixture
) -> None:
    require_dataset("esol")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    fast = ["--estimator.params.n_estimators", "40", "--estimator.params.n_jobs", "1"]
    fast += ["--features.n_jobs", "1", "--data.split_seed", "2"]
    main(["baseline", "fit", "--config", str(REPO / "configs" / "esol_xgb.yaml"), *fast])
    run = tmp_path / "runs" / "esol_xgb" / "version_0"
    for name in ("config.yaml", "metrics.json", "split.json", "split_report.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"rmse", "mae", "r2", "rmse/logSolubility"}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["split_seed"] == 2 and saved["estimator"]["params"]["n_estimators"] == 40
    split = json.loads((run / "split.json").read_text())[0]
    predictions = pd.read_csv(run / "predictions.csv")
    assert predictions["row"].tolist() == [i + 2 for i in split["test"]]  # file line numbers
    assert "test" in capsys.readouterr().out

    # MLflow: one run in the local store, with the test metric and the model as artifacts
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["esol_xgb"])
    assert len(runs) == 1
    assert runs["metrics.test/rmse"][0] == pytest.approx(metrics["test"]["rmse"], rel=1e-6)
    assert runs["params.data.split_seed"][0] == "2"

    # test with the saved config and model: the same metrics
    main(["baseline", "test", "--config", str(run / "config.yaml"), "--model", str(run / "model")])
    tested = json.loads((run.parent / "version_1" / "metrics.json").read_text())
    assert tested["test"]["rmse"] == pytest.approx(metrics["test"]["rmse"], rel=1e-6)
    assert "another training part" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="molml"):  # another split: the test may leak
        main(["baseline", "test", "--config", str(run / "config.yaml"), "--model",
              str(run / "model"), "--data.split_seed", "5"])  # fmt: skip
    assert "was trained on another training part" in caplog.text

    # predict a file with a bad row: one output row per input row
    library = tmp_path / "library.csv"
    ids = ["mol-007", "mol-008", "mol-009"]  # kept, like every other input column
    pd.DataFrame({"id": ids, "smiles": ["CCO", "not a smiles", "c1ccccc1"], "logSolubility": 1.0}
                 ).to_csv(library, index=False)  # fmt: skip
    main(
        [
            "baseline",
            "predict",
            "--config",
            str(run / "config.yaml"),
            "--model",
            str(run / "model"),
            "--data.predict_path",
            str(library),
        ]
    )
    out = pd.read_csv(run.parent / "version_3" / "predictions.csv")
    assert out["row"].tolist() == [2, 3, 4] and out["status"][0] == "ok"
    assert out["status"][1] != "ok" and np.isnan(out["logSolubility"][1])
    assert out["id"].tolist() == ids and (out["input_logSolubility"] == 1.0).all()
    assert list(out.columns) == ["row", "smiles", "id", "input_logSolubility", "logSolubility",
                                 "status"]  # fmt: skip
    # a file without one valid molecule: its rows are written, and the run exits 2
    pd.DataFrame({"name": ["a", "b"], "structure": ["CCO", "CCN"]}).to_csv(library, index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["baseline", "predict", "--config", str(run / "config.yaml"), "--model",
              str(run / "model"), "--data.predict_path", str(library)])  # fmt: skip
    assert exit_info.value.code == 2
    assert (run.parent / "version_4" / "predictions.csv").is_file()
    with pytest.raises(SystemExit) as exit_info:  # a file's column without the file
        main(["baseline", "predict", "--config", str(run / "config.yaml"), "--model",
              str(run / "model"), "--data.predict_smiles_column", "structure"])  # fmt: skip
    assert exit_info.value.code == 2
    # the fingerprint and estimator are the saved model's: options for others are refused
    # before any run folder is made, not recorded as if they had been used
    runs = sorted(run.parent.iterdir())
    for verb, option in (("predict", "--features.name=maccs"), ("test", "--estimator.name"),
                         ("predict", "--features")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["baseline", verb, "--model", str(run / "model"), option, "rf"])
        assert exit_info.value.code == 2
        assert f"{option.split('=')[0]} does not apply to 'molml baseline {verb}'" in (
            capsys.readouterr().err
        )
    assert sorted(run.parent.iterdir()) == runs
    # given where a graph checkpoint belongs, the folder is named for what it is
    from molml.models.files import read_checkpoint

    with pytest.raises(CheckpointError, match="is a fingerprint baseline, not a graph checkpoint"):
        read_checkpoint(run / "model")


def test_cli_print_config(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(
            [
                "baseline",
                "fit",
                "--config",
                str(REPO / "configs" / "bbbp_xgb.yaml"),
                "--data.split_seed",
                "3",
                "--features.params.n_bits",
                "512",
                "--print_config",
            ]
        )
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["dataset"] == "bbbp" and printed["data"]["split_seed"] == 3
    assert printed["features"]["params"] == {"n_bits": 512, "counts": False}
    assert printed["estimator"]["name"] == "xgboost"


@pytest.mark.parametrize("name", ["esol_xgb", "bbbp_xgb", "esol_rf"])
def test_shipped_configs_parse(name: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "baseline",
                "fit",
                "--config",
                str(REPO / "configs" / f"{name}.yaml"),
                "--print_config",
            ]
        )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == name
    assert FeaturesConfig(**printed["features"]).make().dim >= 2048


@pytest.mark.parametrize("name", ["xgboost", "random_forest"])
def test_an_estimator_parameter_out_of_range_is_a_data_error(name: str) -> None:
    """XGBoost and scikit-learn check parameter values only when fitting."""
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 5)), rng.random(40)
    config = EstimatorConfig(name=name, params={"max_depth": -3})
    with pytest.raises(DataError, match=r"\w+ could not be fitted: .*max_depth"):
        fit_task_model(config, "regression", (X, y), (X[:5], y[:5]), 0, "t")


def test_out_of_range_baseline_options_are_refused_by_name() -> None:
    for make, message in (
        (lambda: EstimatorConfig(early_stopping_rounds=0), "estimator.early_stopping_rounds"),
        (lambda: EstimatorConfig(early_stopping_rounds=-3), "estimator.early_stopping_rounds"),
        (lambda: DataConfig(path="x.csv", split_seed=-1), "data.split_seed"),
        (lambda: DataConfig(path="x.csv", split_index=-1), "data.split_index"),
        (lambda: FeaturesConfig(params={"n_bits": 2.5}).make(), "n_bits must be an integer"),
    ):
        with pytest.raises(DataError, match=message):
            make()
    # no tree at all (n_estimators 0) with early stopping on: fitted, not an AttributeError
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 5)), rng.random(40)
    config = EstimatorConfig(params={"n_estimators": 0}, early_stopping_rounds=5)
    model, summary = fit_task_model(config, "regression", (X, y), (X[:5], y[:5]), 0, "t")
    assert summary["n_trees"] == 0


def test_a_non_finite_baseline_prediction_is_not_ok(
    invalid_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A baseline's own predict (used by ``molml baseline predict`` and its split
    predictions) says so when a value is NaN or infinite, as load_model's predict does."""
    model = fit_baseline(config(DataConfig(path=str(invalid_csv), split="random"))).model
    real = model.predict_features

    def one_nan(X: np.ndarray) -> np.ndarray:
        values = real(X)
        values[0] = np.nan
        return values

    monkeypatch.setattr(model, "predict_features", one_nan)
    out = model.predict(["CCO", "c1ccccc1O", "not_a_smiles"])
    assert out["status"].tolist()[0] == "non-finite prediction"
    assert out["status"].tolist()[1] == "ok"
    assert out["status"].tolist()[2] != "ok"


def test_test_and_predict_find_the_runs_config_from_the_model_or_its_file(tmp_path: Path) -> None:
    from molml.baselines.cli import _with_run_config

    (tmp_path / "model").mkdir()
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    expected = f"--config={tmp_path / 'config.yaml'}"
    for model in (tmp_path / "model", tmp_path / "model" / "baseline.json"):
        args = _with_run_config(["test", "--model", str(model)])
        assert args == ["test", expected, "--model", str(model)]
    given = ["test", "--config", "other.yaml", "--model", str(tmp_path / "model")]
    assert _with_run_config(given) == given


def test_baseline_predict_reads_the_column_it_was_trained_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trained on a file whose SMILES column was found by position ('mol', first), a file to
    predict with an id column first is read from its 'mol' column too, as molml predict does."""
    from molml.baselines.run import run_fit, run_predict
    from molml.data.registry import dataset_path

    monkeypatch.chdir(tmp_path)
    esol = pd.read_csv(dataset_path("esol")).head(80)
    pd.DataFrame({"mol": esol["smiles"], "y": esol.iloc[:, -1]}).to_csv("train.csv", index=False)
    names = [f"n{i}" for i in range(5)]
    pd.DataFrame({"name": names, "mol": esol["smiles"].head(5)}).to_csv("new.csv", index=False)
    settings = config(DataConfig(path="train.csv", split="random"))
    settings.output_dir = str(tmp_path / "runs")
    model = run_fit(settings) / "model"
    settings.data.predict_path = "new.csv"
    out = pd.read_csv(run_predict(settings, model) / "predictions.csv")
    assert out["status"].eq("ok").all() and out["name"].tolist() == names
