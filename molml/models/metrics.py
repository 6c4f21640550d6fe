"""Masked multitask metrics on torchmetrics, exact under DDP (states are gathered, not averaged).

Regression: RMSE, MAE, R2 per task and averaged. Classification: ROC-AUC and PR-AUC per task
and averaged; a task whose labels in the split have a single class is skipped with a warning.
"""

from __future__ import annotations

import warnings

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
HIGHER_IS_BETTER = {
    "rmse": False,
    "mae": False,
    "r2": True,
    "roc_auc": True,
    "pr_auc": True,
    "accuracy": True,
}


class MolecularMetrics(Metric):
    """Collects predictions, targets and label masks; computes per-task metrics at the end.

    ``preds`` are in the original target units (regression), probabilities (classification,
    shape ``[n, tasks]``) or class probabilities (multiclass, ``[n, tasks, classes]``).
    """

    full_state_update = False

    def __init__(self, task_type: str, task_names: list[str]) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"unknown task type {task_type!r}; choose from {TASK_TYPES}")
        self.task_type = task_type
        self.task_names = list(task_names)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("mask", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())
        self.mask.append(mask.detach().bool())

    def gathered(self) -> tuple[Tensor, Tensor, Tensor]:
        """All predictions, targets and masks seen so far (synced across ranks by compute)."""
        return tuple(dim_zero_cat(s) for s in (self.preds, self.target, self.mask))

    def compute(self) -> dict[str, Tensor]:
        preds, target, mask = self.gathered()
        per_task: dict[str, list[Tensor]] = {}
        for t, name in enumerate(self.task_names):
            m = mask[:, t]
            if m.sum() == 0:
                continue
            for metric, value in self._task_metrics(preds[m, t], target[m, t], name).items():
                per_task.setdefault(metric, []).append(value)
                per_task[f"{metric}/{name}"] = [value]
        return {
            key: torch.stack(values).mean() if "/" not in key else values[0]
            for key, values in per_task.items()
        }

    def _task_metrics(self, p: Tensor, y: Tensor, name: str) -> dict[str, Tensor]:
        if self.task_type == "regression":
            err = p - y
            ss_tot = ((y - y.mean()) ** 2).sum()
            r2 = 1 - (err**2).sum() / ss_tot if ss_tot > 0 else torch.tensor(float("nan"))
            return {"rmse": err.pow(2).mean().sqrt(), "mae": err.abs().mean(), "r2": r2}
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
        return out
