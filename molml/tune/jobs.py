"""What tuning and cross-validation train: a graph model (the Lightning CLI's config) or a
fingerprint baseline (a ``molml baseline`` config), behind one small interface.

A :class:`Job` holds the complete config (every option, defaults filled in), fits one config
scored on the validation split (optionally reporting each epoch to an Optuna trial for pruning)
and evaluates a saved model on the test split, which fitting never reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import optuna
import pandas as pd
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch.cli import SaveConfigCallback
from optuna_integration import PyTorchLightningPruningCallback

from molml.baselines.config import BaselineConfig
from molml.baselines.data import load_fingerprint_data
from molml.baselines.model import load_baseline
from molml.baselines.run import evaluate, fit_baseline
from molml.callbacks import EvaluationPlots
from molml.data.datamodule import MoleculeTable
from molml.data.splits import Split
from molml.errors import DataError
from molml.tasks import DEFAULT_METRIC, HIGHER_IS_BETTER, LOGGED_METRICS
from molml.tracking import SQLITE_PREFIX
from molml.training import check_monitored_metrics, full_config, make_cli

DEFAULT_TRACKING_URI = f"{SQLITE_PREFIX}runs/mlflow.db"
CURVES = "curves"  # a trial's user attribute: {metric: [[epoch, value], ...]}


@dataclass
class Fitted:
    """One fitted config: its validation score, every validation metric and the saved model."""

    value: float
    val_metrics: dict[str, float]
    model_path: Path | None
    curves: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)


@dataclass
class SplitTable:
    """The rows of a job's data and its train/val/test split (0-based row positions)."""

    smiles: list[str]
    targets: np.ndarray
    tasks: list[str]
    task_type: str
    split: Split


def data_fingerprint(table: SplitTable) -> str:
    """A SHA-256 of the data's molecules, tasks and labels, in row order: a resumed study or
    cross-validation must see the same rows (its recorded splits are row positions)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([table.tasks, table.task_type, table.smiles]).encode())
    digest.update(np.ascontiguousarray(table.targets, dtype=np.float64).tobytes())
    return digest.hexdigest()


class Job(ABC):
    """A config to tune or cross-validate."""

    kind: str
    open_maps: tuple[str, ...] = ()

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    @property
    def data(self) -> dict[str, Any]:
        return self.config["data"]

    def table(self) -> MoleculeTable:
        """The data's table (read and validated, not featurized)."""
        keys = ("data_dir", "smiles_column", "target_columns", "task_type", "split_column")
        data = self.data
        return MoleculeTable.read(data["dataset"], data["path"], **{k: data[k] for k in keys})

    def default_metric(self) -> str:
        """``val/`` + the task type's default metric (rmse, roc_auc, accuracy)."""
        return f"val/{DEFAULT_METRIC[self.table().task_type]}"

    @abstractmethod
    def tracking_uri(self) -> str | None:
        """The MLflow tracking URI of the config (None: no MLflow logging)."""

    @abstractmethod
    def check(self, config: dict[str, Any]) -> None:
        """Refuse a config the job's parser rejects (unknown options, wrong types)."""

    @abstractmethod
    def fit(
        self,
        config: dict[str, Any],
        directory: Path,
        metric: str,
        trial: optuna.Trial | None = None,
        resume_from: Path | None = None,
    ) -> Fitted:
        """Fit ``config`` (run files in ``directory``) and score it with ``metric``; a graph
        model continues from the checkpoint ``resume_from`` if given."""

    @abstractmethod
    def test(self, config: dict[str, Any], model_path: Path) -> dict[str, float]:
        """Metrics of the saved model on the test split of ``config``'s data."""

    @abstractmethod
    def split_table(self) -> SplitTable:
        """The data and its split, for cross-validation folds."""

    def write_config(self, config: dict[str, Any], path: Path) -> None:
        """Write ``config`` as YAML that the job's own verb (``molml fit`` or ``molml baseline
        fit``) accepts with ``--config``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def check_metric_logged(
    metric: str, task_type: str, tasks: list[str] | None = None, *, loss: bool = True
) -> None:
    """Refuse, before any training, a metric that ``task_type`` models do not log (e.g.
    ``val/roc_auc`` for regression), one of a task the data does not have
    (``val/rmse/<task>``), or ``val/loss`` for models without a loss (``loss=False``: the
    fingerprint baselines), any of which would fail only after the first fold or trial."""
    name, _, task = metric.partition("/")[2].partition("/")
    logged = (
        ("loss", *LOGGED_METRICS.get(task_type, ())) if loss else LOGGED_METRICS.get(task_type, ())
    )
    if name not in logged:
        known = ", ".join(f"val/{m}" for m in logged)
        models = f"{task_type} tasks" if loss else f"baselines on {task_type} tasks"
        raise DataError(f"--metric {metric} is not logged for {models}; choose {known}")
    if task and name == "loss":
        raise DataError(f"--metric {metric}: the loss is logged over all tasks only: val/loss")
    if task and tasks is not None and task not in tasks:
        raise DataError(
            f"--metric {metric}: no such task; the data's tasks are {tasks} (val/{name}/<task>)"
        )


def metric_direction(metric: str) -> str:
    """``minimize`` or ``maximize`` for a validation metric such as ``val/rmse`` or
    ``val/roc_auc/active``; refuses a metric that is not a validation metric."""
    part, _, rest = metric.partition("/")
    name = rest.split("/")[0]
    if part != "val":
        raise DataError(f"--metric {metric}: trials are scored on validation metrics (val/...)")
    if name == "loss":
        return "minimize"
    if name not in HIGHER_IS_BETTER:
        known = ", ".join(f"val/{m}" for m in ("loss", *HIGHER_IS_BETTER))
        raise DataError(f"--metric {metric}: unknown metric; choose one of {known}")
    return "maximize" if HIGHER_IS_BETTER[name] else "minimize"


def make_job(config_paths: list[str], overrides: list[str]) -> Job:
    """The job a config describes: a baseline config has ``estimator``/``features`` sections,
    anything else is a graph-model config for the Lightning CLI."""
    if not config_paths:
        raise DataError("--config is required")
    for path in config_paths:
        if not Path(path).is_file():
            raise DataError(f"--config {path}: not found")
    first = yaml.safe_load(Path(config_paths[0]).read_text()) or {}
    args = [f"--config={path}" for path in config_paths] + overrides
    if isinstance(first, dict) and ({"estimator", "features"} & set(first)):
        return BaselineJob.from_args(args)
    args = [f"--config={_without_fit_options(path)}" for path in config_paths]
    args += overrides
    return GraphJob(full_config(args))


FIT_ONLY_OPTIONS = ("ckpt_path", "weights_only")  # in a fit run's saved config.yaml


def _without_fit_options(path: str) -> str:
    """``path``, or its config as JSON without the options of the ``fit`` verb itself that a
    run's saved ``config.yaml`` holds (null there), which tuning and cross-validation do not
    take: they train from scratch."""
    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict) or not set(FIT_ONLY_OPTIONS) & set(config):
        return path
    for key in FIT_ONLY_OPTIONS:
        if config.pop(key, None) is not None:
            raise DataError(
                f"--config {path}: {key} is an option of molml fit (resuming a run); tune and "
                "cv train every model from scratch, so leave it out"
            )
    return json.dumps(config)


class _MetricHistory(L.Callback):
    """Every validation epoch's value of one metric (sanity checks left out), and the curves of
    every epoch-level training and validation metric; with ``trial``, the curves are saved on
    the trial after each epoch, so a trial that is pruned keeps them too."""

    def __init__(self, metric: str, trial: optuna.Trial | None = None) -> None:
        self.metric = metric
        self.trial = trial
        self.values: list[float] = []
        self.last: dict[str, float] = {}
        self.curves: dict[str, list[list[float]]] = {}

    def _record(self, trainer: L.Trainer, stage: str) -> None:
        # a metric logged per step and per epoch is there as "<name>" and "<name>_epoch": once
        epoch_values = {
            key.removesuffix("_epoch"): float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith(stage) and not key.endswith("_step")
        }
        for name, value in epoch_values.items():
            self.curves.setdefault(name, []).append([trainer.current_epoch, value])
        if self.trial is not None:
            self.trial.set_user_attr(CURVES, self.curves)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "train/")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if self.metric not in metrics:
            raise DataError(
                f"--metric {self.metric} is not logged; validation metrics: {sorted(metrics)}"
            )
        self.values.append(metrics[self.metric])
        self.last = metrics
        self._record(trainer, "val/")  # before the pruning callback may stop the trial


class _PruneAtEpochEnd(PyTorchLightningPruningCallback):
    """optuna-integration's pruning callback, with a pruned trial stopped at the end of its
    epoch instead of inside validation: Lightning validates before it ends the training
    epoch, so stopping there lost that epoch's training metrics from the trial's curves."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        super().__init__(trial, monitor)
        self.pruned: optuna.TrialPruned | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned as pruned:
            self.pruned = pruned

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pruned is not None:
            raise self.pruned


def checkpoint_on(config: dict[str, Any], metric: str) -> dict[str, Any]:
    """``config`` with its model checkpoints kept on ``metric``, the trial's score, so that the
    model a trial keeps is the one its value describes; a config whose own callbacks have no
    checkpoint gets one (Lightning's default would keep the last epoch)."""
    config = json.loads(json.dumps(config))
    trainer = config["trainer"] = config.get("trainer") or {}  # also for `trainer:` left empty
    callbacks = trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    mode = "min" if metric_direction(metric) == "minimize" else "max"
    kept = False
    for callback in callbacks:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith(
            "ModelCheckpoint"
        ):
            init_args = callback.get("init_args") or {}
            callback["init_args"] = init_args
            init_args.update(monitor=metric, mode=mode)
            kept = True
    if not kept and trainer.get("enable_checkpointing") is not False:
        callbacks.append(
            {
                "class_path": "molml.callbacks.ModelCheckpoint",
                "init_args": {
                    "monitor": metric,
                    "mode": mode,
                    "filename": "best",
                    "save_last": True,
                },
            }
        )
    trainer["callbacks"] = callbacks
    return config


class GraphJob(Job):
    """A graph model trained by the Lightning Trainer from a ``molml fit`` config."""

    kind = "graph"
    seed_key = "seed_everything"

    def tracking_uri(self) -> str | None:
        loggers = self.config["trainer"].get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if isinstance(logger, dict) and "MLFlowLogger" in logger.get("class_path", ""):
                return logger.get("init_args", {}).get("tracking_uri") or DEFAULT_TRACKING_URI
        return DEFAULT_TRACKING_URI

    def check(self, config: dict[str, Any]) -> None:
        full_config(["--config", json.dumps(config)])

    def _cli(self, config: dict[str, Any], directory: Path) -> Any:
        """The Lightning CLI of ``config`` built to train quietly into ``directory``."""
        run = json.loads(json.dumps(config))
        run["trainer"].update(
            logger=False,
            default_root_dir=str(directory),
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        directory.mkdir(parents=True, exist_ok=True)
        return _quiet_cli(run)

    def fit(
        self,
        config: dict[str, Any],
        directory: Path,
        metric: str,
        trial: optuna.Trial | None = None,
        resume_from: Path | None = None,
    ) -> Fitted:
        config = checkpoint_on(config, metric)
        self.write_config(config, directory / "config.yaml")
        cli = self._cli(config, directory)
        check_monitored_metrics(cli.trainer, cli.model)  # molml fit's check; trials skip it
        history = _MetricHistory(metric, trial)
        cli.trainer.callbacks.append(history)
        if trial is not None:
            cli.trainer.callbacks.append(_PruneAtEpochEnd(trial, monitor=metric))
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume_from)
        checkpoint = cli.trainer.checkpoint_callback
        saved = checkpoint and (checkpoint.best_model_path or checkpoint.last_model_path)
        earlier = checkpoint.best_model_score if resume_from and checkpoint else None
        if earlier is not None:  # resumed: the best of the epochs before the stop counts too
            value = float(earlier)
        elif history.values:
            value = (min if metric_direction(metric) == "minimize" else max)(history.values)
        else:
            raise DataError("training ran no validation epoch; raise trainer.max_epochs")
        last = history.last or {metric: value}
        return Fitted(value, last, Path(saved) if saved else None, history.curves)

    def test(self, config: dict[str, Any], model_path: Path) -> dict[str, float]:
        cli = self._cli(config, model_path.parent.parent / "test")
        for callback in cli.trainer.callbacks:  # its own fit: recorded with the model
            if isinstance(callback, EvaluationPlots):
                callback.own_checkpoints = True
        (metrics,) = cli.trainer.test(
            cli.model, datamodule=cli.datamodule, ckpt_path=str(model_path), verbose=False
        )
        return {key: float(value) for key, value in metrics.items()}

    def split_table(self) -> SplitTable:
        dm = _quiet_cli(json.loads(json.dumps(self.config))).datamodule
        dm.setup("fit")
        return SplitTable(
            dm.table["smiles"].tolist(), dm.targets, dm.tasks, dm.task_type, dm.split_rows()
        )


def _quiet_cli(config: dict[str, Any]) -> Any:
    """The Lightning CLI instantiated from a complete config dict (not from ``sys.argv``), to
    train on one device in this process: a trial or fold trains inside ``molml tune`` /
    ``molml cv``, where DDP's processes would each rerun the whole command, so ``devices:
    auto`` (every GPU) becomes 1 and a trainer of several processes is refused."""
    if config["trainer"].get("devices", "auto") in ("auto", None):
        config = {**config, "trainer": {**config["trainer"], "devices": 1}}
    cli = make_cli(config, run=False)
    # the run's config.yaml is the job's own (write_config): Lightning's copy would replace
    # it with this quiet one (no logger, the trial folder as root), which molml predict
    # given it would write into that folder
    cli.trainer.callbacks = [
        c for c in cli.trainer.callbacks if not isinstance(c, SaveConfigCallback)
    ]
    if cli.trainer.world_size > 1:
        raise DataError(
            "each trial or fold trains on one device, in this process: leave trainer.devices, "
            "strategy and num_nodes at their defaults; to use several GPUs, start one process "
            "per GPU on the same --storage (CUDA_VISIBLE_DEVICES=0 molml tune ..., "
            "CUDA_VISIBLE_DEVICES=1 molml tune ...)"
        )
    return cli


class BaselineJob(Job):
    """A fingerprint baseline fitted by :func:`molml.baselines.run.fit_baseline`."""

    kind = "baseline"
    seed_key = "seed"
    open_maps = ("estimator.params", "features.params")

    @staticmethod
    def parser() -> ArgumentParser:
        """The parser of a ``molml baseline fit`` config."""
        parser = ArgumentParser(prog="molml tune", exit_on_error=False, allow_abbrev=False)
        parser.add_argument("--config", action=ActionConfigFile)
        parser.add_class_arguments(BaselineConfig)
        return parser

    @classmethod
    def from_args(cls, args: list[str]) -> BaselineJob:
        parser = cls.parser()
        namespace = parser.parse_args(args)
        del namespace["config"]
        return cls(yaml.safe_load(parser.dump(namespace, skip_none=False)))

    def baseline_config(self, config: dict[str, Any]) -> BaselineConfig:
        """``config`` as a :class:`BaselineConfig` (checked: unknown estimator parameters and
        options are refused with the closest names)."""
        parser = self.parser()
        namespace = parser.parse_object(config)
        options = parser.instantiate_classes(namespace)
        fields = dataclasses.fields(BaselineConfig)
        return BaselineConfig(**{field.name: options[field.name] for field in fields})

    def tracking_uri(self) -> str | None:
        return self.config.get("tracking_uri")

    def check(self, config: dict[str, Any]) -> None:
        self.baseline_config(config).features.make()  # fingerprint options are checked there

    def fit(
        self,
        config: dict[str, Any],
        directory: Path,
        metric: str,
        trial: optuna.Trial | None = None,
        resume_from: Path | None = None,
    ) -> Fitted:
        self.write_config(config, directory / "config.yaml")
        result = fit_baseline(self.baseline_config(config), evaluate_parts=("val",))
        val = {f"val/{name}": value for name, value in result.metrics["val"].items()}
        if metric not in val:
            raise DataError(f"--metric {metric} is not computed; validation metrics: {sorted(val)}")
        result.model.save(directory / "model")
        return Fitted(val[metric], val, directory / "model")

    def test(self, config: dict[str, Any], model_path: Path) -> dict[str, float]:
        model = load_baseline(model_path)
        data = load_fingerprint_data(self.baseline_config(config).data, model.featurizer)
        return {f"test/{k}": v for k, v in evaluate(model, *data.part("test")).items()}

    def split_table(self) -> SplitTable:
        config = self.baseline_config(self.config)
        data = load_fingerprint_data(config.data, config.features.make(), config.features.n_jobs)
        frame: pd.DataFrame = data.molecules.frame
        return SplitTable(
            frame["smiles"].tolist(),
            data.molecules.targets,
            data.tasks,
            data.task_type,
            data.split_rows(),
        )
