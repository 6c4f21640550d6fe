"""Fit, test and predict with fingerprint baselines, with run directories and MLflow logging.

A run directory (``<output_dir>/<name>/version_<n>``) holds ``config.yaml``, ``metrics.json``,
``predictions.csv`` (test split, or the ``data.predict_path`` file for ``predict``), the split
files of the graph models (``split.json``, ``split_report.json``, ``invalid_rows.csv``) and,
after ``fit``, the saved model in ``model/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from molml.baselines.config import BaselineConfig
from molml.baselines.data import FingerprintData, load_fingerprint_data
from molml.baselines.estimators import fit_task_model
from molml.baselines.model import BaselineModel, load_baseline
from molml.data.datamodule import keep_input_columns
from molml.data.readers import (
    check_some_valid,
    default_smiles_column,
    read_molecules_to_predict,
)
from molml.data.registry import dataset_path
from molml.data.splits import SPLIT_NAMES
from molml.errors import DataError
from molml.tasks import score_predictions
from molml.tracking import absolute_tracking_uri, experiment_id, mlflow_client, record_mlflow_run

log = logging.getLogger("molml")

_MLFLOW_NAME = re.compile(r"[^a-zA-Z0-9_/. -]+")  # characters MLflow refuses in metric names


@dataclass
class FitResult:
    """A fitted baseline, its data and its metrics per split part (``train``/``val``/``test``)."""

    model: BaselineModel
    data: FingerprintData
    metrics: dict[str, dict[str, float]]
    seconds: dict[str, float]


def fit_baseline(config: BaselineConfig, evaluate_parts: Sequence[str] = SPLIT_NAMES) -> FitResult:
    """Featurize and split the data, fit one model per task on the rows where that task is
    labelled (stopping early on the validation split) and evaluate the split parts
    ``evaluate_parts`` (all of them by default; tuning leaves out ``test``)."""
    featurizer = config.features.make()
    start = time.perf_counter()
    data = load_fingerprint_data(config.data, featurizer, n_jobs=config.features.n_jobs)
    if data.task_type not in ("regression", "classification"):
        raise DataError(f"baselines predict regression or binary tasks, not {data.task_type!r}")
    featurized = time.perf_counter()
    task_models, summaries = [], []
    for t, task in enumerate(data.tasks):
        model, summary = fit_task_model(
            config.estimator,
            data.task_type,
            data.labelled("train", t),
            data.labelled("val", t),
            seed=config.seed,
            task=task,
        )
        task_models.append(model)
        summaries.append(summary)
    fitted = time.perf_counter()
    baseline = BaselineModel(
        featurizer,
        data.tasks,
        data.task_type,
        config.estimator.name,
        task_models,
        summaries,
        train_sha256=data.train_fingerprint,
    )
    metrics = {part: evaluate(baseline, *data.part(part)) for part in evaluate_parts}
    seconds = {"featurize": featurized - start, "fit": fitted - featurized}
    return FitResult(baseline, data, metrics, seconds)


def evaluate(model: BaselineModel, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The graph models' metrics (:class:`MolecularMetrics`) of ``model`` on fingerprints ``X``
    and targets ``y`` (NaN = missing label): averages and ``<metric>/<task>``."""
    if len(y) == 0:
        return {}
    return score_predictions(model.task_type, model.tasks, model.predict_features(X), y)


def run_fit(config: BaselineConfig) -> Path:
    """``molml baseline fit``: fit, evaluate and save; returns the run directory."""
    result = fit_baseline(config)
    run_dir = new_run_dir(config)
    result.model.save(run_dir / "model")
    result.data.write_split_files(run_dir)
    _split_predictions(result.model, result.data, "test").to_csv(
        run_dir / "predictions.csv", index=False
    )
    summary = {
        **result.metrics,
        "tasks": result.model.fit_summaries,
        "seconds": result.seconds,
        "invalid_molecules": len(result.data.errors),
    }
    _write_config(run_dir, config)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    _log_to_mlflow(config, run_dir, result.metrics)
    sizes = "/".join(str(len(part)) for part in result.data.split.parts())
    print(
        f"{result.model.estimator} on {result.model.featurizer.name} "
        f"({result.model.featurizer.dim} features), {config.data.split} split {sizes}, "
        f"{len(result.data.tasks)} task(s), {len(result.data.errors)} invalid molecule(s)"
    )
    print(_metrics_table(result.metrics))
    print(f"run directory: {run_dir} (model: {run_dir / 'model'})")
    return run_dir


def run_test(config: BaselineConfig, model_path: str | Path) -> Path:
    """``molml baseline test``: evaluate a saved baseline on the test split of ``config.data``."""
    model = load_baseline(model_path)
    data = load_fingerprint_data(config.data, model.featurizer, n_jobs=config.features.n_jobs)
    if data.tasks != model.tasks:
        raise DataError(f"the model predicts tasks {model.tasks}, the data has {data.tasks}")
    if model.train_sha256 and model.train_sha256 != data.train_fingerprint:
        log.warning(
            "%s was trained on another training part than this data and split give (a changed "
            "or reordered file, other split options): the test part may hold molecules it was "
            "trained on",
            model_path,
        )
    metrics = {"test": evaluate(model, *data.part("test"))}
    run_dir = new_run_dir(config)
    data.write_split_files(run_dir)
    _split_predictions(model, data, "test").to_csv(run_dir / "predictions.csv", index=False)
    _write_config(run_dir, config, model=str(model_path))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _log_to_mlflow(config, run_dir, metrics)
    print(_metrics_table(metrics))
    print(f"run directory: {run_dir}")
    return run_dir


def _training_smiles_column(config: BaselineConfig) -> str | None:
    """The column the model was trained on: ``data.smiles_column``, else the one the training
    file's header gave (as ``molml predict`` takes it); None when that file is not here."""
    if config.data.smiles_column is not None:
        return config.data.smiles_column
    try:
        if config.data.path:
            return default_smiles_column(config.data.path)
        if config.data.dataset:
            path = dataset_path(config.data.dataset, data_dir=config.data.data_dir, download=False)
            return default_smiles_column(path)
    except DataError:
        return None
    return None


def run_predict(config: BaselineConfig, model_path: str | Path) -> Path:
    """``molml baseline predict``: predict ``data.predict_path`` (default: the test split)."""
    if config.data.predict_smiles_column is not None and not config.data.predict_path:
        raise DataError("data.predict_smiles_column is a column of data.predict_path: give both")
    model = load_baseline(model_path)
    if config.data.predict_path:
        frame = read_molecules_to_predict(
            config.data.predict_path,
            _training_smiles_column(config),
            config.data.predict_smiles_column,
        )
        predicted = model.predict(frame["smiles"].tolist())
        outputs = [column for column in predicted.columns if column != "smiles"]
        # the input's own columns (ids, notes) are kept, as molml predict keeps them
        predictions = keep_input_columns(frame, outputs).reset_index(drop=True)
        for column in outputs:
            predictions[column] = predicted[column].to_numpy()
    else:
        data = load_fingerprint_data(config.data, model.featurizer, n_jobs=config.features.n_jobs)
        predictions = _split_predictions(model, data, "test")
    run_dir = new_run_dir(config)
    _write_config(run_dir, config, model=str(model_path))
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    failed = int((predictions["status"] != "ok").sum())
    print(
        f"predictions for {len(predictions)} rows ({failed} failed) written to "
        f"{run_dir / 'predictions.csv'}"
    )
    if config.data.predict_path:
        check_some_valid(predictions, config.data.predict_path, run_dir / "predictions.csv")
    return run_dir


def _split_predictions(model: BaselineModel, data: FingerprintData, part: str) -> pd.DataFrame:
    """Predictions for one split part: ``row`` (line in the input), ``smiles``, tasks, status."""
    rows = data.split_rows().named_parts()[part]
    frame = model.predict(data.molecules.frame["smiles"].iloc[rows].tolist())
    frame.insert(0, "row", data.molecules.frame["row"].iloc[rows].to_numpy())
    return frame


def new_run_dir(config: BaselineConfig) -> Path:
    """A new, empty ``<output_dir>/<run name>/version_<n>`` directory."""
    root = Path(config.output_dir) / config.run_name
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return root / f"version_{version}"
        except FileExistsError:  # another process took it
            version += 1


def _config_dict(config: BaselineConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists


def _write_config(run_dir: Path, config: BaselineConfig, **extra: str) -> None:
    text = yaml.safe_dump({**_config_dict(config), **extra}, sort_keys=False)
    (run_dir / "config.yaml").write_text(text)


def _metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    averages = {
        part: {name: value for name, value in values.items() if "/" not in name}
        for part, values in metrics.items()
    }
    return pd.DataFrame(averages).T.to_string(float_format="{:.4f}".format)


def _log_to_mlflow(config: BaselineConfig, run_dir: Path, metrics: dict[str, dict]) -> None:
    """Log the config (params), metrics and run files (artifacts) as one MLflow run."""
    if not config.tracking_uri:
        return
    from mlflow.entities import Metric, Param

    tracking_uri = absolute_tracking_uri(config.tracking_uri)
    client = mlflow_client(tracking_uri)
    name = config.run_name
    experiment = experiment_id(client, name, config.artifact_location)
    run_id = client.create_run(experiment, run_name=f"{name}/{run_dir.name}").info.run_id
    record_mlflow_run(run_dir, tracking_uri, run_id)
    flat = pd.json_normalize(_config_dict(config), sep=".").iloc[0].to_dict()
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric(_MLFLOW_NAME.sub("", f"{part}/{key}"), value, now, 0)
            for part, values in metrics.items()
            for key, value in values.items()
        ],
        params=[Param(key, str(value)[:6000]) for key, value in flat.items()],
    )
    for path in sorted(run_dir.iterdir()):
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
        else:
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
