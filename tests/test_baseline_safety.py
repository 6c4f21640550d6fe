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
import xgboost as xgb
import yaml
from conftest import REPO
from rdkit import Chem
from rdkit.Chem import Crippen

import molml
from molml.baselines import (
    BaselineConfig,
    DataConfig,
    EstimatorConfig,
    FeaturesConfig,
    FitResult,
    fit_baseline,
)
from molml.baselines.cli import main as baseline_main
from molml.errors import CheckpointError, DataError

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


# ---------------------------------------------------------------------------- task file paths


@pytest.mark.parametrize("where", ["absolute", "parent", "subdirectory", "symlink"])
def test_task_file_outside_the_model_directory_is_refused(
    copy_model: Callable[[str], Path], tmp_path: Path, where: str
) -> None:
    model = copy_model("xgboost")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(model / "task_000.json", outside / "stolen.json")
    entry = {
        "absolute": str(outside / "stolen.json"),
        "parent": "../outside/stolen.json",
        "subdirectory": "sub/task_000.json",
        "symlink": "task_000.json",
    }[where]
    if where == "subdirectory":
        (model / "sub").mkdir()
        shutil.copy(model / "task_000.json", model / "sub" / "task_000.json")
    if where == "symlink":
        (model / "task_000.json").unlink()
        (model / "task_000.json").symlink_to(outside / "stolen.json")
    edit_spec(model, lambda spec: spec["task_models"][0].update(file=entry))
    with pytest.raises(CheckpointError, match="task file") as info:
        molml.load_model(model)
    assert entry in str(info.value)


# ---------------------------------------------------------------------------- baseline.json


def _set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda spec: spec.update({key: value})


SPEC_CHANGES: dict[str, tuple[Callable[[dict], Any], str]] = {
    "task type multiclass": (_set("task_type", "multiclass"), r"task_type.*regression"),
    "task type not a string": (_set("task_type", 3), r"task_type.*classification"),
    "tasks empty": (_set("tasks", []), "tasks"),
    "tasks a string": (_set("tasks", "logp"), "tasks"),
    "tasks not strings": (_set("tasks", [1]), "tasks"),
    "more tasks than models": (_set("tasks", ["logp", "other"]), r"2 tasks.*1 task model"),
    "duplicate tasks": (
        lambda s: s.update(tasks=["a", "a"], task_models=s["task_models"] * 2),
        "unique",
    ),
    "unknown estimator": (_set("estimator", "svm"), r"'svm'.*random_forest.*xgboost"),
    "estimator missing": (lambda s: s.pop("estimator"), "estimator"),
    "extra key": (_set("code", "import os"), "code"),
    "task models a dict": (_set("task_models", {"file": "task_000.json"}), "task_models"),
    "task model entry a string": (_set("task_models", ["task_000.json"]), "task_models"),
    "task model without file": (_set("task_models", [{"task": "logp"}]), "file"),
    "task file a number": (_set("task_models", [{"file": 3}]), "file"),
    "featurizer a string": (_set("featurizer", "ecfp4"), "featurizer"),
    "unknown fingerprint": (_set("featurizer", {"class": "nope"}), "nope"),
    "fingerprint bad parameter": (
        lambda s: s["featurizer"].update(n_bits="many"),
        "featurizer",
    ),
    "format true": (_set("format", True), "format"),
}


@pytest.mark.parametrize("name", list(SPEC_CHANGES))
def test_malformed_spec_is_a_checkpoint_error(copy_model: Callable[[str], Path], name: str) -> None:
    change, message = SPEC_CHANGES[name]
    model = copy_model("xgboost")
    edit_spec(model, change)
    with pytest.raises(CheckpointError, match=message) as info:
        molml.load_model(model)
    assert "baseline.json" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------- forest arrays


def _forest_change(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Damage the node arrays of a saved forest in one way."""
    n = len(arrays["feature"])
    internal = np.flatnonzero(arrays["left"] != np.arange(n))
    first, last = internal[0], internal[-1]
    if name == "child out of range":
        arrays["left"][first] = n + 5
    elif name == "negative child":
        arrays["right"][first] = -3
    elif name == "feature beyond fingerprint":
        arrays["feature"][first] = N_BITS
    elif name == "huge depth":
        arrays["depth"] = np.int64(10**9)
    elif name == "depth too small":
        arrays["depth"] = np.int64(1)
    elif name == "inconsistent lengths":
        arrays["threshold"] = arrays["threshold"][:-1]
    elif name == "nan threshold":
        arrays["threshold"][first] = np.nan
    elif name == "nan leaf value":
        arrays["value"][arrays["left"] == np.arange(n)] = np.nan
    elif name == "cycle":
        arrays["right"][last] = arrays["roots"][0]
    elif name == "shared child":
        arrays["right"][first] = arrays["left"][first]
    elif name == "root out of range":
        arrays["roots"][-1] = n
    elif name == "float feature indices":
        arrays["feature"] = arrays["feature"].astype(np.float64)
    elif name == "two-dimensional values":
        arrays["value"] = arrays["value"][:, None]
    elif name == "missing array":
        del arrays["roots"]
    elif name == "depth an array":
        arrays["depth"] = np.array([3, 4])


FOREST_CHANGES = {
    "child out of range": r"left\[.*nodes",
    "negative child": r"right\[.* = -3",
    "feature beyond fingerprint": rf"feature\[\d+\].*fingerprint.*{N_BITS}",
    "huge depth": "depth",
    "depth too small": "depth",
    "inconsistent lengths": "length",
    "nan threshold": "threshold",
    "nan leaf value": "value",
    "cycle": "child",
    "shared child": "parent",
    "root out of range": r"roots\[",
    "float feature indices": "feature",
    "two-dimensional values": "value",
    "missing array": "roots",
    "depth an array": "depth",
}


@pytest.mark.parametrize("name", list(FOREST_CHANGES))
def test_tampered_forest_arrays_are_refused_on_load(
    copy_model: Callable[[str], Path], name: str
) -> None:
    model = copy_model("random_forest")
    path = model / "task_000.npz"
    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key].copy() for key in stored.files}
    _forest_change(name, arrays)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    with pytest.raises(CheckpointError, match=FOREST_CHANGES[name]) as info:
        molml.load_model(model)
    assert "task_000.npz" in str(info.value) and "\n" not in str(info.value)


def test_untouched_forest_loads_and_predicts_as_fitted(
    copy_model: Callable[[str], Path], logp_csv: Path
) -> None:
    loaded = molml.load_model(copy_model("random_forest"))
    smiles = pd.read_csv(logp_csv)["smiles"].tolist()
    assert loaded.model.task_models[0].depth == 6
    assert loaded.predict(smiles)["logp"].notna().all()


def test_forest_file_that_is_not_an_npz(copy_model: Callable[[str], Path]) -> None:
    model = copy_model("random_forest")
    (model / "task_000.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="task_000.npz"):
        molml.load_model(model)


# ---------------------------------------------------------------------------- XGBoost files


def test_xgboost_file_that_xgboost_cannot_read(copy_model: Callable[[str], Path]) -> None:
    model = copy_model("xgboost")
    (model / "task_000.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="task_000.json.*XGBoost") as info:
        molml.load_model(model)
    assert "\n" not in str(info.value) and "Stack trace" not in str(info.value)


def _xgboost_change(name: str, model: dict) -> None:
    """Damage the first tree (or the tree list) of an XGBoost JSON model in one way."""
    trees = model["learner"]["gradient_booster"]["model"]
    tree = trees["trees"][0]
    internal = [i for i, child in enumerate(tree["left_children"]) if child != -1]
    if name == "split feature beyond fingerprint":
        tree["split_indices"][internal[0]] = 100_000
    elif name == "child out of range":
        tree["left_children"][internal[0]] = 10**6
    elif name == "root as a child":
        tree["left_children"][internal[-1]] = 0
    elif name == "shared child":
        tree["right_children"][internal[0]] = tree["left_children"][internal[0]]
    elif name == "one child":
        tree["right_children"][internal[0]] = -1
    elif name == "short array":
        tree["split_indices"] = tree["split_indices"][:-1]
    elif name == "tree info out of range":
        trees["tree_info"][0] = 5
    elif name == "no trees entry":
        del trees["trees"]


XGBOOST_CHANGES = {
    "split feature beyond fingerprint": rf"tree 0: split feature 100000 .*{N_BITS}",
    "child out of range": "tree 0: a child index",
    "root as a child": "tree 0: a child index",
    "shared child": "tree 0: a node has two parents",
    "one child": "tree 0: a node has one child",
    "short array": "tree 0: node arrays",
    "tree info out of range": "tree_info",
    "no trees entry": "no entry 'trees'",
}


@pytest.mark.parametrize("name", list(XGBOOST_CHANGES))
def test_crafted_xgboost_trees_are_refused_on_load(
    copy_model: Callable[[str], Path], name: str
) -> None:
    """XGBoost loads such trees without a word and crashes the process at predict time."""
    model = copy_model("xgboost")
    booster = json.loads((model / "task_000.json").read_text())
    _xgboost_change(name, booster)
    (model / "task_000.json").write_text(json.dumps(booster))
    with pytest.raises(CheckpointError, match=XGBOOST_CHANGES[name]) as info:
        molml.load_model(model)
    assert "task_000.json" in str(info.value) and "\n" not in str(info.value)


def test_dart_booster_passes_the_checks(logp_csv: Path, tmp_path: Path) -> None:
    params = {**XGB_SMALL.params, "booster": "dart"}
    fitted = fit(logp_csv, EstimatorConfig(params=params, early_stopping_rounds=None)).model
    loaded = molml.load_model(fitted.save(tmp_path / "dart"))
    smiles = pd.read_csv(logp_csv)["smiles"].head(50).tolist()
    pd.testing.assert_frame_equal(loaded.predict(smiles), fitted.predict(smiles))


def test_xgboost_model_of_another_feature_count(copy_model: Callable[[str], Path]) -> None:
    model = copy_model("xgboost")
    rng = np.random.default_rng(0)
    other = xgb.train(
        {"nthread": 1}, xgb.DMatrix(rng.random((30, 7)), label=rng.random(30)), num_boost_round=2
    )
    other.save_model(model / "task_000.json")
    with pytest.raises(CheckpointError, match=rf"task_000.json.*7 features.*{N_BITS}"):
        molml.load_model(model)


def test_xgboost_model_with_several_outputs(copy_model: Callable[[str], Path]) -> None:
    model = copy_model("xgboost")
    rng = np.random.default_rng(0)
    data = xgb.DMatrix(rng.random((30, N_BITS)), label=rng.integers(0, 3, 30))
    params = {"objective": "multi:softprob", "num_class": 3, "nthread": 1}
    xgb.train(params, data, num_boost_round=2).save_model(model / "task_000.json")
    with pytest.raises(CheckpointError, match="task_000.json.*one value per molecule"):
        molml.load_model(model)


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("estimator", "typo", "suggestion"),
    [("xgboost", "n_estimator", "n_estimators"), ("random_forest", "max_dept", "max_depth")],
)
def test_unknown_estimator_parameter_is_refused_before_featurizing(
    tmp_path: Path, estimator: str, typo: str, suggestion: str
) -> None:
    config = {
        "data": {"path": str(tmp_path / "not_there.csv")},  # reading it would fail differently
        "estimator": {"name": estimator, "params": {typo: 10}},
        "tracking_uri": None,
        "output_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(DataError, match=rf"'{typo}'.*{suggestion}"):
        baseline_main(["fit", "--config", str(tmp_path / "config.yaml")])
    with pytest.raises(DataError, match=rf"'{typo}'.*{suggestion}"):
        EstimatorConfig(name=estimator, params={typo: 10})
    assert not (tmp_path / "runs").exists()


def test_known_estimator_parameters_are_accepted() -> None:
    EstimatorConfig(params={"n_estimators": 5, "eta": 0.1, "lambda": 2.0, "nthread": 1})
    EstimatorConfig(name="random_forest", params={"class_weight": "balanced", "max_depth": 4})


def test_a_classifier_parameter_on_a_regression_forest_is_bad_input() -> None:
    from molml.baselines.estimators import fit_task_model

    config = EstimatorConfig(name="random_forest", params={"class_weight": "balanced"})
    data = (np.zeros((4, 2)), np.arange(4.0))
    with pytest.raises(DataError, match="RandomForestRegressor.*class_weight"):
        fit_task_model(config, "regression", data, data, seed=0, task="y")


@pytest.mark.parametrize("name", ["esol_xgb", "bbbp_xgb", "esol_rf"])
def test_shipped_configs_pass_parameter_validation(name: str) -> None:
    config = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    assert EstimatorConfig(**config["estimator"]).params == config["estimator"]["params"]


def test_linear_booster_is_refused_in_the_config() -> None:
    """gblinear cannot predict in place, so a baseline fitted with it failed after fitting."""
    with pytest.raises(DataError, match="booster 'gblinear'.*gbtree"):
        EstimatorConfig(params={"booster": "gblinear"})


def test_early_stopping_in_params_points_to_its_own_option() -> None:
    with pytest.raises(DataError, match="estimator.early_stopping_rounds"):
        EstimatorConfig(params={"early_stopping_rounds": 10})


def test_unknown_estimator_name_lists_the_choices() -> None:
    with pytest.raises(DataError, match="'svm'") as info:
        EstimatorConfig(name="svm")  # type: ignore[arg-type]
    assert "xgboost" in str(info.value) and "random_forest" in str(info.value)


# ---------------------------------------------------------------------------- single class


def test_single_class_training_labels_name_task_split_and_class(
    logp_csv: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(logp_csv)
    frame["active"] = 1
    frame.to_csv(tmp_path / "one_class.csv", index=False)
    with pytest.raises(DataError) as info:
        fit(
            tmp_path / "one_class.csv",
            XGB_SMALL,
            target_columns=["active"],
            task_type="classification",
        )
    message = str(info.value)
    assert "task 'active'" in message and "train split" in message and "class 1" in message
    assert "\n" not in message


def test_task_without_training_labels_is_named(logp_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(logp_csv)
    position = np.arange(len(frame))
    frame["split"] = np.select([position < 140, position < 160], ["train", "val"], "test")
    frame["sparse"] = np.where(frame["split"] == "test", 1.0, np.nan)  # labelled in test only
    frame.to_csv(tmp_path / "sparse.csv", index=False)
    with pytest.raises(DataError, match="task 'sparse' has no labelled rows in the train split"):
        fit(
            tmp_path / "sparse.csv",
            XGB_SMALL,
            target_columns=["logp", "sparse"],
            split="predefined",
            split_column="split",
        )


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
