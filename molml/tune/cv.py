"""Cross-validation: k folds over the training + validation molecules, the test split held out.

Fold ``i`` validates on one fold of the train+val rows and trains on the others; every fold
model is tested on the same held-out test split. The folds are written as one chemprop-style
split file (``folds.json``, one entry per fold, read with ``data.split_file`` +
``data.split_index``) and the fold models are saved as an ensemble manifest
(``ensemble.json``) that :func:`molml.load_model` loads as one :class:`EnsemblePredictor`.

A seed ensemble (``molml cv --split seeds``) keeps the config's own train/validation/test split
for every member and trains member ``i`` with seed ``seed + i``: the usual way to buy accuracy
with compute once a split is fixed (``scripts/benchmark.py --repeats R --ensemble`` measures
the gain).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from molml.chem.parsing import parse_smiles
from molml.data.splits import Split, kfold_splits, split_keys
from molml.errors import DataError
from molml.options import creatable_directory
from molml.predict import load_model
from molml.predict.loading import ENSEMBLE_KEY
from molml.tasks import classes_per_task, score_predictions
from molml.tune.jobs import (
    CURVES,
    Fitted,
    Job,
    SplitTable,
    check_metric_logged,
    data_fingerprint,
    metric_direction,
)
from molml.tune.options import CV_SPLITS, SEED_ENSEMBLE
from molml.tune.space import describe_differences, learning_config, with_values

REQUEST_FILE = "cv_request.json"  # what a cross-validation folder was made for
FITTED_FILE = "fitted.json"  # in a fold's folder once its model is trained


def fold_splits(
    table: SplitTable, n_folds: int, method: str, seed: int, option: str = "--folds"
) -> list[Split]:
    """``n_folds`` splits of the table's train+val rows (0-based row positions): grouped by
    Bemis-Murcko scaffold (``scaffold``), by molecule (``random``) or by molecule with labels
    balanced across folds (``stratified``); the test rows are the same in every fold.
    ``seeds``: the table's own split ``n_folds`` times (members differ by seed only).
    Classification folds whose validation part has no task with both classes (no ROC-AUC to
    score or choose a checkpoint by) are refused before any training."""
    if method not in CV_SPLITS:
        raise DataError(f"--split {method!r}: choose one of {list(CV_SPLITS)}")
    if method == SEED_ENSEMBLE:
        return [table.split] * n_folds
    rows = np.sort(np.concatenate([table.split.train, table.split.val]))
    if method == "scaffold":
        groups = [split_keys(parse_smiles(table.smiles[row]))[1] for row in rows]
    else:
        groups = [str(row) for row in rows]
    n_groups = len(set(groups))
    if not 2 <= n_folds <= n_groups:
        unit = "scaffolds" if method == "scaffold" else "molecules"
        raise DataError(
            f"{option} {n_folds}: must be in [2, {n_groups}], the number of {unit} in the "
            "training and validation parts"
        )
    y = table.targets[rows] if method == "stratified" else None
    folds = kfold_splits(
        scaffolds=groups,
        y=y,
        task_type=table.task_type,
        n_folds=n_folds,
        seed=seed,
        val_fraction=0.0,
    )
    splits = [Split(rows[fold.train], rows[fold.test], table.split.test) for fold in folds]
    if table.task_type == "classification":
        _check_both_classes(table, splits, method, option)
    return splits


def _check_both_classes(table: SplitTable, folds: list[Split], method: str, option: str) -> None:
    split_option = "--split" if option == "--folds" else "--cv-split"
    for k, fold in enumerate(folds):
        val = table.targets[fold.val]
        if any(len(np.unique(column[~np.isnan(column)])) == 2 for column in val.T):
            continue
        advice = (
            f"fewer folds ({option}) give each validation part more molecules"
            if method == "stratified"
            else f"{split_option} stratified spreads each class over the folds"
        )
        raise DataError(
            f"fold {k}'s validation part ({len(val)} molecules) has no task with both classes, "
            f"so the fold cannot be scored: {advice}"
        )


def write_folds(folds: list[Split], path: Path) -> None:
    """Write the folds as one split file with one train/val/test entry per fold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{name: part.tolist() for name, part in fold.named_parts().items()} for fold in folds]
    path.write_text(json.dumps(entries))


def fit_folds(
    job: Job,
    config: dict[str, Any],
    folds_file: Path,
    n_folds: int,
    directory: Path,
    metric: str,
    trial: optuna.Trial | None = None,
    seed: int | None = None,
) -> list[Fitted]:
    """Fit ``config`` once per fold of ``folds_file`` (with ``seed``, fold ``i`` trains with
    seed ``seed + i``); with ``trial``, save each fold's curves on it (``fold_<i>/val/...``),
    report the running mean of ``metric`` after each fold (the step) and stop when the trial's
    pruner says so. A fold whose folder already holds a trained model (``fitted.json``, written
    when a fold finishes) is not trained again, and one that was interrupted resumes from its
    ``last.ckpt`` (graph models): a killed cross-validation goes on where it stopped."""
    fitted: list[Fitted] = []
    curves: dict[str, list[list[float]]] = {}
    for index in range(n_folds):
        fold_dir = directory / f"fold_{index}"
        done = _finished_fold(fold_dir)
        if done is None:
            fold = fold_config(config, folds_file, index)
            if seed is not None:
                fold = with_values(fold, {job.seed_key: seed + index})
            last = fold_dir / "checkpoints" / "last.ckpt"
            resume = last if last.is_file() and trial is None else None
            if resume is not None:
                print(f"fold {index}: resuming its training from {resume}")
            elif fold_dir.exists():  # interrupted before its first checkpoint: from the start
                shutil.rmtree(fold_dir)
            done = job.fit(fold, fold_dir, metric, resume_from=resume)
            _save_fitted(done, fold_dir)
        else:
            print(f"fold {index}: trained before ({fold_dir / FITTED_FILE}), kept")
        fitted.append(done)
        if trial is not None:
            curves.update({f"fold_{index}/{k}": v for k, v in fitted[-1].curves.items()})
            trial.set_user_attr(CURVES, curves)
            trial.report(float(np.mean([f.value for f in fitted])), step=index)
            # after the last fold the trial is done: pruning it would only discard its value
            if index < n_folds - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {index}")
    return fitted


def _save_fitted(fitted: Fitted, fold_dir: Path) -> None:
    """Record a finished fold (written last and atomically: its presence means finished)."""
    model = None if fitted.model_path is None else os.path.relpath(fitted.model_path, fold_dir)
    record = {**dataclasses.asdict(fitted), "model_path": model}
    partial = fold_dir / (FITTED_FILE + ".tmp")
    partial.write_text(json.dumps(record))
    os.replace(partial, fold_dir / FITTED_FILE)


def _finished_fold(fold_dir: Path) -> Fitted | None:
    """The fold's recorded result if it finished and its model is still there."""
    path = fold_dir / FITTED_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record["model_path"] is not None:
        record["model_path"] = fold_dir / record["model_path"]
        if not record["model_path"].exists():
            return None
    return Fitted(**record)


DATA_KEY = "data_sha256"  # in cv_request.json: see molml.tune.jobs.data_fingerprint


def _check_request(directory: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """Start or resume the cross-validation of ``directory``: ``None`` to (re)run its folds, or
    the summary of one that finished. A folder made for another config or other options, or by
    a molml that did not record them, is refused, naming what differs."""
    folds_file = directory / "folds.json"
    request_file = directory / REQUEST_FILE
    if not folds_file.exists():
        return None
    if not request_file.exists():  # its fold models would be replaced or mixed with new ones
        raise DataError(
            f"{directory} already holds a cross-validation ({folds_file.name}) that cannot be "
            "resumed; choose another --name, or delete that folder to run it again"
        )
    recorded = json.loads(request_file.read_text())
    recorded.pop(DATA_KEY, None)  # compared once the data is read (_check_data)
    if recorded != request:
        changed = describe_differences(recorded["config"], request["config"])
        options = [k for k in request if k != "config" and recorded.get(k) != request[k]]
        what = "; ".join(
            [f"{k} {json.dumps(recorded.get(k))} -> {json.dumps(request[k])}" for k in options]
            + ([f"config: {changed}"] if recorded["config"] != request["config"] else [])
        )
        raise DataError(
            f"{directory} holds a cross-validation made with other settings ({what}); rerun "
            "the same command to resume it, or choose another --name"
        )
    summary_file = directory / "cv.json"
    if summary_file.exists():
        print(f"{directory}: this cross-validation has finished; its summary is {summary_file}")
        return json.loads(summary_file.read_text())
    print(f"{directory}: resuming the cross-validation (finished folds are kept)")
    return None


def _check_data(directory: Path, data_sha256: str, config: dict[str, Any]) -> None:
    """A cross-validation resumed on data whose rows have changed since it started is refused:
    its folds are row positions, so they would pick other molecules. So is one with
    ``data.train_fraction`` begun by a molml that applied the fraction to its folds again."""
    request_file = directory / REQUEST_FILE
    if not request_file.exists():
        return
    recorded = json.loads(request_file.read_text()).get(DATA_KEY)
    fraction = (config.get("data") or {}).get("train_fraction")
    if recorded is None and fraction is not None and fraction < 1:
        raise DataError(
            f"{directory} holds a cross-validation with data.train_fraction {fraction} begun by "
            "an earlier molml, whose folds trained on that fraction of their training part "
            "again; delete that folder to run it again, or choose another --name"
        )
    if recorded is not None and recorded != data_sha256:  # none: made before it was recorded
        raise DataError(
            f"{directory} holds a cross-validation of other data: the molecules or labels of "
            "the config's data file have changed since it started, so its folds (row "
            "positions) would pick other molecules; choose another --name, or delete that "
            "folder to run it again"
        )


def run_cv(
    job: Job, n_folds: int, method: str, seed: int, directory: Path, metric: str
) -> dict[str, Any]:
    """``molml cv``: fit one model per fold (or per seed, ``method="seeds"``), test each and
    their ensemble on the test split; writes ``folds.json``, ``ensemble.json``, ``cv.csv`` and
    ``cv.json`` into ``directory``. Run again with the same config and options, it resumes
    a killed cross-validation (finished folds kept) or returns the summary of a finished one."""
    metric_direction(metric)
    folds_file = directory / "folds.json"
    request = {
        "folds": n_folds,
        "split": method,
        "seed": seed,
        "metric": metric,
        "config": learning_config(job.config),
    }
    finished = _check_request(directory, request)
    if finished is not None:
        return finished
    table = job.split_table()
    data_sha256 = data_fingerprint(table)
    _check_data(directory, data_sha256, job.config)
    creatable_directory(directory, f"cv folder {directory} cannot be written")
    check_metric_logged(metric, table.task_type, table.tasks, loss=job.kind == "graph")
    if not folds_file.exists():
        folds = fold_splits(table, n_folds, method, seed)  # refused before the folder is made
        directory.mkdir(parents=True, exist_ok=True)
        recorded = {**request, DATA_KEY: data_sha256}
        (directory / REQUEST_FILE).write_text(json.dumps(recorded, indent=2))
        write_folds(folds, folds_file)
    member_seed = seed if method == SEED_ENSEMBLE else None
    fitted = fit_folds(job, job.config, folds_file, n_folds, directory, metric, seed=member_seed)
    if any(f.model_path is None for f in fitted):
        raise DataError("a fold run saved no model; keep a ModelCheckpoint in trainer.callbacks")
    test_metric = "test/" + metric.removeprefix("val/")
    rows = []
    for index, fold in enumerate(fitted):
        tested = job.test(fold_config(job.config, folds_file, index), fold.model_path)
        rows.append({"fold": str(index), metric: fold.value, test_metric: tested[test_metric]})
    manifest = directory / "ensemble.json"
    members = [str(f.model_path.resolve().relative_to(directory.resolve())) for f in fitted]
    manifest.write_text(json.dumps({ENSEMBLE_KEY: members}, indent=2))
    ensemble = ensemble_metrics(manifest, table)
    frame = pd.DataFrame(rows)
    summary = {
        "metric": metric,
        "folds": n_folds,
        "split": method,
        "seed": seed,
        "per_fold": list(rows),
        "mean": {col: float(frame[col].mean()) for col in (metric, test_metric)},
        "sd": {col: float(frame[col].std(ddof=1)) for col in (metric, test_metric)},
        "ensemble": ensemble,
        "ensemble_manifest": str(manifest),
    }
    for stat in ("mean", "sd"):
        rows.append({"fold": stat, **summary[stat]})
    # the ensemble has no loss (it is scored on its mean prediction): NaN where not computed
    rows.append(
        {"fold": "ensemble", metric: float("nan"), test_metric: ensemble.get(test_metric, math.nan)}
    )
    pd.DataFrame(rows).to_csv(directory / "cv.csv", index=False)
    (directory / "cv.json").write_text(json.dumps(summary, indent=2))
    # the ensemble has no validation score (each fold validated on its own part)
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.4f", na_rep="-"))
    print(f"fold models as an ensemble: {manifest} (molml.load_model({str(manifest)!r}))")
    return summary


def fold_config(config: dict[str, Any], folds_file: Path, index: int) -> dict[str, Any]:
    """``config`` with its data split set to fold ``index`` of ``folds_file``. The folds
    were cut from the training part that ``data.train_fraction`` kept, so a fold's data
    module keeps every training molecule of its fold (the fraction is not applied twice)."""
    values: dict[str, Any] = {
        "data.split": "predefined",
        "data.split_file": str(folds_file),
        "data.split_index": index,
        "data.split_column": None,
    }
    if (config.get("data") or {}).get("train_fraction") is not None:
        values["data.train_fraction"] = 1.0
    return with_values(config, values)


def ensemble_metrics(manifest: Path, table: SplitTable) -> dict[str, float]:
    """Test-split metrics of the mean prediction of the models in ``manifest``."""
    predictor = load_model(manifest)
    rows = table.split.test
    frame = predictor.predict([table.smiles[row] for row in rows])
    values = frame[predictor.point_columns()].to_numpy(dtype=np.float32)
    n_tasks = len(table.tasks)
    preds = values.reshape(len(rows), n_tasks, -1)
    if table.task_type != "multiclass":
        preds = preds[:, :, 0]
    classes = classes_per_task(table.targets) if table.task_type == "multiclass" else None
    scores = score_predictions(
        table.task_type, table.tasks, preds, table.targets[rows], task_classes=classes
    )
    return {f"test/{name}": value for name, value in scores.items()}
