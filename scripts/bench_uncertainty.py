"""Uncertainty benchmark: how well each molml method's uncertainty holds on scaffold splits.

For every dataset and split entry, ``--members`` D-MPNNs are trained (seeds 0..M-1, the
dataset's template config with dropout 0.1; regression models with a mean-variance head) and
their best checkpoints scored on the test part:

- regression (esol, lipo): methods ``mve`` (one mean-variance model), ``mc_dropout`` (the same
  model, ``--passes`` dropout passes), ``ensemble`` (the members' spread of means only),
  ``ensemble+mve`` (spread of means plus the members' own variances). Each is calibrated on
  the validation part with a normalized split-conformal 90% interval (``mu +- q * sigma``) and
  compared with the constant-width conformal interval around the same means. Reported: test
  RMSE, coverage and mean width of both intervals, the raw Gaussian 90% interval's coverage,
  Spearman(|error|, sigma), Gaussian NLL and miscalibration area, and the cost (seconds of
  training and of predicting the test part).
- classification (bbbp): ``single`` (one model) and ``ensemble`` (mean probability), raw and
  calibrated on the validation part (Platt, isotonic): ROC-AUC, Brier, ECE (10 bins).
- ``--imbalance hiv``: one D-MPNN on HIV's scaffold split without imbalance handling, with
  ``model.pos_weight: auto`` and with ``data.balanced_sampler: true``: ROC-AUC and PR-AUC.

With ``--chemprop /path/to/venv/bin/python`` (a venv with ``chemprop==2.3.1``), chemprop's own
mean-variance model (``chemprop train --task-type regression-mve``, its defaults, on the same
split files) is run in the same benchmark and scored by the same code: row ``chemprop mve``
(chemprop reports the variance; its square root is the sigma).

Every trained model and scored cell is kept under ``--out``, so a rerun resumes.
Usage:
  python scripts/bench_uncertainty.py --splits-dir ../shared/splits [--datasets esol lipo bbbp]
      [--members 5] [--passes 20] [--max-epochs 50] [--imbalance hiv] [--out runs/bench_unc]
      [--chemprop /work/chemprop-venv/bin/python]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from molml.predict import EnsemblePredictor, load_model
from molml.report.heldout import split_molecules
from molml.training import make_cli
from molml.uncertainty import (
    ConformalInterval,
    ProbabilityCalibration,
    expected_calibration_error,
    gaussian_interval,
    interval_coverage,
    regression_uncertainty_scores,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = {"esol": "esol_dmpnn.yaml", "lipo": "lipo_dmpnn.yaml", "bbbp": "bbbp_dmpnn.yaml"}
LEVEL = 0.9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits-dir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=["esol", "lipo", "bbbp"])
    parser.add_argument("--entries", type=int, default=3, help="split entries per dataset")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--passes", type=int, default=20, help="MC dropout passes")
    parser.add_argument("--max-epochs", type=int, default=50)
    parser.add_argument("--imbalance", default=None, help="dataset for the imbalance comparison")
    parser.add_argument("--imbalance-epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_uncertainty"))
    parser.add_argument("--chemprop", type=Path, default=None, help="peer interpreter")
    parser.add_argument("--report-only", action="store_true")
    return parser.parse_args(argv)


def train(
    name: str, dataset: str, data: dict[str, Any], model: dict[str, Any], seed: int, args: Any
) -> tuple[Path, float]:
    """Fit one D-MPNN from the dataset's template; returns its best checkpoint and the
    seconds it took (cached: a checkpoint already there is reused)."""
    run_dir = args.out / "runs" / name
    record = run_dir / "trained.json"
    if record.is_file():
        done = json.loads(record.read_text())
        return Path(done["checkpoint"]), done["seconds"]
    config = yaml.safe_load(
        (REPO / "configs" / TEMPLATES.get(dataset, "bbbp_dmpnn.yaml")).read_text()
    )
    config["seed_everything"] = seed
    config["data"].update(data, cache_dir=str(args.out / "cache"))
    config["model"].update(model)
    if "dropout" in model:  # MC dropout samples the encoder too
        config["model"]["encoder"]["init_args"]["dropout"] = model["dropout"]
    trainer = config["trainer"]
    trainer["max_epochs"] = args.max_epochs
    trainer["logger"] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(run_dir), "name": "log"},
        }
    ]
    keep = ("ModelCheckpoint", "EarlyStopping")
    trainer["callbacks"] = [c for c in trainer["callbacks"] if c["class_path"].endswith(keep)]
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"].update(dirpath=str(run_dir / "checkpoints"), save_last=False)
    trainer.update(enable_progress_bar=False, enable_model_summary=False)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # of a run killed before its record
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    cli = make_cli(["fit", "--config", str(run_dir / "config.yaml")])
    seconds = time.perf_counter() - started
    checkpoint = Path(cli.trainer.checkpoint_callback.best_model_path)
    record.write_text(json.dumps({"checkpoint": str(checkpoint), "seconds": seconds}))
    return checkpoint, seconds


def predict(predictor: Any, smiles: np.ndarray, task: str) -> tuple[np.ndarray, ...]:
    """Mean, standard deviation (or None) and the seconds it took."""
    started = time.perf_counter()
    frame = predictor.predict(list(smiles))
    seconds = time.perf_counter() - started
    std = frame[f"{task}_std"].to_numpy(dtype=float) if f"{task}_std" in frame else None
    return frame[task].to_numpy(dtype=float), std, seconds


def score_regression(
    y_val: np.ndarray, val: tuple, y_test: np.ndarray, test: tuple
) -> dict[str, float]:
    """One method's numbers from its (mean, std) on the validation and test parts."""
    mu_val, sd_val = val[:2]
    mu, sd = test[:2]
    adaptive = ConformalInterval.fit(y_val, mu_val, sd_val, LEVEL)
    constant = ConformalInterval.fit(y_val, mu_val, None, LEVEL)
    lower, upper = adaptive.bounds(mu, sd)
    c_lower, c_upper = constant.bounds(mu, None)
    scores = regression_uncertainty_scores(y_test, mu, sd, lower, upper)
    return {
        "rmse": float(np.sqrt(np.mean((mu - y_test) ** 2))),
        "coverage": scores["coverage"],
        "mean_width": scores["mean_width"],
        "constant_coverage": interval_coverage(y_test, c_lower, c_upper),
        "constant_width": float(np.mean(c_upper - c_lower)),
        "gaussian_coverage": interval_coverage(y_test, *gaussian_interval(mu, sd, LEVEL)),
        # the widths that cover exactly 90% of the test targets: how much narrower intervals
        # that follow sigma are than one width for all, at the same coverage
        "oracle_width": float(2 * np.quantile(np.abs(y_test - mu) / sd, LEVEL) * np.mean(sd)),
        "oracle_constant_width": float(2 * np.quantile(np.abs(y_test - mu), LEVEL)),
        "spearman": scores["spearman_abs_error"],
        "nll": scores["nll"],
        "miscalibration_area": scores["miscalibration_area"],
        "predict_seconds": test[2],
    }


def regression_cell(dataset: str, entry: int, args: Any) -> dict[str, Any]:
    data = split_data(dataset, entry, args)
    held = split_molecules(data)
    task = held.table.tasks[0]
    val, test = held.split.val, held.split.test
    y_val, y_test = held.targets[val, 0], held.targets[test, 0]
    model = {"mean_variance": True, "dropout": 0.1}
    trained = [
        train(f"{dataset}_{entry}_mve_{seed}", dataset, data, model, seed, args)
        for seed in range(args.members)
    ]
    paths = [p for p, _ in trained]
    seconds = [s for _, s in trained]
    mc = load_model(paths[0], mc_dropout=args.passes)
    members = [load_model(p) for p in paths]
    member_val = [predict(m, held.smiles[val], task) for m in members]
    member_test = [predict(m, held.smiles[test], task) for m in members]

    def spread_only(parts: list[tuple]) -> tuple:
        means = np.stack([p[0] for p in parts])
        return means.mean(0), means.std(0), sum(p[2] for p in parts)

    methods = {
        "mve": (member_val[0], member_test[0], seconds[0]),
        "mc_dropout": (
            predict(mc, held.smiles[val], task),
            predict(mc, held.smiles[test], task),
            seconds[0],
        ),
        "ensemble": (spread_only(member_val), spread_only(member_test), sum(seconds)),
        "ensemble+mve": (
            predict(EnsemblePredictor(members), held.smiles[val], task),
            predict(EnsemblePredictor(members), held.smiles[test], task),
            sum(seconds),
        ),
    }
    return {
        name: {**score_regression(y_val, v, y_test, t), "train_seconds": s}
        for name, (v, t, s) in methods.items()
    }


def chemprop_cell(dataset: str, entry: int, args: Any) -> dict[str, Any]:
    """chemprop's mean-variance D-MPNN on the same split entry, scored like molml's."""
    data = split_data(dataset, entry, args)
    held = split_molecules(data)
    task = held.table.tasks[0]
    root = args.out / "chemprop" / dataset
    chemprop = args.chemprop.parent / "chemprop"
    trained = root / "trained.json"
    if not trained.is_file():  # one run trains a model on every split entry of the file
        started = time.perf_counter()
        subprocess.run(
            [str(chemprop), "train", "--data-path", str(held.table.source), "--splits-file",
             data["split_file"], "--task-type", "regression-mve", "--num-workers", "0",
             "-o", str(root / "train")],
            check=True, capture_output=True,
        )  # fmt: skip
        seconds = (time.perf_counter() - started) / args.entries
        trained.write_text(json.dumps({"seconds_per_model": seconds}))
    seconds = json.loads(trained.read_text())["seconds_per_model"]
    model = root / "train" / f"replicate_{entry}" / "model_0" / "best.pt"

    def peer_predict(rows: np.ndarray, part: str) -> tuple:
        inputs = root / f"{entry}_{part}.csv"
        inputs.write_text("smiles\n" + "\n".join(held.smiles[rows]) + "\n")
        output = root / f"{entry}_{part}_predictions.csv"
        started = time.perf_counter()
        subprocess.run(
            [str(chemprop), "predict", "-i", str(inputs), "--model-paths", str(model),
             "--uncertainty-method", "mve", "-o", str(output), "--num-workers", "0"],
            check=True, capture_output=True,
        )  # fmt: skip
        frame = pd.read_csv(output)
        variance = frame[f"{task}_unc"].to_numpy(dtype=float)
        return frame[task].to_numpy(dtype=float), np.sqrt(variance), time.perf_counter() - started

    val, test = held.split.val, held.split.test
    scores = score_regression(
        held.targets[val, 0],
        peer_predict(val, "val"),
        held.targets[test, 0],
        peer_predict(test, "test"),
    )
    return {"chemprop mve": {**scores, "train_seconds": seconds}}


def classification_cell(dataset: str, entry: int, args: Any) -> dict[str, Any]:
    data = split_data(dataset, entry, args)
    held = split_molecules(data)
    task = held.table.tasks[0]
    val, test = held.split.val, held.split.test
    y_val, y_test = held.targets[val, 0], held.targets[test, 0]
    trained = [
        train(f"{dataset}_{entry}_cls_{seed}", dataset, data, {"dropout": 0.1}, seed, args)
        for seed in range(args.members)
    ]
    members = [load_model(p) for p, _ in trained]
    seconds = [s for _, s in trained]
    candidates = {"single": (members[0], seconds[0])}
    candidates["ensemble"] = (EnsemblePredictor(members), sum(seconds))
    out = {}
    for name, (predictor, train_seconds) in candidates.items():
        p_val, _, _ = predict(predictor, held.smiles[val], task)
        p_test, _, predict_seconds = predict(predictor, held.smiles[test], task)
        for method in ("raw", "platt", "isotonic"):
            p = p_test
            if method != "raw":
                p = ProbabilityCalibration.fit(y_val, p_val, method).transform(p_test)
            out[f"{name}/{method}"] = {
                "roc_auc": float(roc_auc_score(y_test, p)),
                "brier": float(brier_score_loss(y_test, p)),
                "ece": expected_calibration_error(y_test, p),
                "train_seconds": train_seconds,
                "predict_seconds": predict_seconds,
            }
    return out


def imbalance_cell(dataset: str, args: Any) -> dict[str, Any]:
    data = {"dataset": dataset, "split": "scaffold", "split_seed": 0}
    held = split_molecules(data)
    task = held.table.tasks[0]
    test = held.split.test
    y_test = held.targets[test, 0]
    labelled = ~np.isnan(y_test)
    variants = {
        "none": ({}, {}),
        "pos_weight": ({}, {"pos_weight": "auto"}),
        "balanced_sampler": ({"balanced_sampler": True}, {}),
    }
    local = copy.copy(args)
    local.max_epochs = args.imbalance_epochs
    out = {"positives_in_train": float(np.nanmean(held.targets[held.split.train, 0]))}
    for name, (data_extra, model_extra) in variants.items():
        path, seconds = train(
            f"{dataset}_imbalance_{name}", dataset, {**data, **data_extra}, model_extra, 0, local
        )
        p, _, _ = predict(load_model(path), held.smiles[test], task)
        out[name] = {
            "roc_auc": float(roc_auc_score(y_test[labelled], p[labelled])),
            "pr_auc": float(average_precision_score(y_test[labelled], p[labelled])),
            "train_seconds": seconds,
        }
    return out


def split_data(dataset: str, entry: int, args: Any) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "split": "predefined",
        "split_file": str((args.splits_dir / f"{dataset}.splits.json").resolve()),
        "split_index": entry,
    }


def cell(path: Path, compute: Any) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def mean_sd(values: list[float]) -> str:
    """Seconds: one value, or mean ± sd over the split entries."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def per_entry(values: list[float], digits: int = 2) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def report(results: dict[str, Any], args: Any) -> str:
    lines = []
    for dataset, entries in results.get("regression", {}).items():
        lines += [
            f"### {dataset}: 90% intervals, {len(entries)} split entries (values per entry)",
            "",
            "| method | test RMSE | conformal coverage | mean width | constant-width coverage "
            "| constant width | width at 90% test coverage (σ-scaled vs constant) "
            "| raw Gaussian coverage | Spearman(abs err, σ) | NLL | miscal. area | train s "
            "| predict s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        methods = list(dict.fromkeys(m for e in entries for m in e))
        for method in methods:  # a method missing on an entry (a peer not run) shows "–"
            rows = [e.get(method) for e in entries]

            def col(key: str, rows: list[dict | None] = rows) -> str:
                return " / ".join("–" if r is None else f"{r[key]:.2f}" for r in rows)

            lines.append(
                f"| {method} | {col('rmse')} | {col('coverage')} | {col('mean_width')} "
                f"| {col('constant_coverage')} | {col('constant_width')} "
                f"| {col('oracle_width')} vs {col('oracle_constant_width')} "
                f"| {col('gaussian_coverage')} | {col('spearman')} | {col('nll')} "
                f"| {col('miscalibration_area')} "
                f"| {mean_sd([r['train_seconds'] for r in rows if r is not None])} "
                f"| {mean_sd([r['predict_seconds'] for r in rows if r is not None])} |"
            )
        lines.append("")
    for dataset, entries in results.get("classification", {}).items():
        lines += [
            f"### {dataset}: calibration, {len(entries)} split entries (values per entry)",
            "",
            "| model / calibration | ROC-AUC | Brier | ECE (10 bins) |",
            "|---|---|---|---|",
        ]
        for method in entries[0]:
            rows = [e[method] for e in entries]
            lines.append(
                f"| {method} | {per_entry([r['roc_auc'] for r in rows], 3)} "
                f"| {per_entry([r['brier'] for r in rows], 3)} "
                f"| {per_entry([r['ece'] for r in rows], 3)} |"
            )
        lines.append("")
    for dataset, result in results.get("imbalance", {}).items():
        lines += [
            f"### {dataset}: class imbalance ({result['positives_in_train']:.1%} positives in "
            f"training), {args.imbalance_epochs} epochs, scaffold split seed 0",
            "",
            "| handling | ROC-AUC | PR-AUC | train s |",
            "|---|---|---|---|",
        ]
        for name, row in result.items():
            if isinstance(row, dict):
                lines.append(
                    f"| {name} | {row['roc_auc']:.3f} | {row['pr_auc']:.3f} "
                    f"| {row['train_seconds']:.0f} |"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.argv = sys.argv[:1]  # make_cli reads its own arguments
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"regression": {}, "classification": {}, "imbalance": {}}
    for dataset in args.datasets:
        kind = "classification" if dataset == "bbbp" else "regression"
        compute = classification_cell if kind == "classification" else regression_cell
        entries = []
        for entry in range(args.entries):
            path = args.out / "cells" / f"{dataset}_{entry}.json"
            if args.report_only and not path.is_file():
                continue
            result = cell(path, lambda c=compute, d=dataset, e=entry: c(d, e, args))
            peer = args.out / "cells" / f"{dataset}_{entry}_chemprop.json"
            if kind == "regression" and (peer.is_file() or args.chemprop and not args.report_only):
                result = {
                    **result,
                    **cell(peer, lambda d=dataset, e=entry: chemprop_cell(d, e, args)),
                }
            entries.append(result)
        if entries:
            results[kind][dataset] = entries
    if args.imbalance:
        path = args.out / "cells" / f"{args.imbalance}_imbalance.json"
        if path.is_file() or not args.report_only:
            results["imbalance"][args.imbalance] = cell(
                path, lambda: imbalance_cell(args.imbalance, args)
            )
    table = report(results, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table)
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
