"""``molml baseline fit|test|predict``: fingerprint baselines from a YAML config.

Options follow the ``molml`` graph CLI: ``--config file.yaml`` (repeatable), dotted overrides
such as ``--data.split_seed 3`` or ``--estimator.params.max_depth 8``, and ``--print_config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

from molml.baselines.config import BaselineConfig
from molml.baselines.run import run_fit, run_predict, run_test
from molml.errors import EXIT_CODES_HELP, DataError

_COMMANDS: dict[str, str] = {
    "fit": "featurize, split, fit one model per task, evaluate and save",
    "test": "evaluate a saved baseline (--model) on the test split",
    "predict": "predict with a saved baseline (--model) on data.predict_path or the test split",
}


MODEL_SECTIONS = ("--features", "--estimator")  # options a saved baseline fixes


def build_parser() -> ArgumentParser:
    """The ``molml baseline`` parser with one subcommand per verb."""
    parser = ArgumentParser(
        prog="molml baseline",
        description="Fingerprint + XGBoost / random forest baselines.",
        allow_abbrev=False,
        exit_on_error=False,
    )
    commands = parser.add_subcommands()
    for name, help_text in _COMMANDS.items():
        command = ArgumentParser(
            description=help_text,
            epilog=EXIT_CODES_HELP,
            allow_abbrev=False,
            exit_on_error=False,
        )
        command.add_argument("--config", action=ActionConfigFile, help="YAML config file")
        command.add_class_arguments(BaselineConfig)
        if name != "fit":
            command.add_argument(
                "--model", type=str, required=True, help="saved baseline: a run's model directory"
            )
        commands.add_subcommand(name, command, help=help_text)
    return parser


def run(args: list[str]) -> Path:
    """Run one ``molml baseline`` command; returns its run directory.

    ``test`` and ``predict`` without ``--config`` use the config of the run that saved
    ``--model`` (``<run>/config.yaml``), so a saved baseline is tested on its own data and split.
    """
    if args and args[0] in ("test", "predict"):
        _refuse_model_options(args)
    parser = build_parser()
    namespace = parser.parse_args(_with_run_config(args))
    command = namespace.subcommand
    options = parser.instantiate(namespace)[command]
    config = BaselineConfig(
        **{field.name: options[field.name] for field in dataclasses.fields(BaselineConfig)}
    )
    if command == "fit":
        return run_fit(config)
    runner: Callable[[BaselineConfig, str], Path] = run_test if command == "test" else run_predict
    return runner(config, options["model"])


def _refuse_model_options(args: list[str]) -> None:
    """Refuse options that would describe another model than ``--model``: a saved baseline runs
    with the fingerprint and estimator it was trained with (``--features.n_jobs``, the
    processes that featurize, still applies)."""
    for arg in args[1:]:
        name = arg.split("=", 1)[0]
        if name.startswith(MODEL_SECTIONS) and name != "--features.n_jobs":
            raise DataError(
                f"{name} does not apply to 'molml baseline {args[0]}': a saved baseline runs with "
                "the fingerprint and estimator it was trained with (fit another baseline to "
                "change them)"
            )


def _with_run_config(args: list[str]) -> list[str]:
    if not args or args[0] == "fit" or any(a.split("=")[0] == "--config" for a in args):
        return args
    models = [v for k, v in zip(args, args[1:], strict=False) if k == "--model"]
    models += [a.split("=", 1)[1] for a in args if a.startswith("--model=")]
    if not models:
        return args
    model = Path(models[-1])
    if model.name == "baseline.json":  # the model's own file names its directory too
        model = model.parent
    run_config = model.parent / "config.yaml"
    if not run_config.is_file():
        return args
    return [args[0], f"--config={run_config}", *args[1:]]


def main(argv: Sequence[str]) -> None:
    """Entry point of ``molml baseline`` (``argv``: the arguments after ``baseline``)."""
    run(list(argv))
