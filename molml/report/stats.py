"""Numbers behind the reports: metrics with bootstrap confidence intervals, paired bootstrap
differences, nearest-neighbour Tanimoto similarity and the validation-chosen threshold."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    roc_curve,
)

Metric = Callable[[np.ndarray, np.ndarray], float]


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(p) - np.asarray(y)) ** 2)))


REGRESSION_METRICS: dict[str, Metric] = {"rmse": rmse, "mae": mean_absolute_error, "r2": r2_score}
CLASSIFICATION_METRICS: dict[str, Metric] = {
    "roc_auc": roc_auc_score,
    "pr_auc": average_precision_score,
    "brier": brier_score_loss,
}
LOWER_IS_BETTER = {"rmse", "mae", "brier"}


def metrics_for(task_type: str) -> dict[str, Metric]:
    """The report's metrics for a task type (``classification`` or ``regression``)."""
    return CLASSIFICATION_METRICS if task_type == "classification" else REGRESSION_METRICS


def _defined(metric_name: str, y: np.ndarray) -> bool:
    """Whether a metric is defined on labels ``y`` (AUCs need both classes, R2 two values)."""
    if metric_name in ("roc_auc", "pr_auc"):
        return len(np.unique(y)) == 2
    if metric_name == "r2":
        return len(y) > 1 and np.ptp(y) > 0
    return len(y) > 0


def resamples(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``[n_bootstrap, n]`` row indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def bootstrap_ci(
    name: str,
    y: np.ndarray,
    p: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """Metric ``name`` on ``(y, p)`` with a percentile bootstrap confidence interval.

    Resamples on which the metric is undefined (one class for an AUC) are skipped; returns
    ``{"value", "low", "high", "n"}`` (None where undefined).
    """
    metric = {**REGRESSION_METRICS, **CLASSIFICATION_METRICS}[name]
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if not _defined(name, y):
        return {"value": None, "low": None, "high": None, "n": len(y)}
    values = [
        metric(y[idx], p[idx])
        for idx in resamples(len(y), n_bootstrap, seed)
        if _defined(name, y[idx])
    ]
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return {"value": float(metric(y, p)), "low": float(low), "high": float(high), "n": len(y)}


def paired_bootstrap(
    name: str,
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | None]:
    """Difference ``metric(b) - metric(a)`` on the same molecules, with a paired bootstrap CI
    (both models scored on each resample) and the fraction of resamples where ``b`` is better."""
    metric = {**REGRESSION_METRICS, **CLASSIFICATION_METRICS}[name]
    y = np.asarray(y, dtype=float)
    if not _defined(name, y):
        return {"difference": None, "low": None, "high": None, "b_better": None}
    diffs = np.array(
        [
            metric(y[idx], p_b[idx]) - metric(y[idx], p_a[idx])
            for idx in resamples(len(y), n_bootstrap, seed)
            if _defined(name, y[idx])
        ]
    )
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    better = diffs < 0 if name in LOWER_IS_BETTER else diffs > 0
    return {
        "difference": float(metric(y, p_b) - metric(y, p_a)),
        "low": float(low),
        "high": float(high),
        "b_better": float(better.mean()),
    }


def morgan_fingerprints(mols: Sequence[Chem.Mol]) -> list:
    """Morgan radius-2, 2048-bit fingerprints."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return [generator.GetFingerprint(mol) for mol in mols]


def nearest_similarity(query: Sequence, reference: Sequence) -> np.ndarray:
    """Each query fingerprint's highest Tanimoto similarity to any reference fingerprint."""
    if not reference:
        return np.full(len(query), np.nan)
    return np.array([max(DataStructs.BulkTanimotoSimilarity(fp, reference)) for fp in query])


def best_youden_j(y: np.ndarray, p: np.ndarray) -> float:
    """The largest Youden J (TPR - FPR) over all thresholds of ``p`` on two-class ``y``: 0 or
    less when no threshold separates the classes better than chance."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold maximising Youden's J (TPR - FPR) on ``(y, p)``; 0.5 when
    ``y`` has one class."""
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, p)
    return float(min(1.0, thresholds[int(np.argmax(tpr - fpr))]))
