"""MoleculeNet benchmark: graph models and fingerprint baselines on the same scaffold splits.

Runs a grid of models x datasets x seeds. For seed S every model gets the balanced scaffold
split with ``split_seed`` S (80/10/10) and is seeded with S; graph models train with their
config's schedule (50 epochs, early stopping on the dataset's validation metric, best
checkpoint tested), baselines stop early on the validation split. Each finished cell is saved
at once as ``<out>/results/<dataset>/<model>/seed_<S>.json``; cells already there are skipped,
so an interrupted grid resumes where it stopped. The table (mean ± sd over seeds of each
dataset's default metric from its registry card, best model per dataset in bold) is written
to ``<out>/results.md`` and ``<out>/results.json`` from whatever cells are done.

With ``--splits-dir DIR`` the splits are not made here: seed S takes entry S of
``DIR/<dataset>.splits.json`` (chemprop's split format, e.g. ``../shared/splits``) for every
model, and the table gains the scores published with those files (``DIR/README.md``). With
``--train-fractions 0.1 0.25 ...`` graph models also train on that random fraction of each
training part (same validation and test parts): the data-efficiency curve. With
``--choose-on-validation MODEL ...`` the table gains a column that takes, per dataset and split
entry, the test score of whichever of those models scored best on validation (an honest way to
pick among fine-tuning variants: the test split plays no part in the choice). With
``--repeats R`` every graph cell is trained R times per split entry (seeds S, S + 100, ...;
``seed_<S>_repeat<k>.json``) and an entry's score is the mean of its repeats: on test parts of a
few dozen molecules one training seed moves the score as much as most differences between
models. Graph cells keep their test predictions, so with ``--ensemble`` the table also scores,
per graph model, the ensemble of an entry's repeats: the members' mean prediction (mean
probability for classification), scored by the same metric code as a single model.

With ``--chemprop PYTHON`` (a venv with chemprop 2.3.1, ``scripts/setup_chemprop_venv.sh``) and
``--splits-dir``, the model ``chemprop`` runs ``chemprop train`` with its defaults on the same
split entries in the same run (``--pytorch-seed`` S + 100 k for repeat k, so ``--repeats`` and
``--ensemble`` treat it like molml's models), and its test predictions are scored by the same
code as molml's. ``--monitor-loss`` keeps graph models' checkpoints (and early stopping) on the
validation loss instead of the dataset's metric, as chemprop does. ``--pretrained NAME_OR_PATH``
starts the fine-tuned models from another encoder than the one their config names (a checkpoint
of ``molml pretrain``, say).

Usage:
  python scripts/benchmark.py [--models dmpnn gine xgb_ecfp] [--datasets esol bbbp ...]
                              [--hiv] [--seeds 3] [--max-epochs N] [--precision P] [--threads 1]
                              [--splits-dir ../shared/splits] [--train-fractions 0.1 1.0]
                              [--choose-on-validation MODEL ...] [--repeats R [--ensemble]]
                              [--chemprop PYTHON] [--pretrained NAME_OR_PATH]
                              [--out runs/benchmark] [--report-only]

Models: dmpnn, dmpnn_pretrained (the D-MPNN fine-tuned from the shipped ``zinc-dmpnn``
encoder), dmpnn_pretrained_lr01 (the same with the encoder at a tenth of the learning rate),
dmpnn_pretrained_rdkit2d (with RDKit 2D descriptors before the head), dmpnn_pretrained_sum
(read out with the sum of atom states, as the encoder was pretrained),
dmpnn_pretrained_sum_rdkit2d (both), dmpnn_chemprop (chemprop 2's recipe: its features and
norm readout), dmpnn_chemprop_features (its features alone), dmpnn_chemprop_pretrained
(chemprop's recipe fine-tuned from the shipped ``zinc-dmpnn-chemprop`` encoder),
dmpnn_chemprop_pretrained_rdkit2d (the same with RDKit 2D descriptors before the head),
dmpnn_chemprop_pretrained_mean (the same encoder read out by the mean of atom states),
dmpnn_chemprop_pretrained_l2sp3e4, ..._l2sp1e3, ..._l2sp3e3, ..._l2sp1e2 (the encoder pulled
towards its pretrained weights with ``model.pretrained_l2_weight`` 0.0003 to 0.01; the same
four for dmpnn_pretrained_sum),
dmpnn_chemprop_pretrained_rdkit2d_l2sp3e3 (RDKit 2D descriptors before the head and 0.003),
dmpnn_chemprop_600_pretrained (the same recipe, hidden 600, from ``zinc-dmpnn-chemprop-600``),
gine, gatv2, attentivefp, pna, gps, graphormer (graph models, from configs/lipo_<model>.yaml
with the dataset, metric and seed replaced), xgb_ecfp
(configs/esol_xgb.yaml: XGBoost on ECFP4 counts) and rf_ecfp (configs/esol_rf.yaml:
random forest on ECFP4 counts + RDKit descriptors), xgb_zinc_dmpnn, xgb_zinc_dmpnn_chemprop and
xgb_zinc_dmpnn_chemprop_600 (configs/esol_xgb_pretrained.yaml: XGBoost on the readout
embeddings of that shipped encoder; with ``_rdkit2d`` appended, concatenated with the RDKit 2D
descriptors), chemprop (the peer, see above).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from molml import __version__
from molml.baselines.cli import run as run_baseline
from molml.data.registry import dataset_path, get_card
from molml.models.pretrained import pretrained_names
from molml.tasks import HIGHER_IS_BETTER, score_predictions
from molml.training import make_cli

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = ("esol", "freesolv", "lipo", "bbbp", "bace", "clintox", "sider", "tox21")
DEFAULT_MODELS = ("dmpnn", "gine", "xgb_ecfp")


@dataclass(frozen=True)
class ModelEntry:
    """A benchmarked model: its column title, kind and template config."""

    title: str
    kind: str  # "graph" | "baseline" | "peer"
    template: Path | None
    overrides: tuple[str, ...] = ()  # baselines: options given after the template's
    model_args: tuple[tuple[str, Any], ...] = ()  # graph models: set in the config's model


def xgb_on_embeddings() -> dict[str, ModelEntry]:
    """XGBoost on each shipped encoder's embeddings (``configs/esol_xgb_pretrained.yaml``),
    alone (``xgb_<encoder>``) and beside the RDKit 2D descriptors (``..._rdkit2d``)."""
    template = REPO / "configs" / "esol_xgb_pretrained.yaml"
    entries = {}
    for name in pretrained_names():
        key = f"xgb_{name.replace('-', '_')}"
        parts = f"[{{class: pretrained, model: {name}}}, {{class: rdkit2d}}]"
        entries[key] = ModelEntry(
            f"XGBoost on {name} embeddings",
            "baseline",
            template,
            (f"--features.params.model={name}",),
        )
        entries[f"{key}_rdkit2d"] = ModelEntry(
            f"XGBoost on {name} embeddings + RDKit 2D",
            "baseline",
            template,
            ("--features.name=concat", f"--features.params={{parts: {parts}}}"),
        )
    return entries


GRAPH_MODELS = {
    "dmpnn": "D-MPNN",
    "dmpnn_chemprop": "D-MPNN, chemprop's features and norm readout",
    "dmpnn_chemprop_features": "D-MPNN, chemprop's features",
    "dmpnn_chemprop_pretrained": "D-MPNN, chemprop's recipe, fine-tuned",
    "dmpnn_chemprop_pretrained_rdkit2d": "D-MPNN, chemprop's recipe, fine-tuned + RDKit 2D",
    "dmpnn_chemprop_600_pretrained": "D-MPNN hidden 600, chemprop's recipe, fine-tuned",
    "dmpnn_pretrained": "D-MPNN fine-tuned",
    "dmpnn_pretrained_lr01": "D-MPNN fine-tuned, encoder lr ×0.1",
    "dmpnn_pretrained_rdkit2d": "D-MPNN fine-tuned + RDKit 2D features",
    "dmpnn_pretrained_sum": "D-MPNN fine-tuned, sum readout",
    "dmpnn_pretrained_sum_rdkit2d": "D-MPNN fine-tuned, sum readout + RDKit 2D features",
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
    "dmpnn_chemprop_pretrained_mean": ModelEntry(
        "D-MPNN, chemprop's features, fine-tuned, mean readout",
        "graph",
        REPO / "configs" / "lipo_dmpnn_chemprop_pretrained.yaml",
        model_args=(("readout", "mean"),),
    ),
    **{  # the encoder pulled towards its pretrained weights while fine-tuning (L2-SP)
        f"{base}_l2sp{code}": ModelEntry(
            f"{GRAPH_MODELS[base]}, L2-SP {weight:g}",
            "graph",
            REPO / "configs" / f"lipo_{base}.yaml",
            model_args=(("pretrained_l2_weight", weight),),
        )
        for base in ("dmpnn_chemprop_pretrained", "dmpnn_pretrained_sum")
        for code, weight in (("3e4", 3e-4), ("1e3", 1e-3), ("3e3", 3e-3), ("1e2", 1e-2))
    },
    "dmpnn_chemprop_pretrained_rdkit2d_l2sp3e3": ModelEntry(
        "D-MPNN, chemprop's recipe, fine-tuned + RDKit 2D, L2-SP 0.003",
        "graph",
        REPO / "configs" / "lipo_dmpnn_chemprop_pretrained_rdkit2d.yaml",
        model_args=(("pretrained_l2_weight", 3e-3),),
    ),
    "xgb_ecfp": ModelEntry("XGB-ECFP4", "baseline", REPO / "configs" / "esol_xgb.yaml"),
    "rf_ecfp": ModelEntry("RF-ECFP4+RDKit2D", "baseline", REPO / "configs" / "esol_rf.yaml"),
    **xgb_on_embeddings(),
    "chemprop": ModelEntry("chemprop 2.3.1, run here", "peer", None),
}
TRAINED_PER_REPEAT = ("graph", "peer")  # kinds trained once per repeat and kept for ensembles


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODELS)
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--hiv", action="store_true", help="add HIV (41k molecules) to the grid")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (3; 5 for more)")
    parser.add_argument("--max-epochs", type=int, default=None, help="graph models' epochs")
    parser.add_argument(
        "--precision",
        default=None,
        help="graph models' trainer precision (e.g. bf16-mixed; default: the config's, fp32)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads, featurization and XGBoost jobs"
    )
    parser.add_argument(
        "--splits-dir", type=Path, default=None, help="use DIR/<dataset>.splits.json entry S"
    )
    parser.add_argument(
        "--train-fractions",
        nargs="+",
        type=float,
        default=[1.0],
        help="graph models: fractions of each training part to train on (data-efficiency curve)",
    )
    parser.add_argument(
        "--choose-on-validation",
        nargs="+",
        default=[],
        metavar="MODEL",
        help="add a column that takes, per dataset and split entry, the test score of the one of "
        "these models with the best validation score (their cells must exist)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="train every graph cell this many times per split entry (seeds S, S + 100, ...); "
        "an entry's score is their mean",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="with --repeats R: add, per graph model, a column scoring the ensemble of each "
        "entry's R repeats (their mean test prediction)",
    )
    parser.add_argument(
        "--chemprop", type=Path, default=None, help="python of a venv with chemprop 2.3.1"
    )
    parser.add_argument(
        "--monitor-loss",
        action="store_true",
        help="graph models: keep the checkpoint and stop early on the validation loss (as "
        "chemprop does) instead of the dataset's metric; give it its own --out",
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        metavar="NAME_OR_PATH",
        help="fine-tuned graph models (those whose config sets model.pretrained) start from this "
        "encoder instead: a shipped name or a checkpoint path; give it its own --out",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument(
        "--report-only", action="store_true", help="only write the table of finished cells"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.choose_on_validation) - set(MODELS))
    if unknown:
        parser.error(f"--choose-on-validation: unknown models {unknown}; known: {sorted(MODELS)}")
    if "chemprop" in args.models and not (args.chemprop and args.splits_dir):
        parser.error("the chemprop model needs --chemprop PYTHON and --splits-dir")
    if args.monitor_loss and args.choose_on_validation:
        parser.error("--choose-on-validation compares validation metrics; not with --monitor-loss")
    if args.ensemble and args.repeats < 2:
        parser.error("--ensemble needs --repeats R with R >= 2 (the ensemble's members)")
    if args.hiv and "hiv" not in args.datasets:
        args.datasets.append("hiv")
    return args


REPEAT_SEED_STEP = 100  # repeat k of entry S trains with seed S + 100 k


def cell_path(
    out: Path, model: str, dataset: str, seed: int, fraction: float = 1.0, repeat: int = 0
) -> Path:
    name = f"seed_{seed}.json" if repeat == 0 else f"seed_{seed}_repeat{repeat}.json"
    return out / "results" / dataset / model_key(model, fraction) / name


def model_key(model: str, fraction: float) -> str:
    """``dmpnn`` on the whole training part, ``dmpnn@0.25`` on a quarter of it."""
    return model if fraction == 1.0 else f"{model}@{fraction:g}"


def split_options(dataset: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The data options that select seed ``seed``'s split."""
    if args.splits_dir is None:
        return {"split_seed": seed}
    split_file = args.splits_dir / f"{dataset}.splits.json"
    return {
        "split": "predefined",
        "split_file": str(split_file.resolve()),
        "split_index": seed,
        "split_seed": seed,
    }


def published_scores(splits_dir: Path | None) -> dict[str, str]:
    """``dataset -> "mean ± sd"`` from the table in ``splits_dir/README.md``, if any."""
    readme = splits_dir / "README.md" if splits_dir else None
    if readme is None or not readme.is_file():
        return {}
    scores = {}
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and "±" in cells[2]:
            scores[cells[0]] = cells[2]
    return scores


def _monitored(callbacks: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The template's callbacks with checkpointing and early stopping on ``val/<metric>``
    (``metric`` a dataset metric or ``loss``)."""
    mode = "min" if metric == "loss" else "max" if HIGHER_IS_BETTER[metric] else "min"
    out = []
    for callback in callbacks:
        callback = copy.deepcopy(callback)
        if callback["class_path"].endswith(("ModelCheckpoint", "EarlyStopping")):
            callback.setdefault("init_args", {}).update(monitor=f"val/{metric}", mode=mode)
        out.append(callback)
    return out


def graph_config(
    model: str,
    dataset: str,
    seed: int,
    metric: str,
    args: argparse.Namespace,
    fraction: float,
    repeat: int,
    name: str,
) -> dict[str, Any]:
    """The ``molml fit`` config of one graph cell: the model's template with the data set, split
    entry, seed, logger, monitored metric and the command line's overrides put in."""
    config = yaml.safe_load(MODELS[model].template.read_text())
    config["seed_everything"] = seed + REPEAT_SEED_STEP * repeat
    config["model"].update(MODELS[model].model_args)
    config["data"].update(
        dataset=dataset,
        featurize_jobs=args.threads,
        cache_dir=str(args.out / "cache"),
        train_fraction=fraction,
        **split_options(dataset, seed, args),
    )
    trainer = config["trainer"]
    trainer["logger"] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(args.out / "runs"), "name": name},
        }
    ]
    trainer["callbacks"] = _monitored(trainer["callbacks"], "loss" if args.monitor_loss else metric)
    trainer.update(enable_progress_bar=False, enable_model_summary=False)
    if args.max_epochs is not None:
        trainer["max_epochs"] = args.max_epochs
    if args.precision is not None:
        trainer["precision"] = args.precision
    if args.pretrained is not None and config["model"].get("pretrained"):
        config["model"]["pretrained"] = args.pretrained
    return config


def run_graph_cell(
    model: str,
    dataset: str,
    seed: int,
    metric: str,
    args: argparse.Namespace,
    fraction: float,
    repeat: int = 0,
) -> dict[str, Any]:
    """Fit a graph model from its template config on split entry ``seed`` (trained with seed
    ``seed + REPEAT_SEED_STEP * repeat``), then test its best checkpoint."""
    name = f"{dataset}_{model_key(model, fraction)}_seed{seed}"
    if repeat:
        name += f"_repeat{repeat}"
    config = graph_config(model, dataset, seed, metric, args, fraction, repeat, name)
    trainer = config["trainer"]
    config_path = args.out / "configs" / f"{name}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    cli = make_cli(["fit", "--config", str(config_path)])
    val = cli.trainer.checkpoint_callback.best_model_score
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    predictions, targets, mask = (t.cpu().numpy() for t in cli.model.test_outputs)
    return {
        "test": tested[0][f"test/{metric}"],
        "task_type": cli.model.task_type,
        "tasks": cli.model.tasks,
        # in the test loader's order (the same for every repeat of an entry): for ensembles
        "test_predictions": predictions.tolist(),
        "test_targets": np.where(mask, targets, np.nan).tolist(),
        "val": None if val is None else float(val),
        "epochs": cli.trainer.current_epoch,
        "max_epochs": trainer["max_epochs"],
        "precision": str(trainer.get("precision", "32-true")),
        "pretrained": config["model"].get("pretrained"),
        "run_dir": cli.trainer.log_dir,
        "config": str(config_path),
    }


def run_peer_cell(
    dataset: str, seed: int, metric: str, args: argparse.Namespace, repeat: int = 0
) -> dict[str, Any]:
    """``chemprop train`` with its defaults on split entry ``seed`` (``--pytorch-seed``
    ``seed + REPEAT_SEED_STEP * repeat``), its test predictions scored like molml's."""
    card = get_card(dataset)
    entry = json.loads((args.splits_dir / f"{dataset}.splits.json").read_text())[seed]
    name = f"{dataset}_chemprop_seed{seed}" + (f"_repeat{repeat}" if repeat else "")
    work = args.out / "runs" / name
    shutil.rmtree(work, ignore_errors=True)  # what a failed earlier attempt left
    work.mkdir(parents=True)
    split = work / "split.json"  # one entry: chemprop trains one model per entry
    split.write_text(json.dumps([entry]))
    data = dataset_path(dataset)
    command = [
        str(args.chemprop.parent / "chemprop"), "train",
        "--data-path", str(data),
        "--task-type", card.task_type,
        "--splits-file", str(split),
        "--output-dir", str(work / "chemprop"),
        "--accelerator", "cpu", "--devices", "1",
        "--pytorch-seed", str(seed + REPEAT_SEED_STEP * repeat),
    ]  # fmt: skip
    if args.max_epochs is not None:
        command += ["--epochs", str(args.max_epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with open(work / "chemprop.log", "w", encoding="utf-8") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"chemprop train failed ({done.returncode}); see {work / 'chemprop.log'}"
        )
    table = pd.read_csv(data)
    truth = table.iloc[entry["test"]]
    predicted = pd.read_csv(next((work / "chemprop").rglob("test_predictions.csv")))
    if predicted.iloc[:, 0].tolist() != truth.iloc[:, 0].tolist():
        raise RuntimeError("chemprop's test predictions are not in the split's test order")
    tasks = list(table.columns[1:])
    record = {
        "task_type": card.task_type,
        "tasks": tasks,
        "test_predictions": predicted[tasks].to_numpy(dtype=np.float64).tolist(),
        "test_targets": truth[tasks].to_numpy(dtype=np.float64).tolist(),
        "seed": seed,
    }
    return {**record, "test": ensemble_score([record], metric), "val": None, "run_dir": str(work)}


def run_baseline_cell(
    model: str, dataset: str, seed: int, metric: str, args: argparse.Namespace, fraction: float
) -> dict[str, Any]:
    """Fit a baseline from its template config; its metrics.json holds every split's metrics."""
    if fraction != 1.0:
        raise ValueError("--train-fractions below 1 apply to graph models only")
    threads = str(args.threads)
    split = [f"--data.{k}={v}" for k, v in split_options(dataset, seed, args).items()]
    run_dir = run_baseline(
        [
            "fit",
            "--config",
            str(MODELS[model].template),
            "--data.dataset",
            dataset,
            *split,
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
            *MODELS[model].overrides,
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "test": metrics["test"][metric],
        "val": metrics["val"].get(metric),
        "run_dir": str(run_dir),
        "config": str(run_dir / "config.yaml"),
    }


def run_cell(
    model: str,
    dataset: str,
    seed: int,
    args: argparse.Namespace,
    fraction: float = 1.0,
    repeat: int = 0,
) -> None:
    """Run one cell and save its result JSON (atomically, so a killed run leaves no cell)."""
    metric = get_card(dataset).metric
    start = time.perf_counter()
    if MODELS[model].kind == "graph":
        result = run_graph_cell(model, dataset, seed, metric, args, fraction, repeat)
    elif MODELS[model].kind == "peer":
        result = run_peer_cell(dataset, seed, metric, args, repeat)
    else:
        result = run_baseline_cell(model, dataset, seed, metric, args, fraction)
    record = {
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "repeat": repeat,
        "train_fraction": fraction,
        "split_file": str(args.splits_dir) if args.splits_dir else None,
        "metric": metric,
        **result,
        "wall_s": time.perf_counter() - start,
        "threads": args.threads,
        "molml_version": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = cell_path(args.out, model, dataset, seed, fraction, repeat)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, path)
    which = f"seed {seed}" + (f" repeat {repeat}" if repeat else "")
    print(
        f"[{model_key(model, fraction)} {dataset} {which}] test {metric} "
        f"{record['test']:.4f}, "
        f"{record['wall_s']:.0f} s",
        flush=True,
    )


def columns(args: argparse.Namespace) -> list[tuple[str, float]]:
    """(model, train fraction) of every column: baselines on the whole training part only."""
    return [
        (model, fraction)
        for fraction in sorted(set(args.train_fractions), reverse=True)
        for model in args.models
        if fraction == 1.0 or MODELS[model].kind == "graph"
    ]


def column_title(model: str, fraction: float, repeats: int = 1) -> str:
    if model == CHOSEN:
        return "picked on validation, per split entry"
    if model.endswith(ENSEMBLE):
        return f"{MODELS[model.removesuffix(ENSEMBLE)].title}, ensemble of {repeats}"
    title = MODELS[model].title
    return title if fraction == 1.0 else f"{title} ({fraction:.0%} of train)"


CHOSEN = "chosen_on_validation"
ENSEMBLE = "#ensemble"  # suffix of a model's ensemble column key


def summarize(
    out: Path, keys: list[str], datasets: list[str], choose: Sequence[str] = ()
) -> dict[str, Any]:
    """Mean, sample standard deviation, values and wall time per dataset and column; with
    ``choose``, also the column ``CHOSEN``: per split entry, the test score of the model among
    ``choose`` whose validation score is best (entries where one of them is missing are left
    out), and which model that was."""
    summary: dict[str, Any] = {}
    for dataset in datasets:
        card = get_card(dataset)
        row: dict[str, Any] = {}
        for model in [*keys, *(m for m in choose if m not in keys)]:
            if model == CHOSEN:
                continue
            folder = out / "results" / dataset / model.removesuffix(ENSEMBLE)
            records = [json.loads(p.read_text()) for p in sorted(folder.glob("seed_*.json"))]
            if not records:
                continue
            ensemble = model.endswith(ENSEMBLE)
            column = _ensemble_column(records, card.metric) if ensemble else _column(records)
            if column:
                row[model] = column
        if choose and all(m in row for m in choose):
            row[CHOSEN] = _chosen(row, choose, HIGHER_IS_BETTER[card.metric])
        row = {k: v for k, v in row.items() if k in keys or (k == CHOSEN and v)}
        summary[dataset] = {"metric": card.metric, "n_molecules": card.n_molecules, "models": row}
    return summary


def _column(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per split entry the mean over its repeats (test and validation), then over entries."""
    by_entry: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        by_entry.setdefault(record["seed"], []).append(record)
    seeds = sorted(by_entry)
    values = [statistics.fmean(r["test"] for r in by_entry[s]) for s in seeds]
    vals = [[r["val"] for r in by_entry[s] if r.get("val") is not None] for s in seeds]
    return {
        "values": values,
        "val": [statistics.fmean(v) if v else None for v in vals],
        "seeds": seeds,
        "repeats": min(len(by_entry[s]) for s in seeds),
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "wall_s": statistics.fmean(r["wall_s"] for r in records),
    }


def _ensemble_column(records: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """Per split entry with at least two repeats that kept their test predictions, the metric
    of the repeats' mean prediction; None if no entry has such repeats."""
    by_entry: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        if "test_predictions" in record:
            by_entry.setdefault(record["seed"], []).append(record)
    seeds = sorted(s for s, members in by_entry.items() if len(members) > 1)
    values = [ensemble_score(by_entry[s], metric) for s in seeds]
    if not values:
        return None
    return {
        "values": values,
        "seeds": seeds,
        "members": min(len(by_entry[s]) for s in seeds),
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "wall_s": statistics.fmean(sum(r["wall_s"] for r in by_entry[s]) for s in seeds),
    }


def ensemble_score(members: list[dict[str, Any]], metric: str) -> float:
    """``metric`` of the members' mean test prediction (the members of one split entry)."""
    targets = np.asarray(members[0]["test_targets"], dtype=np.float64)
    for member in members[1:]:
        if not np.array_equal(np.asarray(member["test_targets"]), targets, equal_nan=True):
            raise ValueError(
                f"the repeats of split entry {members[0]['seed']} were tested on different "
                "molecules or in a different order; they cannot be ensembled"
            )
    mean = np.mean([np.asarray(m["test_predictions"]) for m in members], axis=0)
    return score_predictions(members[0]["task_type"], members[0]["tasks"], mean, targets)[metric]


def _chosen(row: dict[str, Any], choose: Sequence[str], higher: bool) -> dict[str, Any] | None:
    seeds = sorted(set.intersection(*(set(row[m]["seeds"]) for m in choose)))
    values, picked = [], []
    for seed in seeds:
        scored = []
        for model in choose:
            i = row[model]["seeds"].index(seed)
            val = row[model]["val"][i]
            if val is not None:
                scored.append((val if higher else -val, model, i))
        if not scored:
            continue
        _, model, i = max(scored)
        values.append(row[model]["values"][i])
        picked.append(model)
    if not values:
        return None
    return {
        "values": values,
        "seeds": seeds,
        "chosen": picked,
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "wall_s": sum(row[m]["wall_s"] for m in choose),
    }


def markdown_table(
    summary: dict[str, Any],
    models: list[str],
    titles: list[str],
    reference: dict[str, str] | None = None,
) -> str:
    """Datasets as rows, columns ``models`` (keys) headed ``titles``; the best mean of each row
    in bold; ``reference`` scores (published with the split files) as a last column."""
    reference = reference or {}
    extra = " | chemprop 2.3.1 (published with the splits)" if reference else ""
    lines = [
        "| dataset | test metric | " + " | ".join(titles) + extra + " |",
        "| --- | --- | "
        + " | ".join("---:" for _ in titles)
        + (" | ---:" if reference else "")
        + " |",
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
            if value.get("repeats", 1) > 1:
                text += f" ({value['repeats']} seeds per entry)"
            cells.append(f"**{text}**" if model == best else text)
        if reference:
            cells.append(reference.get(dataset, "–"))
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


def picked_note(summary: dict[str, Any], choose: Sequence[str]) -> str:
    """Which model the validation score picked, per dataset and split entry."""
    chosen = {d: e["models"][CHOSEN] for d, e in summary.items() if e["models"].get(CHOSEN)}
    entries = sorted({s for column in chosen.values() for s in column["seeds"]})
    lines = [
        "Picked on validation among: " + "; ".join(MODELS[m].title for m in choose) + ".",
        "Wall time of that column: all candidates' cells.",
        "",
        "| dataset | " + " | ".join(f"entry {s}" for s in entries) + " |",
        "| --- |" + " --- |" * len(entries),
    ]
    for dataset, column in chosen.items():
        picked = dict(zip(column["seeds"], column["chosen"], strict=True))
        cells = [MODELS[picked[s]].title if s in picked else "–" for s in entries]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_table(summary: dict[str, Any], models: list[str], fractions: list[float]) -> str:
    """Datasets x training fractions as rows, graph models as columns (mean ± sd, n); datasets
    without any cell on part of the training data are left out."""
    lines = [
        "| dataset | training data | " + " | ".join(MODELS[m].title for m in models) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in models) + " |",
    ]
    for dataset, entry in summary.items():
        partial = [model_key(m, f) for m in models for f in fractions if f < 1]
        if not any(entry["models"].get(key) for key in partial):
            continue
        for fraction in fractions:
            cells = []
            for model in models:
                value = entry["models"].get(model_key(model, fraction))
                if value is None:
                    cells.append("–")
                    continue
                sd = f" ± {value['sd']:.3f}" if value["sd"] is not None else ""
                cells.append(f"{value['mean']:.3f}{sd} (n={len(value['values'])})")
            name = f"{dataset} ({entry['metric']})"
            lines.append(f"| {name} | {fraction:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(args: argparse.Namespace) -> None:
    """``results.md`` / ``results.json`` on the whole training parts, and with several
    ``--train-fractions`` also ``curve.md``: the graph models at every fraction."""
    keys = [model_key(m, f) for m, f in columns(args)]
    whole = [(m, f) for m, f in columns(args) if f == 1.0]
    if args.ensemble:
        graph = [(m, f) for m, f in whole if MODELS[m].kind in TRAINED_PER_REPEAT]
        keys += [m + ENSEMBLE for m, _ in graph]
        whole += [(m + ENSEMBLE, f) for m, f in graph]
    if args.choose_on_validation:
        keys.append(CHOSEN)
        whole.append((CHOSEN, 1.0))
    summary = summarize(args.out, keys, args.datasets, args.choose_on_validation)
    table = markdown_table(
        summary,
        [model_key(m, f) for m, f in whole],
        [column_title(m, f, args.repeats) for m, f in whole],
        published_scores(args.splits_dir),
    )
    if args.choose_on_validation:
        table += "\n\n" + picked_note(summary, args.choose_on_validation)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    print(table)
    written = [args.out / "results.md", args.out / "results.json"]
    fractions = sorted(set(args.train_fractions), reverse=True)
    if len(fractions) > 1:
        graph = [m for m in args.models if MODELS[m].kind == "graph"]
        curve = curve_table(summary, graph, fractions)
        (args.out / "curve.md").write_text(curve + "\n")
        print("\n" + curve)
        written.append(args.out / "curve.md")
    print(f"\nwritten: {', '.join(map(str, written))}")


def run_grid(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Run every unfinished cell, seed by seed; returns the cells that failed."""
    torch.set_num_threads(args.threads)
    grid = [
        (model, dataset, seed, fraction, repeat)
        for seed in range(args.seeds)
        for dataset in args.datasets
        for model, fraction in columns(args)
        for repeat in range(args.repeats if MODELS[model].kind in TRAINED_PER_REPEAT else 1)
    ]
    todo = [cell for cell in grid if not cell_path(args.out, *cell).is_file()]
    print(f"{len(grid)} cells, {len(grid) - len(todo)} already done, {len(todo)} to run")
    failed = []
    for model, dataset, seed, fraction, repeat in todo:
        try:
            run_cell(model, dataset, seed, args, fraction, repeat)
        except Exception:  # one failed cell must not stop a long grid; a rerun retries it
            traceback.print_exc()
            failed.append((model_key(model, fraction), dataset, seed))
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
