"""Options and failures of ``molml screen`` and the data options, on data the tests generate:
every numeric option is checked before any work, a failed screen leaves nothing that blocks
its rerun, two screens cannot write one output, and the summary counts what was screened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from molml.cli import main as cli_main
from molml.errors import DataError
from molml.screen import screen_library
from molml.screen.module import ScreeningModule


@pytest.fixture
def library(tmp_path: Path) -> Path:
    path = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": ["CCO", "c1ccccc1O", "C1CC", "CCN"] * 5}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("chunk_size", 0),
        ("batch_size", 0),
        ("batch_size", -1),
        ("num_workers", -1),
        ("top_k", -1),
        ("top_k", 0),
        ("num_nodes", 0),
    ],
)
def test_numeric_options_are_checked_before_any_work(
    graph_run, library: Path, tmp_path: Path, option: str, value: int
) -> None:
    out = tmp_path / "scores.csv"
    with pytest.raises(DataError, match=f"{option} must be an integer >= "):
        screen_library([graph_run["ckpt"]], library, out, progress=False, **{option: value})
    assert not out.exists() and not out.with_name(out.name + ".parts").exists()


def test_the_command_line_reports_a_bad_option_in_one_line(graph_run, library, tmp_path, capsys):
    argv = ["screen", "--model", str(graph_run["ckpt"]), "--input", str(library)]
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*argv, "--output", str(tmp_path / "o.csv"), "--batch-size", "-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "molml screen: error: batch_size must be an integer >= 1, got -1"


def test_a_failed_screen_leaves_nothing_that_blocks_the_rerun(
    graph_run, library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self, chunk, batch_idx):
        raise RuntimeError("the device went away")

    out = tmp_path / "scores.csv"
    with monkeypatch.context() as patch:
        patch.setattr(ScreeningModule, "predict_step", fail)
        with pytest.raises(RuntimeError, match="device went away"):
            screen_library([graph_run["ckpt"]], library, out, num_workers=0, progress=False)
    assert not out.with_name(out.name + ".parts").exists()
    # the rerun may even change options: no stale partial results are in the way
    summary = screen_library([graph_run["ckpt"]], library, out, chunk_size=7, progress=False)
    assert summary["rows"] == 20 and summary["ok"] == 15


def test_summary_counts_the_rows_screened_in_this_run(graph_run, library, tmp_path) -> None:
    out = tmp_path / "scores.parquet"
    summary = screen_library([graph_run["ckpt"]], library, out, chunk_size=6, progress=False)
    assert summary["rows"] == summary["screened_this_run"] == 20
    assert summary["failed"] == 5 and summary["ok"] == 15
    assert json.loads(Path(f"{out}.summary.json").read_text())["screened_this_run"] == 20


def test_two_screens_of_one_output_cannot_run_at_once(graph_run, library, tmp_path) -> None:
    out = tmp_path / "scores.csv"
    holder = subprocess.Popen(  # another process in the middle of screening the same output
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from molml.screen.output import OutputLock\n"
            f"with OutputLock(Path({str(out)!r})):\n"
            "    print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataError, match="another molml screen is writing"):
            screen_library([graph_run["ckpt"]], library, out, progress=False)
        assert not out.exists() and not out.with_name(out.name + ".parts").exists()
    finally:
        holder.communicate("", timeout=60)
    assert screen_library([graph_run["ckpt"]], library, out, progress=False)["rows"] == 20
    assert not out.with_name(out.name + ".lock").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("batch_size", 0), ("num_workers", -1), ("featurize_jobs", 0), ("featurize_jobs", -2)],
)
def test_training_data_options_are_checked(property_csv, option, value) -> None:
    from molml.data.datamodule import MoleculeDataModule

    with pytest.raises(DataError, match=rf"data.{option} must be (-1 \(.*\) or )?an integer >= "):
        MoleculeDataModule(path=str(property_csv), **{option: value})


def test_baseline_feature_jobs_are_checked() -> None:
    from molml.baselines import FeaturesConfig

    with pytest.raises(
        DataError,
        match=r"features.n_jobs must be -1 \(one process per CPU core\) or an integer >= 1",
    ):
        FeaturesConfig(n_jobs=0)


def test_a_remote_checkpoint_path_is_refused_by_the_lightning_verbs(property_csv, capsys) -> None:
    from molml.cli import main

    argv = ["test", "--data.path", str(property_csv), "--data.target_columns", '["logp"]']
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--ckpt_path", "https://example.org/best.ckpt"])
    assert exit_info.value.code == 2
    assert "only local checkpoint files are read, not URLs" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["fit", "test", "predict"])
@pytest.mark.parametrize("alias", ["last", "best"])
def test_lightning_checkpoint_aliases_are_refused(property_csv, capsys, verb, alias) -> None:
    """``--ckpt_path last`` would be looked up in the command's own new run folder, find
    nothing and run (or train) the model from its initial weights."""
    from molml.cli import main

    argv = [verb, "--data.path", str(property_csv), "--data.target_columns", '["logp"]']
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--ckpt_path", alias])
    assert exit_info.value.code == 2
    assert f"--ckpt_path {alias}: give the checkpoint file" in capsys.readouterr().err


def test_checkpointing_off_beside_the_default_checkpoint_callback_is_refused_by_name(
    property_csv, capsys
) -> None:
    """Lightning would raise its own error (exit 1) about a ModelCheckpoint the user never
    named: it is one of molml's default callbacks."""
    from molml.cli import main

    argv = ["fit", "--data.path", str(property_csv), "--data.target_columns", '["logp"]']
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--trainer.enable_checkpointing", "false"])
    assert exit_info.value.code == 2
    assert "--trainer.enable_checkpointing false: the run's callbacks keep the best" in (
        capsys.readouterr().err
    )


def test_a_database_under_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    from molml.tracking import absolute_tracking_uri

    (tmp_path / "data.csv").write_text("smiles\nCCO\n")
    with pytest.raises(DataError, match=r"data.csv/t.db: cannot make the database's folder"):
        absolute_tracking_uri(f"sqlite:///{tmp_path / 'data.csv' / 't.db'}")
    assert absolute_tracking_uri(f"sqlite:///{tmp_path / 'new' / 't.db'}").endswith("new/t.db")
    assert (tmp_path / "new").is_dir()


def test_an_mlflow_database_is_made_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow makes its tables in a new file that is linked into place when done: a stop
    meanwhile (SIGTERM while 'Updating database tables') leaves no database, where it used
    to leave one that every later run failed to open; such a file is named in one line."""
    import mlflow.tracking

    from molml.tracking import mlflow_client

    database = tmp_path / "mlflow.db"
    real = mlflow.tracking.MlflowClient

    def stopped(uri: str) -> None:
        real(uri)  # the tables are being made ...
        raise KeyboardInterrupt  # ... when the run is stopped

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", stopped)
    with pytest.raises(KeyboardInterrupt):
        mlflow_client(f"sqlite:///{database}")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", real)
    client = mlflow_client(f"sqlite:///{database}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]

    killed = tmp_path / ".other.db.0123.partial"  # SIGKILL: no cleanup ran
    recent = tmp_path / ".other.db.4567.partial"  # another process making it right now
    for leftover in (killed, recent):
        leftover.write_bytes(b"half made")
    os.utime(killed, (time.time() - 2 * 3600,) * 2)
    mlflow_client(f"sqlite:///{tmp_path / 'other.db'}")
    assert not killed.exists() and recent.exists()
    os.utime(recent, (time.time() - 2 * 3600,) * 2)  # the store exists now: opened, swept
    mlflow_client(f"sqlite:///{tmp_path / 'other.db'}")
    assert not recent.exists()

    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database" * 100)
    with pytest.raises(DataError, match=f"the MLflow database {broken} cannot be opened"):
        mlflow_client(f"sqlite:///{broken}")
