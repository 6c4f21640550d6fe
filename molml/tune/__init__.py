"""Hyperparameter search with Optuna (``molml tune``) and cross-validation with fold
ensembles (``molml cv``), for graph models and fingerprint baselines alike. The names are
imported on first use, so the verbs' ``--help`` reads :mod:`molml.tune.cli` alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from molml._lazy import lazy_attributes

if TYPE_CHECKING:
    from molml.tune.cv import run_cv
    from molml.tune.jobs import make_job
    from molml.tune.space import read_space
    from molml.tune.study import TuneOptions, run_tune

_LAZY = {
    "TuneOptions": "molml.tune.study",
    "make_job": "molml.tune.jobs",
    "read_space": "molml.tune.space",
    "run_cv": "molml.tune.cv",
    "run_tune": "molml.tune.study",
}

__all__ = ["TuneOptions", "make_job", "read_space", "run_cv", "run_tune"]


__getattr__ = lazy_attributes(__name__, _LAZY)
