"""The Lightning CLI behind ``molml fit|validate|test|predict``: :class:`MoleculeModel` and
:class:`MoleculeDataModule` with the data's task description linked into the model, molml's
default loggers and callbacks, and checks that apply to every verb."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger

from molml.callbacks import (
    EvaluationPlots,
    MlflowArtifacts,
    MolmlSaveConfig,
    PredictionWriter,
    TrainingPartCheck,
)
from molml.data.datamodule import MoleculeDataModule
from molml.data.pretraining import PretrainDataModule
from molml.errors import EXIT_CODES_HELP, CheckpointError, DataError
from molml.models.files import read_checkpoint
from molml.models.module import MoleculeModel
from molml.models.precision import check_precision, native_bf16
from molml.models.sigterm import forward_sigterm_without_broadcast
from molml.options import creatable_directory, same_config
from molml.tasks import HIGHER_IS_BETTER, LOGGED_METRICS
from molml.tracking import (
    SQLITE_PREFIX,
    absolute_tracking_uri,
    checked_tracking_uri,
    experiment_id,
    mlflow_client,
    warn_if_artifacts_elsewhere,
)

log = logging.getLogger(__name__)


# jsonargparse's report of an optional class whose constructor refused its arguments
UNION_FAILURE = re.compile(r"Errors:\s*- (.+?)\s+- Expected a <class 'NoneType'>", re.DOTALL)


class MolmlCLI(LightningCLI):
    """LightningCLI with the data module's task description linked into the model; ``fit``
    ends by testing the best checkpoint in the same process (``--test_best false`` skips it),
    as ``molml test --ckpt_path best.ckpt`` would. The option is parsed by every verb (one
    parser setup for all) and read by ``fit`` only."""

    tests_after_fit = True

    def add_arguments_to_parser(self, parser: Any) -> None:
        if self.tests_after_fit:
            parser.add_argument(
                "--test_best",
                type=bool,
                default=True,
                help="fit: test the best checkpoint on the test split when training ends",
            )
        for source, target in (
            ("data.tasks", "model.tasks"),
            ("data.task_type", "model.task_type"),
            ("data.num_classes", "model.num_classes"),
            ("data.task_classes", "model.task_classes"),
            ("data.featurizer_config", "model.featurizer"),
            ("data.molecule_features_config", "model.molecule_features"),
        ):
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.set_defaults({f"trainer.{key}": value for key, value in TRAINER_DEFAULTS.items()})

    def before_instantiate_classes(self) -> None:
        """Refuse remote checkpoints (Lightning would fetch and unpickle them), skip the
        pretrained encoder of a fine-tuned model when a checkpoint supplies its weights, and
        make relative MLflow ``sqlite:///`` stores absolute (see :mod:`molml.tracking`)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        ckpt_path = config.get("ckpt_path")
        if isinstance(ckpt_path, str) and "://" in ckpt_path:
            raise DataError(
                f"--ckpt_path {ckpt_path}: only local checkpoint files are read, not URLs"
            )
        if ckpt_path in LIGHTNING_CKPT_ALIASES:
            # Lightning looks for them in this command's own, new run folder, where there are
            # none: the model would run (or train) from its initial weights
            raise DataError(
                f"--ckpt_path {ckpt_path}: give the checkpoint file, e.g. "
                f"runs/<name>/version_N/checkpoints/{ckpt_path}.ckpt"
            )
        _check_checkpointing(config.trainer)
        if self.subcommand == "predict":
            _check_prediction_outputs(config.trainer.get("callbacks"))
        data = config.get("data") or {}
        predicting_a_file = self.subcommand == "predict" and data.get("predict_path")
        if predicting_a_file and data.get("path") and not Path(data.path).exists():
            raise DataError(
                f"data.path {data.path}: not found (working directory {Path.cwd()}); molml "
                "predict reads the run's training data for its tasks and split. To predict "
                "from the checkpoint alone: molml screen --model "
                f"{shlex.quote(str(ckpt_path or 'best.ckpt'))} "
                f"--input {shlex.quote(str(data.predict_path))} --output predictions.csv"
            )
        if ckpt_path is not None and config.get("model") and config.model.get("pretrained"):
            # every weight comes from the checkpoint: the encoder it was fine-tuned from (a
            # local file that may have moved since) is not read again
            config.model.pretrained = None
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if init_args is None or not str(logger.class_path).endswith("MLFlowLogger"):
                continue
            # without a tracking_uri, MLFlowLogger falls back to $MLFLOW_TRACKING_URI, then to
            # a file store in ./mlruns
            uri = init_args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI", "mlruns")
            uri = checked_tracking_uri(uri, "MLFlowLogger tracking_uri")
            if uri is None:
                raise DataError(
                    "MLFlowLogger tracking_uri is 'none': to log nothing to MLflow, leave the "
                    "MLFlowLogger out of trainer.logger"
                )
            init_args.tracking_uri = uri  # as written: made absolute for the run only
            if uri.startswith(SQLITE_PREFIX):  # made whole before MLFlowLogger opens it
                mlflow_client(uri)

    checkpoint_spec: dict[str, Any] | None = None  # the model spec of --ckpt_path's file

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyperparameters into the config here, with
        ``torch.load``: a file that is not a molml checkpoint is refused first, in one line,
        and its model spec is kept for :meth:`_check_checkpoint`."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path is not None and str(path) not in LIGHTNING_CKPT_ALIASES and "://" not in path:
            self.checkpoint_spec = read_checkpoint(path)["molml"]
        given = _plain(self.config[subcommand].get("model")) if subcommand else None
        try:
            super()._parse_ckpt_path()
        except argparse.ArgumentError as exc:
            raise CheckpointError(
                f"{path}: its stored hyperparameters do not parse as this molml's model "
                f"options: {exc}"
            ) from exc
        if subcommand == "fit" and isinstance(given, dict):
            flags = _model_flags(self._command_line)
            stored = _plain(self.config["fit"].get("model"))
            _check_resumed_model_options(
                path, {k: v for k, v in given.items() if flags is None or k in flags}, stored
            )

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Lightning's parse; the command line is kept for :meth:`_parse_ckpt_path`."""
        command_line = sys.argv[1:] if args is None else args
        self._command_line = list(command_line) if isinstance(command_line, (list, tuple)) else []
        super().parse_arguments(parser, args)

    def _run_subcommand(self, subcommand: str) -> None:
        """Run the verb in a run folder of its own; a run that fails before writing anything
        there leaves no empty ``version_N`` behind."""
        claimed = claim_log_versions(self.trainer)
        prepare_mlflow_loggers(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            for folder in claimed:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise

    # the callbacks that write what the verbs promise (test metrics and plots, predictions,
    # MLflow artifacts): added when a config's own trainer.callbacks list leaves them out
    output_callbacks: tuple[type[L.Callback], ...] = (
        MlflowArtifacts,
        EvaluationPlots,
        PredictionWriter,
    )

    def instantiate_classes(self) -> None:
        """Build the model, data and trainer; a class option its own code refuses (e.g.
        ``--data.featurizer.init_args.preset foo``) is one line, exit 2; the output callbacks
        a config's own ``trainer.callbacks`` list leaves out are added; strategies whose
        processes are spawned or forked are refused."""
        try:
            super().instantiate_classes()
        except ValueError as exc:  # jsonargparse wraps the class's error in a Union report
            reason = UNION_FAILURE.search(str(exc))
            if reason is None:
                raise
            raise DataError(reason.group(1)) from exc
        for kind in self.output_callbacks:
            if not any(isinstance(c, kind) for c in self.trainer.callbacks):
                self.trainer.callbacks.append(kind())
        start = getattr(self.trainer.strategy, "_start_method", "popen")
        if start != "popen":  # ddp_spawn, ddp_fork, ddp_notebook (or "auto" in a notebook)
            # the processes train on copies of the model and trainer: the loggers of the
            # launching process, which tests and records the run afterwards, see none of it
            raise DataError(
                f"trainer.strategy: processes started by {start} are not supported; molml runs "
                "several devices with --trainer.strategy ddp (one process per device, started "
                "like this command)"
            )
        check_precision(self.trainer.precision)  # before any run folder is made
        emulated = not native_bf16("cpu") and isinstance(self.trainer.accelerator, CPUAccelerator)
        bf16 = str(self.trainer.precision) == "bf16-mixed"
        if bf16 and emulated and self.trainer.is_global_zero and not _WARNED["emulated_bf16"]:
            _WARNED["emulated_bf16"] = True  # once per process: tune builds a trainer per fit
            log.warning(
                "trainer.precision bf16-mixed on this CPU is emulated (it has no AVX512-BF16 or "
                "AMX): expect several times longer steps than with 32-true"
            )

    def before_fit(self) -> None:
        self._check_finite_schedule()
        self._check_checkpoint("fit")
        self._check_monitored_metrics()
        self._check_checkpoint_folders()

    def _check_finite_schedule(self) -> None:
        """The learning-rate schedule needs a step count (the model checks it too, but only
        once the data is set up and the run folder written)."""
        if self.trainer.max_epochs == -1 and self.trainer.max_steps == -1:
            raise DataError(
                "the learning-rate schedule needs a finite number of steps: set "
                "trainer.max_epochs (or trainer.max_steps), not -1"
            )

    def _check_checkpoint_folders(self) -> None:
        """A fit whose checkpoints would go into a folder already holding an earlier run's
        (a fixed logger version or ``dirpath``) is refused before any work, unless it resumes
        from a checkpoint in that folder: Lightning would write ``best-v1.ckpt`` beside the
        earlier ``best.ckpt``, which every later step would still take for this run's."""
        resumed = self.config_init["fit"].get("ckpt_path")
        resumed_in = Path(resumed).parent.resolve() if resumed else None
        for callback in self.trainer.checkpoint_callbacks:
            folder = checkpoint_folder(self.trainer, callback)
            if folder is None or folder.resolve() == resumed_in:
                continue
            earlier = sorted(p.name for p in folder.glob("*.ckpt"))
            if earlier:
                resume = (
                    f"resume that run with --ckpt_path {folder / 'last.ckpt'}, or "
                    if "last.ckpt" in earlier
                    else ""
                )
                raise DataError(
                    f"{folder} already holds the checkpoints of an earlier run "
                    f"({', '.join(earlier)}); a new fit would write beside them: {resume}"
                    "give the logger another version (or the checkpoint another dirpath), "
                    "or delete the folder"
                )

    def _check_monitored_metrics(self) -> None:
        check_monitored_metrics(self.trainer, self.model)

    def before_validate(self) -> None:
        self._check_checkpoint("validate")

    def before_test(self) -> None:
        self._check_checkpoint("test")

    def before_predict(self) -> None:
        self._check_checkpoint("predict")

    def after_predict(self) -> None:
        """Lightning runs no prediction loop when no molecule could be featurized: the rows
        are written all the same, each with its reason."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, PredictionWriter) and not callback.written:
                callback.write_predictions(self.trainer, self.model, [])

    def _check_checkpoint(self, subcommand: str) -> None:
        """``--ckpt_path`` must be a molml checkpoint (else :class:`CheckpointError`, exit 3)
        of the model the config builds: the same tasks, featurizer, encoder and head (else
        the checkpoint's weights would be read as another model's). ``validate``, ``test``
        and ``predict`` need one: without it they would run an untrained model."""
        path = self.config_init[subcommand].get("ckpt_path")
        if path is None:
            if subcommand != "fit":
                raise DataError(
                    f"molml {subcommand} needs --ckpt_path (the trained checkpoint); without "
                    "it the config's model would run untrained"
                )
            return
        differences = model_differences(self.checkpoint_spec, self.model.spec())
        if differences:
            raise CheckpointError(
                f"{path} holds another model than this config builds ({'; '.join(differences)});"
                " use the config.yaml saved with the checkpoint's run"
            )
        if subcommand != "predict":
            self._check_training_part(path)

    def _check_training_part(self, path: str) -> None:
        """Warn, once the data is set up, when the data and split give another training part
        than the checkpoint's (recorded since ``train_sha256`` exists): its validation and test
        parts may hold molecules it was trained on."""
        trained = self.checkpoint_spec.get("training_data") or {}
        if trained.get("train_sha256"):
            self.trainer.callbacks.append(TrainingPartCheck(path, trained))

    def after_fit(self) -> None:
        """Test the best checkpoint on the test split, unless ``--test_best false``."""
        if not self.config_init["fit"].get("test_best"):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "")
        if not best:
            log.warning("no checkpoint was saved, so none was tested (see --test_best)")
            return
        if getattr(checkpoint, "monitor", None) is None:
            log.warning("the checkpoint callback monitors no metric; testing the last: %s", best)
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)


_WARNED = {"emulated_bf16": False}


def check_monitored_metrics(trainer: L.Trainer, model: L.LightningModule) -> None:
    """A callback monitoring a validation metric that this model's task type (or tasks)
    never logs, e.g. ``val/rmse`` on a classifier, is refused before training rather than
    failing after the first epoch; so is one that would keep the worst epoch (``mode: min``
    on ``val/roc_auc``, ``mode: max`` on ``val/rmse`` or the loss)."""
    logged = LOGGED_METRICS.get(getattr(model, "task_type", None), ())
    if not logged:
        return
    known = {f"val/{name}" for name in logged}
    known |= {f"val/{name}/{task}" for name in logged for task in model.tasks}
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or not monitor.startswith("val/"):
            continue
        metric = monitor.split("/")[1]
        kind = type(callback).__name__
        if metric in HIGHER_IS_BETTER and monitor not in known:
            raise DataError(
                f"{kind} monitors {monitor!r}, which this {model.task_type} model on tasks "
                f"{model.tasks} does not log; it logs val/loss, "
                f"{', '.join(f'val/{name}' for name in logged)} and each of those per task as "
                "val/<metric>/<task>"
            )
        higher = HIGHER_IS_BETTER.get(metric, False if metric == "loss" else None)
        mode = getattr(callback, "mode", None)
        if higher is not None and mode in ("min", "max") and (mode == "max") != higher:
            raise DataError(
                f"{kind} monitors {monitor!r} with mode {mode!r}, but "
                f"{'higher' if higher else 'lower'} is better: it would keep the worst "
                f"epoch; set mode: {'max' if higher else 'min'}"
            )


def _model_flags(command_line: list[Any]) -> set[str] | None:
    """The model options set on the command line: ``--model.lr 0.05`` -> ``lr``; ``None``
    (every option) for the whole group (``--model cfg.yaml``, ``--model '{...}'``)."""
    tokens = [token for token in command_line if isinstance(token, str)]
    if any(token == "--model" or token.startswith("--model=") for token in tokens):
        return None
    return {
        token.removeprefix("--model.").split("=")[0].split(".")[0]
        for token in tokens
        if token.startswith("--model.")
    }


def _check_resumed_model_options(path: str, given: dict[str, Any], stored: dict[str, Any]) -> None:
    """A resumed fit runs the checkpoint's model options (Lightning reads them over the
    config's) with its optimizer state: ``given`` command-line options that differ would be
    dropped unseen."""

    differing = [key for key in given if not same_config(given[key], stored.get(key))]
    if differing:
        shown = ", ".join(
            f"model.{key} {given[key]!r} (checkpoint: {stored.get(key)!r})" for key in differing
        )
        raise DataError(
            f"--ckpt_path {path} resumes a fit with the checkpoint's model options and optimizer "
            f"state; {shown} would not apply: leave them out to resume, or start a new fit "
            "without --ckpt_path to train with them"
        )


def _plain(value: Any) -> Any:
    """A parsed config section as plain data (jsonargparse Namespaces as dicts)."""
    return value.as_dict() if hasattr(value, "as_dict") else value


# --ckpt_path values that Lightning resolves itself
LIGHTNING_CKPT_ALIASES = ("best", "last", "hpc", "registry")
# model arguments linked from the data config (see add_arguments_to_parser): Lightning puts a
# checkpoint's other hyperparameters into the config, but the links set these from the data
DATA_LINKED = ("num_classes", "task_classes", "molecule_features")


def claim_log_versions(trainer: L.Trainer) -> list[Path]:
    """Give each local CSV or TensorBoard logger without a fixed version the next free
    ``version_N`` by creating that folder (an atomic step), so that two runs started at once
    under one name never share a folder; returns the folders created. Only the main process
    claims: the other processes of a multi-device run take its checkpoint folder from it."""
    claimed: list[Path] = []
    if trainer.global_rank != 0:
        return claimed
    for logger in trainer.loggers:
        if not isinstance(logger, (CSVLogger, TensorBoardLogger)) or logger._version is not None:
            continue
        root = Path(logger.root_dir)
        if "://" in str(logger.root_dir):
            continue
        root.mkdir(parents=True, exist_ok=True)
        taken = [p.name.removeprefix("version_") for p in root.glob("version_*")]
        version = max((int(t) + 1 for t in taken if t.isdigit()), default=0)
        while True:
            try:
                (root / f"version_{version}").mkdir()
                break
            except FileExistsError:  # another run took it just now
                version += 1
        logger._version = version  # what its version property would have picked, reserved
        claimed.append(root / f"version_{version}")
    return claimed


def checkpoint_folder(trainer: L.Trainer, callback: Any) -> Path | None:
    """The folder ``callback`` (a ``ModelCheckpoint``) will write to, resolved as Lightning
    does at setup, when it is known before then without side effects: its ``dirpath``, or
    the version folder of a first logger that is a CSV or TensorBoard logger (an MLflow
    logger's version is a new run id, so its folder is always new)."""
    if callback.dirpath:
        return Path(callback.dirpath)
    if not trainer.loggers:
        return Path(trainer.default_root_dir) / "checkpoints"
    logger = trainer.loggers[0]
    if not isinstance(logger, (CSVLogger, TensorBoardLogger)) or "://" in str(logger.root_dir):
        return None
    save_dir = logger.save_dir or trainer.default_root_dir
    return Path(save_dir) / str(logger.name) / version_folder(logger) / "checkpoints"


def version_folder(logger: CSVLogger | TensorBoardLogger) -> str:
    """The run folder's name under the logger's name: ``version_<n>``, or a version given as
    text as it is."""
    version = logger.version
    return version if isinstance(version, str) else f"version_{version}"


def prepare_mlflow_loggers(trainer: L.Trainer) -> None:
    """Before a verb runs: each MLflow logger's ``sqlite:///`` URI made absolute for this run
    (the saved config.yaml keeps it as written, so a moved project keeps its database) and, in
    the main process, its experiment got or created race-free (Lightning's own get-or-create
    fails when two runs create it at once), with a warning if its artifact folder is gone."""
    for logger in trainer.loggers:
        if not isinstance(logger, MLFlowLogger):
            continue
        if logger._tracking_uri.startswith(SQLITE_PREFIX):
            logger._tracking_uri = absolute_tracking_uri(logger._tracking_uri)
            logger._mlflow_client = mlflow_client(logger._tracking_uri)
        if trainer.global_rank == 0 and logger._run_id is None:
            if logger._run_name is None and not (logger.tags or {}).get("mlflow.runName"):
                logger._run_name = _run_folder_name(trainer)
            client = logger._mlflow_client
            logger._experiment_id = experiment_id(
                client, logger._experiment_name, logger._artifact_location
            )
            warn_if_artifacts_elsewhere(client, logger._experiment_id)


def _check_checkpointing(trainer: Any) -> None:
    """``--trainer.enable_checkpointing false`` beside a checkpoint callback (molml's default
    list has one) is refused by name, before Lightning raises its own error."""
    if trainer.get("enable_checkpointing") is not False:
        return
    callbacks = trainer.get("callbacks")
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        if str(getattr(callback, "class_path", "")).endswith("ModelCheckpoint"):
            raise DataError(
                "--trainer.enable_checkpointing false: the run's callbacks keep the best "
                "checkpoint (fit tests it when training ends, and predict, screen and explain "
                "load it); leave checkpointing on, or give a trainer.callbacks list without "
                "a ModelCheckpoint"
            )


def _check_prediction_outputs(callbacks: Any) -> None:
    """A ``PredictionWriter`` output that cannot be written is refused before any work (not
    once every molecule has been featurized and predicted)."""
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        if not str(getattr(callback, "class_path", "")).endswith("PredictionWriter"):
            continue
        output = (getattr(callback, "init_args", None) or {}).get("output")
        if not output:  # the run folder's predictions.csv
            continue
        problem = f"PredictionWriter output {output}"
        if Path(output).is_dir():
            raise DataError(f"{problem}: is a folder; name a CSV file")
        creatable_directory(Path(output).parent, f"{problem}: cannot be written")


def _run_folder_name(trainer: L.Trainer) -> str | None:
    """``<name>/version_<n>`` of the run's CSV or TensorBoard logger: the name an MLflow run
    gets (else MLflow draws a random one, the same in every run once the seed is fixed)."""
    for logger in trainer.loggers:
        if isinstance(logger, (CSVLogger, TensorBoardLogger)):
            return f"{logger.name}/{version_folder(logger)}"
    return None


def model_differences(stored: dict[str, Any], configured: dict[str, Any]) -> list[str]:
    """Where the model spec of a checkpoint (``stored``) and that of a config differ:
    tasks, task type, featurizer, encoder (dropout aside) and :data:`DATA_LINKED`."""

    def encoder(spec: dict[str, Any]) -> dict[str, Any]:
        config = spec.get("encoder") or {}
        init_args = {k: v for k, v in (config.get("init_args") or {}).items() if "dropout" not in k}
        return {"class_path": config.get("class_path"), "init_args": init_args}

    def hparams(spec: dict[str, Any]) -> dict[str, Any]:
        return spec.get("hparams") or {}

    # a checkpoint from before per-task class counts has none: the counts the data gives
    # now only mask its extra classes (its weights are the same), so they are not compared
    linked = [
        key for key in DATA_LINKED if key != "task_classes" or "task_classes" in hparams(stored)
    ]

    pairs = {
        "tasks": (stored.get("tasks"), configured.get("tasks")),
        "task type": (stored.get("task_type"), configured.get("task_type")),
        "featurizer": (stored.get("featurizer"), configured.get("featurizer")),
        "encoder": (encoder(stored), encoder(configured)),
        **{
            f"model.{key}": (hparams(stored).get(key), hparams(configured).get(key))
            for key in linked
        },
    }
    return [
        f"{name}: checkpoint {a!r}, config {b!r}"
        for name, (a, b) in pairs.items()
        if not same_config(a, b)
    ]


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
            "class_path": "molml.callbacks.ModelCheckpoint",
            "init_args": {"monitor": "val/loss", "filename": "best", "save_last": True},
        },
        {"class_path": "molml.callbacks.MlflowArtifacts"},
        {"class_path": "molml.callbacks.EvaluationPlots"},
        {"class_path": "molml.callbacks.PredictionWriter"},
    ],
}


DESCRIPTION = (
    "Molecular property prediction. Lightning verbs: fit, validate, test, predict; "
    "also: molml quickstart | pretrain | screen | baseline fit|test|predict | tune | cv | "
    "explain | report data|eval | export | serve (each with --help)."
)


class PretrainCLI(MolmlCLI):
    """``molml pretrain``: ``fit`` of a :class:`MoleculeModel` on RDKit descriptor targets of
    unlabelled molecules (:class:`PretrainDataModule`). The shards are prepared before the
    Trainer starts its processes. With ``--resume true`` (the default) a run whose
    ``ModelCheckpoint`` has a fixed ``dirpath`` holding ``last.ckpt`` resumes from it, after
    checking that the checkpoint's model is the one configured; checkpoints are written at
    epoch ends, and the training stream is rebuilt every epoch with that epoch's shuffle.
    Unlabelled data has no test split, so nothing is tested after fitting."""

    tests_after_fit = False
    output_callbacks = (MlflowArtifacts,)  # nothing is tested or predicted

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--resume", type=bool, default=True, help="resume from last.ckpt if there is one"
        )
        parser.set_defaults({"trainer.reload_dataloaders_every_n_epochs": 1})

    def before_fit(self) -> None:
        self._check_finite_schedule()
        self._check_checkpoint("fit")
        # checked before the shards are prepared: other sources would be featurized first
        last = self._last_to_resume(SOURCE_KEYS)
        self.datamodule.prepare_shards()
        if last is not None:
            self._check_resumable(last, ("train", "val"))  # known once the shards are
            log.warning("resuming pretraining from %s", last)
            self.config_init["fit"]["ckpt_path"] = str(last)

    def _last_to_resume(self, data_keys: tuple[str, ...]) -> Path | None:
        """The ``last.ckpt`` this run resumes from (checked against the model and the data's
        ``data_keys``), or None: another ``--ckpt_path``, ``--resume false`` (the earlier
        checkpoints are then deleted), no fixed checkpoint folder or nothing saved yet."""
        config = self.config_init["fit"]
        if config.get("ckpt_path") is not None:
            return None
        if not config.get("resume"):
            self._start_afresh()
            return None
        dirpath = self._resumable_checkpoint_folder()
        if dirpath is None:
            log.warning(
                "pretrain: no ModelCheckpoint saves last.ckpt in a fixed dirpath, so running "
                "this command again after a stop starts afresh; resume a run with --ckpt_path, "
                "or see configs/pretrain_dmpnn.yaml for checkpoints that the same command "
                "resumes from"
            )
            return None
        last = Path(dirpath) / "last.ckpt"
        if not last.is_file():
            return None
        self._check_resumable(last, data_keys)
        return last

    def _check_resumable(self, last: Path, data_keys: tuple[str, ...]) -> None:
        """Refuse resuming from ``last`` when it holds another model or data (``data_keys`` of
        :func:`pretraining_data_differences`)."""
        try:
            stored = read_checkpoint(last)["molml"]
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}; to start afresh instead of resuming from it, pass --resume false"
            ) from exc
        mine = self.model.spec()
        for key in ("encoder", "hparams", "tasks", "featurizer"):
            if not same_config(stored.get(key), mine[key]):
                raise DataError(
                    f"{last} holds a run with another model {key} than this config; "
                    "resume with the same config, or pass --resume false (or another "
                    "checkpoint dirpath) to start afresh"
                )
        changed = pretraining_data_differences(
            stored.get("training_data") or {}, self.datamodule, data_keys
        )
        if changed:
            raise DataError(
                f"{last} holds a run pretrained on other data ({'; '.join(changed)}); resume "
                "with the same data options, or pass --resume false (or another checkpoint "
                "dirpath) to start afresh"
            )

    def _resumable_checkpoint_folder(self) -> str | None:
        """The fixed ``dirpath`` of a ``ModelCheckpoint`` of this run that saves ``last.ckpt``
        (None without one: nothing a later run of the same command could resume from)."""
        for callback in self.trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None) and callback.save_last:
                return callback.dirpath
        return None

    def _start_afresh(self) -> None:
        """``--resume false``: the checkpoints an earlier run of this run's checkpoint
        callbacks wrote (``last*.ckpt`` and their own file names, ``-vN`` copies included)
        are deleted before training (kept, a ``last.ckpt`` would be resumed by a later run if
        this one stopped before writing its own); other files in the folder are left be."""
        for callback in self.trainer.checkpoint_callbacks:
            folder = checkpoint_folder(self.trainer, callback)
            written = _written_checkpoint_names(callback.filename)
            earlier = sorted(
                path
                for path in (folder.glob("*.ckpt") if folder else [])
                if written.fullmatch(path.name)
            )
            if earlier:
                log.warning(
                    "starting afresh: deleting the earlier run's checkpoints in %s (%s)",
                    folder,
                    ", ".join(p.name for p in earlier),
                )
                for path in earlier:
                    path.unlink(missing_ok=True)  # other DDP ranks run this too
            # on every rank alike (Lightning broadcasts the version check from all of them)
            callback._enable_version_counter = False


def _written_checkpoint_names(filename: str | None) -> re.Pattern[str]:
    """The file names a checkpoint callback writes: ``last.ckpt`` and ``<filename>.ckpt``, each
    with Lightning's ``-vN`` copies; a templated name (``{epoch}``, Lightning's default
    ``epoch=..-step=..``) by its fixed start. A user's ``best_finetuned.ckpt`` is none of them."""
    if filename is None or "{" in filename:
        start = re.escape((filename or "epoch=").split("{")[0])
        own = f"{start}.*" if start else r"(?!)"
    else:
        own = re.escape(filename)
    return re.compile(rf"(last|{own})(-v\d+)?\.ckpt")


SOURCE_KEYS = ("sources", "source_bytes", "source_sha256", "max_molecules")


def pretraining_data_differences(
    stored: dict[str, Any], data: PretrainDataModule, keys: tuple[str, ...]
) -> list[str]:
    """What differs between the pretraining data a checkpoint recorded and ``data``'s: the
    sources, their sizes in bytes and content, the molecule limit and the molecules read
    (fields the checkpoint did not record are not compared)."""
    now = data.describe()
    return [
        f"{key}: checkpoint {stored[key]!r}, now {now[key]!r}"
        for key in keys
        if key in stored and stored[key] != now[key]
    ]


def make_pretrain_cli(args: list[str]) -> PretrainCLI:
    """Run ``molml pretrain`` with ``args`` (``--config`` files and dotted overrides)."""
    return _build(
        PretrainCLI, ["fit", *args], run=True, data=PretrainDataModule, prog="molml pretrain"
    )


def parser_kwargs(**kwargs: str) -> dict[str, Any]:
    """The CLI parsers' settings: a usage error raises instead of printing the whole usage, so
    it prints as one line with exit code 2 (see :func:`molml.errors.run_command`)."""
    # jsonargparse hands exit_on_error on to the verbs' parsers; the epilog goes to each verb
    verbs = {verb: {"epilog": EXIT_CODES_HELP} for verb in LightningCLI.subcommands()}
    return {
        **kwargs,
        **verbs,
        "epilog": EXIT_CODES_HELP,
        "exit_on_error": False,
        "allow_abbrev": False,
    }


def make_cli(args: list[str] | dict[str, Any] | None = None, run: bool = True) -> MolmlCLI:
    """Build the Lightning CLI (``run=False`` instantiates without running a verb; ``args`` may
    then be a complete config as a dict, e.g. from :func:`full_config`)."""
    forward_sigterm_without_broadcast()
    return _build(MolmlCLI, args, run)


class _ParseOnly(MolmlCLI):
    """Parses and checks a config but instantiates nothing."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def full_config(args: list[str]) -> dict[str, Any]:
    """The complete config (every option, defaults filled in) that ``molml fit`` would run with
    ``args`` (``--config`` files and dotted overrides, no verb), read without building a model
    or reading data; ``molml fit --config`` accepts it written as YAML."""
    cli = _build(_ParseOnly, args, run=False)
    return yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))


def _build(
    cli_class: type[MolmlCLI],
    args: list[str] | dict[str, Any] | None,
    run: bool,
    data: type[L.LightningDataModule] = MoleculeDataModule,
    **parser: str,
) -> Any:
    """``cli_class`` on ``data`` (``parser``: the parser's ``prog`` and ``description``,
    by default molml's own)."""
    parser = parser or {"prog": "molml", "description": DESCRIPTION}
    with warnings.catch_warnings():
        # args given here come from molml's own verbs (sys.argv behind the verb, or a config
        # built for the quickstart or a tuning trial): not the mix-up the warning is about
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return cli_class(
            MoleculeModel,
            data,
            save_config_callback=MolmlSaveConfig,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            args=args,
            run=run,
            parser_kwargs=parser_kwargs(**parser),
        )
