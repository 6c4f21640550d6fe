"""Lightning callbacks: checkpoints, prediction files and MLflow artifacts of a run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from molml.data.datamodule import keep_input_columns
from molml.data.readers import check_some_valid
from molml.errors import DataError, deferred_stops
from molml.plots import parity_plot, roc_plot
from molml.tracking import record_mlflow_run

log = logging.getLogger(__name__)
TEST_METRICS_FILE = "test_metrics.json"
RUN_FILES = ("config.yaml", "split_report.json", "split.json", "invalid_rows.csv")


def run_directory(trainer: L.Trainer) -> Path:
    """The run's log directory. Call it on every rank: under DDP, ``trainer.log_dir`` is a
    broadcast from rank 0, so calling it on rank 0 alone would hang."""
    return Path(trainer.log_dir or ".")


def mlflow_loggers(trainer: L.Trainer) -> list[MLFlowLogger]:
    """The trainer's MLflow loggers (rank 0 only)."""
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``save_last=True`` writes ``last.ckpt`` at the end
    of every epoch. Lightning (since 2.6) writes it only when a top-k checkpoint is saved in
    the same step, so with ``save_top_k=1`` on a monitored metric ``last.ckpt`` stayed at the
    last improvement, and a resumed run repeated every epoch since (with early stopping's
    patience reset). A fit resumed into a new folder keeps the best checkpoint and score of
    the run it continues (see :meth:`on_fit_start`)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resuming into a new run folder (``molml fit --ckpt_path <old run>/last.ckpt``):
        Lightning forgets the best score there, so the resumed run's first epoch became its
        "best" even when worse than the run it continued. The earlier best is kept, when fit
        starts (see :meth:`on_fit_start`)."""
        with warnings.catch_warnings():  # "won't be reloaded": see on_fit_start
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        moved = state_dict.get("dirpath") != self.dirpath
        same_metric = self.monitor is not None and state_dict.get("monitor") == self.monitor
        score = state_dict.get("best_model_score")
        best = state_dict.get("best_model_path")
        self._resumed_best = (best, score) if moved and same_metric and score is not None else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A fit resumed into a new folder: the best checkpoint of the run it continues is
        copied into this run's folder and its score kept, so an epoch replaces it only by
        beating it. (A test or validate run restores the same state and copies nothing.)"""
        resumed, self._resumed_best = getattr(self, "_resumed_best", None), None
        if resumed is None or self.dirpath is None or not resumed[0]:
            return
        old_best, score = Path(resumed[0]), resumed[1]
        if not old_best.is_file() and trainer.ckpt_path:  # recorded relative to another cwd
            old_best = Path(trainer.ckpt_path).parent / old_best.name
        if not old_best.is_file():
            return
        best = Path(self.dirpath) / old_best.name
        if trainer.is_global_zero and not best.exists():
            best.parent.mkdir(parents=True, exist_ok=True)
            partial = best.with_name(f"{best.name}.{os.getpid()}.tmp")
            shutil.copyfile(old_best, partial)
            os.replace(partial, best)
        trainer.strategy.barrier()
        self.best_model_path = self.kth_best_model_path = str(best)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(best): score}

    # A stop (SIGTERM, Ctrl-C) received while checkpoints are written and old ones removed
    # takes effect once that is done (deferred_stops), so the files and this callback's record
    # of them agree when the run is resumed

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with deferred_stops():
            super().on_validation_end(trainer, pl_module)
            if not self._should_save_on_train_epoch_end(trainer):
                self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with deferred_stops():
            super().on_train_epoch_end(trainer, pl_module)
            if self._should_save_on_train_epoch_end(trainer):
                self._save_last_if_missed(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Lightning saves ``last.ckpt`` here even in a ``fast_dev_run``, which it says saves
        nothing (the stray file then blocked the next fit in that folder)."""
        if not trainer.fast_dev_run:
            with deferred_stops():
                super().on_train_end(trainer, pl_module)

    def _save_last_if_missed(self, trainer: L.Trainer) -> None:
        if (
            self.save_last is True
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class TrainingPartCheck(L.Callback):
    """After the data module's setup: warn when its training part is not the one the tested
    or resumed checkpoint ``path`` recorded (``trained``: its ``training_data``)."""

    def __init__(self, path: str, trained: dict[str, Any]) -> None:
        self.path, self.trained = path, trained

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if getattr(datamodule, "split", None) is None or not trainer.is_global_zero:
            return
        if datamodule.train_fingerprint() != self.trained["train_sha256"]:
            trained = self.trained
            log.warning(
                "%s was trained on another training part (%s, %s rows, %s split, seed %s) than "
                "this data and split give: if the data file changed or was reordered, or the "
                "split options differ, the validation and test parts may hold molecules it was "
                "trained on",
                self.path,
                trained.get("source"),
                trained.get("rows"),
                trained.get("split"),
                trained.get("split_seed"),
            )


class PredictionWriter(BasePredictionWriter):
    """Write ``molml predict`` results to CSV: one row per input row, invalid ones with reasons.

    Args:
        output: CSV path (default: ``predictions.csv`` in the run directory).
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.written = False

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        self.write_predictions(trainer, pl_module, predictions)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.output_path(trainer)  # refuse an output that is the input before any work

    def output_path(self, trainer: L.Trainer) -> Path:
        """Where the predictions go: ``output``, else ``predictions.csv`` in the run directory
        (the working directory when the run has no logger); the file being predicted is
        refused."""
        path = Path(self.output or run_directory(trainer) / "predictions.csv")
        predict_path = getattr(trainer.datamodule, "hparams", {}).get("predict_path")
        if predict_path and path.exists() and path.resolve() == Path(predict_path).resolve():
            raise DataError(
                f"the predictions would be written over the file being predicted, {path}: "
                "predict a file of another name or from another folder, or keep a logger "
                "(predictions then go to the run's own folder)"
            )
        return path

    def write_predictions(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any]
    ) -> None:
        """Write the input rows with ``predictions`` (rows without one get NaN). Also called
        when no molecule could be featurized, as Lightning then runs no prediction loop."""
        self.written = True
        path = self.output_path(trainer)
        frame = trainer.datamodule.predict_frame.copy()
        columns = pl_module.prediction_columns()
        if predictions:
            rows = torch.cat([p["row"] for p in predictions]).cpu().numpy()
            values = torch.cat([p["prediction"] for p in predictions]).float().cpu()
            values = values.reshape(len(rows), -1).numpy()
        else:
            rows, values = np.zeros(0, dtype=np.int64), np.zeros((0, len(columns)))
        if trainer.world_size > 1:  # every rank predicted its own molecules: gather them
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (rows, values))
            rows = np.concatenate([r for r, _ in gathered])
            values = np.concatenate([v for _, v in gathered])
        if not trainer.is_global_zero:
            return
        frame = keep_input_columns(frame, columns)
        for j, column in enumerate(columns):
            frame[column] = np.nan
            frame.loc[rows, column] = values[:, j]
        frame = frame[[c for c in frame.columns if c != "status"] + ["status"]]
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            log.warning("predict: replacing the earlier %s", path)
        frame.to_csv(path, index=False)
        print(f"predictions for {len(frame)} rows written to {path}")
        predict_path = getattr(trainer.datamodule, "hparams", {}).get("predict_path")
        if predict_path:
            check_some_valid(frame, predict_path, path)


class MlflowArtifacts(L.Callback):
    """Log the run's config, split files and best checkpoint to MLflow at the end of fit/test,
    and note the MLflow run in the run directory (``mlflow_run.json``)."""

    def _log_run_files(self, trainer: L.Trainer, checkpoint: bool) -> None:
        run_dir = run_directory(trainer)
        loggers = mlflow_loggers(trainer)
        if loggers and trainer.is_global_zero:
            record_mlflow_run(run_dir, loggers[0]._tracking_uri, loggers[0].run_id)
        for logger in loggers:
            for name in RUN_FILES:
                if (run_dir / name).is_file():
                    logger.experiment.log_artifact(logger.run_id, str(run_dir / name))
            best = getattr(trainer.checkpoint_callback, "best_model_path", "")
            if checkpoint and best and Path(best).is_file():
                logger.experiment.log_artifact(logger.run_id, best, artifact_path="checkpoints")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_run_files(trainer, checkpoint=True)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_run_files(trainer, checkpoint=False)


class EvaluationPlots(L.Callback):
    """After ``test``: a parity plot (regression) or ROC curves (classification), as PNG in the
    run directory and as MLflow artifacts; the tested checkpoint's metrics are recorded in a
    ``test_metrics.json`` (``{checkpoint: metrics}``). A checkpoint this trainer saved itself
    (``fit`` testing its best) is recorded in its own run (the folder above its
    ``checkpoints/``), where ``molml.load_model(...).metadata`` finds them; any other (a later
    ``molml test``, perhaps on other data) in the testing run, leaving the training record
    be."""

    def __init__(self) -> None:
        # whether the tested checkpoints were trained on this run's data and split: set by a
        # caller that tests its own fit (a fit's own checkpoints are known by their folder)
        self.own_checkpoints = False
        self._fit_checkpoint_dirs: set[Path] = set()
        self._fitted = False  # this trainer trained the model it tests

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fitted = True
        self._fit_checkpoint_dirs = {
            Path(callback.dirpath).resolve()
            for callback in trainer.checkpoint_callbacks
            if getattr(callback, "dirpath", None) and callback.best_model_path
        }

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir = run_directory(trainer)
        log_dir = trainer.log_dir  # on every process: under DDP it is a broadcast all must join
        checkpoint = Path(trainer.ckpt_path).resolve() if trainer.ckpt_path else None
        if checkpoint is None:  # the model in memory: this trainer's own if it trained it
            own = self._fitted
        else:
            own = self.own_checkpoints or checkpoint.parent in self._fit_checkpoint_dirs
        if trainer.logger is None and not own:
            # no run folder of its own: the trainer's root may be a training run's, whose
            # records (test metrics, plots) must stay what fit measured
            if trainer.is_global_zero:
                log.warning(
                    "no logger: the test metrics are printed only (with a logger they are also "
                    "written, with plots, into a run folder of this test's own)"
                )
            return
        if trainer.is_global_zero and checkpoint is not None:
            if own:
                record_test_metrics(checkpoint.parent.parent, checkpoint, trainer.callback_metrics)
            elif log_dir is not None:  # a run folder of its own to record in
                record_test_metrics(run_dir, checkpoint, trainer.callback_metrics)
        outputs = getattr(pl_module, "test_outputs", None)
        if outputs is None or not trainer.is_global_zero or pl_module.task_type == "multiclass":
            return
        preds, target, mask = (t.cpu().numpy() for t in outputs)
        if pl_module.task_type == "regression":
            units = getattr(trainer.datamodule, "target_units", None)
            path = parity_plot(
                preds, target, mask, pl_module.tasks, run_dir / "test_parity.png", units
            )
        else:
            path = roc_plot(preds, target, mask, pl_module.tasks, run_dir / "test_roc.png")
        for logger in mlflow_loggers(trainer):
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="plots")


def record_test_metrics(run_dir: Path, checkpoint: Path, metrics: dict[str, Any]) -> Path:
    """Add ``checkpoint``'s test metrics to ``run_dir/test_metrics.json``, under the
    checkpoint's file name when it belongs to that run (``run_dir/checkpoints/``), else under
    its absolute path."""
    record = run_dir / TEST_METRICS_FILE
    recorded = json.loads(record.read_text()) if record.is_file() else {}
    own = checkpoint.resolve().parent.parent == run_dir.resolve()
    recorded[checkpoint.name if own else str(checkpoint.resolve())] = {
        key.removeprefix("test/"): float(value)
        for key, value in metrics.items()
        if key.startswith("test/")
    }
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps(recorded, indent=2))
    os.replace(tmp, record)
    return record


class MolmlSaveConfig(SaveConfigCallback):
    """Save ``config.yaml`` and log the full, flattened config as MLflow params.

    Without a logger there is no run folder: ``config.yaml`` goes to the trainer's root
    folder, and only ``fit`` writes it, so that a later ``molml test --config config.yaml``
    there does not overwrite the training run's config with its own."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.logger is None and stage != "fit":
            return
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loggers = mlflow_loggers(trainer)
        if not loggers:
            return
        flat = _flatten(self.parser.dump(self.config, skip_none=False, format="json"))
        for logger in loggers:
            logger.log_hyperparams({k: str(v)[:6000] for k, v in flat.items()})


def _flatten(config_json: str) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key)
        else:
            out[prefix] = node

    walk(json.loads(config_json), "")
    return out
