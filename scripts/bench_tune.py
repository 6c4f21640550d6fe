"""Default config vs tuned config, on the held-out test split of the shared split files.

For each dataset, split entry and model (D-MPNN from ``configs/esol_dmpnn.yaml``; the D-MPNN
fine-tuned from the shipped ``zinc-dmpnn`` encoder with a sum readout, ``dmpnn_pretrained``,
searched over its fine-tuning recipe and head in ``configs/search/dmpnn_finetune.yaml``;
the same with RDKit 2D descriptors always given to the head, ``dmpnn_pretrained_rdkit2d``;
chemprop 2's recipe (its features, norm readout, one hidden FFN layer) fine-tuned from the
shipped ``zinc-dmpnn-chemprop`` encoder, ``dmpnn_chemprop_pretrained``, searched in
``configs/search/dmpnn_chemprop_finetune.yaml``;
XGBoost on ECFP4 from ``configs/esol_xgb.yaml``; ``bbbp_*.yaml`` for a classification data set;
the dataset swapped in), the default config is trained
once and a ``molml tune`` study of ``--trials`` trials (seeded TPE, median pruning for the
D-MPNN, search spaces from ``configs/search/``) picks a config on the validation split; both
are then scored once on the test split of ``/work/shared/splits/<dataset>.splits.json`` entry
``i`` (``data.split: predefined``, ``data.split_index: i``). Reported per row: the test metric
of both, the gain, trials complete / pruned, the study's wall time and the epochs pruning
skipped (max_epochs minus the epochs a pruned trial ran, summed; with ``--cv``, the folds it
skipped), with the seconds that saved at the study's mean seconds per epoch (per fold).

    python scripts/bench_tune.py                                        # esol, split 0
    python scripts/bench_tune.py --datasets esol freesolv bace --splits 0 1 2 --trials 30 \
        --epochs 50 --threads 1                                         # the full comparison

``--space FILE`` searches another space than the model's own (``--models dmpnn --space
configs/search/dmpnn_descriptors.yaml`` lets the study also choose whether the D-MPNN's head
gets RDKit 2D descriptors, ``data.molecule_features``; give it its own ``--output``);
``--sampler grid`` tries every point of an all-categorical space once, unpruned (``--models
dmpnn_chemprop_pretrained --space configs/search/pretrained_l2.yaml --sampler grid --cv 5``
picks the pull towards the pretrained weights by cross-validation); ``--precision
bf16-mixed`` trains the default and every trial in bf16. ``--cv K`` scores each trial by K-fold
cross-validation of train+val instead of the one validation split (``molml tune --cv``; give it
its own ``--output``). Rows are written to ``--output`` as each finishes; rerunning the same
command skips the rows already there, so an interrupted comparison resumes. ``--refits K``
trains the default and the tuned config of every D-MPNN row with seeds 0..K-1 as ``molml cv
--split seeds`` does (seed 0 repeats the row's own run) and reports the mean test score over the
K seeds beside the single run (on small test sets one seed's score moves as much as tuning
does), and the test score of their ensemble (the mean prediction of the K models).

No peer figure is built in: ``scripts/bench_fit.py --chemprop PYTHON`` trains chemprop 2.3.1
on the same split entry in the same run and reports both test metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from benchmark import published_scores

from molml.tune import TuneOptions, make_job, read_space, run_cv, run_tune
from molml.tune.jobs import Job
from molml.tune.options import SAMPLERS, SEED_ENSEMBLE
from molml.tune.space import with_values

ROOT = Path(__file__).resolve().parents[1]
# model -> (base config of a regression dataset, of a classification dataset, search space)
MODELS = {
    "dmpnn": ("esol_dmpnn.yaml", "bbbp_dmpnn.yaml", "dmpnn.yaml"),
    "dmpnn_pretrained": ("esol_dmpnn.yaml", "bbbp_dmpnn.yaml", "dmpnn_finetune.yaml"),
    "dmpnn_pretrained_rdkit2d": ("esol_dmpnn.yaml", "bbbp_dmpnn.yaml", "dmpnn_finetune.yaml"),
    "dmpnn_chemprop_pretrained": (
        "esol_dmpnn.yaml",
        "bbbp_dmpnn.yaml",
        "dmpnn_chemprop_finetune.yaml",
    ),
    "xgb": ("esol_xgb.yaml", "bbbp_xgb.yaml", "xgb.yaml"),
}
GRAPH_MODELS = {
    "dmpnn",
    "dmpnn_pretrained",
    "dmpnn_pretrained_rdkit2d",
    "dmpnn_chemprop_pretrained",
}
# how each fine-tuned D-MPNN starts: the shipped ZINC encoder read out with the sum it was
# pretrained with; chemprop's recipe as configs/lipo_dmpnn_chemprop_pretrained.yaml sets it
FINE_TUNING = {
    "dmpnn_pretrained": ["--model.pretrained", "zinc-dmpnn", "--model.readout", "sum"],
    "dmpnn_pretrained_rdkit2d": ["--model.pretrained", "zinc-dmpnn", "--model.readout", "sum"],
    "dmpnn_chemprop_pretrained": [
        "--data.featurizer.init_args.preset", "chemprop",
        "--model.pretrained", "zinc-dmpnn-chemprop",
        "--model.readout", "norm",
        "--model.ffn_hidden_dim", "300",
        "--model.ffn_num_layers", "2",
    ],
}  # fmt: skip
# options a model fixes for its default and every trial (taken out of its search space)
FIXED = {"dmpnn_pretrained_rdkit2d": {"data.molecule_features": "rdkit2d"}}
CLASSIFICATION = {"bace", "bbbp", "hiv", "clintox", "sider", "tox21"}


def job_for(
    model: str, dataset: str, split_file: Path, index: int, epochs: int, precision: str | None
) -> Job:
    regression_config, classification_config, _ = MODELS[model]
    config = classification_config if dataset in CLASSIFICATION else regression_config
    overrides = [
        "--data.dataset", dataset,
        "--data.split", "predefined",
        "--data.split_file", str(split_file),
        "--data.split_index", str(index),
    ]  # fmt: skip
    overrides += FINE_TUNING.get(model, [])
    for name, value in FIXED.get(model, {}).items():
        overrides += [f"--{name}", value]
    if model in GRAPH_MODELS:
        overrides += ["--trainer.max_epochs", str(epochs), "--trainer.accelerator", "cpu"]
        if precision:
            overrides += ["--trainer.precision", precision]
    return make_job([str(ROOT / "configs" / config)], overrides)


def run_one(
    model: str, dataset: str, split_file: Path, index: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    job = job_for(model, dataset, split_file, index, args.epochs, args.precision)
    metric = job.default_metric()
    test_key = "test/" + metric.removeprefix("val/")
    start = time.perf_counter()
    default = job.fit(job.config, work / f"{model}_{dataset}_{index}_default", metric)
    default_test = job.test(job.config, default.model_path)[test_key]
    default_seconds = time.perf_counter() - start

    options = TuneOptions(
        study_name=f"{model}_{dataset}_{index}",
        storage=f"sqlite:///{work / 'optuna.db'}",
        metric=metric,
        n_trials=args.trials,
        # a grid is run to compare every point in full
        pruner="median" if model in GRAPH_MODELS and args.sampler == "tpe" else "none",
        sampler=args.sampler,
        seed=args.seed,
        cv=args.cv,
        output_dir=work / "tune",
        tracking_uri=None,
    )
    start = time.perf_counter()
    space = args.space or ROOT / "configs" / "search" / MODELS[model][2]
    params = [p for p in read_space(space) if p.name not in FIXED.get(model, {})]
    out = run_tune(job, params, options)
    tune_seconds = time.perf_counter() - start
    best = json.loads((out / "best.json").read_text())
    study = optuna.load_study(study_name=options.study_name, storage=options.storage)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    # a trial reports once per epoch, or once per fold with --cv
    steps_per_trial, unit = (args.cv, "folds") if args.cv else (args.epochs, "epochs")
    steps_run = sum(len(t.intermediate_values) for t in study.trials)
    skipped = sum(steps_per_trial - len(t.intermediate_values) for t in pruned)
    seconds_per_step = tune_seconds / max(steps_run, 1)
    higher = metric.endswith("roc_auc")
    gain = best["test"][test_key] - default_test
    return {
        "dataset": dataset,
        "split": index,
        "model": model if not args.cv else f"{model}, cv{args.cv}",
        "metric": test_key,
        "default_val": default.value,
        "default_test": default_test,
        "tuned_val": best["best_value"],
        "tuned_test": best["test"][test_key],
        "gain": gain if higher else -gain,
        "trials": len(study.trials),
        "pruned": len(pruned),
        "failed": best["trials"]["FAIL"],
        "default_seconds": round(default_seconds, 1),
        "tune_seconds": round(tune_seconds, 1),
        f"{unit}_skipped_by_pruning": skipped if model in GRAPH_MODELS else None,
        "seconds_saved_by_pruning": round(skipped * seconds_per_step, 1)
        if model in GRAPH_MODELS
        else None,
        "search_space": space.name,
        "sampler": args.sampler,
        "precision": args.precision if model in GRAPH_MODELS else None,
        "best_params": best["best_params"],
        "trial_values": [
            {"params": t.params, "value": t.value, "state": t.state.name} for t in study.trials
        ],
    }


def add_refits(row: dict[str, Any], args: argparse.Namespace, work: Path) -> None:
    """Seed ensembles of ``--refits`` members of the default and the tuned config (``molml cv
    --split seeds``): ``{default,tuned}_tests`` hold each member's test score and
    ``{default,tuned}_ensemble`` the ensemble's."""
    dataset, index, model = row["dataset"], row["split"], row["model"].split(",")[0]
    split_file = args.splits_dir / f"{dataset}.splits.json"
    job = job_for(model, dataset, split_file, index, args.epochs, row["precision"])
    configs = {"default": job.config, "tuned": with_values(job.config, row["best_params"])}
    for name, config in configs.items():
        if name == "tuned" and config == configs["default"]:  # the study kept the default
            row["tuned_tests"] = row["default_tests"]
            row["tuned_ensemble"] = row["default_ensemble"]
            continue
        directory = work / f"refits_{model}_{dataset}_{index}_{name}"
        result = run_cv(
            type(job)(config), args.refits, SEED_ENSEMBLE, 0, directory, job.default_metric()
        )
        row[f"{name}_tests"] = [member[row["metric"]] for member in result["per_fold"]]
        row[f"{name}_ensemble"] = result["ensemble"][row["metric"]]


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table, floats to 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.values]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def summary(rows: list[dict[str, Any]], splits_dir: Path) -> pd.DataFrame:
    """Per data set and model: test metric of the default and the tuned config, mean ± sd over
    the split entries done, trials pruned, tuning time; chemprop 2.3.1's scores published with
    the split files (``splits_dir/README.md``) beside them."""
    published = published_scores(splits_dir)
    frame = pd.DataFrame(rows)
    out = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=False):

        def spread(values: pd.Series) -> str:
            return (
                f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
                if len(values) > 1
                else (f"{values.iloc[0]:.3f}")
            )

        out.append(
            {
                "dataset": dataset,
                "model": model,
                "metric": group["metric"].iloc[0],
                "splits": len(group),
                "default test": spread(group["default_test"]),
                "tuned test": spread(group["tuned_test"]),
                "gain": f"{group['gain'].mean():+.3f}",
                "pruned / trials": f"{group['pruned'].sum()} / {group['trials'].sum()}",
                "tuning min": f"{group['tune_seconds'].sum() / 60:.0f}",
                "chemprop 2.3.1 (published)": published.get(dataset, ""),
            }
        )
        if "tuned_tests" in group and group["tuned_tests"].notna().all():
            seeds = len(group["tuned_tests"].iloc[0])
            for name in ("default", "tuned"):
                means = group[f"{name}_tests"].map(statistics.fmean)
                out[-1][f"{name} test, {seeds} seeds"] = spread(means)
            if "tuned_ensemble" in group and group["tuned_ensemble"].notna().all():
                for name in ("default", "tuned"):
                    out[-1][f"{name} ensemble of {seeds}"] = spread(group[f"{name}_ensemble"])
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["esol"])
    parser.add_argument("--splits", nargs="+", type=int, default=[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits-dir", type=Path, default=ROOT.parent / "shared" / "splits")
    parser.add_argument("--output", type=Path, default=ROOT / "scripts/results/tune.json")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--cv",
        type=int,
        default=None,
        help="score trials by K-fold CV (tune --cv)",
    )
    parser.add_argument(
        "--refits",
        type=int,
        default=None,
        help="train default and tuned config with K seeds each (0..K-1) and report mean test "
        "scores and the ensemble's; adds them to the rows already in --output",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="D-MPNN trainer precision for default and tuned alike (e.g. bf16-mixed)",
    )
    parser.add_argument(
        "--space",
        type=Path,
        default=None,
        help="search space of every model given (default: each model's own in configs/search; "
        "give it its own --output)",
    )
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="tpe",
        help="tpe, or grid: every point of an all-categorical --space once, unpruned",
    )
    args = parser.parse_args()
    os.environ.setdefault("MOLML_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {k: str(v) for k, v in vars(args).items()}
    rows = json.loads(args.output.read_text())["rows"] if args.output.exists() else []
    done = {(r["dataset"], r["split"], r["model"].split(",")[0]) for r in rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for index in args.splits:  # every data set on one split before the next split
            for dataset in args.datasets:
                split_file = args.splits_dir / f"{dataset}.splits.json"
                for model in args.models:
                    if (dataset, index, model) in done:
                        continue
                    rows.append(run_one(model, dataset, split_file, index, args, Path(tmp)))
                    args.output.write_text(
                        json.dumps({"settings": settings, "rows": rows}, indent=2)
                    )
        for row in rows:
            refits_done = len(row.get("tuned_tests") or [])
            if args.refits and row["model"].startswith("dmpnn") and refits_done < args.refits:
                add_refits(row, args, Path(tmp))
                args.output.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    frame = pd.DataFrame(rows)
    for name in ("default", "tuned"):
        if f"{name}_tests" in frame:
            frame[f"{name} test, seed mean"] = frame[f"{name}_tests"].map(
                lambda v: statistics.fmean(v) if isinstance(v, list) else float("nan")
            )
    lists = ["best_params", "default_tests", "tuned_tests", "trial_values"]
    print(markdown(frame.drop(columns=lists, errors="ignore")))
    print()
    print(markdown(summary(rows, args.splits_dir)))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
