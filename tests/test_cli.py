"""The real ``molml`` CLI in-process: fit -> test -> predict with the saved config and
checkpoint, ``--print_config`` round trip, and the MLflow store of the run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, require_dataset, run_stopped_at_line

import molml
from molml.cli import VERBS, _name_the_default_encoder, main, shipped_configs
from molml.errors import EXIT_BAD_INPUT, EXIT_CHECKPOINT
from molml.models import MoleculeModel
from molml.training import model_differences

CONFIG = REPO / "configs" / "esol_dmpnn.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "runs" / "esol_dmpnn").glob("version_*"), key=lambda p: int(p.name[8:]))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One short ``molml fit`` of the shipped ESOL config in a temporary working directory."""
    require_dataset("esol")
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.chdir(root)
        mp.setattr(sys, "argv", ["molml"])  # pytest's own arguments are not the CLI's
        main(
            [
                "fit",
                "--config",
                str(CONFIG),
                "--trainer.max_epochs",
                "2",
                "--data.cache_dir",
                str(root / "cache"),
                "--data.featurize_jobs",
                "1",
                *QUIET,
            ]
        )
        yield root


@pytest.fixture
def in_run_root(fitted: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(fitted)
    monkeypatch.setattr(sys, "argv", ["molml"])
    return fitted


def test_fit_writes_the_run_files(fitted: Path) -> None:
    (run,) = run_dirs(fitted)[:1]
    for name in ("metrics.csv", "split_report.json", "split.json", "config.yaml"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert list((fitted / "cache").glob("graphs-*.pt")), "featurized graphs were not cached"
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.dropna(subset=["val/rmse"])["epoch"].tolist() == [0, 1]  # two epochs
    # fit ends by testing its best checkpoint in the same process
    assert metrics["test/rmse"].notna().sum() == 1
    tested = json.loads((run / "test_metrics.json").read_text())
    assert list(tested) == ["best.ckpt"] and tested["best.ckpt"]["rmse"] > 0
    assert (run / "test_parity.png").is_file()
    report = json.loads((run / "split_report.json").read_text())
    assert report["method"] == "scaffold" and report["shared_scaffolds"]["total"] == 0
    split = json.loads((run / "split.json").read_text())[0]
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 1128
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 2
    assert config["data"]["dataset"] == "esol"
    # the checkpoint is plain data and loads as a model
    raw = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert raw["molml"]["tasks"] == ["logSolubility"]
    model = molml.load_model(run / "checkpoints" / "best.ckpt")
    assert model.predict(["CCO"])["status"].tolist() == ["ok"]


def test_lightning_cloud_tips_are_not_shown(fitted: Path, caplog) -> None:
    from lightning.pytorch.utilities import rank_zero_info

    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing a cloud logger")
        rank_zero_info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]


def test_test_and_predict_from_saved_config(in_run_root: Path) -> None:
    run = run_dirs(in_run_root)[0]
    config, best = run / "config.yaml", run / "checkpoints" / "best.ckpt"
    n_test = len(json.loads((run / "split.json").read_text())[0]["test"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = set(run_dirs(in_run_root))
        main(["test", "--config", str(config), "--ckpt_path", str(best), *QUIET])
        (test_run,) = set(run_dirs(in_run_root)) - before
        main(["predict", "--config", str(config), "--ckpt_path", str(best), *QUIET])
        (predict_run,) = set(run_dirs(in_run_root)) - before - {test_run}

    # the test run keeps its own record; the training run's record stays fit's
    assert str(best.resolve()) in json.loads((test_run / "test_metrics.json").read_text())
    assert list(json.loads((run / "test_metrics.json").read_text())) == ["best.ckpt"]
    tested = pd.read_csv(test_run / "metrics.csv")
    assert tested["test/rmse"].notna().any() and (tested["test/rmse"].dropna() > 0).all()
    # the same checkpoint tested again gives what fit recorded when it tested it
    at_fit = pd.read_csv(run / "metrics.csv")["test/rmse"].dropna().item()
    assert tested["test/rmse"].dropna().item() == pytest.approx(at_fit, rel=1e-6)

    predictions = pd.read_csv(predict_run / "predictions.csv")
    assert len(predictions) == n_test
    assert list(predictions.columns) == ["row", "smiles", "logSolubility", "status"]
    assert (predictions["status"] == "ok").all()
    assert predictions["logSolubility"].notna().all()
    # the predictions are the checkpoint's: same numbers as load_model(...).predict
    model = molml.load_model(best)
    direct = model.predict(predictions["smiles"].head(8).tolist())
    assert (direct["logSolubility"] - predictions["logSolubility"].head(8)).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        ([], EXIT_BAD_INPUT, "molml test needs --ckpt_path"),
        (["--ckpt_path", "nope.ckpt"], EXIT_CHECKPOINT, "checkpoint not found: nope.ckpt"),
        (["--ckpt_path", "BEST", "--model.encoder.init_args.hidden_dim", "64"], EXIT_CHECKPOINT,
         "holds another model than this config builds (encoder: checkpoint"),
        (["--ckpt_path", "BEST", "--data.featurizer.init_args.add_hydrogens", "true"],
         EXIT_CHECKPOINT, "(featurizer: checkpoint"),
        (["--ckpt_path", "config.yaml"], EXIT_CHECKPOINT, "config.yaml is not a molml checkpoint"),
    ],
)  # fmt: skip
def test_a_checkpoint_is_tested_only_as_the_model_it_is(
    in_run_root: Path, capsys, extra: list[str], code: int, message: str
) -> None:
    run = run_dirs(in_run_root)[0]
    best = str(run / "checkpoints" / "best.ckpt")
    extra = [best if arg == "BEST" else arg for arg in extra]
    extra = [str(run / arg) if arg == "config.yaml" else arg for arg in extra]
    with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["test", "--config", str(run / "config.yaml"), *extra, *QUIET])
    assert exit_info.value.code == code
    assert message in capsys.readouterr().err


def test_predict_writes_every_row_even_when_none_parses(
    in_run_root: Path, capsys: pytest.CaptureFixture
) -> None:
    run = run_dirs(in_run_root)[0]
    (in_run_root / "allbad.csv").write_text("smiles,note\nC1CC,a\nxx,b\n")
    before = set(run_dirs(in_run_root))
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exit_info:
        warnings.simplefilter("ignore")
        main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path",
              str(run / "checkpoints" / "best.ckpt"), "--data.predict_path", "allbad.csv",
              *QUIET])  # fmt: skip
    # the rows are written, and a file without one valid molecule is an error (exit 2)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "none of the 2 molecules of allbad.csv was valid" in error
    assert "columns ['smiles', 'note']: data.predict_smiles_column picks one" in error
    (predict_run,) = set(run_dirs(in_run_root)) - before
    predictions = pd.read_csv(predict_run / "predictions.csv")
    assert predictions["smiles"].tolist() == ["C1CC", "xx"]
    assert predictions["logSolubility"].isna().all()
    assert predictions["status"].str.contains("SMILES").all()


def test_model_differences_name_tasks_and_task_type() -> None:
    spec = MoleculeModel(tasks=["a", "b"]).spec()
    other = MoleculeModel(tasks=["a", "c"], task_type="classification").spec()
    assert model_differences(spec, spec) == []
    assert model_differences(spec, other) == [
        "tasks: checkpoint ['a', 'b'], config ['a', 'c']",
        "task type: checkpoint 'regression', config 'classification'",
    ]
    spec["encoder"]["init_args"]["dropout"] = 0.3  # dropout does not change the weights
    assert model_differences(spec, MoleculeModel(tasks=["a", "b"]).spec()) == []


def test_print_config_is_yaml_that_reruns(in_run_root: Path, capsys) -> None:
    run = run_dirs(in_run_root)[0]
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(run / "config.yaml"), "--print_config"])
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["dataset"] == "esol"
    assert printed["model"]["encoder"]["class_path"].endswith("DMPNN")
    path = in_run_root / "printed.yaml"
    path.write_text(yaml.safe_dump(printed))
    before = len(run_dirs(in_run_root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["fit", "--config", str(path), "--trainer.max_epochs", "1", "--test_best", "false",
              *QUIET])  # fmt: skip
    rerun = run_dirs(in_run_root)[-1]
    assert len(run_dirs(in_run_root)) == before + 1
    assert (rerun / "checkpoints" / "best.ckpt").is_file()
    metrics = pd.read_csv(rerun / "metrics.csv")
    assert metrics.dropna(subset=["val/rmse"])["epoch"].max() == 0
    # --test_best false: trained, not tested
    assert "test/rmse" not in metrics and not (rerun / "test_metrics.json").exists()


def test_mlflow_store_has_params_and_metrics(fitted: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{fitted / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("esol_dmpnn")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert runs
    first = runs[0]
    run = run_dirs(fitted)[0]  # named after its run folder, not a random (seeded) name
    assert first.info.run_name == f"{run.parent.name}/{run.name}"
    params = first.data.params
    assert params["data.dataset"] == "esol"
    assert params["trainer.max_epochs"] == "2"
    assert params["model.encoder.class_path"].endswith("DMPNN")
    metrics = first.data.metrics
    assert "val/rmse" in metrics and metrics["val/rmse"] > 0
    assert "train/loss_epoch" in metrics
    # every epoch's values, and the test of the best checkpoint (logged after training
    # ended), are in the store once the command returns
    history = client.get_metric_history(first.info.run_id, "val/rmse")
    assert len(history) == 2
    assert len(client.get_metric_history(first.info.run_id, "train/loss_epoch")) == 2
    assert "test/rmse" in metrics
    artifacts = {a.path for a in client.list_artifacts(first.info.run_id)}
    assert {"config.yaml", "split.json", "split_report.json", "checkpoints"} <= artifacts


# ---------------------------------------------------------------------------- errors


def run_molml(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m molml.cli ARGS`` in ``cwd``, as a user runs the command."""
    return subprocess.run(
        [sys.executable, "-m", "molml.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_missing_file_is_one_stderr_line_and_exit_code_2(tmp_path: Path) -> None:
    result = run_molml(tmp_path, "fit", "--data.path", "missing.csv")
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.splitlines() == [
        f"molml fit: error: file not found: missing.csv (relative to the working directory "
        f"{tmp_path.resolve()})"
    ]


def test_missing_column_is_one_stderr_line_and_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("smiles,y\nCCO,1\nCCC,2\n")
    result = run_molml(tmp_path, "fit", "--data.path", "x.csv", "--data.target_columns", "[nope]")
    assert result.returncode == EXIT_BAD_INPUT
    (line,) = result.stderr.splitlines()
    assert line.startswith("molml fit: error: x.csv: column(s) ['nope'] not found")


def test_a_mistyped_option_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = run_molml(tmp_path, "fit", "--data.path", "x.csv", "--data.batch_sise", "3")
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.splitlines() == [
        "molml fit: error: unrecognized arguments: --data.batch_sise 3"
    ]


@pytest.mark.parametrize(
    ("args", "abbreviated"),
    [
        (["fit", "--data.path", "x.csv", "--trainer.max_epoch", "1"], "--trainer.max_epoch"),
        (["baseline", "fit", "--data.path", "x.csv", "--data.datase", "esol"], "--data.datase"),
        (
            [
                "screen",
                "--model",
                "m.ckpt",
                "--input",
                "x.csv",
                "--output",
                "o.csv",
                "--batch",
                "8",
            ],
            "--batch",
        ),
        (
            [
                "explain",
                "--model",
                "m.ckpt",
                "--input",
                "x.csv",
                "--output",
                "out",
                "--meth",
                "saliency",
            ],
            "--meth",
        ),
        (["export", "--model", "m.ckpt", "--output", "m.onnx", "--form", "onnx"], "--form"),
        (["serve", "--model", "m.ckpt", "--po", "8000"], "--po"),
        (["quickstart", "--max-epoch", "1"], "--max-epoch"),
        (["report", "data", "--inp", "x.csv"], "--inp"),
        (["cv", "--config", str(REPO / "configs/quickstart.yaml"), "--fold", "2"], "--fold"),
        (
            [
                "tune",
                "--config",
                str(REPO / "configs/quickstart.yaml"),
                "--search",
                str(REPO / "configs/search/dmpnn.yaml"),
                "--timeout",
                "60",
                "--prun",
                "none",
            ],
            "unrecognized arguments: --prun",
        ),
    ],
)
def test_an_abbreviated_option_is_refused_not_guessed(
    args: list[str], abbreviated: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == EXIT_BAD_INPUT
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("molml ") and ": error: " in line and abbreviated in line


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"molml {molml.__version__}\n"


def test_debug_anywhere_adds_the_traceback(tmp_path: Path) -> None:
    expected = (
        "molml baseline fit: error: file not found: missing.csv (relative to the working "
        f"directory {tmp_path.resolve()})"
    )
    result = run_molml(tmp_path, "baseline", "fit", "--data.path", "missing.csv", "--debug")
    assert result.returncode == EXIT_BAD_INPUT
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1] == expected
    plain = run_molml(tmp_path, "baseline", "fit", "--data.path", "missing.csv")
    assert plain.stderr.splitlines() == [expected]


def test_unreadable_checkpoint_exits_with_code_3(tmp_path: Path) -> None:
    (tmp_path / "lib.smi").write_text("CCO ethanol\n")
    (tmp_path / "bad.ckpt").write_text("hello")
    result = run_molml(
        tmp_path, "screen", "--model", "bad.ckpt", "--input", "lib.smi", "--output", "o.csv"
    )
    assert result.returncode == EXIT_CHECKPOINT
    (line,) = result.stderr.splitlines()
    assert line.startswith("molml screen: error: bad.ckpt is not a molml checkpoint")


def test_error_in_a_screening_worker_is_one_line(fitted: Path, tmp_path: Path) -> None:
    rows = [f"CCO,a{i}" for i in range(6)] + ['"CCC,broken'] + [f"CCN,b{i}" for i in range(6)]
    (tmp_path / "lib.csv").write_text("smiles,id\n" + "\n".join(rows) + "\n")
    best = run_dirs(fitted)[0] / "checkpoints" / "best.ckpt"
    args = ["--input", "lib.csv", "--output", "o.csv", "--chunk-size", "2", "--num-workers", "1"]
    result = run_molml(tmp_path, "screen", "--model", str(best), *args, "--no-progress")
    assert result.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in result.stderr and "worker" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [
        "molml screen: error: lib.csv: cannot parse file: "
        "the quote opened on line 8 is never closed"
    ]


@pytest.mark.parametrize(
    "verb",
    [
        [],
        *([v] for v in VERBS if v not in ("baseline", "report")),
        *(["baseline", v] for v in ("fit", "test", "predict")),
        ["report", "data"],
        ["report", "eval"],
    ],
    ids=lambda verb: " ".join(verb) or "molml",
)
def test_every_help_documents_the_exit_codes(
    verb: list[str], capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*verb, "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 success; 2 bad input" in out and "3 checkpoint" in out
    assert "--debug" in out


def test_top_level_help_and_import_do_not_load_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import molml\n"
        "from molml.cli import VERBS, main, shipped_configs\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "assert all(verb in out.getvalue() for verb in VERBS), out.getvalue()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['screen', '--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "assert '--top-k' in out.getvalue(), out.getvalue()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['explain', '--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "assert '--shap-mapping' in out.getvalue(), out.getvalue()\n"
        "for verb in ('tune', 'cv', 'export'):\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            main([verb, '--help'])\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code == 0, exc.code\n"
        "assert '--pruner' in out.getvalue() and '--folds' in out.getvalue()\n"
        "heavy = [m for m in ('torch', 'lightning', 'torch_geometric') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert molml.load_model.__name__ == 'load_model'\n"
        "assert 'torch' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_verb_prints_the_verbs_and_exits_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "screen" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # a mistyped verb: the closest one, and all
        main(["scren", "--model", "x.ckpt"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "unknown verb 'scren' (did you mean 'screen'?)" in error and "calibrate" in error


def test_a_moved_project_keeps_its_relative_tracking_uri_and_never_writes_the_old_place(
    property_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The saved config keeps the tracking URI as written (relative); a report on a run of the
    moved project finds the moved database and makes nothing at the old place."""
    project = tmp_path / "project"
    project.mkdir()
    config = write_tiny_config(project / "tiny.yaml", property_csv, lr=1e-3, max_epochs=1)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["logger"].append({
        "class_path": "lightning.pytorch.loggers.MLFlowLogger",
        "init_args": {"experiment_name": "tiny", "tracking_uri": "sqlite:///runs/mlflow.db",
                      "artifact_location": "runs/mlartifacts"},
    })  # fmt: skip
    config.write_text(yaml.safe_dump(settings))
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", ["molml"])
    main(["fit", "--config", "tiny.yaml", *QUIET])
    run = Path("runs") / "quickstart" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]
    assert saved[-1]["init_args"]["tracking_uri"] == "sqlite:///runs/mlflow.db"

    moved = tmp_path / "moved"
    project.rename(moved)
    monkeypatch.chdir(moved)
    main(["report", "eval", "--run", str(run), "--output", "report", "--n_bootstrap", "10"])
    assert not project.exists()  # no database or artifact folder made anew at the old place
    assert (moved / "report" / "report.json").is_file()
    # a new run in the moved database's experiment: MLflow keeps the old artifact folder
    with caplog.at_level(logging.WARNING, logger="molml"):
        main(["test", "--config", str(run / "config.yaml"), "--ckpt_path",
              str(run / "checkpoints" / "best.ckpt"), *QUIET])  # fmt: skip
    assert "If this project was moved, log under a new experiment_name" in caplog.text


def test_mlflow_file_store_is_refused_before_any_work(tmp_path: Path) -> None:
    """MLflow's file store keeps a metric per file, so val/rmse and val/rmse/<task> clash in
    it: the run is refused up front instead of dying mid-training."""
    (tmp_path / "x.csv").write_text("smiles,y\nCCO,1\nCCC,2\nCCN,3\n")
    logger = {
        "class_path": "lightning.pytorch.loggers.MLFlowLogger",
        "init_args": {"tracking_uri": "file:./mlruns"},
    }
    config = {"trainer": {"logger": [logger]}, "data": {"path": "x.csv", "target_columns": ["y"]}}
    (tmp_path / "fs.yaml").write_text(yaml.safe_dump(config))
    result = run_molml(tmp_path, "fit", "--config", "fs.yaml")
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    (line,) = result.stderr.splitlines()
    assert "'file:./mlruns' is an MLflow file store" in line and "sqlite:///" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlruns").exists()


def test_a_monitored_metric_the_model_never_logs_is_refused_before_training(
    tmp_path: Path,
) -> None:
    """val/rmse on a classifier would fail only after the first epoch."""
    rows = [("CCO", 0), ("CCN", 1), ("CCC", 0), ("CCCl", 1)] * 5
    (tmp_path / "x.csv").write_text("smiles,active\n" + "".join(f"{s},{y}\n" for s, y in rows))
    checkpoint = {
        "class_path": "molml.callbacks.ModelCheckpoint",
        "init_args": {"monitor": "val/rmse", "mode": "min", "filename": "best"},
    }
    config = {
        "trainer": {"callbacks": [checkpoint], "max_epochs": 1},
        "data": {"path": "x.csv", "target_columns": ["active"], "split": "random"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run_molml(tmp_path, "fit", "--config", "c.yaml")
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    line = result.stderr.splitlines()[-1]
    assert "ModelCheckpoint monitors 'val/rmse', which this classification model" in line
    assert "val/roc_auc, val/pr_auc" in line and "Epoch 0" not in result.stderr
    # ROC-AUC with ModelCheckpoint's default mode "min" kept the worst epoch as best.ckpt
    stop = {"class_path": "lightning.pytorch.callbacks.EarlyStopping"}
    for callback, monitor in [(checkpoint, "val/roc_auc/active"), (stop, "val/loss")]:
        callback["init_args"] = {
            "monitor": monitor,
            "mode": "max" if monitor == "val/loss" else "min",
        }
        config["trainer"]["callbacks"] = [callback]
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        result = run_molml(tmp_path, "fit", "--config", "c.yaml")
        assert result.returncode == EXIT_BAD_INPUT, result.stderr
        line = result.stderr.splitlines()[-1]
        assert f"monitors {monitor!r} with mode" in line and "it would keep the worst epoch" in line
        assert "Epoch 0" not in result.stderr


def test_an_unsupported_precision_is_refused_before_a_run_folder_is_made(tmp_path: Path) -> None:
    rows = [("CCO", 0.1), ("CCN", 1.2), ("CCC", 0.3), ("CCCl", 1.4)] * 5
    (tmp_path / "x.csv").write_text("smiles,y\n" + "".join(f"{s},{y}\n" for s, y in rows))
    result = run_molml(
        tmp_path, "fit", "--data.path", "x.csv", "--data.split", "random",
        "--trainer.precision", "64-true", "--trainer.max_epochs", "1",
    )  # fmt: skip
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "trainer.precision 64-true is not supported" in result.stderr.splitlines()[-1]
    assert not list(tmp_path.glob("runs/*/version_*")) and "featurizing" not in result.stderr


def test_an_mlflow_experiment_created_by_another_run_meanwhile_is_used(tmp_path: Path) -> None:
    """Two runs that start together both find no experiment; the one whose create fails
    reads the other's instead of crashing. A deleted experiment is refused by name."""
    from mlflow import MlflowClient

    from molml.errors import DataError
    from molml.tracking import experiment_id

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    first = experiment_id(client, "shared")
    too_late = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    looked_up = too_late.get_experiment_by_name
    calls = iter([None])  # its first lookup ran before the other run created the experiment
    too_late.get_experiment_by_name = lambda name: next(calls, None) or looked_up(name)
    assert experiment_id(too_late, "shared") == first
    client.delete_experiment(first)
    with pytest.raises(DataError, match="'shared' was deleted; restore it"):
        experiment_id(client, "shared")


def test_predict_without_the_training_data_points_to_screen(
    graph_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A run folder shared without its training file: predict names the missing file and the
    verb that needs only the checkpoint."""
    (tmp_path / "new lib.csv").write_text("smiles\nCCO\n")
    data = {"path": "gone.csv", "target_columns": ["logp"], "predict_path": "new lib.csv"}
    config = {"data": data}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", "config.yaml", "--ckpt_path", str(graph_run["ckpt"])])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "data.path gone.csv: not found" in error
    assert f"molml screen --model {graph_run['ckpt']} --input 'new lib.csv'" in error  # quoted
    # an output the prediction writer cannot write is refused before any work
    (tmp_path / "a_file").write_text("")
    writer = {"class_path": "molml.callbacks.PredictionWriter",
              "init_args": {"output": "a_file/out.csv"}}  # fmt: skip
    config = {"data": {**data, "path": "new lib.csv"}, "trainer": {"callbacks": [writer]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", "config.yaml", "--ckpt_path", str(graph_run["ckpt"])])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "PredictionWriter output a_file/out.csv: cannot be written (a_file is a file, not a "
            "directory)"
        )
    )


def test_last_checkpoint_is_written_every_epoch(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a learning rate of zero the monitored metric never improves after epoch 0, so only
    epoch 0 is a best checkpoint; ``last.ckpt`` still holds the last epoch, to resume from."""
    write_tiny_config(tmp_path / "lr0.yaml", property_csv, lr=0.0, max_epochs=3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    main(["fit", "--config", "lr0.yaml", "--test_best", "false", *QUIET])
    checkpoints = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints"
    read = partial(torch.load, map_location="cpu", weights_only=False)
    assert read(checkpoints / "best.ckpt")["epoch"] == 0
    assert read(checkpoints / "last.ckpt")["epoch"] == 2


def write_tiny_config(path: Path, data: Path, *, lr: float, max_epochs: int) -> Path:
    """The quickstart config shrunk to a D-MPNN of hidden size 16 on ``data``, CSV logs only."""
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    config["data"].update(path=str(data), cache_dir=None, featurize_jobs=1)
    config["model"]["encoder"]["init_args"] = {"hidden_dim": 16, "depth": 2}
    config["model"].update(ffn_hidden_dim=16, lr=lr)
    config["trainer"].update(max_epochs=max_epochs, logger=config["trainer"]["logger"][:1])
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_fit_into_a_folder_with_an_earlier_runs_checkpoints_is_refused(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fixed logger version run twice: the second fit would write best-v1.ckpt beside the
    first run's best.ckpt, which later steps would take for its; it is refused before any
    work, and resuming from that folder still works."""
    write_tiny_config(tmp_path / "tiny.yaml", property_csv, lr=1e-3, max_epochs=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    fixed = ["fit", "--config", "tiny.yaml", "--trainer.logger.init_args.version", "final",
             "--test_best", "false", *QUIET]  # fmt: skip
    main(fixed)
    checkpoints = tmp_path / "runs" / "quickstart" / "final" / "checkpoints"
    first = (checkpoints / "best.ckpt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(fixed)
    assert exit_info.value.code == 2
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (checkpoints / "best.ckpt").read_bytes() == first
    main([*fixed, "--ckpt_path", str(checkpoints / "last.ckpt"), "--trainer.max_epochs", "2"])
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    read = partial(torch.load, map_location="cpu", weights_only=False)
    assert read(checkpoints / "last.ckpt")["epoch"] == 1


def test_a_fast_dev_run_writes_no_checkpoint(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning says a fast_dev_run saves nothing; a stray last.ckpt blocked the next fit."""
    write_tiny_config(tmp_path / "tiny.yaml", property_csv, lr=1e-3, max_epochs=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    quick = ["fit", "--config", "tiny.yaml", "--trainer.fast_dev_run", "true",
             "--trainer.logger", "false", *QUIET]  # fmt: skip
    main(quick)
    assert not list(tmp_path.rglob("*.ckpt"))
    main(quick)  # and again in the same folder


def test_a_resumed_fit_that_trains_nothing_leaves_the_first_runs_metrics_be(
    property_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Resumed with no epoch left, fit keeps the best checkpoint of the run it resumed from
    (copied into the new run, with its score) and tests it, perhaps on other data: that is
    recorded in the new run, not over the first run's own."""
    write_tiny_config(tmp_path / "tiny.yaml", property_csv, lr=1e-3, max_epochs=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    main(["fit", "--config", "tiny.yaml", "--model.lr", "0.002", *QUIET])
    first = tmp_path / "runs" / "quickstart" / "version_0"
    recorded = (first / "test_metrics.json").read_text()
    last = first / "checkpoints" / "last.ckpt"
    main(["fit", "--config", "tiny.yaml", "--ckpt_path", str(last), "--data.split", "random",
          *QUIET])  # fmt: skip
    assert (first / "test_metrics.json").read_text() == recorded
    second = first.parent / "version_1"
    assert list(json.loads((second / "test_metrics.json").read_text())) == ["best.ckpt"]
    copied = second / "checkpoints" / "best.ckpt"
    assert copied.read_bytes() == (first / "checkpoints" / "best.ckpt").read_bytes()
    # (resumed with the config it was trained from: its lr 0.001 was not given now, and the
    # checkpoint's 0.002 runs) model options given on the command line that the checkpoint's
    # would replace unseen (lr also lives in the optimizer state) are refused, before another
    # run folder is made
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "tiny.yaml", "--ckpt_path", str(last), "--model.lr=0.05",
              "--model.weight_decay", "0.0", *QUIET])  # fmt: skip
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "model.lr 0.05 (checkpoint: 0.002) would not apply" in error
    assert "weight_decay" not in error  # given, but as the checkpoint has it
    assert not (first.parent / "version_2").exists()


def test_runs_under_one_name_get_their_own_folders_and_a_failed_run_leaves_none(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from molml.training import claim_log_versions

    # two runs that start together: both loggers would pick version_0 before either wrote
    trainers = [
        L.Trainer(logger=CSVLogger(tmp_path / "both", name="same"), accelerator="cpu")
        for _ in range(2)
    ]
    claimed = [claim_log_versions(trainer) for trainer in trainers]
    assert [t.logger.version for t in trainers] == [0, 1]
    assert claimed == [[tmp_path / "both" / "same" / f"version_{i}"] for i in (0, 1)]

    write_tiny_config(tmp_path / "tiny.yaml", property_csv, lr=1e-3, max_epochs=1)
    (tmp_path / "bad.json").write_text(json.dumps([{"train": [0], "val": [1], "test": [99999]}]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    with pytest.raises(SystemExit) as exit_info:  # fails in the data's setup, inside fit
        main(["fit", "--config", "tiny.yaml", "--data.split", "predefined",
              "--data.split_file", "bad.json", *QUIET])  # fmt: skip
    assert exit_info.value.code == 2
    assert list((tmp_path / "runs" / "quickstart").iterdir()) == []
    main(["fit", "--config", "tiny.yaml", *QUIET])
    assert (tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "best.ckpt").exists()


def test_sigterm_stops_a_verb_with_its_own_exit_code(capsys: pytest.CaptureFixture) -> None:
    """``kill`` or a scheduler's SIGTERM interrupts a verb as Ctrl-C does and exits 143 (it
    used to end a training run with exit code 0)."""
    import signal
    import time

    from molml.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, run_command

    def long_work() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    with pytest.raises(SystemExit) as exit_info:
        run_command("molml fit", long_work)
    assert exit_info.value.code == EXIT_TERMINATED == 143
    stopped = "molml fit: stopped by SIGTERM; anything already saved is kept\n"
    assert capsys.readouterr().err == stopped
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    with pytest.raises(SystemExit) as exit_info:  # a later verb's own exit is its own
        run_command("molml fit", lambda: sys.exit(0))
    assert exit_info.value.code == 0

    def interrupted_by_lightning() -> None:  # Ctrl-C: Lightning's graceful stop exits 1
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        except KeyboardInterrupt:
            sys.exit(1)

    with pytest.raises(SystemExit) as exit_info:
        run_command("molml screen", interrupted_by_lightning)
    assert exit_info.value.code == EXIT_INTERRUPTED == 130
    stopped = "molml screen: stopped by Ctrl-C; anything already saved is kept\n"
    assert capsys.readouterr().err == stopped
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(SystemExit) as exit_info:  # a crash after it is still a crash
        run_command("molml fit", lambda: sys.exit(1))
    assert exit_info.value.code == 1


@pytest.mark.parametrize("occurrence", [1, 20, 40])
def test_a_stop_inside_an_mlflow_write_lets_it_finish_so_the_run_can_be_closed(
    tmp_path: Path, occurrence: int
) -> None:
    """SIGTERM while SQLAlchemy reads a statement's result inside a metric write (the
    ``occurrence``-th line run there): a stop that cut it left the SQLite database locked, so
    closing the stopped run as killed waited 20 s for the lock and failed."""
    import sqlite3
    import time

    from mlflow.entities import Metric

    from molml.tracking import mlflow_client

    database = tmp_path / "mlflow.db"
    client = mlflow_client(f"sqlite:///{database}")
    run = client.create_run(client.create_experiment("stopped"))
    result_handling = os.path.join("sqlalchemy", "engine", "result.py")
    assert run_stopped_at_line(
        lambda: client.log_batch(run.info.run_id, metrics=[Metric("loss", 1.0, 0, 0)]),
        occurrence,
        in_file=result_handling,
    )  # the stop landed inside SQLAlchemy
    other = sqlite3.connect(database, timeout=0.2)  # nothing holds the database
    other.execute("CREATE TABLE written_meanwhile (x)")
    other.commit()
    other.close()
    started = time.monotonic()
    client.set_terminated(run.info.run_id, "KILLED")
    assert time.monotonic() - started < 2.0
    closed = client.get_run(run.info.run_id)
    assert (closed.info.status, closed.data.metrics) == ("KILLED", {"loss": 1.0})


def test_a_deferred_block_in_another_thread_does_not_hold_back_the_main_threads_stop() -> None:
    """A study's heartbeat thread writes to the storage inside such a block: a SIGTERM that
    came meanwhile was held back in the main thread and then raised in the heartbeat."""
    import signal
    import threading
    import time

    from molml.errors import EXIT_TERMINATED, deferred_stops, run_command

    entered, release = threading.Event(), threading.Event()

    def heartbeat() -> None:
        with deferred_stops():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=heartbeat)
    thread.start()
    reached: list[str] = []

    def training() -> None:
        entered.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        reached.append("past the stop")

    try:
        with pytest.raises(SystemExit) as exit_info:
            run_command("molml tune", training)
    finally:
        release.set()
        thread.join()
    assert exit_info.value.code == EXIT_TERMINATED
    assert reached == []


def test_a_stop_inside_a_deferred_block_takes_effect_when_the_block_ends(
    capsys: pytest.CaptureFixture,
) -> None:
    """A SIGTERM that lands while a checkpoint is written waits for the write to finish; an
    error the stop causes on its way out (a writer's cleanup) still ends the verb as stopped."""
    import signal
    import time

    from molml.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, deferred_stops, run_command

    done: list[str] = []

    def saving() -> None:
        with deferred_stops():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            done.append("written")
        done.append("after the block")

    with pytest.raises(SystemExit) as exit_info:
        run_command("molml fit", saving)
    assert exit_info.value.code == EXIT_TERMINATED
    assert done == ["written"]
    assert "stopped by SIGTERM" in capsys.readouterr().err

    def long_upload() -> None:  # a user who presses Ctrl-C twice does not wait for it
        with deferred_stops():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("first Ctrl-C held back")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
            done.append("uploaded")

    with pytest.raises(SystemExit) as exit_info:
        run_command("molml fit", long_upload)
    assert exit_info.value.code == EXIT_INTERRUPTED
    assert done == ["written", "first Ctrl-C held back"]
    assert "stopped by Ctrl-C" in capsys.readouterr().err

    def cleanup_fails(stop: int) -> None:
        try:
            os.kill(os.getpid(), stop)
            time.sleep(30)
        finally:
            raise RuntimeError("PytorchStreamWriter failed writing file")

    for stop, code, name in [(signal.SIGTERM, EXIT_TERMINATED, "SIGTERM"),
                             (signal.SIGINT, EXIT_INTERRUPTED, "Ctrl-C")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            run_command("molml fit", partial(cleanup_fails, stop))
        assert exit_info.value.code == code
        assert capsys.readouterr().err == (
            f"molml fit: stopped by {name}; anything already saved is kept\n"
        )

    def crash() -> None:
        raise RuntimeError("PytorchStreamWriter failed writing file")

    with pytest.raises(SystemExit) as exit_info:  # a later verb's error is an error again
        run_command("molml fit", crash)
    assert exit_info.value.code == 1


def test_sigterm_while_a_checkpoint_is_saved_keeps_it_whole_and_stops_after_it(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    import lightning as L

    write_tiny_config(tmp_path / "tiny.yaml", property_csv, lr=1e-3, max_epochs=5)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    save, saved = L.Trainer.save_checkpoint, []

    def stopped_while_saving(trainer: L.Trainer, filepath: str, *args: Any, **kwargs: Any) -> None:
        if not saved:
            os.kill(os.getpid(), signal.SIGTERM)  # lands before the first file is written
        save(trainer, filepath, *args, **kwargs)
        saved.append(Path(filepath).name)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", stopped_while_saving)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "tiny.yaml", *QUIET])
    assert exit_info.value.code == 143
    assert saved == ["best.ckpt", "last.ckpt"]  # the first epoch's checkpoints, no later ones
    checkpoints = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints"
    read = partial(torch.load, map_location="cpu", weights_only=False)
    assert read(checkpoints / "best.ckpt")["epoch"] == read(checkpoints / "last.ckpt")["epoch"] == 0


def test_a_stopped_verb_does_not_print_its_loader_workers_deaths(tmp_path: Path) -> None:
    """SIGTERM to a process group ends the data-loader workers too; the loader's finalizer
    then raised "DataLoader worker ... is killed by signal" and Python printed a traceback
    after the verb's one line. Other ignored exceptions are still printed."""
    script = tmp_path / "stop.py"
    script.write_text(
        "import os, signal, time\n"
        "from molml.errors import run_command\n"
        "class WorkersDataLoaderIter:\n"
        "    def __del__(self):\n"
        "        raise RuntimeError('DataLoader worker (pid 1) is killed by signal: Terminated.')\n"
        "class Unrelated:\n"
        "    def __del__(self):\n"
        "        raise ValueError('a finalizer bug')\n"
        "def work():\n"
        "    loader, other = WorkersDataLoaderIter(), Unrelated()\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "run_command('molml screen', work)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 143
    assert "stopped by SIGTERM" in done.stderr and "a finalizer bug" in done.stderr
    assert "DataLoader worker" not in done.stderr


def test_other_processes_of_a_distributed_run_print_only_their_own_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input, read alike by every process of a DDP run, is printed once (by rank 0);
    another failure of a later process is printed with the process's name."""
    from molml.errors import DataError, run_command

    def bad_input() -> None:
        raise DataError("data.csv: row 3: invalid SMILES")

    def crash() -> None:
        raise RuntimeError("gloo: connection reset")

    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expected in [
        (None, "molml fit: error: data.csv: row 3: invalid SMILES\n"),
        ("1", ""),
    ]:
        if rank:
            monkeypatch.setenv("LOCAL_RANK", rank)
        with pytest.raises(SystemExit) as exit_info:
            run_command("molml fit", bad_input)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == expected
    with pytest.raises(SystemExit) as exit_info:
        run_command("molml fit", crash)
    assert exit_info.value.code == 1
    expected = "molml fit (local rank 1 of node 0): error: RuntimeError: gloo: connection reset\n"
    assert capsys.readouterr().err == expected

    def peer_gone() -> None:  # what gloo raises when rank 0 failed and exited: rank 0 says why
        try:
            raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:1234")
        except RuntimeError as exc:
            raise RuntimeError("broadcast failed") from exc

    with pytest.raises(SystemExit) as exit_info:
        run_command("molml fit", peer_gone)
    assert exit_info.value.code == 1 and capsys.readouterr().err == ""

    def cyclic() -> None:  # a chain that loops back on itself is followed once
        first, second = RuntimeError("disk full"), RuntimeError("while saving")
        first.__cause__, second.__cause__ = second, first
        raise first

    with pytest.raises(SystemExit):
        run_command("molml fit", cyclic)
    assert "disk full" in capsys.readouterr().err
    monkeypatch.setenv("NODE_RANK", "1")  # another node may read other files: said
    with pytest.raises(SystemExit):
        run_command("molml fit", bad_input)
    assert capsys.readouterr().err.startswith("molml fit (local rank 1 of node 1): error: data")
    monkeypatch.setenv("RANK", "3")  # torchrun's global rank wins
    with pytest.raises(SystemExit):
        run_command("molml fit", crash)
    assert capsys.readouterr().err.startswith("molml fit (rank 3): error:")
    monkeypatch.setenv("WORLD_SIZE", "1")  # not distributed: a scheduler's RANK means nothing
    with pytest.raises(SystemExit):
        run_command("molml serve", bad_input)
    assert capsys.readouterr().err.startswith("molml serve: error: data.csv")


def test_testing_on_a_changed_training_part_is_warned_about(
    property_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The checkpoint records its training part; the same file reordered gives another split
    (test molecules the model was trained on), which ``molml test`` warns about."""
    data = tmp_path / "data.csv"
    pd.read_csv(property_csv).to_csv(data, index=False)
    config = write_tiny_config(tmp_path / "tiny.yaml", data, lr=1e-3, max_epochs=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    main(["fit", "--config", str(config), "--test_best", "false", *QUIET])
    best = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "best.ckpt"
    test = ["test", "--config", str(config), "--ckpt_path", str(best), *QUIET]
    with caplog.at_level(logging.WARNING):
        main(test)
    assert "was trained on another training part" not in caplog.text
    pd.read_csv(property_csv).sample(frac=1, random_state=3).to_csv(data, index=False)
    with caplog.at_level(logging.WARNING):
        main(test)
    assert f"{best} was trained on another training part" in caplog.text
    # the test runs still write their split files (the check waits for the data's setup)
    tests = sorted((tmp_path / "runs" / "quickstart").glob("version_*"))[1:]
    assert tests and all((run / "split.json").is_file() for run in tests)
    assert not any((run / "checkpoints" / "best.ckpt").exists() for run in tests)


def test_a_resumed_run_keeps_the_best_score_of_the_run_it_continues(tmp_path: Path) -> None:
    """Lightning forgets the best score when a run resumes into a new folder, so its first
    epoch became "best" however bad; molml's checkpoint copies the earlier best and keeps its
    score, so only a better epoch replaces it."""
    from molml.callbacks import ModelCheckpoint

    old = tmp_path / "version_0" / "checkpoints"
    old.mkdir(parents=True)
    (old / "best.ckpt").write_bytes(b"weights of epoch 7")
    state = {
        "monitor": "val/rmse",
        "best_model_score": torch.tensor(0.5),
        "best_model_path": str(old / "best.ckpt"),
        "dirpath": str(old),
        "best_k_models": {str(old / "best.ckpt"): torch.tensor(0.5)},
        "kth_best_model_path": str(old / "best.ckpt"),
        "kth_value": torch.tensor(0.5),
        "last_model_path": str(old / "last.ckpt"),
    }
    new = tmp_path / "version_1" / "checkpoints"
    trainer = SimpleNamespace(
        ckpt_path=str(old / "last.ckpt"),
        is_global_zero=True,
        strategy=SimpleNamespace(barrier=lambda: None),
    )
    callback = ModelCheckpoint(dirpath=new, monitor="val/rmse", filename="best", save_last=True)
    callback.load_state_dict(state)
    assert not (new / "best.ckpt").exists()  # a test or validate run restores, copies nothing
    callback.on_fit_start(trainer, None)
    assert (new / "best.ckpt").read_bytes() == b"weights of epoch 7"
    assert callback.best_model_path == str(new / "best.ckpt")
    assert float(callback.best_model_score) == 0.5 and float(callback.kth_value) == 0.5
    other = ModelCheckpoint(dirpath=tmp_path / "v2", monitor="val/mae", filename="best")
    other.load_state_dict(state)  # scored on another metric: nothing to keep
    other.on_fit_start(trainer, None)
    assert other.best_model_score is None and not (tmp_path / "v2" / "best.ckpt").exists()
    # a best path recorded relative to another working directory is found beside ckpt_path
    moved = ModelCheckpoint(dirpath=tmp_path / "v3", monitor="val/rmse", filename="best")
    moved.load_state_dict({**state, "best_model_path": "elsewhere/checkpoints/best.ckpt"})
    moved.on_fit_start(trainer, None)
    assert (tmp_path / "v3" / "best.ckpt").read_bytes() == b"weights of epoch 7"


def _child_sigterm_handler(queue) -> None:  # noqa: ANN001 - a multiprocessing queue
    import signal

    queue.put(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)


def test_forked_workers_of_a_verb_end_quietly() -> None:
    """A pool terminates its idle workers with SIGTERM: forked workers must not inherit the
    verb's SIGTERM handler (each would print a ``Terminated`` traceback), while the verb's own
    process keeps it."""
    import multiprocessing
    import signal

    from molml.errors import run_command

    def fork_a_worker() -> tuple[bool, bool]:
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        worker = context.Process(target=_child_sigterm_handler, args=(queue,))
        worker.start()
        worker.join(timeout=60)
        return queue.get(timeout=10), signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL

    child_default, parent_handled = run_command("molml fit", fork_a_worker)
    assert child_default and parent_handled


def test_a_sigterm_whose_interrupt_was_swallowed_still_stops(
    capsys: pytest.CaptureFixture,
) -> None:
    """Python ignores an exception raised inside a garbage-collection callback: loops check
    ``sigterm_received`` between steps, and a second SIGTERM ends the process the default way."""
    import contextlib
    import os
    import signal

    from molml.errors import Terminated, run_command, sigterm_received

    def swallowed() -> bool:
        with contextlib.suppress(Terminated):  # as a weakref callback would drop it
            os.kill(os.getpid(), signal.SIGTERM)
        return sigterm_received()

    assert run_command("molml tune", swallowed) is True
    code = (
        "import os, signal\n"
        "from molml.errors import run_command\n"
        "def twice():\n"
        "    for _ in range(2):\n"
        "        try:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "        except BaseException:\n"
        "            pass\n"
        "    print('still running')\n"
        "run_command('molml tune', twice)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == -signal.SIGTERM and "still running" not in result.stdout


@pytest.mark.parametrize("option", ["--config", "--model", "--data"])
def test_a_checkpoint_given_as_a_config_names_the_options_that_take_it(
    option: str, graph_run: dict, capsys: pytest.CaptureFixture
) -> None:
    """``molml predict --model best.ckpt`` (the way screen and explain take a model) is told
    where a checkpoint goes instead of failing with a UnicodeDecodeError."""
    checkpoint = str(graph_run["ckpt"])
    given = [f"{option}={checkpoint}"] if option == "--model" else [option, checkpoint]
    with pytest.raises(SystemExit) as info:
        main(["predict", *given])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert f"{option} {checkpoint}: not a YAML config" in error and "checkpoint" in error
    assert f"--ckpt_path {checkpoint}" in error and f"molml screen --model {checkpoint}" in error


def test_a_yaml_config_with_a_character_across_the_sniffed_bytes_is_read_as_text(
    tmp_path: Path,
) -> None:
    from molml.cli import _check_config_files

    config = tmp_path / "c.yaml"
    config.write_text("# " + "a" * 4093 + "\u00e9\ntrainer: {}\n", encoding="utf-8")
    _check_config_files(["fit", "--config", str(config)])  # no error: a UTF-8 text file


def test_configs_of_the_readme_are_found_in_the_package_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--config configs/esol_dmpnn.yaml`` and ``--search configs/search/...`` read the
    copies shipped in the package when the folder has no such file; a file that is there, or
    a path elsewhere, is left alone; ``python -m molml`` is the molml command."""
    monkeypatch.chdir(tmp_path)
    args = shipped_configs(
        ["tune", "--config", "configs/esol_dmpnn.yaml", "--search=configs/search/dmpnn.yaml"]
    )
    assert Path(args[2]).is_file() and Path(args[2]).name == "esol_dmpnn.yaml"
    option, path = args[3].split("=")
    assert option == "--search" and Path(path).is_file()
    assert shipped_configs(["fit", "-c", "mine/esol.yaml"]) == ["fit", "-c", "mine/esol.yaml"]
    attached = shipped_configs(["fit", "-cconfigs/esol_dmpnn.yaml"])[1]
    assert attached.startswith("-c=") and Path(attached[3:]).is_file()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "esol_dmpnn.yaml").write_text("trainer: {}\n")
    kept = ["fit", "--config", "configs/esol_dmpnn.yaml"]
    assert shipped_configs(kept) == kept
    result = subprocess.run(
        [sys.executable, "-m", "molml", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("molml ")


def test_the_default_encoder_takes_its_options_without_a_config(
    property_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--model.encoder.init_args.hidden_dim`` without a config naming the encoder's class
    sets the default D-MPNN's width (it used to fail: no class to give the options to), and
    naming the default leaves other encoders' own defaults alone (GATv2's activation is elu)."""
    from molml.training import full_config

    with pytest.raises(SystemExit) as info:
        main(["fit", "--data.path", str(property_csv),
              "--model.encoder.init_args.hidden_dim", "16", "--print_config"])  # fmt: skip
    assert info.value.code == 0
    spec = yaml.safe_load(capsys.readouterr().out)["model"]["encoder"]
    assert spec["class_path"] == "molml.models.DMPNN" and spec["init_args"]["hidden_dim"] == 16
    gatv2 = full_config(["--config", str(REPO / "configs" / "lipo_gatv2.yaml")])["model"]["encoder"]
    assert gatv2["class_path"] == "molml.models.GATv2"
    assert gatv2["init_args"]["activation"] == "elu"
    # a config given as -cFILE names the encoder too: nothing is inserted
    attached = ["fit", "-cconfigs/lipo_gatv2.yaml", "--model.encoder.init_args.hidden_dim", "8"]
    assert _name_the_default_encoder(attached) == attached


def test_the_errors_a_user_catches_are_at_the_top_level(tmp_path: Path) -> None:
    import molml
    from molml.errors import CheckpointError, MolmlError

    assert molml.CheckpointError is CheckpointError and issubclass(molml.DataError, MolmlError)
    with pytest.raises(molml.CheckpointError, match="model not found"):
        molml.load_model(tmp_path / "missing.ckpt")


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("--model.num_classes=3", "it is the number of classes in the target column"),
        ("--model.task_type=regression", "give --data.task_type instead"),
        ("--model.tasks=[logS]", "give --data.target_columns instead"),
        ("--model.featurizer.init_args.preset=x", "give --data.featurizer instead"),
    ],
)
def test_a_model_option_set_from_the_data_names_what_to_give_instead(
    option: str, hint: str, capsys: pytest.CaptureFixture
) -> None:
    """jsonargparse would point at ``data.num_classes``, which is no option."""
    with pytest.raises(SystemExit) as info:
        main(["fit", "--data.dataset", "esol", option])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"molml fit: error: {option.partition('=')[0]} is set from the data: {hint}"


def test_without_a_logger_a_later_test_leaves_the_fits_run_files_be(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``--trainer.logger false`` fit writes its run files (config, split, test metrics,
    plot) into the working directory; a later ``molml test`` there, even on another split,
    leaves them as fit wrote them (its metrics, split and plot used to replace fit's)."""
    write_tiny_config(tmp_path / "tiny.yaml", property_csv, lr=1e-3, max_epochs=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    main(["fit", "--config", "tiny.yaml", "--trainer.logger", "false", *QUIET])
    records = ["config.yaml", "split.json", "split_report.json", "test_metrics.json",
               "test_parity.png"]  # fmt: skip
    written = {name: (tmp_path / name).read_bytes() for name in records}
    assert b"ckpt_path: null" in written["config.yaml"]
    checkpoint = next(tmp_path.rglob("best.ckpt"))
    main(["test", "--config", "config.yaml", "--ckpt_path", str(checkpoint),
          "--data.split", "random", "--data.split_seed", "7", *QUIET])  # fmt: skip
    assert {name: (tmp_path / name).read_bytes() for name in records} == written
    # predict writes predictions.csv there too, but never over the file it predicts
    library = tmp_path / "predictions.csv"
    library.write_text("smiles,name\nCCO,a\nCCN,b\n")
    predict = ["predict", "--config", "config.yaml", "--ckpt_path", str(checkpoint), *QUIET]
    with pytest.raises(SystemExit) as info:
        main([*predict, "--data.predict_path", "predictions.csv"])
    assert info.value.code == 2
    assert library.read_text() == "smiles,name\nCCO,a\nCCN,b\n"
    (tmp_path / "library.csv").write_text(library.read_text())
    main([*predict, "--data.predict_path", "library.csv"])
    assert pd.read_csv(library)["name"].tolist() == ["a", "b"] and "logp" in pd.read_csv(library)


def test_a_config_with_its_own_callbacks_still_writes_the_run_outputs(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trainer.callbacks list of a user's config replaces molml's defaults: the callbacks
    that write test_metrics.json, the test plot and predictions.csv are added back."""
    path = write_tiny_config(tmp_path / "tiny.yaml", property_csv, lr=1e-3, max_epochs=1)
    config = yaml.safe_load(path.read_text())
    config["trainer"]["callbacks"] = [
        {"class_path": "molml.callbacks.ModelCheckpoint",
         "init_args": {"monitor": "val/loss", "filename": "best", "save_last": True}},
    ]  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    main(["fit", "--config", "tiny.yaml", *QUIET])
    run = tmp_path / "runs" / "quickstart" / "version_0"
    assert "best.ckpt" in json.loads((run / "test_metrics.json").read_text())
    assert (run / "test_parity.png").is_file()
    main(["predict", "--config", str(run / "config.yaml"),
          "--ckpt_path", str(run / "checkpoints" / "best.ckpt"), *QUIET])  # fmt: skip
    assert (tmp_path / "runs" / "quickstart" / "version_1" / "predictions.csv").is_file()


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_notebook_find_unused_parameters_true"])
def test_spawned_process_strategies_are_refused(
    strategy: str, capsys: pytest.CaptureFixture
) -> None:
    """Their processes train copies of the trainer: the launching process's logs and test
    would miss the training (metrics.csv with the test row only, MLflow split in two)."""
    with pytest.raises(SystemExit) as info:
        main(["fit", "--data.dataset", "esol", "--trainer.strategy", strategy])
    assert info.value.code == 2
    assert "molml runs several devices with --trainer.strategy ddp" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-epochs", "0"], "--max-epochs must be an integer >= 1, got 0"),
        (["--out", "a_file/run"], "--out a_file/run cannot be made (a_file is a file"),
    ],
)
def test_quickstart_refuses_bad_options_before_any_work(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as info:
        main(["quickstart", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_endless_schedule_is_refused_before_the_run_folder_is_written(
    property_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_config(tmp_path / "tiny.yaml", property_csv, lr=1e-3, max_epochs=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["molml"])
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "tiny.yaml", "--trainer.max_epochs", "-1", *QUIET])
    assert info.value.code == 2
    assert list((tmp_path / "runs" / "quickstart").iterdir()) == []  # no split.json left


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--data.featurizer.init_args.preset=foo", "unknown featurizer preset 'foo'"),
        ("--data.featurizer.init_args.random_walk_steps=-1", "random_walk_steps must be 0"),
    ],
)
def test_a_featurizer_option_its_class_refuses_is_one_line_and_exit_2(
    option: str, message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--data.dataset", "esol", option])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"molml fit: error: {message}") and "Union" not in error
