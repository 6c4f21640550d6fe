"""The ``molml`` command.

``molml fit|validate|test|predict`` are Lightning CLI verbs over :class:`MoleculeModel` and
:class:`MoleculeDataModule` (``--config``, ``--print_config`` and dotted overrides work as in
any LightningCLI); ``molml quickstart`` trains and screens the offline demo model;
``molml baseline fit|test|predict`` runs fingerprint baselines (:mod:`molml.baselines.cli`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from lightning.pytorch.cli import LightningCLI

from molml.callbacks import MolmlSaveConfig
from molml.data.datamodule import MoleculeDataModule
from molml.errors import EXIT_CODES_HELP, run_command
from molml.models.module import MoleculeModel
from molml.tracking import absolute_tracking_uri


class MolmlCLI(LightningCLI):
    """LightningCLI with the data module's task description linked into the model."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        for source, target in (
            ("data.tasks", "model.tasks"),
            ("data.task_type", "model.task_type"),
            ("data.num_classes", "model.num_classes"),
            ("data.featurizer_config", "model.featurizer"),
            ("data.molecule_features_config", "model.molecule_features"),
        ):
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.set_defaults({f"trainer.{key}": value for key, value in TRAINER_DEFAULTS.items()})

    def before_instantiate_classes(self) -> None:
        """Make relative MLflow ``sqlite:///`` stores absolute (see :mod:`molml.tracking`)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and isinstance(init_args.get("tracking_uri"), str):
                init_args.tracking_uri = absolute_tracking_uri(init_args.tracking_uri)


TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 50,
    "deterministic": "warn",
    "logger": [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        {
            "class_path": "lightning.pytorch.loggers.MLFlowLogger",
            "init_args": {
                "tracking_uri": "sqlite:///runs/mlflow.db",
                "artifact_location": "runs/mlartifacts",
            },
        },
    ],
    "callbacks": [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"monitor": "val/loss", "filename": "best", "save_last": True},
        },
        {"class_path": "molml.callbacks.MlflowArtifacts"},
        {"class_path": "molml.callbacks.EvaluationPlots"},
        {"class_path": "molml.callbacks.PredictionWriter"},
    ],
}


DESCRIPTION = (
    "Molecular property prediction. Lightning verbs: fit, validate, test, predict; "
    "also: molml quickstart | screen | baseline fit|test|predict (each with --help)."
)


def make_cli(args: list[str] | None = None, run: bool = True) -> MolmlCLI:
    """Build the Lightning CLI (``run=False`` instantiates without running a verb)."""
    return MolmlCLI(
        MoleculeModel,
        MoleculeDataModule,
        save_config_callback=MolmlSaveConfig,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        args=args,
        run=run,
        parser_kwargs={"prog": "molml", "description": DESCRIPTION, "epilog": EXIT_CODES_HELP},
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``molml`` console script.

    ``--debug`` anywhere in ``argv`` is taken out before parsing; errors then print their
    traceback besides the one-line message (see :func:`molml.errors.run_command`).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    args = [arg for arg in args if arg != "--debug"]
    if argv is None:  # LightningCLI reads sys.argv itself
        sys.argv[1:] = args
    verb = args[:2] if args[:1] == ["baseline"] else args[:1]
    prog = " ".join(["molml", *(word for word in verb if not word.startswith("-"))])
    run_command(prog, lambda: _run_verb(args, from_sys_argv=argv is None), debug=debug)


def _run_verb(args: list[str], from_sys_argv: bool) -> None:
    if args and args[0] == "quickstart":
        from molml.quickstart import main as quickstart

        quickstart(args[1:])
    elif args and args[0] == "baseline":
        from molml.baselines.cli import main as baseline

        baseline(args[1:])
    elif args and args[0] == "screen":
        from molml.screen.run import main as screen

        screen(args[1:])
    else:
        # the seed is recorded in the run's config.yaml; a one-line error stays one line
        logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
        make_cli(None if from_sys_argv else args)


if __name__ == "__main__":
    main()
