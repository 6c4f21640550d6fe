"""``molml calibrate``: fit conformal intervals or calibrated probabilities on the validation
split of a trained model's data, and write a calibration file that ``molml.load_model``,
``molml screen`` and ``molml report eval`` open like a model."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from molml.errors import CommandParser, DataError
from molml.options import check_int, output_file_folder
from molml.predict import CalibratedPredictor, load_model
from molml.predict.calibrated import CALIBRATED_KEY, check_calibratable
from molml.report.config import DATA_OPTIONS_HELP, data_options
from molml.report.heldout import resolve_run, split_molecules, trained_elsewhere
from molml.uncertainty import CLASSIFICATION_METHODS

log = logging.getLogger("molml")


def build_parser() -> argparse.ArgumentParser:
    """The ``molml calibrate`` parser; ``--data.<key>`` options go unparsed."""
    parser = CommandParser(
        prog="molml calibrate",
        description="Calibrate a trained model on its validation split (conformal intervals "
        f"for regression, Platt or isotonic probabilities for classification). "
        f"{DATA_OPTIONS_HELP}",
    )
    parser.add_argument("--run", default=None, help="a run directory (config, model, split)")
    parser.add_argument(
        "--model", action="append", default=[], help="checkpoint or baseline; repeat: ensemble"
    )
    parser.add_argument("--config", action="append", default=[], help="YAML config (repeatable)")
    parser.add_argument("--output", required=True, help="calibration file to write (.json)")
    parser.add_argument(
        "--level", type=float, default=None, help="regression interval level (default 0.9)"
    )
    parser.add_argument(
        "--method",
        default=None,
        choices=CLASSIFICATION_METHODS,
        help="probability calibration for classifiers (default isotonic; both keep the ROC-AUC)",
    )
    parser.add_argument(
        "--constant-width",
        action="store_true",
        help="regression: intervals of one width for every molecule, even when the model "
        "predicts a standard deviation",
    )
    parser.add_argument(
        "--mc-dropout", type=int, default=0, help="Monte Carlo dropout passes (default 0: off)"
    )
    return parser


def calibrate(
    *,
    run: str | Path | None,
    models: list[str],
    options: dict[str, Any] | None,
    output: str | Path,
    level: float | None = None,
    method: str | None = None,
    constant_width: bool = False,
    mc_dropout: int = 0,
) -> CalibratedPredictor:
    """Fit the calibration of the run's model (or of ``models``, several: their ensemble) on
    the validation split and write it to ``output``; returns the calibrated predictor."""
    output = Path(output)
    if output.suffix != ".json":
        raise DataError(f"--output {output}: the calibration file must end in .json")
    output_file_folder(output)
    warnings: list[str] = []
    paths, options = resolve_run(run, models, options, warnings)
    held = split_molecules(options)
    base = load_model(paths, mc_dropout=mc_dropout)
    if base.kind == "calibrated" or any(m.kind == "calibrated" for m in base.members):
        raise DataError(
            "the model is already calibrated (a calibration file): calibrate the model it was "
            "made from instead"
        )
    check_calibratable(base)
    _check_output_is_not_an_input(output, [*paths, *(m.source for m in base.members)])
    if base.task_type != held.table.task_type:  # probabilities fitted to values, or back
        raise DataError(
            f"the model predicts {base.task_type} {base.tasks}; the data has "
            f"{held.table.task_type} tasks {held.table.tasks}: it cannot be calibrated on them "
            f"(if the labels are meant as {base.task_type}, say so: --data.task_type "
            f"{base.task_type})"
        )
    missing = [t for t in base.tasks if t not in held.table.tasks]
    if missing:
        raise DataError(
            f"the model predicts {missing}, which the data lacks (its tasks: {held.table.tasks})"
        )
    if trained_elsewhere([base], held)[0]:
        warnings.append(
            "A model was trained on another training part than this data and split give (other "
            "data or split options, or the folds of a cross-validation): the validation "
            "molecules calibrated on may include molecules it was trained on, which makes "
            "intervals too narrow and probabilities overconfident."
        )
        log.warning("calibrate: %s", warnings[-1])
    if base.task_type == "regression" and method is not None:
        raise DataError(
            f"--method {method} calibrates a classifier's probabilities; this model is a "
            "regression model (it gets conformal intervals: see --level, --constant-width)"
        )
    if base.task_type != "regression" and constant_width:
        raise DataError("--constant-width is for regression intervals; this is a classifier")
    if base.task_type != "regression" and level is not None:
        raise DataError(
            f"--level {level} is the coverage of regression intervals; this is a classifier "
            "(its probabilities are calibrated: see --method)"
        )
    columns = [held.table.tasks.index(t) for t in base.tasks]
    rows = held.split.val
    calibrated = CalibratedPredictor.fit(
        base,
        list(held.smiles[rows]),
        held.targets[rows][:, columns],
        level=level,
        method=method,
        normalized=False if constant_width else None,
        fitted_on={"data": str(held.table.source), "split": "val", "warnings": warnings},
    )
    calibrated.save(output)
    return calibrated


def _check_output_is_not_an_input(output: Path, sources: list[Any]) -> None:
    """Refuse an ``output`` that would overwrite a model being calibrated (a file, or a file in a
    baseline's folder) or any other existing file than a calibration file (a run's records)."""
    target = output.resolve()
    for source in (Path(s).resolve() for s in sources if s):
        if target == source or (source.is_dir() and target.is_relative_to(source)):
            raise DataError(
                f"--output {output} would overwrite the model being calibrated ({source}); "
                "choose another path"
            )
    if output.exists():
        try:
            body = json.loads(output.read_text())
        except (OSError, ValueError):
            body = None
        if not (isinstance(body, dict) and CALIBRATED_KEY in body):
            raise DataError(
                f"--output {output} exists and is not a calibration file; choose another path"
            )


def main(argv: Sequence[str]) -> Path:
    """Entry point of ``molml calibrate``; returns the written calibration file."""
    args, rest = build_parser().parse_known_args(list(argv))
    check_int(args.mc_dropout, "--mc-dropout", minimum=0)
    if args.level is not None and not 0 < args.level < 1:  # NaN too
        raise DataError(f"--level {args.level}: the interval level must be between 0 and 1")
    if not args.run and not args.model:
        raise DataError("give --run RUN_DIR or --model MODEL (with --config CFG)")
    # with --run, options such as --data.split_seed alone go over the run's own data
    given = args.config or rest
    options = data_options(args.config, rest, require_data=not args.run) if given else None
    calibrated = calibrate(
        run=args.run,
        models=args.model,
        options=options,
        output=args.output,
        level=args.level,
        method=args.method,
        constant_width=args.constant_width,
        mc_dropout=args.mc_dropout,
    )
    summary = {task: c.to_dict() for task, c in calibrated.calibrations.items()}
    print(json.dumps({"calibration": summary, "written": args.output}, indent=2))
    return Path(args.output)
