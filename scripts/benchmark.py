"""MoleculeNet benchmark: graph models and fingerprint baselines on the same scaffold splits.

Runs a grid of models x datasets x seeds. For seed S every model gets the balanced scaffold
split with ``split_seed`` S (80/10/10) and is seeded with S; graph models train with their
config's schedule (50 epochs, early stopping on the dataset's validation metric, best
checkpoint tested), baselines stop early on the validation split. Each finished cell is saved
at once as ``<out>/results/<dataset>/<model>/seed_<S>.json``; cells already there are skipped,
so an interrupted grid resumes where it stopped. The table (mean ± sd over seeds of each
dataset's default metric from its registry card, best model per dataset in bold) is written
to ``<out>/results.md`` and ``<out>/results.json`` from whatever cells are done.

Usage:
  python scripts/benchmark.py [--models dmpnn gine xgb_ecfp] [--datasets esol bbbp ...]
                              [--hiv] [--seeds 3] [--max-epochs N] [--threads 1]
                              [--out runs/benchmark] [--report-only]

Models: dmpnn, gine, gatv2, attentivefp, pna, gps, graphormer (graph models, from
configs/lipo_<model>.yaml with the dataset, metric and seed replaced), xgb_ecfp
(configs/esol_xgb.yaml: XGBoost on ECFP4 counts) and rf_ecfp (configs/esol_rf.yaml:
random forest on ECFP4 counts + RDKit descriptors).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from molml import __version__
from molml.baselines.cli import run as run_baseline
from molml.data.registry import get_card
from molml.tasks import HIGHER_IS_BETTER
from molml.training import make_cli

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = ("esol", "freesolv", "lipo", "bbbp", "bace", "clintox", "sider", "tox21")
DEFAULT_MODELS = ("dmpnn", "gine", "xgb_ecfp")


@dataclass(frozen=True)
class ModelEntry:
    """A benchmarked model: its column title, kind and template config."""

    title: str
    kind: str  # "graph" | "baseline"
    template: Path


GRAPH_MODELS = {
    "dmpnn": "D-MPNN",
    "gine": "GINE",
    "gatv2": "GATv2",
    "attentivefp": "AttentiveFP",
    "pna": "PNA",
    "gps": "GPS",
    "graphormer": "Graphormer",
}
MODELS: dict[str, ModelEntry] = {
    **{
        name: ModelEntry(title, "graph", REPO / "configs" / f"lipo_{name}.yaml")
        for name, title in GRAPH_MODELS.items()
    },
    "xgb_ecfp": ModelEntry("XGB-ECFP4", "baseline", REPO / "configs" / "esol_xgb.yaml"),
    "rf_ecfp": ModelEntry("RF-ECFP4+RDKit2D", "baseline", REPO / "configs" / "esol_rf.yaml"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODELS)
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--hiv", action="store_true", help="add HIV (41k molecules) to the grid")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (3; 5 for more)")
    parser.add_argument("--max-epochs", type=int, default=None, help="graph models' epochs")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads, featurization and XGBoost jobs"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument(
        "--report-only", action="store_true", help="only write the table of finished cells"
    )
    args = parser.parse_args(argv)
    if args.hiv and "hiv" not in args.datasets:
        args.datasets.append("hiv")
    return args


def cell_path(out: Path, model: str, dataset: str, seed: int) -> Path:
    return out / "results" / dataset / model / f"seed_{seed}.json"


def _monitored(callbacks: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The template's callbacks with checkpointing and early stopping on ``val/<metric>``."""
    mode = "max" if HIGHER_IS_BETTER[metric] else "min"
    out = []
    for callback in callbacks:
        callback = copy.deepcopy(callback)
        if callback["class_path"].endswith(("ModelCheckpoint", "EarlyStopping")):
            callback.setdefault("init_args", {}).update(monitor=f"val/{metric}", mode=mode)
        out.append(callback)
    return out


def run_graph_cell(
    model: str, dataset: str, seed: int, metric: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Fit a graph model from its template config, then test its best checkpoint."""
    config = yaml.safe_load(MODELS[model].template.read_text())
    name = f"{dataset}_{model}_seed{seed}"
    config["seed_everything"] = seed
    config["data"].update(
        dataset=dataset,
        split_seed=seed,
        featurize_jobs=args.threads,
        cache_dir=str(args.out / "cache"),
    )
    trainer = config["trainer"]
    trainer["logger"] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(args.out / "runs"), "name": name},
        }
    ]
    trainer["callbacks"] = _monitored(trainer["callbacks"], metric)
    trainer.update(enable_progress_bar=False, enable_model_summary=False)
    if args.max_epochs is not None:
        trainer["max_epochs"] = args.max_epochs
    config_path = args.out / "configs" / f"{name}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    cli = make_cli(["fit", "--config", str(config_path)])
    val = cli.trainer.checkpoint_callback.best_model_score
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    return {
        "test": tested[0][f"test/{metric}"],
        "val": None if val is None else float(val),
        "epochs": cli.trainer.current_epoch,
        "max_epochs": trainer["max_epochs"],
        "run_dir": cli.trainer.log_dir,
        "config": str(config_path),
    }


def run_baseline_cell(
    model: str, dataset: str, seed: int, metric: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Fit a baseline from its template config; its metrics.json holds every split's metrics."""
    threads = str(args.threads)
    run_dir = run_baseline(
        [
            "fit",
            "--config",
            str(MODELS[model].template),
            "--data.dataset",
            dataset,
            "--data.split_seed",
            str(seed),
            "--seed",
            str(seed),
            "--name",
            f"{dataset}_{model}_seed{seed}",
            "--output_dir",
            str(args.out / "runs"),
            "--tracking_uri",
            "null",
            "--features.n_jobs",
            threads,
            "--estimator.params.n_jobs",
            threads,
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "test": metrics["test"][metric],
        "val": metrics["val"].get(metric),
        "run_dir": str(run_dir),
        "config": str(run_dir / "config.yaml"),
    }


def run_cell(model: str, dataset: str, seed: int, args: argparse.Namespace) -> None:
    """Run one cell and save its result JSON (atomically, so a killed run leaves no cell)."""
    metric = get_card(dataset).metric
    start = time.perf_counter()
    run = run_graph_cell if MODELS[model].kind == "graph" else run_baseline_cell
    result = run(model, dataset, seed, metric, args)
    record = {
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "metric": metric,
        **result,
        "wall_s": time.perf_counter() - start,
        "threads": args.threads,
        "molml_version": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = cell_path(args.out, model, dataset, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, path)
    print(
        f"[{model} {dataset} seed {seed}] test {metric} {record['test']:.4f}, "
        f"{record['wall_s']:.0f} s",
        flush=True,
    )


def summarize(out: Path, models: list[str], datasets: list[str]) -> dict[str, Any]:
    """Mean, sample standard deviation, values and wall time per dataset and model."""
    summary: dict[str, Any] = {}
    for dataset in datasets:
        card = get_card(dataset)
        row: dict[str, Any] = {}
        for model in models:
            cells = sorted((out / "results" / dataset / model).glob("seed_*.json"))
            records = [json.loads(p.read_text()) for p in cells]
            values = [r["test"] for r in records]
            if not values:
                continue
            row[model] = {
                "values": values,
                "seeds": [r["seed"] for r in records],
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "wall_s": statistics.fmean(r["wall_s"] for r in records),
            }
        summary[dataset] = {"metric": card.metric, "n_molecules": card.n_molecules, "models": row}
    return summary


def markdown_table(summary: dict[str, Any], models: list[str]) -> str:
    """Datasets as rows, models as columns; the best mean of each row in bold."""
    titles = [MODELS[m].title for m in models]
    lines = [
        "| dataset | test metric | " + " | ".join(titles) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in models) + " |",
    ]
    for dataset, entry in summary.items():
        metric, row = entry["metric"], entry["models"]
        higher = HIGHER_IS_BETTER[metric]
        means = {m: v["mean"] for m, v in row.items()}
        best = (max if higher else min)(means, key=means.get) if means else None
        cells = []
        for model in models:
            if model not in row:
                cells.append("–")
                continue
            value = row[model]
            text = f"{value['mean']:.3f}"
            if value["sd"] is not None:
                text += f" ± {value['sd']:.3f}"
            if len(value["values"]) != max(len(v["values"]) for v in row.values()):
                text += f" (n={len(value['values'])})"
            cells.append(f"**{text}**" if model == best else text)
        arrow = "↑" if higher else "↓"
        name = f"{dataset} ({entry['n_molecules']:,})"
        lines.append(f"| {name} | {metric} {arrow} | " + " | ".join(cells) + " |")
    lines += ["", "Mean wall time per cell (s): featurization, training and test.", ""]
    lines += [
        "| dataset | " + " | ".join(titles) + " |",
        "| --- | " + " | ".join("---:" for _ in models) + " |",
    ]
    for dataset, entry in summary.items():
        row = entry["models"]
        cells = [f"{row[m]['wall_s']:.0f}" if m in row else "–" for m in models]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(args: argparse.Namespace) -> None:
    summary = summarize(args.out, args.models, args.datasets)
    table = markdown_table(summary, args.models)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    print(table)
    print(f"\nwritten: {args.out / 'results.md'}, {args.out / 'results.json'}")


def run_grid(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Run every unfinished cell, seed by seed; returns the cells that failed."""
    torch.set_num_threads(args.threads)
    grid = [
        (model, dataset, seed)
        for seed in range(args.seeds)
        for dataset in args.datasets
        for model in args.models
    ]
    todo = [cell for cell in grid if not cell_path(args.out, *cell).is_file()]
    print(f"{len(grid)} cells, {len(grid) - len(todo)} already done, {len(todo)} to run")
    failed = []
    for model, dataset, seed in todo:
        try:
            run_cell(model, dataset, seed, args)
        except Exception:  # one failed cell must not stop a long grid; a rerun retries it
            traceback.print_exc()
            failed.append((model, dataset, seed))
    if failed:
        print(f"{len(failed)} cell(s) failed; run the command again to retry them: {failed}")
    return failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.argv = sys.argv[:1]  # the graph runs' LightningCLI takes its arguments from make_cli
    failed = [] if args.report_only else run_grid(args)
    write_report(args)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
