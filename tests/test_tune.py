"""``molml tune`` and ``molml cv``: real Optuna studies in SQLite, real Lightning and XGBoost
fits on generated data, real MLflow runs in a local SQLite store."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_stopped_at_line, write_property_csv

from molml import load_model
from molml.cli import main
from molml.errors import DataError
from molml.tune import TuneOptions, make_job, read_space, run_tune
from molml.tune.study import STOPPED, write_trials


def graph_config(path: Path, data: Path, **data_options: object) -> Path:
    """A tiny D-MPNN config on ``data``'s logP column (2 epochs of 3 batches)."""
    config = {
        "seed_everything": 0,
        "data": {
            "path": str(data),
            "target_columns": ["logp"],
            "batch_size": 32,
            "cache_dir": None,
            "featurize_jobs": 1,
            **data_options,
        },
        "model": {
            "encoder": {"class_path": "molml.models.DMPNN", "init_args": {"hidden_dim": 32}},
            "ffn_hidden_dim": 32,
            "warmup_epochs": 0,
        },
        "trainer": {
            "max_epochs": 2,
            "limit_train_batches": 3,
            "accelerator": "cpu",
            "logger": False,
            "callbacks": [
                {
                    "class_path": "molml.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/rmse", "mode": "min", "filename": "best"},
                }
            ],
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def xgb_config(path: Path, data: Path, **data_options: object) -> Path:
    """A small XGBoost-on-ECFP4 baseline config on ``data``'s logP column."""
    config = {
        "data": {"path": str(data), "target_columns": ["logp"], **data_options},
        "features": {"name": "ecfp4", "params": {"n_bits": 256}, "n_jobs": 1},
        "estimator": {
            "name": "xgboost",
            "params": {"n_estimators": 30, "n_jobs": 1},
            "early_stopping_rounds": 5,
        },
        "tracking_uri": None,
        "output_dir": str(path.parent / "runs"),
    }
    path.write_text(yaml.safe_dump(config))
    return path


def space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GRAPH_SPACE = (
    "model.lr: {float: [1.0e-4, 1.0e-2], log: true}\nmodel.encoder.init_args.depth: {int: [1, 3]}\n"
)
XGB_SPACE = "estimator.params.max_depth: {int: [2, 6]}\n"


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report, so a study of a few trials always has a pruned one."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1


def study_trials(storage: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage}").trials


def test_graph_study_prunes_resumes_tracks_and_best_yaml_refits(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    search = space(tmp_path / "space.yaml", GRAPH_SPACE)
    job = make_job([str(config)], [])
    options = TuneOptions(
        study_name="tiny",
        storage="sqlite:///runs/optuna.db",
        metric="val/rmse",
        n_trials=3,
        pruner=PruneTrialOne(),
        tracking_uri="sqlite:///runs/mlflow.db",
    )
    out = run_tune(job, read_space(search), options)
    trials = study_trials(tmp_path / "runs" / "optuna.db", "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    # the config's own values (MoleculeModel's default lr, DMPNN's default depth) go first
    assert trials[0].params == {"model.lr": 0.001, "model.encoder.init_args.depth": 3}
    # pruned by the Lightning callback after its first validation epoch, not at the end
    assert list(trials[1].intermediate_values) == [0]
    assert len(trials[0].intermediate_values) == 2

    # the same command again resumes the study, drawing new points
    main(["tune", "--config", str(config), "--search", str(search), "--n-trials", "1",
          "--study-name", "tiny", "--metric", "val/rmse"])  # fmt: skip
    trials = study_trials(tmp_path / "runs" / "optuna.db", "tiny")
    assert len(trials) == 4 and trials[3].state.name == "COMPLETE"
    assert trials[3].params not in [t.params for t in trials[:3]]

    table = pd.read_csv(out / "trials.csv")
    assert table["state"].tolist() == ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"]
    assert {"number", "value", "params_model.lr", "duration_s", "fail_reason"} <= set(table)
    best = json.loads((out / "best.json").read_text())
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    assert best["best_value"] == min(t.value for t in completed)
    assert np.isfinite(best["test"]["test/rmse"])
    assert {p.name for p in (out / "plots").glob("*.png")} >= {"history.png", "slice.png"}
    # interactive pages that open offline: they load the plotly bundle written beside them
    history_page = (out / "plots" / "history.html").read_text()
    assert '<script charset="utf-8" src="plotly.min.js">' in history_page
    assert (out / "plots" / "plotly.min.js").stat().st_size > 1_000_000

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune/tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2  # one per molml tune process
    assert sorted(r.data.tags["state"] for r in nested) == ["COMPLETE"] * 3 + ["PRUNED"]
    # each trial's curves, epoch by epoch; the pruned one's up to the epoch that stopped it,
    # that epoch's training loss included (it is logged once the epoch ends, after validation)
    for run in nested:
        pruned = run.data.tags["state"] == "PRUNED"
        val = client.get_metric_history(run.info.run_id, "val/rmse")
        assert [m.step for m in val] == ([0] if pruned else [0, 1])
        assert all(np.isfinite(m.value) for m in val)
        train = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in train] == ([0] if pruned else [0, 1])
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"best.yaml", "trials.csv", "plots"} <= artifacts

    best_yaml = yaml.safe_load((out / "best.yaml").read_text())
    assert best_yaml["model"]["lr"] == best["best_params"]["model.lr"]
    main(["fit", "--config", str(out / "best.yaml"), "--trainer.default_root_dir", "refit"])
    assert (tmp_path / "refit" / "checkpoints" / "best.ckpt").is_file()


def test_failed_trials_are_recorded_with_their_reason(
    property_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    search = space(tmp_path / "space.yaml", "model.dropout: {categorical: [1.5]}\n")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("optuna").addHandler(handler)
    try:
        with pytest.raises(SystemExit) as exit_info:  # a study without a result fails
            main(["tune", "--config", str(config), "--search", str(search), "--n-trials", "2",
                  "--tracking-uri", "none"])  # fmt: skip
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert exit_info.value.code == 2
    assert "study cfg: no trial finished (each failed or was pruned)" in capsys.readouterr().err
    trials = study_trials(tmp_path / "runs" / "optuna.db", "cfg")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # the study went on after one
    table = pd.read_csv(tmp_path / "runs" / "tune" / "cfg" / "trials.csv")
    assert table["fail_reason"].str.contains("dropout").all()
    failed = [r for r in records if "failed with parameters" in r.getMessage()]
    assert len(failed) == 2 and all(r.exc_info is None for r in failed)  # one line each


@pytest.mark.slow  # two fresh processes importing torch and Lightning
def test_two_processes_share_one_study_and_other_spaces_are_refused(
    property_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = xgb_config(tmp_path / "xgb.yaml", property_csv)
    search = space(tmp_path / "space.yaml", XGB_SPACE)
    storage = tmp_path / "optuna.db"
    command = [sys.executable, "-m", "molml.cli", "tune", "--config", str(config),
               "--search", str(search), "--n-trials", "2", "--storage", f"sqlite:///{storage}",
               "--study-name", "shared", "--output-dir", str(tmp_path / "tune")]  # fmt: skip
    workers = [
        subprocess.Popen([*command, "--seed", str(seed)], cwd=tmp_path, stderr=subprocess.PIPE)
        for seed in (0, 1)
    ]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read().decode()[-2000:]
    trials = study_trials(storage, "shared")
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)

    other = space(tmp_path / "other.yaml", "estimator.params.learning_rate: {float: [0.01, 0.3]}\n")
    wider = space(tmp_path / "wider.yaml", "estimator.params.max_depth: {int: [2, 9]}\n")
    for extra in (
        ["--search", str(other)],
        ["--search", str(wider)],
        ["--search", str(search), "--metric", "val/r2"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*command[3:], *extra])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert "use another --study-name" in error
        if extra[1] == str(other):  # named by what each searches, not by a config diff
            assert (
                "searches ['estimator.params.max_depth'], not ['estimator.params.learning_rate']"
                in error
            )
    # another split (or data file, or schedule) is another study: its trials would not compare
    with pytest.raises(SystemExit) as exit_info:
        main([*command[3:], "--data.split", "random"])
    assert exit_info.value.code == 2
    assert 'another config: data.split "scaffold" -> "random"' in capsys.readouterr().err
    assert len(study_trials(storage, "shared")) == 4


def test_a_study_resumes_with_its_search_space_in_another_order(
    property_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same ranges written in another order are the same space (they used to be refused,
    printing both spaces whole); a changed range is refused by its name."""
    config = xgb_config(tmp_path / "xgb.yaml", property_csv)
    depth = "estimator.params.max_depth: {int: [2, 6]}\n"
    rate = "estimator.params.learning_rate: {float: [0.05, 0.3]}\n"
    storage = tmp_path / "optuna.db"
    command = ["tune", "--config", str(config), "--n-trials", "1", "--storage",
               f"sqlite:///{storage}", "--study-name", "order", "--output-dir",
               str(tmp_path / "tune"), "--tracking-uri", "none"]  # fmt: skip
    main([*command, "--search", str(space(tmp_path / "a.yaml", depth + rate))])
    main([*command, "--search", str(space(tmp_path / "b.yaml", rate + depth))])
    assert len(study_trials(storage, "order")) == 2
    wider = rate.replace("0.3]", "0.5]")
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--search", str(space(tmp_path / "c.yaml", depth + wider))])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "was made with estimator.params.learning_rate {" in error
    assert "max_depth" not in error.partition("not")[2].partition(";")[0]


def poisoned_data(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A table whose test-split rows have logP 1e4 and a split file putting them in test."""
    data = write_property_csv(tmp_path / "poisoned.csv", 240, invalid=False)
    frame = pd.read_csv(data)
    test_rows = np.arange(200, 240)
    frame.loc[test_rows, "logp"] = 1e4
    frame.to_csv(data, index=False)
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps(
            [{"train": list(range(170)), "val": list(range(170, 200)), "test": test_rows.tolist()}]
        )  # fmt: skip
    )
    return data, split, test_rows


def test_cross_validated_trials_log_every_folds_curves(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    search = space(tmp_path / "space.yaml", GRAPH_SPACE)
    main(["tune", "--config", str(config), "--search", str(search), "--n-trials", "1",
          "--cv", "2", "--pruner", "none"])  # fmt: skip
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune/cfg")
    (trial,) = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "mlflow.parentRunId" in r.data.tags
    ]
    for fold in (0, 1):
        for name in ("train/loss", "val/rmse"):
            history = client.get_metric_history(trial.info.run_id, f"fold_{fold}/{name}")
            assert [m.step for m in history] == [0, 1]
    folds = [client.get_metric_history(trial.info.run_id, f"fold_{f}/val/rmse") for f in (0, 1)]
    assert [m.value for m in folds[0]] != [m.value for m in folds[1]]
    fitted = tmp_path / "runs" / "tune" / "cfg" / "trials" / "trial_0" / "fold_0" / "fitted.json"
    curves = json.loads(fitted.read_text())["curves"]
    assert [epoch for epoch, _ in curves["train/loss"]] == [0, 1]  # once per epoch
    # the best config is refitted once, into a folder of the best trial's own
    study = tmp_path / "runs" / "tune" / "cfg"
    first = json.loads((study / "best.json").read_text())
    kept = Path(first["best_model"])
    folder = study / "best_fit" / f"trial_{first['best_trial']}"
    assert kept.is_absolute() and kept.parent == (folder / "checkpoints").resolve()
    assert json.loads((folder / "refit.json").read_text())["test"] == first["test"]


def test_the_refit_of_a_cross_validated_best_trial_is_kept_until_the_best_changes(
    tmp_path: Path,
) -> None:
    """A rerun refitted the same best config again, beside the earlier models (best-v1.ckpt
    next to best.ckpt), and a refit killed before its test was taken as finished. A study
    made again (its trial 3 another trial) or another base config is refitted."""
    from datetime import datetime
    from types import SimpleNamespace

    from molml.tune.jobs import Fitted
    from molml.tune.study import _refit_best

    fits = []

    class Job:
        def fit(self, config: dict, directory: Path, metric: str) -> Fitted:
            fits.append(directory.name)
            model = directory / "checkpoints" / "best.ckpt"
            model.parent.mkdir(parents=True)
            model.write_text(f"weights {len(fits)}")
            return Fitted(1.0, {}, model)

        def test(self, config: dict, model: Path) -> dict[str, float]:
            return {"test/rmse": float(len(fits))}

    options = SimpleNamespace(metric="val/rmse")
    started = datetime(2026, 1, 1, 12, 0)
    best = SimpleNamespace(number=3, params={"model.lr": 0.01}, datetime_start=started)
    model, test = _refit_best(Job(), best, {}, options, tmp_path)
    assert Path(model) == (tmp_path / "best_fit" / "trial_3" / "checkpoints" / "best.ckpt")
    assert _refit_best(Job(), best, {}, options, tmp_path) == (model, test)  # kept
    assert fits == ["trial_3"]
    (tmp_path / "best_fit" / "trial_3" / "refit.json").unlink()  # killed before its test
    assert _refit_best(Job(), best, {}, options, tmp_path)[1] == {"test/rmse": 2.0}
    other = SimpleNamespace(number=5, params={"model.lr": 0.1}, datetime_start=started)
    assert "trial_5" in _refit_best(Job(), other, {}, options, tmp_path)[0]
    assert fits == ["trial_3", "trial_3", "trial_5"]
    assert Path(model).read_text() == "weights 2"  # the refit of trial 3 is still there
    remade = SimpleNamespace(number=3, params={"model.lr": 0.01}, datetime_start=datetime.now())
    assert _refit_best(Job(), remade, {}, options, tmp_path)[1] == {"test/rmse": 4.0}
    wider = {"model": {"encoder": {"init_args": {"hidden_dim": 64}}}}
    assert _refit_best(Job(), remade, wider, options, tmp_path)[1] == {"test/rmse": 5.0}
    assert _refit_best(Job(), remade, wider, options, tmp_path)[1] == {"test/rmse": 5.0}


def test_tuners_finishing_together_refit_the_best_trial_once(tmp_path: Path) -> None:
    """Two tuners of one study that finish on the same best trial at the same time both
    emptied and refitted ``best_fit/trial_<n>/``, one deleting the other's model."""
    import threading
    from types import SimpleNamespace

    from molml.tune.jobs import Fitted
    from molml.tune.study import _refit_best

    fits = []
    started = threading.Event()

    class Job:
        def fit(self, config: dict, directory: Path, metric: str) -> Fitted:
            fits.append(directory.name)
            started.set()
            time.sleep(0.5)  # the other tuner arrives while this one trains
            model = directory / "checkpoints" / "best.ckpt"
            model.parent.mkdir(parents=True)
            model.write_text("weights")
            return Fitted(1.0, {}, model)

        def test(self, config: dict, model: Path) -> dict[str, float]:
            return {"test/rmse": 1.0}

    options = SimpleNamespace(metric="val/rmse")
    best = SimpleNamespace(number=2, params={"model.lr": 0.01}, datetime_start=None)
    results = []

    def tuner() -> None:
        results.append(_refit_best(Job(), best, {}, options, tmp_path))

    first = threading.Thread(target=tuner)
    first.start()
    started.wait(10)
    second = threading.Thread(target=tuner)
    second.start()
    first.join(20)
    second.join(20)
    assert fits == ["trial_2"]
    assert results[0] == results[1]
    assert Path(results[0][0]).read_text() == "weights"


@pytest.mark.parametrize("kind", ["graph", "xgb"])
def test_trials_never_see_test_labels(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test labels are 1e4: a trial that trained or scored on one would score ~1e3 or worse;
    only the one test of the best config at the end sees them."""
    monkeypatch.chdir(tmp_path)
    data, split, _ = poisoned_data(tmp_path)
    make = graph_config if kind == "graph" else xgb_config
    config = make(tmp_path / "cfg.yaml", data, split="predefined", split_file=str(split))
    search = space(tmp_path / "space.yaml", GRAPH_SPACE if kind == "graph" else XGB_SPACE)
    cv = ["--cv", "2"] if kind == "xgb" else []  # folds are made of train+val rows only
    main(["tune", "--config", str(config), "--search", str(search), "--n-trials", "2",
          "--pruner", "none", "--tracking-uri", "none", *cv])  # fmt: skip
    trials = study_trials(tmp_path / "runs" / "optuna.db", "cfg")
    assert all(t.state.name == "COMPLETE" and t.value < 10 for t in trials)
    best = json.loads((tmp_path / "runs" / "tune" / "cfg" / "best.json").read_text())
    assert best["test"]["test/rmse"] > 1000


def test_a_jobs_test_of_its_own_fit_is_recorded_with_the_model(
    property_csv: Path, tmp_path: Path
) -> None:
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["callbacks"].append({"class_path": "molml.callbacks.EvaluationPlots"})
    config.write_text(yaml.safe_dump(settings))
    job = make_job([str(config)], ["--trainer.max_epochs", "1"])
    fitted = job.fit(job.config, tmp_path / "fit", "val/rmse")
    tested = job.test(job.config, fitted.model_path)
    recorded = load_model(fitted.model_path).metadata["test_metrics"]
    assert recorded["rmse"] == pytest.approx(tested["test/rmse"])


def test_cv_fold_ensemble_loads_and_predicts(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    main(["cv", "--config", str(config), "--folds", "2", "--trainer.max_epochs", "1"])
    out = tmp_path / "runs" / "cv" / "cfg"
    summary = json.loads((out / "cv.json").read_text())
    assert len(summary["per_fold"]) == 2 and np.isfinite(summary["ensemble"]["test/rmse"])
    folds = json.loads((out / "folds.json").read_text())
    assert folds[0]["test"] == folds[1]["test"]  # the test split is held out of every fold
    assert not set(folds[0]["val"]) & set(folds[1]["val"])
    assert not set(folds[0]["val"]) & set(folds[0]["test"])
    model = load_model(out / "ensemble.json")
    predictions = model.predict(["CCO", "c1ccccc1O"])
    assert {"logp", "logp_std"} <= set(predictions.columns)
    assert (predictions["logp_std"] > 0).all() and (predictions["status"] == "ok").all()
    with pytest.raises(SystemExit) as exit_info:  # a second cv never overwrites the first
        main(["cv", "--config", str(config), "--folds", "3", "--trainer.max_epochs", "1"])
    assert exit_info.value.code == 2
    assert json.loads((out / "folds.json").read_text()) == folds


def test_a_fit_runs_saved_config_is_taken_by_tune_and_cv(
    property_csv: Path, tmp_path: Path
) -> None:
    """A run's config.yaml holds the fit verb's own options (null): tune and cv take it."""
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    saved = yaml.safe_load(config.read_text())
    (tmp_path / "saved.yaml").write_text(
        yaml.safe_dump({**saved, "ckpt_path": None, "weights_only": None})
    )
    assert make_job([str(tmp_path / "saved.yaml")], []).config == make_job([str(config)], []).config
    (tmp_path / "resume.yaml").write_text(yaml.safe_dump({**saved, "ckpt_path": "last.ckpt"}))
    with pytest.raises(DataError, match="ckpt_path is an option of molml fit"):
        make_job([str(tmp_path / "resume.yaml")], [])


def test_a_killed_cv_keeps_its_finished_folds_and_resumes_the_interrupted_one(
    property_csv: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import time

    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["callbacks"][0]["init_args"]["save_last"] = True
    config.write_text(yaml.safe_dump(settings))
    command = [sys.executable, "-m", "molml.cli", "cv", "--config", str(config), "--folds", "2",
               "--trainer.max_epochs", "40", "--output-dir", str(tmp_path / "cv")]  # fmt: skip
    out = tmp_path / "cv" / "cfg"
    running = subprocess.Popen(command, cwd=tmp_path)
    deadline = time.monotonic() + 300
    last = out / "fold_1" / "checkpoints" / "last.ckpt"  # written every epoch
    while time.monotonic() < deadline and not last.exists():
        time.sleep(0.2)
    os.kill(running.pid, signal.SIGTERM)  # fold 0 finished, fold 1 half trained
    assert running.wait(timeout=120) == 143
    assert (out / "fold_0" / "fitted.json").exists() and not (out / "cv.json").exists()
    first = json.loads((out / "fold_0" / "fitted.json").read_text())
    folds = (out / "folds.json").read_text()

    changed = subprocess.run([*command[:-4], "--trainer.max_epochs", "5", *command[-2:]],
                             cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert changed.returncode == 2
    assert "trainer.max_epochs 40 -> 5" in changed.stderr  # names what differs

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fold 0: trained before" in resumed.stdout
    assert f"fold 1: resuming its training from {last}" in resumed.stdout
    assert json.loads((out / "fold_0" / "fitted.json").read_text()) == first  # not retrained
    assert (out / "folds.json").read_text() == folds
    summary = json.loads((out / "cv.json").read_text())
    assert summary["per_fold"][0]["val/rmse"] == pytest.approx(first["value"])
    assert len(summary["per_fold"]) == 2 and np.isfinite(summary["ensemble"]["test/rmse"])

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "has finished" in again.stdout


def test_a_tuner_stopped_by_sigterm_fails_its_running_trial_at_once(
    property_csv: Path, tmp_path: Path
) -> None:
    """Lightning ends an interrupted fit with SystemExit, which Optuna does not close a trial
    on: the trial stayed RUNNING until a later run found its heartbeat stale."""
    import os
    import signal
    import time

    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["callbacks"][0]["init_args"]["save_last"] = True
    config.write_text(yaml.safe_dump(settings))
    search = space(tmp_path / "space.yaml", GRAPH_SPACE)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = [sys.executable, "-m", "molml.cli", "tune", "--config", str(config), "--search",
               str(search), "--n-trials", "2", "--trainer.max_epochs", "40", "--storage",
               storage, "--study-name", "stopped", "--tracking-uri", "none", "--output-dir",
               str(tmp_path / "tune")]  # fmt: skip
    running = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "tune" / "stopped" / "trials" / "trial_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not last.exists():
        time.sleep(0.2)
    os.kill(running.pid, signal.SIGTERM)
    code, stderr = running.wait(timeout=120), running.stderr.read()
    assert code == 143, stderr[-3000:]
    assert "molml tune: stopped by SIGTERM" in stderr
    (trial,) = optuna.load_study(study_name="stopped", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "stopped by SIGTERM"


def test_cv_seed_ensemble_trains_every_member_on_the_configs_split_with_its_own_seed(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv, train_fraction=0.5)
    main(["cv", "--config", str(config), "--split", "seeds", "--folds", "2", "--seed", "7",
          "--trainer.max_epochs", "1"])  # fmt: skip
    out = tmp_path / "runs" / "cv" / "cfg"
    folds = json.loads((out / "folds.json").read_text())
    assert folds[0] == folds[1]  # the same train/val/test rows for both members
    assert len(folds[0]["val"]) > 0 and len(folds[0]["test"]) > 0
    # train_fraction 0.5 was applied once, when the config's split was made: each member
    # trains on every training row of the folds file, as a plain fit of the config would
    trained = json.loads((out / "fold_0" / "split.json").read_text())[0]["train"]
    assert sorted(trained) == sorted(folds[0]["train"])
    seeds = [yaml.safe_load((out / f"fold_{i}" / "config.yaml").read_text()) for i in (0, 1)]
    assert [c["seed_everything"] for c in seeds] == [7, 8]
    # the member's own config, not the quiet one it was trained with (its folder as root)
    assert not seeds[0]["trainer"].get("default_root_dir")
    summary = json.loads((out / "cv.json").read_text())
    tests = [fold["test/rmse"] for fold in summary["per_fold"]]
    assert tests[0] != tests[1]  # different seeds, different models
    model = load_model(out / "ensemble.json")
    assert (model.predict(["CCO", "c1ccccc1O"])["logp_std"] > 0).all()


def test_tune_refuses_a_seed_ensemble_as_a_way_to_score_trials(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    job = make_job([str(config)], [])
    options = TuneOptions(
        study_name="cfg", storage="sqlite:///runs/optuna.db", metric="val/rmse", n_trials=1,
        cv=2, cv_split="seeds",
    )  # fmt: skip
    with pytest.raises(DataError, match="choose one of"):
        run_tune(job, read_space(space(tmp_path / "space.yaml", GRAPH_SPACE)), options)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model.encoder.init_args.hiden_dim: {int: [8, 32]}\n",
         "closest options: model.encoder.init_args.hidden_dim"),
        ("model.lr: {float: [0.1, 0.01]}\n", "low 0.1 is above high 0.01"),
        ("model.lr: {float: [0.0, 0.01], log: true}\n", "a log distribution needs bounds > 0"),
        ("model.readout: {categorical: []}\n", "non-empty list of choices"),
        ("model.lr: {uniform: [0.1, 0.2]}\n", "give exactly one of"),
        ("model.encoder.init_args.depth: {int: [1, 3.5]}\n", "int bounds must be integers"),
        ("model.encoder.init_args.hidden_dim: {categorical: [8, x16, 32]}\n", "x16"),
        ("model.readout: {categorical: [mean, maen, sum]}\n", "Got value: maen"),
    ],
)  # fmt: skip
def test_bad_search_spaces_are_refused_before_any_trial(
    text: str,
    message: str,
    property_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    search = space(tmp_path / "space.yaml", text)
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--config", str(config), "--search", str(search), "--n-trials", "1"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs" / "optuna.db").exists()


def test_unknown_estimator_parameter_and_bad_storage_are_refused(
    property_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = xgb_config(tmp_path / "xgb.yaml", property_csv)
    typo = space(tmp_path / "typo.yaml", "estimator.params.max_dept: {int: [2, 6]}\n")
    fingerprint = space(tmp_path / "fp.yaml", "features.params.radiuss: {int: [1, 3]}\n")
    good = space(tmp_path / "good.yaml", XGB_SPACE)
    cases = [
        (["--search", str(typo)], "did you mean 'max_depth'"),
        (["--search", str(fingerprint)], "unexpected keyword argument 'radiuss'"),
        (["--search", str(good), "--pruner=hyperband"], "--pruner: a baseline trial is scored"),
        (["--search", str(good), "--pruner-warmup", "2"], "--pruner-warmup: a baseline trial"),
        (["--search", str(good), "--storage", "nosuchdb://x"], "cannot open the study storage"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["tune", "--config", str(config), "--n-trials", "1", *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_grid_sampler_tries_every_point_once_and_refuses_ranges(
    property_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = xgb_config(tmp_path / "xgb.yaml", property_csv)
    grid = space(tmp_path / "grid.yaml", "estimator.params.max_depth: {categorical: [2, 3, 4]}\n")
    storage = tmp_path / "optuna.db"
    command = ["tune", "--config", str(config), "--search", str(grid), "--sampler", "grid",
               "--storage", f"sqlite:///{storage}", "--study-name", "grid",
               "--output-dir", str(tmp_path / "tune"), "--tracking-uri", "none"]  # fmt: skip
    main([*command, "--n-trials", "1"])  # stopped after one point, then resumed
    main(command)  # no --n-trials: the rest of the grid
    depths = sorted(t.params["estimator.params.max_depth"] for t in study_trials(storage, "grid"))
    assert depths == [2, 3, 4]  # every point once (a resume used to repeat one, skip another)
    main(command)  # a rerun of a finished grid adds no trial
    assert len(study_trials(storage, "grid")) == 3

    ranged = space(tmp_path / "ranged.yaml", XGB_SPACE)
    with pytest.raises(SystemExit) as exit_info:
        main([*command[:3], "--search", str(ranged), *command[5:7], "--storage",
              f"sqlite:///{tmp_path / 'other.db'}"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "estimator.params.max_depth is a range" in capsys.readouterr().err
    assert not (tmp_path / "other.db").exists()


def test_shipped_search_spaces_fit_their_configs() -> None:
    """Every configs/search space names options of the config it is made for."""
    from molml.tune.study import check_space

    pairs = {
        "dmpnn": "esol_dmpnn",
        "dmpnn_descriptors": "esol_dmpnn",
        "dmpnn_finetune": "esol_dmpnn",
        "dmpnn_chemprop_finetune": "lipo_dmpnn_chemprop_pretrained",
        "pretrained_l2": "lipo_dmpnn_chemprop_pretrained",
        "gine": "lipo_gine",
        "gps": "lipo_gps",
        "xgb": "esol_xgb",
    }
    assert set(pairs) == {p.stem for p in (REPO / "configs" / "search").glob("*.yaml")}
    for search, config in pairs.items():
        job = make_job([str(REPO / "configs" / f"{config}.yaml")], [])
        check_space(job, read_space(REPO / "configs" / "search" / f"{search}.yaml"))


def test_a_study_starts_from_the_configs_own_values_where_they_are_in_the_space(
    tmp_path: Path,
) -> None:
    from molml.tune.space import config_point

    config = {"model": {"lr": 0.001, "readout": "mean", "depth": 4, "width": 300}, "seed": 7}
    searched = read_space(
        space(
            tmp_path / "space.yaml",
            "model.lr: {float: [1.0e-4, 1.0e-2], log: true}\n"
            "model.readout: {categorical: [mean, sum]}\n"
            "model.depth: {int: [1, 3]}\n"  # the config's 4 lies outside: sampled instead
            "model.width: {int: [100, 500], step: 150}\n",  # 300 is off the 100, 250, 400 grid
        )
    )
    assert config_point(config, searched) == {"model.lr": 0.001, "model.readout": "mean"}


def test_a_trial_whose_heartbeat_went_stale_is_failed_and_its_point_retried_at_once(
    tmp_path: Path,
) -> None:
    """A trial whose process was killed (its heartbeat stops) is failed and its point enqueued
    when the study resumes, so the first new trial scores it (a grid finished without it:
    the stale-trial check never ran behind Optuna's storage cache)."""
    from molml.tune.study import StopSafeStorage, retry_stopped_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = StopSafeStorage(
            f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=1
        )
    study = optuna.create_study(storage=storage, study_name="stale")
    trial = study.ask({"hidden": optuna.distributions.IntDistribution(16, 64)})
    storage.record_heartbeat(trial._trial_id)  # as the killed process last did
    time.sleep(2.5)
    assert retry_stopped_trials(study) == [trial.params]
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state.name == "FAIL"
    assert trials[1].state.name == "WAITING" and trials[1].system_attrs["fixed_params"] == (
        trial.params
    )


@pytest.mark.slow  # waits out the storage's heartbeat grace period (60 s)
def test_a_killed_tuner_resumes_and_its_running_trial_is_failed(
    property_csv: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import time

    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    slow = yaml.safe_load(config.read_text())
    slow["trainer"].update(max_epochs=40)  # long enough to be killed in the middle
    config.write_text(yaml.safe_dump(slow))
    search = space(tmp_path / "space.yaml", GRAPH_SPACE)
    storage = tmp_path / "optuna.db"
    command = [sys.executable, "-m", "molml.cli", "tune", "--config", str(config),
               "--search", str(search), "--storage", f"sqlite:///{storage}",
               "--study-name", "killed", "--metric", "val/rmse", "--pruner", "none",
               "--output-dir", str(tmp_path / "tune")]  # fmt: skip
    tuner = subprocess.Popen([*command, "--n-trials", "3"], cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        trials = study_trials(storage, "killed") if storage.exists() else []
        if trials and trials[-1].state.name == "RUNNING" and trials[-1].intermediate_values:
            break
        time.sleep(0.5)
    os.kill(tuner.pid, signal.SIGKILL)
    tuner.wait()
    killed = study_trials(storage, "killed")[-1].number
    time.sleep(65)  # two missed heartbeats and the grace period
    result = subprocess.run(
        [*command, "--n-trials", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study_trials(storage, "killed")
    assert trials[killed].state.name == "FAIL"  # not left RUNNING forever
    assert trials[-1].state.name == "COMPLETE" and trials[-1].number > killed
    assert trials[-1].params == trials[killed].params  # the killed point is tried first
    table = pd.read_csv(tmp_path / "tune" / "killed" / "trials.csv")
    assert table.loc[table["number"] == killed, "state"].item() == "FAIL"
    assert table.loc[table["number"] == killed, "fail_reason"].item() == STOPPED


def test_a_stopped_tuner_closes_its_mlflow_run_as_killed(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    import molml.tune.study as study_module

    def interrupted(*args: object) -> object:
        def objective(trial: optuna.Trial) -> float:
            raise KeyboardInterrupt  # Ctrl-C or SIGTERM during a trial

        return objective

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study_module, "_objective", interrupted)
    job = make_job([str(graph_config(tmp_path / "cfg.yaml", property_csv))], [])
    options = TuneOptions(
        study_name="stopped", storage="sqlite:///runs/optuna.db", metric="val/rmse",
        n_trials=2, tracking_uri="sqlite:///runs/mlflow.db",
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_tune(job, read_space(space(tmp_path / "space.yaml", GRAPH_SPACE)), options)
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tune/stopped").experiment_id])
    assert run.info.status == "KILLED"  # not RUNNING forever


@pytest.mark.parametrize("enqueued", [True, False])
def test_a_stop_while_optuna_starts_a_trial_fails_that_trial(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enqueued: bool
) -> None:
    """SIGTERM after Optuna set a trial running but before it started (the sampler's
    ``before_trial``, inside ``study.ask``): the trial had no heartbeat yet, so no later run
    would ever have found it stale; it stayed RUNNING for good. The config's own point is an
    enqueued trial (set running from WAITING); without it the trial is made running."""
    import os
    import signal

    from molml.errors import run_command

    def stop(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(optuna.samplers.TPESampler, "before_trial", stop)
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    settings = yaml.safe_load(config.read_text())
    # values outside the space: the config gives no start point
    settings["model"]["lr"] = 1.0e-3 if enqueued else 0.05
    settings["model"]["encoder"]["init_args"]["depth"] = 2 if enqueued else 7
    config.write_text(yaml.safe_dump(settings))
    job = make_job([str(config)], [])
    options = TuneOptions(
        study_name="stopped", storage="sqlite:///runs/optuna.db", metric="val/rmse",
        n_trials=2, tracking_uri=None,
    )  # fmt: skip
    search = read_space(space(tmp_path / "space.yaml", GRAPH_SPACE))
    with pytest.raises(SystemExit) as stopped:
        run_command("molml tune", lambda: run_tune(job, search, options))
    assert stopped.value.code == 143
    trials = study_trials(tmp_path / "runs" / "optuna.db", "stopped")
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]
    assert trials[0].user_attrs["fail_reason"] == "stopped by SIGTERM"
    assert ("start" in trials[0].user_attrs) == enqueued


def test_trials_table_says_why_each_trial_failed(tmp_path: Path) -> None:
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    raised = study.ask()
    raised.set_user_attr("fail_reason", "val/rmse is nan")
    study.tell(raised, state=optuna.trial.TrialState.FAIL)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # as a stale heartbeat fails it
    study.ask()  # still running
    table = write_trials(study, tmp_path / "trials.csv")
    assert table["state"].tolist() == ["COMPLETE", "FAIL", "FAIL", "RUNNING"]
    assert table["fail_reason"].tolist() == ["", "val/rmse is nan", STOPPED, ""]


def test_median_pruner_waits_for_its_warmup_epochs() -> None:
    from molml.tune.study import make_pruner

    study = optuna.create_study(pruner=make_pruner("median", 3), direction="minimize")
    for _ in range(2):  # two finished trials that were good at every epoch
        trial = study.ask()
        for step in range(6):
            trial.report(0.0, step)
        study.tell(trial, 0.0)
    bad = study.ask()
    decisions = []
    for step in range(6):
        bad.report(10.0, step)
        decisions.append(bad.should_prune())
    assert decisions == [False, False, False, True, True, True]
    # the warmup counts folds with --cv: 1 by default, the option when given (it was dropped)
    from molml.tune.study import warmup_steps

    options = TuneOptions(study_name="s", storage="sqlite://", metric="val/rmse")
    assert warmup_steps(options) == 10
    assert warmup_steps(TuneOptions(**{**vars(options), "cv": 5})) == 1
    assert warmup_steps(TuneOptions(**{**vars(options), "cv": 2})) == 0  # else never pruned
    assert warmup_steps(TuneOptions(**{**vars(options), "cv": 5, "pruner_warmup": 3})) == 3


def test_a_small_validation_split_suggests_cross_validation(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from molml.tune import study

    job = make_job([str(xgb_config(tmp_path / "xgb.yaml", property_csv))], [])
    options = TuneOptions(study_name="small", storage="", metric="val/rmse")
    table = job.split_table()
    validation = len(table.split.val)
    assert 0 < validation < study.SMALL_VALIDATION
    note = study.small_validation_note(table, options)
    assert f"validation split of {validation} molecules" in note
    assert "--cv 5" in note
    options.cv = 3  # trials scored by folds of train+val: nothing to warn about
    assert study.small_validation_note(table, options) is None
    options.cv = None
    monkeypatch.setattr(study, "SMALL_VALIDATION", validation)
    assert study.small_validation_note(table, options) is None


def test_a_study_resumed_on_other_data_or_schedule_is_refused(tmp_path: Path) -> None:
    """Trials of one study must compare: a resume with another data file, split or schedule
    is refused, naming what changed; where and how fast it runs may change."""
    from molml.tune.space import read_space
    from molml.tune.study import TuneOptions, load_study

    params = read_space(space(tmp_path / "space.yaml", "model.lr: {float: [1.0e-4, 1.0e-2]}\n"))
    options = TuneOptions(
        study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}", metric="val/rmse"
    )
    config = {
        "data": {"path": "a.csv", "num_workers": 0},
        "trainer": {"max_epochs": 6, "enable_progress_bar": True},
        "model": {"lr": 1e-3},
    }
    load_study(options, params, config)
    faster = {**config, "data": {"path": "a.csv", "num_workers": 4}}
    faster["trainer"] = {"max_epochs": 6, "enable_progress_bar": False}
    load_study(options, params, faster)  # the same study
    shorter = {**config, "data": {"path": "b.csv"}, "trainer": {"max_epochs": 2}}
    with pytest.raises(DataError, match=r'data.path "a.csv" -> "b.csv", trainer.max_epochs 6 -> 2'):
        load_study(options, params, shorter)
    # the same file with other rows: its data fingerprint differs (a study made before it was
    # recorded takes the first one it is given)
    load_study(options, params, config, data_sha256="rows-1")
    load_study(options, params, config, data_sha256="rows-1")
    with pytest.raises(DataError, match="was made on other data: the molecules or labels"):
        load_study(options, params, config, data_sha256="rows-2")
    # a --cv study with train_fraction begun before fingerprints were recorded: its folds saw
    # the fraction twice
    folded = TuneOptions(
        study_name="f", storage=f"sqlite:///{tmp_path / 'optuna.db'}", metric="val/rmse", cv=2
    )
    halved = {**config, "data": {"path": "a.csv", "train_fraction": 0.5}}
    load_study(folded, params, halved)
    with pytest.raises(DataError, match="train_fraction 0.5 of their training part again"):
        load_study(folded, params, halved, data_sha256="rows-1")


def test_a_trial_keeps_its_model_on_the_metric_that_scores_it() -> None:
    """A trial scored on val/mae must keep the epoch with the best val/mae, not the config's
    val/rmse checkpoint, or its value would describe another model than the one kept."""
    from molml.tune.jobs import checkpoint_on

    config = yaml.safe_load((REPO / "configs" / "esol_dmpnn.yaml").read_text())
    scored = checkpoint_on(config, "val/mae")
    checkpoints = [
        c for c in scored["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")
    ]
    assert checkpoints and all(
        c["init_args"]["monitor"] == "val/mae" and c["init_args"]["mode"] == "min"
        for c in checkpoints
    )
    assert checkpoint_on(config, "val/r2")["trainer"]["callbacks"][0]["init_args"]["mode"] == "max"
    assert config["trainer"]["callbacks"][0]["init_args"]["monitor"] == "val/rmse"  # a copy
    # a config whose own callbacks keep no checkpoint: Lightning's default kept the last epoch
    stop = {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
            "init_args": {"monitor": "val/rmse", "patience": 3}}  # fmt: skip
    alone = {**config, "trainer": {**config["trainer"], "callbacks": [stop]}}
    scored = checkpoint_on(alone, "val/roc_auc")["trainer"]["callbacks"]
    assert scored[0] == stop and scored[1]["class_path"] == "molml.callbacks.ModelCheckpoint"
    assert scored[1]["init_args"] == {
        "monitor": "val/roc_auc", "mode": "max", "filename": "best", "save_last": True
    }  # fmt: skip
    unkept = {**alone, "trainer": {**alone["trainer"], "enable_checkpointing": False}}
    assert checkpoint_on(unkept, "val/mae")["trainer"]["callbacks"] == [stop]
    (added,) = checkpoint_on({**config, "trainer": None}, "val/mae")["trainer"]["callbacks"]
    assert added["init_args"]["monitor"] == "val/mae"


@pytest.mark.parametrize("verb", ["tune", "cv"])
def test_a_metric_the_task_type_does_not_log_is_refused_before_training(
    verb: str,
    property_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """val/roc_auc on a regression task failed only after a whole fold had trained, and the
    cv folder it left behind refused the corrected rerun."""
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv)
    extra = (
        ["--search", str(space(tmp_path / "space.yaml", GRAPH_SPACE)), "--n-trials", "1"]
        if verb == "tune"
        else ["--folds", "2", "--output-dir", "cv"]
    )
    refused = [
        ("val/roc_auc", "--metric val/roc_auc is not logged for regression tasks"),
        ("val/rmse/nope", "--metric val/rmse/nope: no such task; the data's tasks are ['logp']"),
        ("val/loss/logp", "the loss is logged over all tasks only: val/loss"),
    ]
    for metric, message in refused:
        with pytest.raises(SystemExit) as exit_info:
            main([verb, "--config", str(config), "--metric", metric, *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "runs" / "optuna.db").exists() and not list(tmp_path.glob("cv/*/*"))
    baseline = xgb_config(tmp_path / "xgb.yaml", property_csv)
    if verb == "tune":
        extra[1] = str(space(tmp_path / "xgb_space.yaml", XGB_SPACE))
    with pytest.raises(SystemExit) as exit_info:  # baselines have no loss to score
        main([verb, "--config", str(baseline), "--metric", "val/loss", *extra])
    assert exit_info.value.code == 2
    assert "not logged for baselines on regression tasks" in capsys.readouterr().err


def test_impossible_outputs_and_fold_counts_are_refused_before_anything_is_written(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv, split="random")
    (tmp_path / "afile").write_text("")
    search = space(tmp_path / "space.yaml", GRAPH_SPACE)
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--config", str(config), "--search", str(search), "--n-trials", "1",
              "--output-dir", "afile"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "--output-dir afile cannot be written (afile is a file" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "optuna.db").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["cv", "--config", str(config), "--folds", "5000", "--split", "random"])
    assert exit_info.value.code == 2
    assert "the number of molecules in the training and validation" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "cv").exists()
    with pytest.raises(SystemExit) as exit_info:  # before the study records its --cv
        main(["tune", "--config", str(config), "--search", str(search), "--n-trials", "1",
              "--cv", "5000", "--cv-split", "random"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "--cv 5000: must be in [2," in capsys.readouterr().err
    assert not (tmp_path / "runs" / "optuna.db").exists()
    for options, reason in [
        (["--cv", "3", "--pruner-warmup", "2"], "no trial could be pruned; give fewer than 2"),
        (["--pruner", "none", "--pruner-warmup", "3"], "--pruner none has none"),
        (["--cv-split", "random"], "--cv-split random cuts --cv's folds: give --cv K"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["tune", "--config", str(config), "--search", str(search), "--n-trials", "1",
                  *options])  # fmt: skip
        assert exit_info.value.code == 2 and reason in capsys.readouterr().err


def test_classification_folds_without_both_classes_in_validation_are_refused() -> None:
    """A fold whose validation part has one class failed only after the folds before it had
    trained, with advice (a scaffold_stratified data split) that cv replaces anyway."""
    from molml.data.splits import Split
    from molml.tune.cv import fold_splits
    from molml.tune.jobs import SplitTable

    targets = np.ones((60, 1))
    targets[[3, 30]] = 0  # two negatives among the 50 train+val rows
    split = Split(np.arange(40), np.arange(40, 50), np.arange(50, 60))
    table = SplitTable(["C"] * 60, targets, ["active"], "classification", split)
    with pytest.raises(DataError, match=r"fold \d's validation part .* --split stratified spreads"):
        fold_splits(table, 5, "random", seed=0)
    with pytest.raises(DataError, match="--cv-split stratified"):
        fold_splits(table, 5, "random", seed=0, option="--cv")
    with pytest.raises(DataError, match=r"fewer folds \(--folds\)"):
        fold_splits(table, 5, "stratified", seed=0)
    folds = fold_splits(table, 2, "stratified", seed=0)  # one negative in each validation part
    assert [int((targets[fold.val] == 0).sum()) for fold in folds] == [1, 1]


def test_cv_on_the_loss_writes_its_table_and_another_study_keeps_off_its_folder(
    property_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The fold ensemble has no loss: cv on val/loss used to crash after every fold had
    trained. A study of the same name in another storage, given the same output folder, is
    refused instead of replacing the first study's trials (it used to take their fold results
    for its own, then to delete them); where the folder cannot tell the studies apart (no
    study.json), a trial folder already there is trained afresh."""
    monkeypatch.chdir(tmp_path)
    config = graph_config(tmp_path / "cfg.yaml", property_csv, split="random")
    main(["cv", "--config", str(config), "--folds", "2", "--metric", "val/loss", "--name", "l"])
    table = pd.read_csv(tmp_path / "runs" / "cv" / "l" / "cv.csv")
    assert table["fold"].tolist()[-1] == "ensemble" and table["test/loss"].isna().iloc[-1]
    assert table["test/loss"].iloc[:2].notna().all()
    search = space(tmp_path / "space.yaml", "model.lr: {categorical: [0.001]}\n")
    tune = ["tune", "--config", str(config), "--search", str(search), "--n-trials", "1",
            "--cv", "2", "--study-name", "s", "--tracking-uri", "none"]  # fmt: skip
    main([*tune, "--storage", "sqlite:///a.db"])
    folder = tmp_path / "runs" / "tune" / "s"
    fitted = folder / "trials" / "trial_0" / "fold_0" / "fitted.json"
    record = json.loads(fitted.read_text())
    record["value"] = 123.0  # what a stale fold result would carry into the new study
    fitted.write_text(json.dumps(record))
    with pytest.raises(SystemExit) as exit_info:
        main([*tune, "--storage", "sqlite:///b.db"])
    assert exit_info.value.code == 2
    assert "holds the trials of another study named 's'" in capsys.readouterr().err
    assert json.loads(fitted.read_text())["value"] == 123.0  # the first study's, untouched
    (folder / "study.json").unlink()
    main([*tune, "--storage", "sqlite:///b.db"])
    assert json.loads(fitted.read_text())["value"] != 123.0
    (trial,) = study_trials(tmp_path / "b.db", "s")
    assert trial.value < 100


def test_a_claimed_output_folder_moves_with_its_sqlite_storage(tmp_path: Path) -> None:
    """study.json names a SQLite storage relative to the folder: a project moved as a whole
    keeps its claim; a study of the same name in another storage is refused; no password
    of a server URL is written."""
    from molml.tune.study import claim_output_folder, open_storage, storage_label

    def claim(root: Path, database: str) -> None:
        storage = open_storage(f"sqlite:///{root / database}")
        optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
        folder = root / "tune" / "s"
        folder.mkdir(parents=True, exist_ok=True)
        claim_output_folder(storage, "s", folder)

    claim(tmp_path / "a", "optuna.db")
    (tmp_path / "a").rename(tmp_path / "b")
    claim(tmp_path / "b", "optuna.db")  # the same study, moved: no error
    with pytest.raises(DataError, match="holds the trials of another study named 's'"):
        claim(tmp_path / "b", "other.db")
    label = storage_label("postgresql://user:secret@host/db", tmp_path)
    assert "secret" not in label and "host/db" in label


def test_trials_train_in_one_process(property_csv: Path, tmp_path: Path) -> None:
    """DDP's processes would each rerun the whole ``molml tune`` command: a trainer of several
    processes is refused before any trial (where the split is read), and ``devices: auto``
    (every GPU) becomes 1."""
    config = str(graph_config(tmp_path / "cfg.yaml", property_csv))
    for overrides in (
        ["--trainer.devices", "2"],
        ["--trainer.strategy", "ddp", "--trainer.devices", "2"],
        ["--trainer.num_nodes", "2"],
    ):
        job = make_job([config], overrides)
        with pytest.raises(DataError, match="one process per GPU on the same --storage"):
            job.split_table()
    for fine in ([], ["--trainer.devices", "1"], ["--trainer.strategy", "ddp"]):
        assert make_job([config], fine).split_table().tasks == ["logp"]
    job = make_job([config], [])
    assert job._cli(job.config, tmp_path / "trial").trainer.num_devices == 1


def test_points_whose_trials_were_stopped_are_tried_again(tmp_path: Path) -> None:
    """A trial stopped by a signal or a killed process never scored its point (the config's
    own values, a grid's point): a resumed study enqueues it again, once; a trial that failed
    by itself, or a point scored since, is not retried."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from molml.tune.study import retry_stopped_trials

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s")
    readout = {"model.readout": CategoricalDistribution(["mean", "sum", "max"])}

    def add(value: str, state: TrialState, reason: str | None = None, **attrs: object) -> None:
        attrs = {**attrs, **({"fail_reason": reason} if reason else {})}
        study.add_trial(
            create_trial(
                params={"model.readout": value},
                distributions=readout,
                state=state,
                value=1.0 if state == TrialState.COMPLETE else None,
                user_attrs=attrs,
            )
        )

    add("mean", TrialState.FAIL, "stopped by SIGTERM", start="the config's own values")
    add("sum", TrialState.FAIL)  # no reason recorded: its process died (stale heartbeat)
    add("max", TrialState.FAIL, "training loss became inf")  # failed by itself
    add("sum", TrialState.FAIL, "stopped by Ctrl-C")
    assert retry_stopped_trials(study) == [{"model.readout": "mean"}, {"model.readout": "sum"}]
    waiting = study.get_trials(states=[TrialState.WAITING])
    assert [t.user_attrs.get("start") for t in waiting] == ["the config's own values", None]
    assert retry_stopped_trials(study) == []  # already waiting: not enqueued twice
    space_ = read_space(
        space(tmp_path / "grid.yaml", "model.readout: {categorical: [mean, sum, max]}\n")
    )
    options = TuneOptions(study_name="s", storage="", metric="val/rmse", sampler="grid")
    from molml.tune.study import trials_to_run

    assert trials_to_run(study, space_, options) == 2  # the two stopped points, not max


def test_a_cv_resumed_on_changed_data_is_refused(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Folds are row positions: after the data file's rows change, resuming (or rerunning) a
    cross-validation would mix models and scores of other molecules."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data.csv"
    pd.read_csv(property_csv).head(120).to_csv(data, index=False)
    config = xgb_config(tmp_path / "xgb.yaml", data, split="random")
    command = ["cv", "--config", str(config), "--folds", "2", "--split", "random"]
    main(command)
    (tmp_path / "runs" / "cv" / "xgb" / "cv.json").unlink()  # as if stopped before its end
    pd.read_csv(data).sample(frac=1.0, random_state=0).to_csv(data, index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2
    assert "holds a cross-validation of other data" in capsys.readouterr().err


def test_a_grid_runs_every_point_enqueued_again_in_one_resume(tmp_path: Path) -> None:
    """Optuna's grid sampler stops the study once every point was visited, and a stopped
    point counts as visited: molml's keeps going while retried points wait."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from molml.tune.study import make_sampler, retry_stopped_trials, trials_to_run

    params = read_space(space(tmp_path / "g.yaml", "model.readout: {categorical: [a, b, c]}\n"))
    sampler = make_sampler("grid", params, 0)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", sampler=sampler)
    readout = {"model.readout": CategoricalDistribution(["a", "b", "c"])}
    for grid_id, (value, state) in enumerate(
        [("a", TrialState.COMPLETE), ("b", TrialState.FAIL), ("c", TrialState.FAIL)]
    ):
        study.add_trial(
            create_trial(
                params={"model.readout": value},
                distributions=readout,
                state=state,
                value=1.0 if state == TrialState.COMPLETE else None,
                user_attrs={}
                if state == TrialState.COMPLETE
                else {"fail_reason": "stopped by SIGTERM"},
                system_attrs={"grid_id": grid_id, "search_space": sampler._search_space},
            )
        )
    assert len(retry_stopped_trials(study)) == 2
    options = TuneOptions(study_name="s", storage="", metric="val/rmse", sampler="grid")
    n_trials = trials_to_run(study, params, options)
    assert n_trials == 2

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_categorical("model.readout", ["a", "b", "c"])
        return 0.5

    study.optimize(objective, n_trials=n_trials)
    ran = [t.params["model.readout"] for t in study.trials[3:]]
    assert sorted(ran) == ["b", "c"] and all(t.state.name == "COMPLETE" for t in study.trials[3:])
    assert retry_stopped_trials(study) == []


def test_a_stop_inside_a_storage_call_lets_it_finish_so_the_trial_can_still_be_failed(
    tmp_path: Path,
) -> None:
    """SIGTERM at every 15th line run by a trial's report to the study (some 5,700 lines, most
    in SQLAlchemy): the report finishes first and the trial is failed right after. A stop
    that cut SQLAlchemy midway (about 1% of the lines, most in a window some 60 lines wide
    after the write executes) left SQLite's write lock held, so failing the stopped trial
    raised "database is locked" and it stayed RUNNING."""
    from molml.tune.study import open_storage

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    for line in itertools.count(15, 15):
        trial = study.ask()
        if not run_stopped_at_line(partial(trial.report, 1.0, step=0), line):
            break
        started = time.monotonic()
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # waits 5 s for a held lock
        assert time.monotonic() - started < 2.0, f"stopped at line {line}"
    stopped = study.trials[:-1]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in stopped)
    reported = sum(t.intermediate_values == {0: 1.0} for t in stopped)
    assert reported > len(stopped) / 2  # stopped inside the storage call, which finished
