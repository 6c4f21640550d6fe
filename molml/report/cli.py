"""``molml report data|eval``: the data report and the evaluation report from the command line.

``molml report data --config cfg.yaml`` (or ``--data.path file.csv --data.target_columns
'[a, b]'``, any data option of the data module) writes ``report.html`` and ``report.json``;
``molml report eval --run runs/x/version_0`` (or ``--model M [--model M2 ...] --config cfg``)
evaluates trained models on the test split of their data.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from molml.errors import CommandParser, DataError
from molml.options import check_int
from molml.report.config import DATA_OPTIONS_HELP, data_options
from molml.report.data import data_report
from molml.report.evaluation import eval_report


def build_parser() -> argparse.ArgumentParser:
    """The ``molml report`` parser (``data`` and ``eval``); ``--data.<key>`` go unparsed."""
    parser = CommandParser(
        prog="molml report", description="Data and evaluation reports (HTML + JSON)."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=CommandParser)
    data = verbs.add_parser(
        "data",
        help="validate and describe a molecule table",
        description=f"Validate and describe a molecule table. {DATA_OPTIONS_HELP}",
    )
    data.add_argument("--config", action="append", default=[], help="YAML config (repeatable)")
    data.add_argument("--output", default=None, help="output directory (default reports/data)")
    data.add_argument(
        "--conflict_threshold",
        type=float,
        default=1.0,
        help="regression labels of one structure further apart than this conflict (default 1)",
    )
    ev = verbs.add_parser(
        "eval",
        help="evaluate trained models on the test split",
        description=f"Evaluate trained models on the test split. {DATA_OPTIONS_HELP}",
    )
    ev.add_argument("--run", default=None, help="a run directory (config.yaml, model, split)")
    ev.add_argument("--model", action="append", default=[], help="checkpoint or baseline dir")
    ev.add_argument("--config", action="append", default=[], help="YAML config (repeatable)")
    ev.add_argument("--output", default=None, help="output directory (default <run>/report)")
    ev.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return parser


def main(argv: Sequence[str]) -> Path:
    """Entry point of ``molml report``; returns the written HTML page."""
    parser = build_parser()
    args, rest = parser.parse_known_args(list(argv))
    # eval --run: the options go over the run's config, which names the data
    over_a_run = args.verb == "eval" and bool(args.run)
    given = args.config or rest or args.verb == "data"
    options = data_options(args.config, rest, require_data=not over_a_run) if given else {}
    if args.verb == "data":
        output = Path(args.output or "reports/data")
        data_report(options, output, conflict_threshold=args.conflict_threshold)
    else:
        check_int(args.n_bootstrap, "--n_bootstrap", minimum=10)
        if not args.run and not args.model:
            raise DataError("give --run RUN_DIR or --model MODEL (with --config CFG)")
        output = Path(args.output or (Path(args.run) / "report" if args.run else "reports/eval"))
        evaluated = eval_report(
            run=args.run,
            models=args.model,
            options=options or None,
            output=output,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
        )
    page = output / "report.html"
    print(f"report written to {page} (numbers in {output / 'report.json'})")
    if args.verb == "eval" and evaluated.get("mlflow_run"):
        where = evaluated["mlflow_artifact_path"]
        print(f"and logged to MLflow run {evaluated['mlflow_run']} (artifacts {where}/)")
    return page
