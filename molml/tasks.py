"""What is predicted and how it is scored: task types, target scaling and metrics.

The ground floor shared by the data module, the graph models and the fingerprint baselines
(it imports none of them).

Metrics are masked and multitask, on torchmetrics, and exact under DDP (states are gathered,
not averaged). Regression: RMSE, MAE, R2 per task and averaged. Classification: ROC-AUC and
PR-AUC per task and averaged; a task whose labels in the split have a single class is skipped
with a warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multiclass_accuracy,
    multiclass_auroc,
)
from torchmetrics.utilities import dim_zero_cat

TASK_TYPES = ("regression", "classification", "multiclass")
DEFAULT_METRIC = {"regression": "rmse", "classification": "roc_auc", "multiclass": "accuracy"}
#: the validation and test metrics logged per task type (besides the loss)
LOGGED_METRICS = {
    "regression": ("rmse", "mae", "r2"),
    "classification": ("roc_auc", "pr_auc"),
    "multiclass": ("accuracy", "roc_auc"),
}
HIGHER_IS_BETTER = {
    "rmse": False,
    "mae": False,
    "r2": True,
    "roc_auc": True,
    "pr_auc": True,
    "accuracy": True,
}


def target_scaling(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-task mean and standard deviation of regression targets ``[n, tasks]`` (NaN =
    missing, ignored); an unlabelled task gets 0 and 1, a constant one standard deviation 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.nan_to_num(np.nanmean(y, axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(y, axis=0), nan=1.0)
    return mean, np.where(std > 0, std, 1.0)


def to_prediction(out: Tensor, task_type: str, mean: Tensor, std: Tensor) -> Tensor:
    """A model's raw outputs in the user's units: regression outputs unscaled with the training
    ``mean``/``std``, binary logits as probabilities, multiclass logits as class probabilities."""
    if task_type == "regression":
        return out * std + mean
    if task_type == "classification":
        return torch.sigmoid(out)
    return torch.softmax(out, dim=-1)


def classes_per_task(targets: np.ndarray) -> list[int]:
    """Multiclass: each task's class count, its largest label + 1 (labels ``0..k-1``; NaN =
    missing), for targets ``[n, tasks]``; a task without labels counts 1."""
    counts = []
    for column in np.asarray(targets, dtype=float).T:
        labelled = column[~np.isnan(column)]
        counts.append(int(labelled.max()) + 1 if labelled.size else 1)
    return counts


class MolecularMetrics(Metric):
    """Collects predictions, targets and label masks; computes per-task metrics at the end.

    ``preds`` are in the original target units (regression), probabilities (classification,
    shape ``[n, tasks]``) or class probabilities (multiclass, ``[n, tasks, classes]``).
    ``task_classes`` (multiclass): each task's own class count; a task is scored on its first
    that many probability columns (default: all of them).
    """

    full_state_update = False

    def __init__(
        self, task_type: str, task_names: list[str], task_classes: list[int] | None = None
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"unknown task type {task_type!r}; choose from {TASK_TYPES}")
        self.task_type = task_type
        self.task_names = list(task_names)
        self.task_classes = list(task_classes) if task_classes else None
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("mask", default=[], dist_reduce_fx="cat")
        self.computed_on: tuple[Tensor, Tensor, Tensor] | None = None

    def update(self, preds: Tensor, target: Tensor, mask: Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())
        self.mask.append(mask.detach().bool())

    def gathered(self) -> tuple[Tensor, Tensor, Tensor]:
        """This process's predictions, targets and masks (all ranks' inside ``compute``)."""
        return tuple(dim_zero_cat(s) for s in (self.preds, self.target, self.mask))

    def compute(self) -> dict[str, Tensor]:
        # torchmetrics syncs the states across ranks for compute() only and restores the local
        # ones after, so the gathered outputs are kept here (``computed_on``) for plots
        preds, target, mask = self.computed_on = self.gathered()
        per_task: dict[str, list[Tensor]] = {}
        for t, name in enumerate(self.task_names):
            m = mask[:, t]
            if m.sum() == 0:
                warnings.warn(
                    f"task {name!r} has no labelled molecule among those evaluated; left out "
                    "of the metrics and their mean",
                    stacklevel=2,
                )
                continue
            p = preds[m, t]
            if self.task_type == "multiclass" and self.task_classes:
                p = p[:, : self.task_classes[t]]
            for metric, value in self._task_metrics(p, target[m, t], name).items():
                per_task.setdefault(metric, []).append(value)
                per_task[f"{metric}/{name}"] = [value]
        return {
            key: torch.stack(values).mean() if "/" not in key else values[0]
            for key, values in per_task.items()
        }

    def _task_metrics(self, p: Tensor, y: Tensor, name: str) -> dict[str, Tensor]:
        if self.task_type == "regression":
            err = p - y
            out = {"rmse": err.pow(2).mean().sqrt(), "mae": err.abs().mean()}
            ss_tot = ((y - y.mean()) ** 2).sum()
            if ss_tot > 0:  # R2 is undefined for constant targets: left out of the mean
                out["r2"] = 1 - (err**2).sum() / ss_tot
            else:
                warnings.warn(
                    f"task {name!r} has constant targets in this split; R2 skipped", stacklevel=2
                )
            return out
        if self.task_type == "classification":
            labels = y.long()
            if labels.min() == labels.max():
                warnings.warn(
                    f"task {name!r} has one class in this split; ROC-AUC/PR-AUC skipped",
                    stacklevel=2,
                )
                return {}
            return {
                "roc_auc": binary_auroc(p, labels),
                "pr_auc": binary_average_precision(p, labels),
            }
        labels = y.long()
        num_classes = p.size(-1)
        out = {"accuracy": multiclass_accuracy(p, labels, num_classes=num_classes, average="micro")}
        if labels.unique().numel() == num_classes:
            out["roc_auc"] = multiclass_auroc(p, labels, num_classes=num_classes)
        else:
            warnings.warn(
                f"task {name!r} has {labels.unique().numel()} of its {num_classes} classes in this "
                "split; ROC-AUC skipped",
                stacklevel=2,
            )
        return out


def score_predictions(
    task_type: str,
    tasks: list[str],
    predictions: np.ndarray,
    targets: np.ndarray,
    task_classes: list[int] | None = None,
) -> dict[str, float]:
    """:class:`MolecularMetrics` of ``predictions`` (as the class describes them) against
    ``targets`` ``[n, tasks]`` (NaN = missing label): averages and ``<metric>/<task>``."""
    labelled = ~np.isnan(targets)
    metrics = MolecularMetrics(task_type, tasks, task_classes)
    metrics.update(  # torch.tensor copies: the arrays may be read-only (pandas)
        torch.tensor(predictions, dtype=torch.float32),
        torch.tensor(np.where(labelled, targets, 0.0)),
        torch.tensor(labelled),
    )
    return {name: float(value) for name, value in metrics.compute().items()}
