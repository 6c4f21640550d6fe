"""Names the ``molml tune`` and ``molml cv`` arguments choose from, in a module that imports
nothing heavy, so that ``--help`` and usage errors answer before torch and Optuna load."""

PRUNERS = ("median", "hyperband", "none")
"""Trial pruners of ``molml tune --pruner``."""
SAMPLERS = ("tpe", "grid")
"""How ``molml tune --sampler`` picks trials: Optuna's TPE, or every point of an all-categorical
space once."""
FOLD_SPLITS = ("scaffold", "random", "stratified")
"""How ``molml cv`` and ``molml tune --cv`` cut the training data into folds."""
SEED_ENSEMBLE = "seeds"
"""``molml cv --split seeds``: every member on the config's own split, with its own seed."""
CV_SPLITS = (*FOLD_SPLITS, SEED_ENSEMBLE)
"""What ``molml cv --split`` accepts."""
