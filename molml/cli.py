"""The ``molml`` command.

``molml fit|validate|test|predict`` are Lightning CLI verbs over :class:`MoleculeModel` and
:class:`MoleculeDataModule` (``--config``, ``--print_config`` and dotted overrides work as in
any LightningCLI); ``molml quickstart`` trains and screens the offline demo model;
``molml pretrain`` pretrains an encoder on unlabelled SMILES (:class:`~molml.training.PretrainCLI`);
``molml baseline fit|test|predict`` runs fingerprint baselines (:mod:`molml.baselines.cli`);
``molml tune`` and ``molml cv`` search hyperparameters and cross-validate (:mod:`molml.tune`).
``molml explain`` draws attributions (:mod:`molml.explain.cli`).
``molml report`` writes data and evaluation reports; ``molml calibrate`` fits conformal
intervals or calibrated probabilities on a validation split (:mod:`molml.report`).
``molml serve`` serves trained models over HTTP (:mod:`molml.serve.cli`).
``molml export`` writes ONNX / ``torch.export`` files (:mod:`molml.export.cli`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import torch

from molml.errors import run_command
from molml.training import make_cli, make_pretrain_cli


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
    verb = args[:2] if args[:1] in (["baseline"], ["report"]) else args[:1]
    prog = " ".join(["molml", *(word for word in verb if not word.startswith("-"))])
    run_command(prog, lambda: _run_verb(args, from_sys_argv=argv is None), debug=debug)


def _run_verb(args: list[str], from_sys_argv: bool) -> None:
    if args and args[0] == "quickstart":
        from molml.quickstart import main as quickstart

        quickstart(args[1:])
    elif args and args[0] == "pretrain":
        _run_lightning(lambda: make_pretrain_cli(args[1:]))
    elif args and args[0] == "baseline":
        from molml.baselines.cli import main as baseline

        baseline(args[1:])
    elif args and args[0] == "tune":
        from molml.tune.cli import tune_main

        tune_main(args[1:])
    elif args and args[0] == "cv":
        from molml.tune.cli import cv_main

        cv_main(args[1:])
    elif args and args[0] == "explain":
        from molml.explain.cli import main as explain

        explain(args[1:])
    elif args and args[0] == "screen":
        from molml.screen.run import main as screen

        screen(args[1:])
    elif args and args[0] == "calibrate":
        from molml.report.calibrate import main as calibrate

        calibrate(args[1:])
    elif args and args[0] == "report":
        from molml.report.cli import main as report

        report(args[1:])
    elif args and args[0] == "serve":
        from molml.serve.cli import main as serve

        serve(args[1:])
    elif args and args[0] == "export":
        from molml.export.cli import main as export

        export(args[1:])
    else:
        # the seed is recorded in the run's config.yaml; a one-line error stays one line
        logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
        _run_lightning(lambda: make_cli(None if from_sys_argv else args))


def _run_lightning(run: Callable[[], object]) -> None:
    try:
        run()
    finally:
        # a gloo process group left to interpreter shutdown can abort the process
        # ("terminate called without an active exception") after a multi-process run
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
