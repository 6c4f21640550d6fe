"""``molml tune`` and ``molml cv``.

Options not listed here (``--data.batch_size 32``, ``--trainer.max_epochs 20``,
``--estimator.params.n_estimators 500``, ...) pass through to the config being tuned.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from molml.errors import EXIT_CODES_HELP, CommandParser, DataError
from molml.options import check_int
from molml.tracking import checked_tracking_uri
from molml.tune.options import CV_SPLITS, FOLD_SPLITS, PRUNERS, SAMPLERS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h`` or ``1d`` in seconds."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise DataError(f"--timeout {text!r}: expected a duration such as 3600, 30m or 2h")
    return float(match[1]) * _SECONDS[match[2]]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", required=True, help="config YAML (repeatable)")
    parser.add_argument("--metric", help="validation metric (default: val/<task default>)")
    parser.add_argument("--seed", type=int, default=0, help="sampler and fold seed")


def tune_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="molml tune",
        description="Optuna search over a config's options, scored on the validation split; "
        "other --section.option arguments pass through to the config.",
        epilog=EXIT_CODES_HELP,
    )
    _common(parser)
    parser.add_argument("--search", required=True, help="search-space YAML")
    parser.add_argument(
        "--n-trials",
        type=int,
        help="trials to run in this process (with --sampler grid: at most the points left)",
    )
    parser.add_argument("--timeout", type=parse_duration, help="stop starting trials after (2h)")
    parser.add_argument("--storage", default="sqlite:///runs/optuna.db", help="Optuna RDB URL")
    parser.add_argument("--study-name", help="study name (default: the config's file name)")
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="tpe",
        help="tpe (Optuna's TPE after 5 random trials) or grid (every combination of an "
        "all-categorical search space once, then the study stops)",
    )
    parser.add_argument("--pruner", choices=PRUNERS, default="median")
    parser.add_argument(
        "--pruner-warmup",
        type=int,
        default=None,
        help="epochs (with --cv: folds) a trial runs before the median pruner may stop it "
        "(default 10 epochs, or 1 fold with --cv; 0 with --cv 2)",
    )
    parser.add_argument("--cv", type=int, help="score trials by k-fold cross-validation")
    parser.add_argument(
        "--cv-split", choices=FOLD_SPLITS, help="how --cv cuts its folds (default scaffold)"
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/tune"))
    parser.add_argument(
        "--tracking-uri", help="MLflow URI (default: the config's; 'none' disables)"
    )
    return parser


def cv_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="molml cv",
        description="k-fold cross-validation over the train+val molecules (test held out), or "
        "a seed ensemble on the config's own split (--split seeds); the models are saved as an "
        "ensemble.",
        epilog=EXIT_CODES_HELP,
    )
    _common(parser)
    parser.add_argument("--folds", type=int, default=5, help="folds, or members of --split seeds")
    parser.add_argument(
        "--split",
        choices=CV_SPLITS,
        default="scaffold",
        help="how folds are cut from train+val; 'seeds': a seed ensemble, every member on the "
        "config's own split with seed --seed + i",
    )
    parser.add_argument("--name", help="run name (default: the config's file name)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/cv"))
    return parser


def _overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple:
    args, rest = parser.parse_known_args(list(argv))
    if rest and not rest[0].startswith("--"):
        raise DataError(f"unexpected argument {rest[0]!r}")
    return args, rest


def tune_main(argv: Sequence[str]) -> Path:
    """Entry point of ``molml tune``; returns the study's output directory."""
    args, overrides = _overrides(tune_parser(), argv)
    check_int(args.n_trials, "--n-trials", minimum=1, allow_none=True)
    check_int(args.cv, "--cv", minimum=2, allow_none=True)
    if args.cv_split is not None and not args.cv:
        raise DataError(f"--cv-split {args.cv_split} cuts --cv's folds: give --cv K as well")
    if args.pruner_warmup is not None:
        check_int(args.pruner_warmup, "--pruner-warmup", minimum=0)
        if args.pruner != "median":
            raise DataError(
                f"--pruner-warmup is the median pruner's; --pruner {args.pruner} has none"
            )
        if args.cv and args.pruner_warmup >= args.cv - 1:
            raise DataError(
                f"--pruner-warmup {args.pruner_warmup} with --cv {args.cv}: with --cv the "
                "warmup counts folds and a trial is never pruned after its last, so no trial "
                f"could be pruned; give fewer than {args.cv - 1}"
            )
    if args.n_trials is None and args.timeout is None and args.sampler != "grid":
        raise DataError("give --n-trials, --timeout or both")
    # imported once the arguments are read: --help and usage errors answer without torch
    from molml.tune.jobs import make_job
    from molml.tune.space import read_space
    from molml.tune.study import TuneOptions, run_tune

    space = read_space(args.search)
    job = make_job(args.config, overrides)
    pruning = [a.split("=")[0] for a in argv if a.split("=")[0] in ("--pruner", "--pruner-warmup")]
    if job.kind == "baseline" and not args.cv and pruning:
        raise DataError(
            f"{pruning[0]}: a baseline trial is scored once, so there is nothing to prune (with "
            "--cv it is scored fold by fold, and pruned between folds)"
        )
    tracking = job.tracking_uri() if args.tracking_uri is None else args.tracking_uri
    options = TuneOptions(
        study_name=args.study_name or Path(args.config[-1]).stem,
        storage=args.storage,
        metric=args.metric or job.default_metric(),
        n_trials=args.n_trials,
        timeout=args.timeout,
        pruner=args.pruner,
        pruner_warmup=args.pruner_warmup,
        sampler=args.sampler,
        seed=args.seed,
        cv=args.cv,
        cv_split=args.cv_split or "scaffold",
        output_dir=args.output_dir,
        tracking_uri=checked_tracking_uri(
            tracking, "--tracking-uri" if args.tracking_uri else "the config's MLflow tracking_uri"
        ),
    )
    return run_tune(job, space, options)


def cv_main(argv: Sequence[str]) -> dict:
    """Entry point of ``molml cv``; returns the summary written to ``cv.json``."""
    args, overrides = _overrides(cv_parser(), argv)
    check_int(args.folds, "--folds", minimum=2)
    from molml.tune.cv import run_cv
    from molml.tune.jobs import make_job

    job = make_job(args.config, overrides)
    name = args.name or Path(args.config[-1]).stem
    metric = args.metric or job.default_metric()
    return run_cv(job, args.folds, args.split, args.seed, args.output_dir / name, metric)
