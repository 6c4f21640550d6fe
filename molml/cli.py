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

import codecs
import difflib
import importlib
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

from molml._version import __version__
from molml.errors import EXIT_CODES_HELP, DataError, run_command

#: ``molml <verb>`` and what it does, for the top-level help (printed without importing
#: torch or Lightning, so ``molml --help`` answers at once).
VERBS = {
    "quickstart": "train the offline demo model and screen a library with it",
    "fit": "train a graph model (Lightning CLI; then tests the best checkpoint)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split",
    "predict": "predict with a checkpoint (test split or --data.predict_path FILE)",
    "pretrain": "pretrain an encoder on unlabelled SMILES",
    "screen": "screen a molecule library with a trained model (resumable)",
    "baseline": "fingerprint baselines: baseline fit | test | predict",
    "tune": "search hyperparameters with Optuna",
    "cv": "cross-validate a configuration",
    "explain": "atom and bond attributions, drawn",
    "report": "data and evaluation reports: report data | eval",
    "calibrate": "conformal intervals or calibrated probabilities",
    "export": "write ONNX / torch.export files",
    "serve": "serve trained models over HTTP",
}

#: verbs that read their arguments from a light options module (``parse_args``) before the
#: module that runs them (``run_parsed``) is imported
PARSED_FIRST = {
    "screen": ("molml.screen.options", "molml.screen.run"),
    "explain": ("molml.explain.options", "molml.explain.cli"),
    "export": ("molml.export.options", "molml.export.cli"),
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``molml`` console script.

    ``--debug`` anywhere in ``argv`` is taken out before parsing; errors then print their
    traceback besides the one-line message (see :func:`molml.errors.run_command`).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    _hide_lightning_tips()
    debug = "--debug" in args
    args = shipped_configs([arg for arg in args if arg != "--debug"])
    if argv is None:  # LightningCLI reads sys.argv itself
        sys.argv[1:] = args
    if not args or args[0] in ("-h", "--help"):
        print(top_level_help(), file=sys.stdout if args else sys.stderr)
        raise SystemExit(0 if args else 2)
    if args[0] == "--version":
        print(f"molml {__version__}")
        raise SystemExit(0)
    verb = args[:2] if args[:1] in (["baseline"], ["report"]) else args[:1]
    prog = " ".join(["molml", *(word for word in verb if not word.startswith("-"))])
    run_command(prog, lambda: _run_verb(args, from_sys_argv=argv is None), debug=debug)


LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


def _is_not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def _hide_lightning_tips() -> None:
    """Drop the tips for Lightning's cloud services that every Trainer start logs."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _is_not_a_tip not in logger.filters:
            logger.addFilter(_is_not_a_tip)


def top_level_help() -> str:
    """``molml --help``: the verbs, one line each, and the exit codes."""
    width = max(map(len, VERBS))
    verbs = "\n".join(f"  {verb:<{width}}  {what}" for verb, what in VERBS.items())
    epilog = textwrap.fill(EXIT_CODES_HELP, width=88)
    return (
        f"usage: molml <verb> [options]   (molml <verb> --help for the verb's options;"
        f" molml --version)\n\n"
        f"Graph and molecular deep learning: train, screen, explain, tune, export, serve.\n\n"
        f"verbs:\n{verbs}\n\n{epilog}"
    )


def _run_verb(args: list[str], from_sys_argv: bool) -> None:
    if args and args[0] in PARSED_FIRST:
        options, runner = PARSED_FIRST[args[0]]
        # --help and usage errors answer before the runner imports torch
        parsed = importlib.import_module(options).parse_args(args[1:])
        importlib.import_module(runner).run_parsed(parsed)
    elif args and args[0] == "quickstart":
        from molml.quickstart import main as quickstart

        quickstart(args[1:])
    elif args and args[0] == "pretrain":
        from molml.training import make_pretrain_cli

        _check_config_files(args)
        _refuse_options_set_from_the_data(args)
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
    elif args and args[0] == "calibrate":
        from molml.report.calibrate import main as calibrate

        calibrate(args[1:])
    elif args and args[0] == "report":
        from molml.report.cli import main as report

        report(args[1:])
    elif args and args[0] == "serve":
        from molml.serve.cli import main as serve

        serve(args[1:])
    elif args and not args[0].startswith("-") and args[0] not in VERBS:
        close = difflib.get_close_matches(args[0], VERBS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"unknown verb {args[0]!r}{hint}; the verbs are {', '.join(VERBS)}")
    else:
        _check_config_files(args)
        _refuse_options_set_from_the_data(args)
        args = _name_the_default_encoder(args)
        if from_sys_argv:
            sys.argv[1:] = args
        # the seed is recorded in the run's config.yaml; a one-line error stays one line
        logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
        from molml.training import make_cli

        _run_lightning(lambda: make_cli(None if from_sys_argv else args))


FILE_OPTIONS = ("--config", "-c", "--search")  # options whose configs/... files ship with molml


def _option_values(args: list[str], options: tuple[str, ...]) -> Iterator[tuple[int, str, str]]:
    """``(where, option, value)`` for each of ``options`` in ``args``, written ``--opt value``
    or ``--opt=value`` (a short ``-c`` also ``-cvalue``); ``where`` is the position of the
    argument holding the value."""
    for position, arg in enumerate(args):
        option, equals, value = arg.partition("=")
        attached = option[:2]
        if option not in options and attached in options and not attached.startswith("--"):
            option, equals, value = attached, "=", arg[2:].removeprefix("=")
        if option not in options:
            continue
        where = position if equals else position + 1
        if not equals:
            value = args[where] if where < len(args) else ""
        yield where, option, value


def shipped_configs(args: list[str]) -> list[str]:
    """``args`` with each ``configs/...`` file of :data:`FILE_OPTIONS` that does not exist
    here replaced by the copy shipped inside the package, so the commands of the README work
    from any folder after ``pip install molml``."""
    shipped = resources.files("molml") / "configs"
    out = list(args)
    for where, option, value in _option_values(args, FILE_OPTIONS):
        path = Path(value)
        if path.parts[:1] != ("configs",) or path.exists():
            continue
        packaged = shipped.joinpath(*path.parts[1:])
        if packaged.is_file():
            out[where] = f"{option}={packaged}" if out[where] != value else str(packaged)
            print(f"molml: {value} is not here; reading molml's own {packaged}", file=sys.stderr)
    return out


DEFAULT_ENCODER = "molml.models.DMPNN"  # MoleculeModel's encoder when none is configured


def _name_the_default_encoder(args: list[str]) -> list[str]:
    """``args`` with ``--model.encoder=molml.models.DMPNN`` before the first encoder option
    (``--model.encoder.init_args.hidden_dim 64``) when neither a config nor ``--model.encoder``
    names the class: without it, the parser has no class to give the option to."""
    named = any(_option_values(args, ("--config", "-c", "--model", "--model.encoder")))
    first = next((i for i, arg in enumerate(args) if arg.startswith("--model.encoder.")), None)
    if named or first is None:
        return args
    return [*args[:first], f"--model.encoder={DEFAULT_ENCODER}", *args[first:]]


CONFIG_OPTIONS = ("--config", "-c", "--model", "--data", "--trainer")  # options that read YAML


def _check_config_files(args: list[str]) -> None:
    """Refuse a binary file (a checkpoint, most often) given where the Lightning verbs read a
    YAML config, with the options that take it, instead of a ``UnicodeDecodeError``."""
    for _, option, value in _option_values(args, CONFIG_OPTIONS):
        path = Path(value)
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            head = handle.read(4096)
        try:  # incremental: a character cut at the 4096th byte is no binary file
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            binary = True
        else:
            binary = b"\0" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff"))
        if not binary:
            continue
        verb = args[0] if args else "fit"
        raise DataError(
            f"{option} {value}: not a YAML config (a binary file"
            f"{', a checkpoint' if head.startswith(b'PK') else ''}). A checkpoint goes to "
            f"--ckpt_path with the run's config (molml {verb} --config RUN/config.yaml "
            f"--ckpt_path {value}); to score a file with it alone: molml screen --model "
            f"{value} --input FILE --output OUT"
        )


# model options the data module sets (MolmlCLI's links), and what to give instead
SET_FROM_THE_DATA = {
    "--model.tasks": "give --data.target_columns instead",
    "--model.task_type": "give --data.task_type instead",
    "--model.num_classes": "it is the number of classes in the target column",
    "--model.task_classes": "it is each target column's number of classes",
    "--model.featurizer": "give --data.featurizer instead",
    "--model.molecule_features": "give --data.molecule_features instead",
}


def _refuse_options_set_from_the_data(args: list[str]) -> None:
    """Refuse a model option that the data module sets, naming the option to use instead
    (jsonargparse would name the link's internal source, e.g. ``data.num_classes``)."""
    for arg in args:
        option = arg.partition("=")[0]
        for linked, hint in SET_FROM_THE_DATA.items():
            if option == linked or option.startswith(f"{linked}."):
                raise DataError(f"{option} is set from the data: {hint}")


def _run_lightning(run: Callable[[], object]) -> None:
    import torch

    try:
        run()
    finally:
        # a gloo process group left to interpreter shutdown can abort the process
        # ("terminate called without an active exception") after a multi-process run
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
