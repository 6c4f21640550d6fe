"""Hyperparameter search with Optuna (``molml tune``) and cross-validation with fold
ensembles (``molml cv``), for graph models and fingerprint baselines alike."""

from molml.tune.cv import run_cv
from molml.tune.jobs import make_job
from molml.tune.space import read_space
from molml.tune.study import TuneOptions, run_tune

__all__ = ["TuneOptions", "make_job", "read_space", "run_cv", "run_tune"]
