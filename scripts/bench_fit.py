"""End to end on a shared split: ``molml fit`` against ``chemprop train``.

Both tools train a D-MPNN (hidden 300, depth 3, batch 64) on entry ``--split-index`` of
``/work/shared/splits``-style split file (chemprop's ``--splits-file`` format) of a registry
dataset, for ``--epochs`` epochs, as their users run them:

- molml: ``molml fit --config configs/<dataset>_dmpnn.yaml --data.split predefined
  --data.split_file <entry> --trainer.max_epochs N`` (the shipped config: its checkpoint,
  early stopping, CSV + MLflow loggers and plots), which tests its best checkpoint at the end;
- chemprop 2.3.1: ``chemprop train --splits-file <entry> --epochs N --pytorch-seed 0`` with its
  defaults, which trains, keeps the best validation checkpoint and tests it in one process.

Timed: process start to the test metrics of the best checkpoint, in a fresh working directory
each time, so featurization is never cached. Test RMSE is
computed here from each tool's own output (molml's ``test_metrics.json``; chemprop's
``test_predictions.csv`` against the CSV's labels). Rounds alternate the two tools; medians.
Without ``--chemprop`` only molml runs. ``--stages`` adds one profiled ``molml fit`` per
precision (Lightning's ``SimpleProfiler`` and ``python -X importtime``) and prints where its
wall time goes: imports, featurization, batches, forward, backward, optimizer, validation,
checkpoints, callbacks, the final test and the rest.

    python scripts/bench_fit.py --dataset esol --epochs 50 --rounds 2 \\
        --chemprop ../chemprop-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from molml.data.registry import dataset_path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{tail}")
    return seconds


def molml_end_to_end(
    args: argparse.Namespace,
    split: Path,
    work: Path,
    env: dict,
    precision: str,
    extra: Sequence[str] = (),
    interpreter_options: Sequence[str] = (),
) -> dict:
    fit = [
        sys.executable,
        *interpreter_options,
        "-m",
        "molml.cli",
        "fit",
        "--config",
        str(CONFIGS / f"{args.dataset}_dmpnn.yaml"),
        "--data.split",
        "predefined",
        "--data.split_file",
        str(split),
        "--trainer.max_epochs",
        str(args.epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.precision",
        precision,
        *extra,
    ]
    seconds = run(fit, work, env, work / "fit.log")
    run_dir = next((work / "runs").glob("*/version_0"))
    metrics = json.loads((run_dir / "test_metrics.json").read_text())["best.ckpt"]
    validated = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val/rmse"])
    epochs_run = validated["epoch"].nunique()
    return {
        "precision": precision,
        "seconds": seconds,
        "test_rmse": metrics["rmse"],
        "epochs_run": epochs_run,
    }


PROFILER = "lightning.pytorch.profilers.SimpleProfiler"
# stage -> Lightning SimpleProfiler actions whose total seconds it adds (negative: subtracts)
STAGES: dict[str, dict[str, int]] = {
    "featurization and data set-up": {
        "[LightningDataModule]MoleculeDataModule.prepare_data": 1,
        "[LightningDataModule]MoleculeDataModule.setup": 1,
    },
    "batches (collation)": {"[_TrainingEpochLoop].train_dataloader_next": 1},
    "forward + loss": {"[Strategy]SingleDeviceStrategy.training_step": 1},
    "backward": {"[Strategy]SingleDeviceStrategy.backward": 1},
    "optimizer step": {
        "[LightningModule]MoleculeModel.optimizer_step": 1,
        "[Strategy]SingleDeviceStrategy.training_step": -1,
        "[Strategy]SingleDeviceStrategy.backward": -1,
        "[LightningModule]MoleculeModel.optimizer_zero_grad": -1,
    },
    "validation": {
        "[Strategy]SingleDeviceStrategy.validation_step": 1,
        "[_EvaluationLoop].val_next": 1,
        "[LightningModule]MoleculeModel.on_validation_epoch_end": 1,
    },
    "checkpoints": {"save_checkpoint": 1},
    "MLflow artifacts, config and plots callbacks": {
        "[Callback]MlflowArtifacts.on_fit_end": 1,
        "[Callback]MolmlSaveConfig.setup": 1,
        "[Callback]EvaluationPlots.on_fit_end": 1,
    },
}


def profiler_totals(report: Path) -> dict[str, float]:
    """Action -> total seconds, from a SimpleProfiler report."""
    totals = {}
    for line in report.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) == 7 and cells[1] not in ("Action", "") and cells[4] != "-":
            totals[cells[1]] = float(cells[4])
    return totals


def import_seconds(log: Path) -> float:
    """Seconds spent importing, from ``python -X importtime`` lines (the top-level imports,
    wherever they happen: at start or on first use)."""
    total = 0
    for line in log.read_text(errors="replace").splitlines():
        cells = line.split("|")
        timed = line.startswith("import time:") and len(cells) == 3 and cells[1].strip().isdigit()
        if timed and cells[2].startswith(" ") and not cells[2].startswith("  "):
            total += int(cells[1])
    return total / 1e6


def stage_profile(
    args: argparse.Namespace, split: Path, work: Path, env: dict, precision: str
) -> dict:
    """One more ``molml fit`` with Lightning's SimpleProfiler and ``-X importtime``: where the
    process's wall time goes, stage by stage."""
    profile = work / "profile"
    extra = ["--trainer.profiler", PROFILER, "--trainer.profiler.dirpath", str(profile),
             "--trainer.profiler.filename", "fit"]  # fmt: skip
    run_ = molml_end_to_end(args, split, work, env, precision, extra, ["-X", "importtime"])
    fit = profiler_totals(profile / "fit-fit.txt")
    tested = profiler_totals(profile / "test-fit.txt")
    stages = {"imports (at start and on first use)": import_seconds(work / "fit.log")}
    for stage, parts in STAGES.items():
        stages[stage] = sum(sign * fit.get(action, 0.0) for action, sign in parts.items())
    stages["test of the best checkpoint"] = tested["Total"] - fit["Total"]
    stages["the rest: config, loggers, Lightning's loop and hooks"] = run_["seconds"] - sum(
        stages.values()
    )
    return {
        "precision": precision,
        "seconds": run_["seconds"],
        "stages": stages,
        "of_the_rest_new_mlflow_store": new_mlflow_store_seconds(work, env),
    }


def new_mlflow_store_seconds(work: Path, env: dict) -> float:
    """Seconds MLflow takes to create (and migrate) a new SQLite tracking store, as the first
    ``molml fit`` in a directory does; measured in a fresh process after importing mlflow."""
    code = (
        "import time, mlflow; t = time.perf_counter(); "
        "mlflow.MlflowClient('sqlite:///store_check.db').search_experiments(); "
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def chemprop_end_to_end(args: argparse.Namespace, split: Path, work: Path, env: dict) -> dict:
    out = work / "chemprop"
    train = [
        str(Path(args.chemprop).parent / "chemprop"),
        "train",
        "--data-path",
        str(dataset_path(args.dataset)),
        "--task-type",
        "regression",
        "--splits-file",
        str(split),
        "--epochs",
        str(args.epochs),
        "--output-dir",
        str(out),
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--pytorch-seed",
        "0",  # molml's config seeds everything with 0
    ]
    seconds = run(train, work, env, work / "chemprop.log")
    logged = re.search(r"test/mse: ([0-9.eE+-]+)", (work / "chemprop.log").read_text())
    table = pd.read_csv(dataset_path(args.dataset))
    test_rows = json.loads(split.read_text())[0]["test"]
    truth = table.iloc[test_rows]
    predicted = pd.read_csv(next(out.rglob("test_predictions.csv")))
    if list(predicted.iloc[:, 0]) != list(truth.iloc[:, 0]):
        raise SystemExit("chemprop's test predictions are not in the split's test order")
    target = table.columns[1]
    error = predicted[target].to_numpy() - truth[target].to_numpy()
    return {
        "seconds": seconds,
        "test_rmse": math.sqrt(float((error**2).mean())),
        "logged_test_rmse": math.sqrt(float(logged.group(1))) if logged else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="esol", help="registry name with a *_dmpnn config")
    parser.add_argument(
        "--splits-file", type=Path, help="default: $MOLML_DATA_DIR/../splits/<dataset>.splits.json"
    )
    parser.add_argument("--split-index", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both tools")
    parser.add_argument("--chemprop", help="python of a venv with chemprop 2.3.1 (the peer)")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["32-true"],
        help="molml fit --trainer.precision values, each run every round (e.g. 32-true "
        "bf16-mixed); chemprop trains in fp32",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="one more molml fit per precision with Lightning's SimpleProfiler and -X "
        "importtime: seconds per stage",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/fit.json"))
    args = parser.parse_args()
    splits_file = args.splits_file or (
        dataset_path(args.dataset).parent.parent / "splits" / f"{args.dataset}.splits.json"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)

    molml_runs, chemprop_runs = [], []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split.json"  # one entry: chemprop trains one model per entry
        split.write_text(json.dumps([json.loads(splits_file.read_text())[args.split_index]]))
        for round_ in range(args.rounds):
            for precision in args.precision:
                work = Path(tmp) / f"molml_{round_}_{precision}"
                work.mkdir()
                molml_runs.append(molml_end_to_end(args, split, work, env, precision))
                print(f"molml round {round_ + 1}: {molml_runs[-1]}", flush=True)
            if args.chemprop:
                work = Path(tmp) / f"chemprop_{round_}"
                work.mkdir()
                chemprop_runs.append(chemprop_end_to_end(args, split, work, env))
                print(f"chemprop round {round_ + 1}: {chemprop_runs[-1]}", flush=True)
        profiles = []
        for precision in args.precision if args.stages else []:
            work = Path(tmp) / f"molml_stages_{precision}"
            work.mkdir()
            profiles.append(stage_profile(args, split, work, env, precision))
    load_after = os.getloadavg()

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"\n{args.dataset}, {splits_file.name} entry {args.split_index}, {args.epochs} epochs, "
        f"median of {args.rounds} round(s); {os.cpu_count()} cores {platform.machine()}, "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print("| tool | wall s (start to tested best checkpoint) | test RMSE |")
    print("| --- | ---: | ---: |")
    by_precision = {p: [r for r in molml_runs if r["precision"] == p] for p in args.precision}
    for precision, runs in by_precision.items():
        row = f"{med(runs, 'seconds'):.1f} | {med(runs, 'test_rmse'):.3f}"
        print(f"| molml fit, {precision} | {row} |")
    summary = None
    if chemprop_runs:
        print(
            f"| chemprop train | {med(chemprop_runs, 'seconds'):.1f} "
            f"| {med(chemprop_runs, 'test_rmse'):.3f} |"
        )
        summary = {}
        for precision, runs in by_precision.items():
            ratio = med(chemprop_runs, "seconds") / med(runs, "seconds")
            print(f"| chemprop / molml {precision} | {ratio:.2f}x | |")
            summary[f"ratio_wall_{precision}"] = ratio
    else:
        print("no peer was run (pass --chemprop PYTHON to run chemprop train side by side)")
    for profile in profiles:
        print(f"\nwhere molml fit's {profile['seconds']:.1f} s go ({profile['precision']}):")
        print("| stage | seconds | share |")
        print("| --- | ---: | ---: |")
        for stage, seconds in profile["stages"].items():
            print(f"| {stage} | {seconds:.2f} | {seconds / profile['seconds']:.0%} |")
        store = profile["of_the_rest_new_mlflow_store"]
        print(f"(of the rest: {store:.2f} s to create a new MLflow SQLite store, measured apart)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": args.dataset,
        "splits_file": str(splits_file),
        "split_index": args.split_index,
        "epochs": args.epochs,
        "threads": args.threads,
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "molml": molml_runs,
        "chemprop": chemprop_runs,
        "chemprop_vs_molml": summary,
        "stages": profiles,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
