"""``molml report eval``: trained models scored on the test split of their data.

Per task: metrics with bootstrap 95% confidence intervals; ROC and PR curves, calibration and
the confusion matrix at a threshold chosen on the validation split (classification); parity
and residual plots (regression); the error by similarity to the training set (applicability
domain) and per scaffold group. Several models on one split are compared with a paired
bootstrap of each metric's difference.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from molml.errors import DataError
from molml.options import creatable_directory, writable_directory
from molml.predict import Predictor, load_model
from molml.report.heldout import resolve_run, split_molecules, trained_elsewhere
from molml.report.page import Page, panels, write_json
from molml.report.stats import (
    best_youden_j,
    bootstrap_ci,
    metrics_for,
    morgan_fingerprints,
    nearest_similarity,
    paired_bootstrap,
    youden_threshold,
)
from molml.tracking import log_to_recorded_run
from molml.uncertainty import expected_calibration_error, regression_uncertainty_scores

log = logging.getLogger("molml")

SIMILARITY_BINS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
THRESHOLD_RULE = "maximum Youden J (TPR - FPR) on the validation split"
TOP_GROUPS = 15


def eval_report(
    *,
    run: str | Path | None,
    models: list[str],
    options: dict[str, Any] | None,
    output: str | Path,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate the run's model and ``models`` on the test split; write ``report.html``,
    ``report.json`` and PNGs into ``output`` (and log them as artifacts of the run's MLflow
    record, if it has one: see :func:`report_artifact_path`); returns the JSON's content."""
    problem = f"report folder {output} cannot be written"
    creatable_directory(output, problem)
    warnings: list[str] = []
    paths, options = resolve_run(run, models, options, warnings)
    predictors = [load_model(p) for p in paths]
    names = _model_names(paths)
    held = split_molecules(options)
    table, split = held.table, held.split
    smiles, targets, keys = held.smiles, held.targets, held.keys
    for predictor, name in zip(predictors, names, strict=True):
        if "multiclass" in (predictor.task_type, table.task_type):
            raise DataError(
                f"report eval scores regression and binary classification; model {name} "
                f"predicts {predictor.task_type} {predictor.tasks} and the data has "
                f"{table.task_type} tasks (multiclass models are scored by molml test)"
            )
        missing = set(table.tasks) - set(predictor.tasks)
        if missing:
            raise DataError(
                f"model {name} predicts {predictor.tasks}; the data has tasks {table.tasks}: "
                f"{sorted(missing)} cannot be scored"
            )
        if predictor.task_type != table.task_type:  # probabilities scored as values, or back
            raise DataError(
                f"model {name} predicts {predictor.task_type} {predictor.tasks}; the data has "
                f"{table.task_type} tasks {table.tasks}: it cannot be scored on them (if the "
                f"labels are meant as {predictor.task_type}, say so: --data.task_type "
                f"{predictor.task_type})"
            )
    # checked once the run, models and data are known to be usable: no empty folder is left
    output = writable_directory(output, problem)
    for elsewhere, name in zip(trained_elsewhere(predictors, held), names, strict=True):
        if elsewhere:  # an ensemble: any of its members
            warnings.append(
                f"Model {name} was trained on another training part than this data and split "
                "give (a changed or reordered file, other split options): the test part may "
                "hold molecules it was trained on."
            )
    train_keys = {keys[i][0] for i in split.train}
    shared = sum(keys[i][0] in train_keys for i in split.test)
    if shared:
        warnings.append(f"{shared} test molecules are also in the training set (same structure).")
    fps = morgan_fingerprints(held.mols)
    similarity = nearest_similarity([fps[i] for i in split.test], [fps[i] for i in split.train])
    scaffolds = np.array([keys[i][1] for i in split.test], dtype=object)
    test_frames = [p.predict(list(smiles[split.test])) for p in predictors]
    test_pred = [f[table.tasks].to_numpy(dtype=float) for f in test_frames]
    val_pred = [_predict(p, smiles[split.val], table.tasks) for p in predictors]

    report: dict[str, Any] = {
        "source": str(table.source),
        "models": [str(p) for p in paths],
        "model_names": names,
        "split_sizes": {k: len(v) for k, v in split.named_parts().items()},
        "task_type": table.task_type,
        "n_bootstrap": n_bootstrap,
        "test_in_train": int(shared),
        "tasks": {},
    }
    page = Page(f"Evaluation: {', '.join(names)}", output)
    page.text(
        f"Data {table.source}; split sizes "
        + ", ".join(f"{k} {v}" for k, v in report["split_sizes"].items())
        + f". Confidence intervals: percentile bootstrap over test molecules, {n_bootstrap} "
        "resamples, 95%."
    )
    page.section("Warnings")
    warnings_at = len(page.parts)
    classification = table.task_type == "classification"
    if classification:
        page.text(f"Classification threshold: {THRESHOLD_RULE}.")
    for j, task in enumerate(table.tasks):
        y_test, y_val = targets[split.test, j], targets[split.val, j]
        labelled, labelled_val = ~np.isnan(y_test), ~np.isnan(y_val)
        if not labelled.any():
            warnings.append(f"Task {task!r} has no labelled test molecule: nothing to score.")
            continue
        y = y_test[labelled]
        if classification and len(np.unique(y)) < 2:
            warnings.append(f"Task {task!r}: the test set has one class; AUCs are undefined.")
        preds = [p[labelled, j] for p in test_pred]
        thresholds = [
            youden_threshold(y_val[labelled_val], p[labelled_val, j]) if classification else None
            for p in val_pred
        ]
        if classification and len(np.unique(y_val[labelled_val])) == 2:
            for name, p, threshold in zip(names, val_pred, thresholds, strict=True):
                best = best_youden_j(y_val[labelled_val], p[labelled_val, j])
                if best <= 0:
                    warnings.append(
                        f"Task {task!r}, model {name}: on the validation split no threshold "
                        f"separates the classes better than chance (best Youden J {best:.2f}), "
                        f"so the chosen threshold ({threshold:.2f}) and the accuracy and "
                        "confusion matrix at it mean little."
                    )
        sim = similarity[labelled]
        task_report = _score_task(y, preds, names, thresholds, table.task_type, n_bootstrap, seed)
        task_report["similarity_bins"] = _by_similarity(y, preds, names, thresholds, sim)
        task_report["scaffold_groups"] = _by_scaffold(y, preds, names, scaffolds[labelled])
        if not classification:
            uncertainty = _uncertainty_columns(predictors, test_frames, names, task, labelled)
            task_report["uncertainty"] = {
                name: {
                    "interval_level": level,
                    **regression_uncertainty_scores(y, preds[names.index(name)], *columns),
                }
                for name, (*columns, level) in uncertainty.items()
            }
        report["tasks"][task] = task_report
        page.section(f"Task {task}")
        page.table(
            [
                {"model": name, "metric": metric, **ci}
                for name, by_metric in task_report["metrics"].items()
                for metric, ci in by_metric.items()
            ]
        )
        if task_report.get("comparisons"):
            page.text(
                f"Paired bootstrap against {names[0]}: difference = other - {names[0]}; "
                "'b_better' = fraction of resamples where the other model is better."
            )
            page.table(task_report["comparisons"])
        if classification:
            figure = _classification_figure(y, preds, names, thresholds, sim, task)
        else:
            figure = _regression_figure(y, preds, names, sim, task, table.target_units)
        page.figure(figure, f"{task}_plots")
        page.text(
            "Error by similarity to the training set (max Tanimoto, Morgan r2 2048 bits, "
            "of each test molecule to any training molecule):"
        )
        page.table(task_report["similarity_bins"])
        if task_report.get("uncertainty"):
            page.text(
                "Uncertainty on the test set: coverage and mean width of the model's interval "
                "(<task>_lower/_upper), Spearman correlation of |error| with the predicted "
                "standard deviation (<task>_std), Gaussian negative log-likelihood and "
                "miscalibration area (0 = the Gaussian spread is calibrated):"
            )
            page.table([{"model": n, **v} for n, v in task_report["uncertainty"].items()])
            page.figure(
                _uncertainty_figure(y, preds, names, uncertainty, task, table.target_units),
                f"{task}_uncertainty",
            )
        page.text(f"The {TOP_GROUPS} largest scaffold groups of the test set:")
        page.table(task_report["scaffold_groups"])
    report["warnings"] = warnings
    page.warnings(warnings, at=warnings_at)
    page.write()
    write_json(report, output / "report.json")
    if run is not None:  # the report joins the run's MLflow record, when it has one
        artifact_path = report_artifact_path(run, output)
        try:
            report["mlflow_run"] = log_to_recorded_run(run, output, artifact_path=artifact_path)
            report["mlflow_artifact_path"] = artifact_path
        except Exception as exc:  # noqa: BLE001 - the report is written; tracking is extra
            log.warning("the report could not be logged to the run's MLflow record: %s", exc)
    return report


def report_artifact_path(run: str | Path, output: Path) -> str:
    """Where a report of ``run`` goes among the run's MLflow artifacts: ``report`` for the
    default folder ``<run>/report``, ``report/<folder name>`` for any other, so that a second
    report (another split, a comparison) does not overwrite the first's files."""
    if Path(output).resolve() == (Path(run) / "report").resolve():
        return "report"
    return f"report/{Path(output).resolve().name}"


def _model_names(paths: list[Path]) -> list[str]:
    names = []
    for path in paths:
        run = path.parent.parent if path.suffix == ".ckpt" else path.parent
        names.append("/".join(part for part in (run.parent.name, run.name, path.name) if part))
    return [f"{i + 1}: {n}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _predict(predictor: Predictor, smiles: np.ndarray, tasks: list[str]) -> np.ndarray:
    frame = predictor.predict(list(smiles))
    return frame[tasks].to_numpy(dtype=float)


def _uncertainty_columns(
    predictors: list[Predictor], frames: list[Any], names: list[str], task: str, rows: np.ndarray
) -> dict[str, tuple[Any, ...]]:
    """Per model with uncertainty columns for ``task``: (std, lower, upper) on ``rows`` (None
    where absent) and the interval's nominal level (None without an interval)."""
    out = {}
    for predictor, frame, name in zip(predictors, frames, names, strict=True):
        found = [
            frame[f"{task}_{s}"].to_numpy(dtype=float)[rows] if f"{task}_{s}" in frame else None
            for s in ("std", "lower", "upper")
        ]
        if any(column is not None for column in found):
            calibration = predictor.metadata.get("calibration", {}).get(task, {})
            out[name] = (*found, calibration.get("level"))
    return out


def _uncertainty_figure(y, preds, names, uncertainty, task, units):  # noqa: ANN001, ANN202
    """Per model: |error| against the predicted std, and the observed fraction of targets
    inside central Gaussian intervals against their level."""
    in_units = f" ({units})" if units else ""
    fig, axes = panels(2 * len(uncertainty), cols=2, size=3.8)
    levels = np.linspace(0.01, 0.99, 50)
    for k, (name, (std, lower, upper, level)) in enumerate(uncertainty.items()):
        error = np.abs(preds[names.index(name)] - y)
        ranking, curve = axes[2 * k : 2 * k + 2]
        spread = std if std is not None else (upper - lower) / 2
        ranking.scatter(spread, error, s=10, alpha=0.6)
        ranking.set(
            xlabel=("predicted std" if std is not None else "interval half-width") + in_units,
            ylabel=f"|error| of {task}{in_units}",
            title=f"{name}: error vs uncertainty",
        )
        curve.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        if std is not None:
            z = error / np.maximum(std, 1e-12)
            observed = [np.mean(z <= norm.ppf(0.5 + q / 2)) for q in levels]
            curve.plot(levels, observed, label="Gaussian intervals")
        if lower is not None and level is not None:
            inside = float(np.mean((y >= lower) & (y <= upper)))
            curve.scatter([level], [inside], color="C3", zorder=3, label=f"interval: {inside:.2f}")
        curve.legend(fontsize=7)
        curve.set(xlabel="expected coverage", ylabel="observed coverage", title="calibration")
    for ax in axes:
        ax.title.set_fontsize(9)
    return fig


def _score_task(
    y: np.ndarray,
    preds: list[np.ndarray],
    names: list[str],
    thresholds: list[float | None],
    task_type: str,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    metrics = metrics_for(task_type)
    out: dict[str, Any] = {
        "n_test": len(y),
        "metrics": {
            name: {m: bootstrap_ci(m, y, p, n_bootstrap=n_bootstrap, seed=seed) for m in metrics}
            for name, p in zip(names, preds, strict=True)
        },
    }
    if task_type == "classification":
        out["ece"] = {
            n: expected_calibration_error(y, p) for n, p in zip(names, preds, strict=True)
        }
        out["thresholds"] = dict(zip(names, thresholds, strict=True))
        out["confusion"] = {
            n: confusion_matrix(y.astype(int), (p >= t).astype(int), labels=[0, 1]).tolist()
            for n, p, t in zip(names, preds, thresholds, strict=True)
        }
        for name in names:
            out["metrics"][name]["ece"] = {"value": out["ece"][name]}
    out["comparisons"] = [
        {
            "model": name,
            "metric": m,
            **paired_bootstrap(m, y, preds[0], p, n_bootstrap=n_bootstrap, seed=seed),
        }
        for name, p in zip(names[1:], preds[1:], strict=True)
        for m in metrics
    ]
    return out


def _errors(y: np.ndarray, p: np.ndarray, threshold: float | None) -> dict[str, float]:
    if threshold is None:
        return {"mae": float(np.abs(p - y).mean()), "rmse": float(np.sqrt(((p - y) ** 2).mean()))}
    return {
        "brier": float(((p - y) ** 2).mean()),
        "accuracy": float(((p >= threshold) == (y == 1)).mean()),
    }


def _by_similarity(
    y: np.ndarray,
    preds: list[np.ndarray],
    names: list[str],
    thresholds: list[float | None],
    similarity: np.ndarray,
) -> list[dict[str, Any]]:
    rows = []
    edges = SIMILARITY_BINS
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (similarity >= low) & ((similarity < high) | (high == edges[-1]))
        row: dict[str, Any] = {"similarity": f"{low:.1f}-{high:.1f}", "n": int(inside.sum())}
        for name, p, t in zip(names, preds, thresholds, strict=True):
            for key, value in (_errors(y[inside], p[inside], t) if inside.any() else {}).items():
                row[f"{key} {name}" if len(names) > 1 else key] = value
        rows.append(row)
    return rows


def _by_scaffold(
    y: np.ndarray, preds: list[np.ndarray], names: list[str], scaffolds: np.ndarray
) -> list[dict[str, Any]]:
    values, counts = np.unique(scaffolds, return_counts=True)
    rows = []
    for scaffold in values[np.argsort(-counts, kind="stable")][:TOP_GROUPS]:
        inside = scaffolds == scaffold
        row: dict[str, Any] = {"scaffold": scaffold or "(acyclic)", "n": int(inside.sum())}
        for name, p in zip(names, preds, strict=True):
            key = "mean |error|" if len(names) == 1 else f"mean |error| {name}"
            row[key] = float(np.abs(p[inside] - y[inside]).mean())
        rows.append(row)
    return rows


def _regression_figure(y, preds, names, similarity, task, units):  # noqa: ANN001, ANN202
    in_units = f" ({units})" if units else ""
    fig, axes = panels(3 * len(preds), cols=3, size=3.8)
    for k, (name, p) in enumerate(zip(names, preds, strict=True)):
        parity, residual, domain = axes[3 * k : 3 * k + 3]
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        parity.plot([low, high], [low, high], color="grey", ls="--", lw=1)
        parity.scatter(y, p, s=10, alpha=0.6)
        parity.set(
            xlabel=f"measured {task}{in_units}",
            ylabel=f"predicted{in_units}",
            title=f"{name}: parity",
        )
        residual.axhline(0, color="grey", ls="--", lw=1)
        residual.scatter(p, p - y, s=10, alpha=0.6)
        residual.set(
            xlabel=f"predicted{in_units}",
            ylabel=f"predicted - measured{in_units}",
            title="residuals",
        )
        domain.scatter(similarity, np.abs(p - y), s=10, alpha=0.6)
        domain.set(
            xlabel="max Tanimoto to train", ylabel=f"|error|{in_units}", title="error vs similarity"
        )
    for ax in axes:
        ax.title.set_fontsize(9)
    return fig


def _classification_figure(y, preds, names, thresholds, similarity, task):  # noqa: ANN001, ANN202
    fig, axes = panels(4 * len(preds), cols=4, size=3.4)
    y = y.astype(int)
    for k, (name, p, t) in enumerate(zip(names, preds, thresholds, strict=True)):
        roc, pr, calibration, confusion = axes[4 * k : 4 * k + 4]
        roc.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, p)
            roc.plot(fpr, tpr)
            precision, recall, _ = precision_recall_curve(y, p)
            pr.plot(recall, precision)
        pr.axhline(y.mean(), color="grey", ls="--", lw=1)
        roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{name}: ROC")
        pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
        observed, predicted = calibration_curve(y, p, n_bins=10)
        calibration.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        calibration.plot(predicted, observed, marker="o")
        calibration.set(
            xlabel="mean predicted probability", ylabel="fraction positive", title="calibration"
        )
        matrix = confusion_matrix(y, (p >= t).astype(int), labels=[0, 1])
        confusion.imshow(matrix, cmap="Blues")
        for (r, c), count in np.ndenumerate(matrix):
            confusion.text(c, r, str(count), ha="center", va="center")
        confusion.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xlabel="predicted",
            ylabel="measured",
            title=f"threshold {t:.2f} (val Youden J)",
        )
    for ax in axes:
        ax.title.set_fontsize(9)
    return fig
