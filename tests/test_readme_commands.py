"""Every ``molml`` command the README shows, run as written.

The commands are read from the README's fenced code blocks (shell variables such as ``$RUN``
expanded, line continuations joined), so a command added to the README without a check here
fails :func:`test_every_readme_command_has_a_check`. They run in-process, in README order, in one
temporary working directory (config paths resolved against the repository), with the shipped
configs' loggers and callbacks; commands that train get a one-epoch, two-batch trainer.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
import string
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from conftest import REPO, molml_server, require_dataset

from molml import load_model
from molml.cli import main
from molml.data.pretraining import zinc_smiles_path
from molml.errors import DataError

README = REPO / "README.md"
SHORT_TRAINING = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.limit_test_batches",
    "2",
]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SHORT_BASELINE = ["--estimator.params.n_estimators", "20"]
# The hybrid model of the README's "Models" section (given inline there, not in a code block).
HYBRID = "molml fit --config configs/esol_dmpnn.yaml --data.molecule_features rdkit2d"
LIBRARY_SIZE = 24


def readme_commands(text: str) -> list[str]:
    """``molml ...`` lines of the fenced code blocks, variables expanded, continuations joined."""
    commands: list[str] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
        variables: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if assignment := re.fullmatch(r"([A-Z_]+)=(\S+)", line):
                variables[assignment[1]] = assignment[2]
            elif line.startswith("molml "):
                expanded = string.Template(line).substitute(variables)
                commands.append(shlex.join(shlex.split(expanded)))
    return commands


def new_files(root: Path, before: set[Path], name: str) -> list[Path]:
    """Files ``name`` that the command wrote into a run directory ``runs/<name>/version_N``."""
    found = (root / "runs").glob(f"*/version_*/**/{name}")
    return sorted(p for p in found if p not in before)


def check_fit(root: Path, before: set[Path]) -> None:
    (ckpt,) = new_files(root, before, "best.ckpt")
    assert (ckpt.parent.parent / "split_report.json").is_file()
    assert pd.read_csv(ckpt.parent.parent / "metrics.csv")["val/rmse"].notna().any()


def check_test(root: Path, before: set[Path]) -> None:
    (metrics,) = new_files(root, before, "metrics.csv")
    assert pd.read_csv(metrics)["test/rmse"].notna().any()


def check_predict(root: Path, before: set[Path]) -> None:
    (predictions,) = new_files(root, before, "predictions.csv")
    frame = pd.read_csv(predictions)
    assert len(frame) == LIBRARY_SIZE and (frame["status"] == "ok").all()


def check_hybrid(root: Path, before: set[Path]) -> None:
    check_fit(root, before)
    (config,) = new_files(root, before, "config.yaml")
    assert yaml.safe_load(config.read_text())["data"]["molecule_features"] == "rdkit2d"


def check_fine_tune(root: Path, before: set[Path]) -> None:
    check_fit(root, before)
    (ckpt,) = new_files(root, before, "best.ckpt")
    assert load_model(ckpt).metadata["pretrained_from"] == "zinc-dmpnn"


def check_fine_tune_chemprop(root: Path, before: set[Path]) -> None:
    check_fit(root, before)
    (ckpt,) = new_files(root, before, "best.ckpt")
    model = load_model(ckpt)
    assert model.metadata["pretrained_from"] == "zinc-dmpnn-chemprop"
    assert model.featurizer.preset == "chemprop"


def check_pretrain(root: Path, before: set[Path]) -> None:
    last = root / "runs" / "pretrain_dmpnn" / "checkpoints" / "last.ckpt"
    assert last not in before
    encoder = load_model(last)
    assert "MolWt" in encoder.tasks and encoder.metadata["training_data"]["sources"] == ["zinc"]


def check_baseline_fit(root: Path, before: set[Path]) -> None:
    assert (root / "runs" / "esol_xgb" / "version_0" / "model" / "baseline.json").is_file()


def check_baseline_test(root: Path, before: set[Path]) -> None:
    (metrics,) = new_files(root, before, "metrics.json")
    assert "rmse" in metrics.read_text()


def written(root: Path, before: set[Path], name: str) -> list[Path]:
    """Files ``name`` that the command wrote anywhere under ``runs/``."""
    return sorted(p for p in (root / "runs").rglob(name) if p not in before)


def check_tune(root: Path, before: set[Path]) -> None:
    for name in ("best.yaml", "trials.csv"):
        assert written(root, before, name), f"molml tune wrote no {name}"


def check_cv(root: Path, before: set[Path]) -> None:
    (manifest,) = written(root, before, "ensemble.json")
    assert load_model(manifest).predict(["CCO"])["status"].tolist() == ["ok"]


def check_seed_ensemble(root: Path, before: set[Path]) -> None:
    check_cv(root, before)
    (folds,) = written(root, before, "folds.json")
    first, second = json.loads(folds.read_text())
    assert first == second  # both members on the config's own split


def check_screen(root: Path, before: set[Path]) -> None:
    scores = pd.read_parquet(root / "scores.parquet")
    assert len(scores) == LIBRARY_SIZE and (scores["status"] == "ok").all()


def check_report_data(root: Path, before: set[Path]) -> None:
    report = json.loads((root / "reports" / "data" / "report.json").read_text())
    assert report["valid_molecules"] > 1000 and report["split"]["sizes"]["test"] > 0


def check_report_eval(root: Path, before: set[Path]) -> None:
    report_dir = root / "runs" / "esol_dmpnn" / "version_0" / "report"
    report = json.loads((report_dir / "report.json").read_text())
    assert len(report["tasks"]["logSolubility"]["metrics"]) == 2
    assert (report_dir / "report.html").is_file()


def check_explain(output: str) -> Callable[[Path, set[Path]], None]:
    def check(root: Path, before: set[Path]) -> None:
        table = root / output / "attributions.csv"
        assert table not in before
        assert set(pd.read_csv(table)["molecule"]) == set(range(LIBRARY_SIZE))
        assert (root / output / "index.html").is_file()
        assert len(list((root / output / "molecules").glob("*.svg"))) == LIBRARY_SIZE

    return check


SERVE = "molml serve --model runs/esol_dmpnn/version_0/checkpoints/best.ckpt --reference esol.csv"


def check_serve(root: Path, before: set[Path]) -> None:
    """``molml serve`` runs in its own process (on a free port, not the README's 8000)."""
    shutil.copy(require_dataset("esol"), root / "esol.csv")
    with molml_server(shlex.split(SERVE)[2:], cwd=root) as url:
        response = httpx.post(f"{url}/predict", json={"smiles": ["CCO", "C1CC"]}, timeout=30)
        first, second = response.json()["results"]
        assert first["status"] == "ok" and first["predictions"]["logSolubility"] is not None
        assert second["status"] != "ok"
        domain = httpx.get(f"{url}/models", timeout=10).json()["models"]["best"]
        assert domain["applicability_domain"]["molecules"] == 1128


def check_export_onnx(root: Path, before: set[Path]) -> None:
    exported = root / "esol.onnx"
    assert exported not in before and "parity" in load_model(exported).metadata


def check_export_pt2(root: Path, before: set[Path]) -> None:
    exported = root / "esol.pt2"
    assert exported not in before and exported.stat().st_size > 0


def check_screen_onnx(root: Path, before: set[Path]) -> None:
    scores = pd.read_parquet(root / "scores_onnx.parquet")
    assert len(scores) == LIBRARY_SIZE and (scores["status"] == "ok").all()


def check_calibrate(root: Path, before: set[Path]) -> None:
    calibrated = load_model(root / "esol_intervals.json")
    assert calibrated.prediction_columns() == [
        "logSolubility",
        "logSolubility_std",
        "logSolubility_lower",
        "logSolubility_upper",
    ]


def check_screen_intervals(root: Path, before: set[Path]) -> None:
    scores = pd.read_parquet(root / "scores_intervals.parquet")
    ok = scores[scores["status"] == "ok"]
    assert len(scores) == LIBRARY_SIZE and len(ok) > 0
    assert (ok["logSolubility_lower"] < ok["logSolubility"]).all()
    assert (ok["logSolubility"] < ok["logSolubility_upper"]).all()


def check_report_intervals(root: Path, before: set[Path]) -> None:
    report_dir = root / "runs" / "esol_dmpnn_mve" / "version_0" / "report"
    report = json.loads((report_dir / "report.json").read_text())
    scored = report["tasks"]["logSolubility"]["uncertainty"]
    assert len(scored) == 2  # the raw model (std) and the calibrated one (std and interval)
    assert [s["interval_level"] for s in scored.values()] == [None, 0.9]


# README command -> (datasets it needs, what it must have written)
CHECKS: dict[str, tuple[tuple[str, ...], Callable[[Path, set[Path]], None]]] = {
    "molml fit --config configs/esol_dmpnn.yaml": (("esol",), check_fit),
    "molml test --config runs/esol_dmpnn/version_0/config.yaml "
    "--ckpt_path runs/esol_dmpnn/version_0/checkpoints/best.ckpt": (("esol",), check_test),
    "molml predict --config runs/esol_dmpnn/version_0/config.yaml "
    "--ckpt_path runs/esol_dmpnn/version_0/checkpoints/best.ckpt "
    "--data.predict_path library.csv": (("esol",), check_predict),
    "molml fit --config configs/lipo_gps.yaml": (("lipo",), check_fit),
    "molml fit --config configs/esol_dmpnn.yaml --model.encoder.class_path molml.models.GINE": (
        ("esol",),
        check_fit,
    ),
    HYBRID: (("esol",), check_hybrid),
    "molml fit --config configs/esol_dmpnn.yaml --model.pretrained zinc-dmpnn": (
        ("esol",),
        check_fine_tune,
    ),
    "molml fit --config configs/lipo_dmpnn_chemprop_pretrained.yaml": (
        ("lipo",),
        check_fine_tune_chemprop,
    ),
    "molml pretrain --config configs/pretrain_dmpnn.yaml": ((), check_pretrain),
    "molml baseline fit --config configs/esol_xgb.yaml": (("esol",), check_baseline_fit),
    "molml baseline test --model runs/esol_xgb/version_0/model": (("esol",), check_baseline_test),
    "molml baseline predict --model runs/esol_xgb/version_0/model "
    "--data.predict_path library.csv": (("esol",), check_predict),
    "molml report data --config configs/esol_dmpnn.yaml": (("esol",), check_report_data),
    "molml report eval --run runs/esol_dmpnn/version_0 --model runs/esol_xgb/version_0/model": (
        ("esol",),
        check_report_eval,
    ),
    "molml fit --config configs/esol_dmpnn_mve.yaml": (("esol",), check_fit),
    "molml calibrate --run runs/esol_dmpnn_mve/version_0 --output esol_intervals.json": (
        ("esol",),
        check_calibrate,
    ),
    "molml screen --model esol_intervals.json --input library.smi.gz "
    "--output scores_intervals.parquet": (("esol",), check_screen_intervals),
    "molml report eval --run runs/esol_dmpnn_mve/version_0 --model esol_intervals.json": (
        ("esol",),
        check_report_intervals,
    ),
    "molml tune --config configs/esol_dmpnn.yaml --search configs/search/dmpnn.yaml "
    "--n-trials 50": (("esol",), check_tune),
    "molml tune --config configs/esol_xgb.yaml --search configs/search/xgb.yaml --n-trials 30": (
        ("esol",),
        check_tune,
    ),
    "molml cv --config configs/esol_dmpnn.yaml --folds 5": (("esol",), check_cv),
    "molml cv --config configs/esol_dmpnn.yaml --split seeds --folds 5 --name esol_dmpnn_seeds": (
        ("esol",),
        check_seed_ensemble,
    ),
    "molml screen --model runs/esol_dmpnn/version_0/checkpoints/best.ckpt "
    "--input library.smi.gz --output scores.parquet": (("esol",), check_screen),
    "molml explain --model runs/esol_dmpnn/version_0/checkpoints/best.ckpt "
    "--input library.csv --output explain/": (("esol",), check_explain("explain")),
    "molml explain --model runs/esol_xgb/version_0/model --input library.csv "
    "--output explain_xgb/": (("esol",), check_explain("explain_xgb")),
    SERVE: (("esol",), check_serve),
    "molml export --model runs/esol_dmpnn/version_0/checkpoints/best.ckpt --format onnx "
    "--output esol.onnx": (("esol",), check_export_onnx),
    "molml export --model runs/esol_dmpnn/version_0/checkpoints/best.ckpt --format pt2 "
    "--output esol.pt2": (("esol",), check_export_pt2),
    "molml screen --model esol.onnx --input library.smi.gz --output scores_onnx.parquet": (
        ("esol",),
        check_screen_onnx,
    ),
}


def cli_args(command: str) -> list[str]:
    """The command's arguments, config paths made absolute, short training appended."""
    args = shlex.split(command)[1:]
    args = [str(REPO / a) if a.startswith("configs/") else a for a in args]
    if args[0] == "fit":
        args += SHORT_TRAINING + QUIET
    elif args[0] == "pretrain":  # 400 ZINC molecules, two steps
        args += ["--data.max_molecules", "400", "--data.val_size", "100", "--data.shard_size"]
        args += ["200", "--data.featurize_jobs", "1", *SHORT_TRAINING, *QUIET]
    elif args[0] in ("test", "predict"):
        args += QUIET
    elif args[:2] == ["baseline", "fit"]:
        args += SHORT_BASELINE
    elif args[0] in ("tune", "cv"):  # two trials or folds, each trained briefly
        for option in ("--n-trials", "--folds"):
            if option in args:
                args[args.index(option) + 1] = "2"
        args += SHORT_BASELINE if "xgb" in args[2] else SHORT_TRAINING + QUIET
    return args


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with the README's ``library.csv`` and ``library.smi.gz``."""
    esol = require_dataset("esol")
    root = tmp_path_factory.mktemp("readme")
    smiles = pd.read_csv(esol)["smiles"].head(LIBRARY_SIZE)
    smiles.to_frame().to_csv(root / "library.csv", index=False)
    with gzip.open(root / "library.smi.gz", "wt") as handle:
        handle.writelines(f"{s} mol{i}\n" for i, s in enumerate(smiles))
    return root


def test_every_readme_command_has_a_check() -> None:
    commands = readme_commands(README.read_text())
    assert commands, "no molml commands found in the README's code blocks"
    assert set(commands) == set(CHECKS) - {HYBRID}
    assert "--data.molecule_features rdkit2d" in README.read_text()


@pytest.mark.parametrize("command", list(CHECKS))
def test_readme_command_runs(
    command: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    datasets, check = CHECKS[command]
    for name in datasets:
        require_dataset(name)
    if command.startswith("molml pretrain"):
        try:
            zinc_smiles_path()
        except DataError as exc:  # `make setup` installs molsets; a bare checkout may not
            pytest.skip(str(exc))
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", ["molml"])  # pytest's own arguments are not the CLI's
    before = set(workdir.rglob("*"))
    if command == SERVE:  # a server runs until stopped: its check starts and stops it
        check(workdir, before)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(cli_args(command))
    check(workdir, before)
