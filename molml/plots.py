"""Evaluation plots: parity plots for regression, ROC curves for classification (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

MAX_PANELS = 12


def parity_plot(
    preds: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    tasks: Sequence[str],
    path: Path,
    units: str | None = None,
) -> Path:
    """Predicted vs. measured, one panel per task, with RMSE and R2 in the title and the
    targets' ``units`` (when known) on the axes."""
    in_units = f" ({units})" if units else ""
    fig, axes = _panels(len(tasks))
    for ax, t in zip(axes, range(min(len(tasks), MAX_PANELS)), strict=False):
        m = mask[:, t]
        y, p = target[m, t], preds[m, t]
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", lw=1, ls="--")
        ax.scatter(y, p, s=12, alpha=0.6, edgecolors="none")
        rmse = float(np.sqrt(np.mean((p - y) ** 2)))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        r2 = 1 - float(np.sum((p - y) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
        ax.set_title(f"{tasks[t]}\nRMSE {rmse:.3f}  R² {r2:.3f}  n={len(y)}", fontsize=9)
        ax.set_xlabel(f"measured{in_units}")
        ax.set_ylabel(f"predicted{in_units}")
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
    return _save(fig, path)


def roc_plot(
    preds: np.ndarray, target: np.ndarray, mask: np.ndarray, tasks: Sequence[str], path: Path
) -> Path:
    """ROC curve per task (up to 12 panels) with the AUC; one-class tasks are marked."""
    fig, axes = _panels(len(tasks))
    for ax, t in zip(axes, range(min(len(tasks), MAX_PANELS)), strict=False):
        m = mask[:, t]
        y, p = target[m, t].astype(int), preds[m, t]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        if len(np.unique(y)) < 2:
            ax.set_title(f"{tasks[t]}\none class only, no ROC", fontsize=9)
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=2)
        auc = roc_auc_score(y, p)
        ax.set_title(f"{tasks[t]}\nROC-AUC {auc:.3f}  n={len(y)} ({y.sum()} pos)", fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_aspect("equal")
    return _save(fig, path)


def _panels(n_tasks: int) -> tuple[plt.Figure, list[plt.Axes]]:
    n = min(n_tasks, MAX_PANELS)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
