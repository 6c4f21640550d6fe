"""``molml tune``: an Optuna study over a config's options, scored on validation only.

Trials train with the Lightning Trainer (pruned epoch by epoch with optuna-integration's
Lightning callback) or fit a fingerprint baseline; with ``cv`` a trial's score is the mean
validation metric over folds of the train+val molecules (pruned fold by fold). The study lives
in an Optuna RDB storage (SQLite by default), so rerunning a command resumes it and several
processes on one storage share it; the search space and metric are stored with the study and
a study that differs is refused. Trials are drawn by TPE, or with ``sampler="grid"`` every
combination of an all-categorical space runs once. After the trials, the best config is tested
once on the held-out test split and written as ``best.yaml``, next to a trials table and
Optuna's plots; MLflow gets one parent run per ``molml tune`` with one nested run per trial.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from molml.errors import (
    DataError,
    MolmlError,
    Terminated,
    deferred_stops,
    error_message,
    finishing_before_a_stop,
    sigterm_received,
    stop_signal,
)
from molml.options import creatable_directory
from molml.tracking import SQLITE_PREFIX, absolute_tracking_uri, experiment_id, mlflow_client
from molml.tune.cv import fit_folds, fold_splits, write_folds
from molml.tune.jobs import (
    CURVES,
    Job,
    SplitTable,
    check_metric_logged,
    checkpoint_on,
    data_fingerprint,
    metric_direction,
)
from molml.tune.options import FOLD_SPLITS, PRUNERS, SAMPLERS
from molml.tune.space import (
    Param,
    check_names,
    config_point,
    describe_differences,
    learning_config,
    with_values,
)

log = logging.getLogger("molml")

FAIL_REASON = "fail_reason"
# a FAIL trial without a recorded reason: Optuna failed it when its heartbeat went stale
STOPPED = "its process stopped (killed or crashed) before the trial ended"
HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S = 30, 60
MODEL_PATH = "model_path"
_MLFLOW_BATCH = 1000  # metrics per MlflowClient.log_batch call (its limit)
# below this many validation molecules, ``molml tune`` suggests scoring trials by ``--cv``
SMALL_VALIDATION = 250


@dataclass
class TuneOptions:
    """Options of one ``molml tune`` run (see :mod:`molml.tune.cli`)."""

    study_name: str
    storage: str
    metric: str
    n_trials: int | None = None
    timeout: float | None = None
    pruner: str | optuna.pruners.BasePruner = "median"
    pruner_warmup: int | None = None  # steps before pruning; None: 10 epochs, or 1 fold (cv)
    sampler: str = "tpe"
    seed: int = 0
    cv: int | None = None
    cv_split: str = "scaffold"
    output_dir: Path = Path("runs/tune")
    tracking_uri: str | None = None


@finishing_before_a_stop
class StopSafeStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose every call finishes before a stop (SIGTERM, Ctrl-C) takes
    effect: a stop inside SQLAlchemy left SQLite locked, so the stopped trial could not be
    failed ("database is locked") and stayed RUNNING until a later run found it stale. It
    also keeps the ids of the trials this process set running (``started``), so that a
    stopped study fails those it left RUNNING (:func:`fail_trials_left_running`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[int] = []

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        # what create_new_trial and Optuna's cached storage (which a study uses) call
        with deferred_stops():
            trial = super()._create_new_trial(study_id, template_trial)
            if trial.state == TrialState.RUNNING:
                self.started.append(trial._trial_id)
        return trial

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with deferred_stops():
            changed = super().set_trial_state_values(trial_id, state, values)
            if changed and state == TrialState.RUNNING:  # an enqueued trial taken to run
                self.started.append(trial_id)
        return changed


def fail_trials_left_running(storage: StopSafeStorage, reason: str) -> None:
    """Fail, with ``reason``, the trials this process set running that are still RUNNING: a
    stop between Optuna's ask and the trial's start (no heartbeat yet, so no later run would
    ever find it stale), or one that kept the trial's own failure from being written."""
    for trial_id in storage.started:
        try:
            if storage.get_trial(trial_id).state == TrialState.RUNNING:
                storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except Exception as exc:  # noqa: BLE001 - the stop, not this, is what the verb reports
            log.warning("trial %d was left RUNNING: %s", trial_id, error_message(exc))


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage (relative ``sqlite:///`` paths resolved, their folder created);
    the running trials of a killed process are failed by the next process that opens the study
    once their heartbeat is ``GRACE_PERIOD_S`` old."""
    if url.startswith(SQLITE_PREFIX):
        url = absolute_tracking_uri(url)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return StopSafeStorage(
                    url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S
                )
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many connection errors
            # two processes creating a new database's tables at once: the loser retries
            if attempt < 2 and ("already exists" in str(exc) or "UNIQUE constraint" in str(exc)):
                time.sleep(1.0 + attempt)
                continue
            raise DataError(f"--storage {url}: cannot open the study storage ({exc})") from exc
    raise AssertionError("unreachable")


def make_pruner(
    pruner: str | optuna.pruners.BasePruner, warmup: int = 10
) -> optuna.pruners.BasePruner:
    """``median`` (once 2 trials finished, from step ``warmup`` on: an epoch, or a fold with
    cross-validation), ``hyperband`` or ``none``."""
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise DataError(f"--pruner {pruner!r}: choose one of {list(PRUNERS)}")


def warmup_steps(options: TuneOptions) -> int:
    """Steps (epochs, or folds with ``cv``) a trial runs before the median pruner may stop
    it: ``--pruner-warmup``, by default 10 epochs or 1 fold (folds are few and each is a
    whole training run: a trial may be stopped after its second fold); with 2 folds 0, since
    a trial is never stopped after its last fold."""
    if options.pruner_warmup is not None:
        return options.pruner_warmup
    return min(1, options.cv - 2) if options.cv else 10


def load_study(
    options: TuneOptions,
    space: list[Param],
    config: dict[str, Any] | None = None,
    storage: optuna.storages.RDBStorage | None = None,
    data_sha256: str | None = None,
) -> optuna.Study:
    """Create the study, or load it if it exists with the same search space, metric and
    direction, and (for studies that stored them) the same cross-validation split and base
    config: the same data, split and training schedule (refused otherwise, naming what
    differs). The TPE sampler's seed is offset by the trials already in the study, so a
    resumed study draws new points, reproducibly; a grid keeps its seed (its shuffled order)."""
    check_sampler(options.sampler, space)  # before the study is created
    storage = storage or open_storage(options.storage)
    direction = metric_direction(options.metric)
    # as the storage gives it back (JSON: a categorical's tuple of choices becomes a list)
    described = json.loads(json.dumps([param.describe() for param in space]))
    try:
        study = optuna.create_study(
            study_name=options.study_name,
            storage=storage,
            direction=direction,
            pruner=make_pruner(options.pruner, warmup_steps(options)),
            load_if_exists=True,
        )
    except ValueError as exc:  # an existing study with another direction
        raise DataError(f"study {options.study_name!r}: {exc}") from exc
    attrs = study.user_attrs
    expected = {"search_space": described, "metric": options.metric, "cv": options.cv}
    recorded: dict[str, Any] = {}
    if options.cv:  # the folds: their split and seed (without --cv, each process its own seed)
        recorded.update(cv_split=options.cv_split, cv_seed=options.seed)
    searched = {param.name for param in space}
    if config is not None:
        recorded["config"] = {k: v for k, v in learning_config(config).items() if k not in searched}
    if data_sha256 is not None:  # the rows the trials see (see jobs.data_fingerprint)
        recorded["data_sha256"] = data_sha256
    if not attrs:
        for key, value in {**expected, **recorded}.items():
            study.set_user_attr(key, value)
    else:
        # the search space first: the config compared next leaves the searched options out
        before = sorted(param["name"] for param in attrs.get("search_space") or [])
        if before and before != sorted(searched):
            raise DataError(
                f"study {options.study_name!r} in {options.storage} searches {before}, not "
                f"{sorted(searched)} (another search file); use another --study-name"
            )
        for key, value in expected.items():
            if key == "search_space":  # the same ranges in another order are the same space
                stored = {param["name"]: param for param in attrs.get(key) or []}
                changed = [param for param in value if stored.get(param["name"]) != param]
                if changed:
                    name = changed[0]["name"]
                    raise DataError(
                        f"study {options.study_name!r} in {options.storage} was made with "
                        f"{name} {json.dumps(stored.get(name))}, not {json.dumps(changed[0])}; "
                        "use another --study-name (or the same search space) to add trials"
                    )
                continue
            if attrs.get(key) != value:
                raise DataError(
                    f"study {options.study_name!r} in {options.storage} was made with {key} "
                    f"{json.dumps(attrs.get(key))}, not {json.dumps(value)}; use another "
                    "--study-name (or the same search space, metric and --cv) to add trials"
                )
        # studies made before these were stored have none of them
        for key, value in recorded.items():
            if key == "data_sha256" and key in attrs and attrs[key] != value:
                raise DataError(
                    f"study {options.study_name!r} in {options.storage} was made on other "
                    "data: the molecules or labels of the config's data file have changed "
                    "since, so its trials would not compare; use another --study-name"
                )
            if key == "data_sha256" and key not in attrs:  # recorded from now on
                fraction = ((config or {}).get("data") or {}).get("train_fraction")
                if options.cv and fraction is not None and fraction < 1:
                    raise DataError(
                        f"study {options.study_name!r} in {options.storage} was begun by an "
                        f"earlier molml, whose --cv folds trained on data.train_fraction "
                        f"{fraction} of their training part again: its trials would not "
                        "compare with new ones; use another --study-name"
                    )
                study.set_user_attr(key, value)
            if key in attrs and attrs[key] != value:
                raise DataError(
                    f"study {options.study_name!r} in {options.storage} was made with another "
                    f"{key}: {describe_differences(attrs[key], value)}; use another "
                    "--study-name, or the same config and options to add trials"
                )
    if study.direction.name.lower() != direction:
        raise DataError(
            f"study {options.study_name!r} {study.direction.name.lower()}s its metric; "
            f"{options.metric} is to {direction}"
        )
    # TPE: a resumed study draws new points; a grid's order is shuffled by its seed, which
    # every process and resume of the study must share so a grid point means one thing
    offset = len(study.trials) if options.sampler == "tpe" else 0
    study.sampler = make_sampler(options.sampler, space, options.seed + offset)
    return study


def _stop_on_sigterm(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """After each trial: stop the study, and so the verb (exit 143), once SIGTERM came, even
    when the interrupt raised for it was swallowed by a callback inside the trial."""
    if sigterm_received():
        raise Terminated


def make_sampler(sampler: str, space: list[Param], seed: int) -> optuna.samplers.BaseSampler:
    """``tpe`` (5 random trials, then Optuna's TPE) or ``grid``: every combination of an
    all-categorical space once, in random order (the study stops when all are done, also when
    several processes share it)."""
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    grid = {param.name: list(param.choices) for param in space}
    return _GridWithRetries(grid, seed=seed)


class _GridWithRetries(optuna.samplers.GridSampler):
    """Optuna's grid sampler, which stops the study once no grid point is unvisited; a point
    enqueued again after its trial was stopped (:func:`retry_stopped_trials`) counts as
    visited, so the study goes on while such trials wait."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:  # fmt: skip
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        super().after_trial(study, trial, state, values)


def check_sampler(sampler: str, space: list[Param]) -> None:
    """Refuse an unknown sampler, and a grid over a space with ranges."""
    if sampler not in SAMPLERS:
        raise DataError(f"--sampler {sampler}: choose one of {list(SAMPLERS)}")
    ranged = [param.name for param in space if param.kind != "categorical"]
    if sampler == "grid" and ranged:
        raise DataError(
            "--sampler grid needs every option of the search space as a categorical list; "
            f"{', '.join(ranged)} {'is a range' if len(ranged) == 1 else 'are ranges'}"
        )


def trials_to_run(study: optuna.Study, space: list[Param], options: TuneOptions) -> int | None:
    """``options.n_trials``; with the grid sampler at most the grid's points that no finished
    trial has tried yet (0 once the grid is done, so a rerun adds no duplicate trial)."""
    if options.sampler != "grid":
        return options.n_trials
    names = [param.name for param in space]
    tried = {
        tuple(trial.params.get(name) for name in names)
        for trial in study.trials
        if trial.state.is_finished()
    }
    waiting = {  # enqueued again after its trials were stopped: still to run
        tuple(trial.system_attrs.get("fixed_params", {}).get(name) for name in names)
        for trial in study.trials
        if trial.state == TrialState.WAITING
    }
    tried -= waiting
    left = sum(1 for point in itertools.product(*(p.choices for p in space)) if point not in tried)
    return left if options.n_trials is None else min(left, options.n_trials)


def check_space(job: Job, space: list[Param]) -> None:
    """Refuse unknown option names, and values the config's parser rejects, before any trial."""
    check_names(space, job.config, job.open_maps)
    # every choice of a categorical once (with the ranges at their low, then high, ends)
    most = max((len(p.choices) for p in space if p.kind == "categorical"), default=1)
    for pick in sorted({*range(most), -1}):
        values = {
            param.name: param.choices[min(pick, len(param.choices) - 1)]
            if param.kind == "categorical"
            else (int if param.kind == "int" else float)(param.low if pick >= 0 else param.high)
            for param in space
        }
        job.check(with_values(job.config, values))


def run_tune(job: Job, space: list[Param], options: TuneOptions) -> Path:
    """Run the study; returns the output directory ``<output_dir>/<study name>``."""
    check_space(job, space)
    table = job.split_table()  # read once: the metric's check, the note and the folds
    check_metric_logged(options.metric, table.task_type, table.tasks, loss=job.kind == "graph")
    directory = Path(options.output_dir) / options.study_name
    creatable_directory(directory, f"--output-dir {options.output_dir} cannot be written")
    folds = None
    if options.cv:  # refused before the study is made (its options are recorded there)
        if options.cv_split not in FOLD_SPLITS:  # e.g. a seed ensemble: not a way to score
            raise DataError(f"cv_split {options.cv_split!r}: choose one of {list(FOLD_SPLITS)}")
        folds = fold_splits(table, options.cv, options.cv_split, options.seed, option="--cv")
    check_sampler(options.sampler, space)
    storage = open_storage(options.storage)
    study = load_study(options, space, job.config, storage, data_fingerprint(table))
    directory.mkdir(parents=True, exist_ok=True)
    claim_output_folder(storage, options.study_name, directory)
    start = config_point(job.config, space)
    if start and options.sampler == "tpe":  # a grid holds the config's point if the space does
        # once per study, also when several processes start it together
        study.enqueue_trial(
            start, user_attrs={"start": "the config's own values"}, skip_if_exists=True
        )
    from filelock import FileLock

    with FileLock(directory / "retry.lock"):  # tuners starting together: enqueued once
        retry_stopped_trials(study)
    note = small_validation_note(table, options)
    if note:
        print(note)
    folds_file = None
    if folds is not None:
        folds_file = directory / "folds.json"
        write_folds(folds, folds_file)
    tracker = _Tracker(options, directory)
    objective = _objective(job, space, options, directory, folds_file)
    n_trials = trials_to_run(study, space, options)
    optimize_log = logging.getLogger("optuna.study._optimize")
    optimize_log.addFilter(_without_traceback)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(
                objective,
                n_trials=n_trials,
                timeout=options.timeout,
                catch=(Exception,),
                callbacks=[tracker.log_trial, _stop_on_sigterm],
                gc_after_trial=True,
            )
    except BaseException as exc:  # stopped (Ctrl-C, SIGTERM) or broken: not left RUNNING
        stop = stop_signal() or ("Ctrl-C" if isinstance(exc, KeyboardInterrupt) else None)
        if stop is not None:
            fail_trials_left_running(storage, f"stopped by {stop}")
        # a stop raised as Optuna's tell wrote its trial comes out as another error
        tracker.end("FAILED" if stop is None else "KILLED")
        raise
    finally:
        optimize_log.removeFilter(_without_traceback)
    write_trials(study, directory / "trials.csv")
    best = _best_trial(study)
    outputs: dict[str, Any] = {}
    if best is not None:
        outputs = finish(job, study, best, options, directory)
    tracker.finish(study, best, directory, outputs)
    if best is None:  # a study without a result is not a success
        raise DataError(
            f"study {options.study_name}: no trial finished (each failed or was pruned); "
            f"the reasons are in {directory / 'trials.csv'}"
        )
    return directory


def _without_traceback(record: logging.LogRecord) -> bool:
    """Optuna's "Trial N failed ... because of the following error: ..." line without the
    traceback it appends when the error is molml's own (its reason is in trials.csv, and
    molml's errors are one line) or a stop; anything else keeps its traceback."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, (MolmlError, KeyboardInterrupt, SystemExit)):
        record.exc_info, record.exc_text = None, None
    return True


STUDY_FILE = "study.json"  # in a study's output folder: the study its trial folders belong to


def claim_output_folder(
    storage: optuna.storages.RDBStorage, study_name: str, directory: Path
) -> None:
    """Record in ``directory`` which study (storage and id) its trial folders belong to, or
    refuse a study other than the recorded one: another study of the same name made in
    another ``--storage`` would replace the first study's trial folders, whose models that
    study's records still point at. A SQLite storage is recorded relative to the folder (a
    project moved as a whole keeps its claim), a server without its password."""
    me = {
        "study": study_name,
        "storage": storage_label(storage.url, directory),
        "study_id": storage.get_study_id_from_name(study_name),
    }
    marker = directory / STUDY_FILE
    if not marker.is_file():
        partial = marker.with_name(f"{STUDY_FILE}.{uuid.uuid4().hex}.tmp")
        partial.write_text(json.dumps(me, indent=2) + "\n")
        try:
            os.link(partial, marker)  # the first claim stands: never over another's
        except FileExistsError:
            pass
        finally:
            partial.unlink(missing_ok=True)
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        recorded = {}
    if {k: recorded.get(k) for k in me} != me:
        raise DataError(
            f"{directory} holds the trials of another study named {study_name!r} (storage "
            f"{recorded.get('storage')}, study id {recorded.get('study_id')}), which this one "
            "would replace: give another --output-dir or --study-name; if it is this study "
            f"with its storage moved, delete {marker}"
        )


def storage_label(url: str, directory: Path) -> str:
    """How ``study.json`` names a storage: a SQLite file by its path relative to
    ``directory``, a database server by its URL without the password."""
    if url.startswith(SQLITE_PREFIX):
        return SQLITE_PREFIX + os.path.relpath(url.removeprefix(SQLITE_PREFIX), directory)
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def small_validation_note(table: SplitTable, options: TuneOptions) -> str | None:
    """A warning when trials are scored on a validation split of fewer than
    ``SMALL_VALIDATION`` molecules (None when it is larger or trials are scored by ``cv``)."""
    if options.cv:
        return None
    molecules = len(table.split.val)
    if molecules >= SMALL_VALIDATION:
        return None
    return (
        f"study {options.study_name}: trials are scored on a validation split of {molecules} "
        "molecules; on so few, the best validation score often does not carry over to the "
        "test split. Scoring each trial by cross-validation of the training and validation "
        "molecules (--cv 5) ranks configs more reliably, at 5 times the cost."
    )


def _objective(
    job: Job,
    space: list[Param],
    options: TuneOptions,
    directory: Path,
    folds_file: Path | None,
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        config = with_values(job.config, {param.name: param.suggest(trial) for param in space})
        trial_dir = directory / "trials" / f"trial_{trial.number}"
        if trial_dir.exists():
            # trial numbers are unique within a study: a folder already there was left by
            # another study of this name that claim_output_folder could not tell apart (one
            # deleted and made again under the same id, or a folder without study.json),
            # whose fold results and checkpoints must not be taken for this trial's
            log.warning("%s held another study's trial of this name; replaced", trial_dir)
            shutil.rmtree(trial_dir)
        try:
            if folds_file is not None:
                fitted = fit_folds(
                    job, config, folds_file, options.cv, trial_dir, options.metric, trial
                )
                value = sum(f.value for f in fitted) / len(fitted)
            else:
                fitted_one = job.fit(config, trial_dir, options.metric, trial)
                value = fitted_one.value
                if fitted_one.model_path is not None:
                    trial.set_user_attr(MODEL_PATH, str(fitted_one.model_path.resolve()))
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr(FAIL_REASON, error_message(exc))
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            # Lightning ends an interrupted fit with SystemExit, which Optuna does not close
            # the trial on: it stayed RUNNING. A KeyboardInterrupt fails it and stops the study
            stop = stop_signal()
            if stop is None and isinstance(exc, SystemExit):
                raise
            trial.set_user_attr(FAIL_REASON, f"stopped by {stop or 'Ctrl-C'}")
            raise (Terminated if stop == "SIGTERM" else KeyboardInterrupt)() from None
        if not math.isfinite(value):
            trial.set_user_attr(FAIL_REASON, f"{options.metric} is {value}")
            raise DataError(f"{options.metric} is {value}")
        return value

    return objective


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        return None
    return study.best_trial


def finish(
    job: Job, study: optuna.Study, best: FrozenTrial, options: TuneOptions, directory: Path
) -> dict[str, Any]:
    """Write ``best.yaml``, test the best config once on the test split, draw the plots."""
    best_config = with_values(job.config, best.params)
    if job.kind == "graph":  # kept on the study's metric, as the trials were
        best_config = checkpoint_on(best_config, options.metric)
    job.write_config(best_config, directory / "best.yaml")
    test_metrics: dict[str, float] = {}
    model_path = best.user_attrs.get(MODEL_PATH)
    if model_path and Path(model_path).exists():
        test_metrics = job.test(best_config, Path(model_path))
    elif options.cv:  # each fold model saw part of the training data: trained once more
        model_path, test_metrics = _refit_best(job, best, best_config, options, directory)
    summary = {
        "study": options.study_name,
        "metric": options.metric,
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best.params,
        "best_model": model_path,
        "test": test_metrics,
        "trials": {state.name: sum(t.state == state for t in study.trials) for state in TrialState},
    }
    (directory / "best.json").write_text(json.dumps(summary, indent=2))
    plots = write_plots(study, directory / "plots")
    test_key = "test/" + options.metric.removeprefix("val/")
    print(
        f"study {options.study_name}: best trial {best.number}, {options.metric} "
        f"{best.value:.4f}, {test_key} {test_metrics.get(test_key, float('nan')):.4f}; "
        f"{summary['trials']['COMPLETE']} complete, {summary['trials']['PRUNED']} pruned, "
        f"{summary['trials']['FAIL']} failed"
    )
    if running := summary["trials"]["RUNNING"]:
        print(
            f"{running} trial(s) still RUNNING: in another process, or left by a killed one "
            f"(failed by the next run once their heartbeat is {GRACE_PERIOD_S} s old)"
        )
    print(f"best config: {directory / 'best.yaml'}")
    if plots:
        print(f"plots: {directory / 'plots'} (PNG; open the .html pages in a browser)")
    return {"summary": summary, "plots": plots}


def _refit_best(
    job: Job, best: FrozenTrial, config: dict[str, Any], options: TuneOptions, directory: Path
) -> tuple[str | None, dict[str, float]]:
    """The model of the best config trained on the whole training part, and its test
    metrics, in ``best_fit/trial_<n>/`` beside the config it was trained with: an earlier
    run's refit of the same trial and parameters (recorded in ``refit.json`` once tested),
    else a fresh fit into that emptied folder (one left unfinished is trained again). Tuners
    of one study finishing together take turns (a lock file beside the folder): the second
    reuses the first one's refit."""
    from filelock import FileLock, Timeout

    folder = directory / "best_fit" / f"trial_{best.number}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder.parent / f"trial_{best.number}.lock")
    try:
        lock.acquire(timeout=1)
    except Timeout:
        log.info("waiting for another tuner's refit of trial %d (%s)", best.number, folder)
        lock.acquire()
    try:
        record = folder / REFIT_FILE
        # the refit belongs to this very trial (a study made again numbers its trials from 0
        # again) and to this config (base config and parameters)
        identity = {
            "trial": best.number,
            "trial_started": best.datetime_start.isoformat() if best.datetime_start else None,
            "params": best.params,
            "config_sha256": hashlib.sha256(  # what is learned, not where it runs
                json.dumps(learning_config(config), sort_keys=True, default=str).encode()
            ).hexdigest(),
        }
        if record.is_file():
            saved = json.loads(record.read_text())
            same = all(saved.get(key) == value for key, value in identity.items())
            if same and Path(saved.get("model", "")).is_file():
                return saved["model"], saved.get("test") or {}
        shutil.rmtree(folder, ignore_errors=True)
        fitted = job.fit(config, folder, options.metric)
        if fitted.model_path is None:
            return None, {}
        model, test = str(fitted.model_path.resolve()), job.test(config, fitted.model_path)
        saved = {**identity, "model": model, "test": test}
        record.write_text(json.dumps(saved, indent=2))
        return model, test
    finally:
        lock.release()


REFIT_FILE = "refit.json"  # in best_fit/trial_<n>/ once the refitted model is tested


MAX_TRIES = 3  # trials of one point whose every run was stopped, before it is given up


def retry_stopped_trials(study: optuna.Study) -> list[dict[str, Any]]:
    """Enqueue again the parameters whose every trial was stopped (Ctrl-C, SIGTERM, a process
    killed; stale heartbeats are failed first), so a resumed study still scores them: the
    config's own point, a grid's point. A trial that failed by itself (an error, a non-finite
    metric) is not retried. Returns the parameters enqueued."""
    # the study's storage is Optuna's cache around the RDB storage: Optuna itself checks that
    # heartbeats are on (an isinstance check on RDBStorage here never held)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials: dict[str, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        # an enqueued (waiting) trial holds its parameters as fixed ones until it runs
        params = trial.params or trial.system_attrs.get("fixed_params", {})
        trials.setdefault(json.dumps(params, sort_keys=True, default=str), []).append(trial)
    retried = []
    for same in trials.values():
        reasons = [fail_reason(t) for t in same]
        stopped = all(r == STOPPED or r.startswith("stopped by") for r in reasons)
        # a point whose process keeps dying (out of memory, a crash) is tried at most 3 times
        if stopped and len(same) < MAX_TRIES and same[-1].params:
            attrs = {k: v for k, v in same[-1].user_attrs.items() if k == "start"}
            study.enqueue_trial(same[-1].params, user_attrs={**attrs, "retry_of": same[-1].number})
            retried.append(same[-1].params)
    if retried:
        log.info("trying again %d point(s) whose trials were stopped: %s", len(retried), retried)
    return retried


def fail_reason(trial: FrozenTrial) -> str:
    """Why a trial failed ("" unless it did)."""
    if trial.state != TrialState.FAIL:
        return ""
    return trial.user_attrs.get(FAIL_REASON, STOPPED)


def write_trials(study: optuna.Study, path: Path) -> pd.DataFrame:
    """The trials table: number, state, value, one column per parameter, duration (s) and
    the reason of each failed trial."""
    rows = []
    for trial in study.trials:
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                **{f"params_{name}": value for name, value in trial.params.items()},
                "duration_s": duration,
                "fail_reason": fail_reason(trial),
            }
        )
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


def write_plots(study: optuna.Study, directory: Path) -> list[Path]:
    """Optuna's optimisation history, parameter importances, parallel coordinates and slice
    plots as PNG (matplotlib) and as interactive HTML (plotly; the pages share one
    ``plotly.min.js`` written beside them, so they open offline); a plot the trials cannot
    support yet (e.g. importances of fewer than two finished trials) is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna import visualization
    from optuna.visualization import matplotlib as mpl_plots

    directory.mkdir(parents=True, exist_ok=True)
    plots = {
        "history": "plot_optimization_history",
        "importances": "plot_param_importances",
        "parallel_coordinate": "plot_parallel_coordinate",
        "slice": "plot_slice",
    }
    written = []
    for name, function in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = getattr(mpl_plots, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                log.warning("tune: no %s plot (%s)", name, exc)
                continue
        panels = np.asarray(axes).ravel()
        figure = panels[0].figure
        figure.set_size_inches(max(8.0, 4.0 * len(panels) + 2.0), 6.0)
        figure.savefig(directory / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(directory / f"{name}.png")
        page = directory / f"{name}.html"
        getattr(visualization, function)(study).write_html(page, include_plotlyjs="directory")
        written.append(page)
    if written:
        written.append(directory / "plotly.min.js")
    return written


class _Tracker:
    """MLflow: one parent run per ``molml tune`` process, one nested run per trial."""

    def __init__(self, options: TuneOptions, directory: Path) -> None:
        self.client = None
        self.parent_id = ""
        if not options.tracking_uri:
            return
        self.client = mlflow_client(options.tracking_uri)
        # an experiment of its own: the config's fit runs log to one named like the study
        self.experiment_id = experiment_id(
            self.client,
            f"tune/{options.study_name}",
            (Path(options.output_dir) / "mlartifacts").resolve().as_uri(),
        )
        parent = self.client.create_run(
            self.experiment_id,
            run_name=f"tune {options.study_name}",
            tags={"molml.metric": options.metric, "molml.output": str(directory)},
        )
        self.parent_id = parent.info.run_id

    def log_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial {trial.number}",
            tags={"mlflow.parentRunId": self.parent_id},
        )
        tags = [RunTag("state", trial.state.name)]
        if reason := fail_reason(trial):
            tags.append(RunTag(FAIL_REASON, reason[:5000]))
        metrics = []
        if trial.value is not None:
            metrics.append(Metric("value", trial.value, 0, 0))
        for step, value in trial.intermediate_values.items():
            metrics.append(Metric("intermediate_value", value, 0, step))
        for name, points in trial.user_attrs.get(CURVES, {}).items():
            metrics += [Metric(name, value, 0, int(epoch)) for epoch, value in points]
        params = [Param(name, str(value)) for name, value in trial.params.items()]
        params.append(Param("trial_number", str(trial.number)))
        self.client.log_batch(run.info.run_id, params=params, tags=tags)
        for start in range(0, len(metrics), _MLFLOW_BATCH):  # MLflow takes 1,000 per call
            self.client.log_batch(run.info.run_id, metrics=metrics[start : start + _MLFLOW_BATCH])
        status = "FINISHED" if trial.state == TrialState.COMPLETE else "FAILED"
        if trial.state == TrialState.PRUNED:
            status = "KILLED"
        self.client.set_terminated(run.info.run_id, status=status)

    def finish(
        self,
        study: optuna.Study,
        best: FrozenTrial | None,
        directory: Path,
        outputs: dict[str, Any],
    ) -> None:
        if self.client is None:
            return
        if best is not None:
            from mlflow.entities import Metric

            summary = outputs["summary"]
            metrics = [Metric("best_value", best.value, 0, 0)]
            metrics += [Metric(k, v, 0, 0) for k, v in summary["test"].items()]
            self.client.log_batch(self.parent_id, metrics=metrics)
            for name in ("best.yaml", "best.json", "trials.csv"):
                self.client.log_artifact(self.parent_id, str(directory / name))
            for plot in outputs["plots"]:
                self.client.log_artifact(self.parent_id, str(plot), artifact_path="plots")
        self.end("FINISHED")

    def end(self, status: str) -> None:
        """Close the parent run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self.client is not None:
            self.client.set_terminated(self.parent_id, status=status)
