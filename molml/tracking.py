"""MLflow helpers shared by the graph-model CLI, the baselines and the reports: tracking URIs
and the record of which MLflow run a run directory belongs to."""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import textwrap
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from molml.errors import DataError, finishing_before_a_stop

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("molml")

SQLITE_PREFIX = "sqlite:///"
TRACKING_OFF = ("", "none", "null", "off")


def checked_tracking_uri(uri: str | None, option: str) -> str | None:
    """``uri`` as the MLflow tracking URI of ``option``, or None for no tracking (None, "",
    "none", "null", "off"). MLflow's file store (a ``file:`` URI or a plain folder) is refused:
    it keeps each metric as a file, so molml's ``val/rmse`` and ``val/rmse/<task>`` cannot both
    be logged, and MLflow 3 refuses it unless told otherwise."""
    if uri is None or uri.strip().lower() in TRACKING_OFF:
        return None
    scheme = urlparse(uri).scheme.lower()
    if scheme == "file" or (scheme == "" and not uri.startswith("databricks")) or len(scheme) == 1:
        raise DataError(
            f"{option} {uri!r} is an MLflow file store, which molml cannot log to (metric "
            "names such as val/rmse and val/rmse/<task> clash in it); use a database, e.g. "
            f"'sqlite:///runs/mlflow.db', a tracking server (http://...), or 'none' for no tracking"
        )
    return uri


def absolute_tracking_uri(uri: str) -> str:
    """Resolve a relative ``sqlite:///`` URI against the working directory and create its folder.

    MLflow caches one store per URI string for the whole process, so a relative URI used from
    two working directories would silently write both runs into the first database.
    """
    if not uri.startswith(SQLITE_PREFIX):
        return uri
    database = Path(uri.removeprefix(SQLITE_PREFIX)).resolve()
    try:
        database.parent.mkdir(parents=True, exist_ok=True)  # sqlite makes the file, not its folder
    except OSError as exc:  # a file where a folder of the path should be, no permission ...
        raise DataError(
            f"{uri}: cannot make the database's folder {database.parent} ({exc})"
        ) from exc
    return f"{SQLITE_PREFIX}{database}"


@functools.cache
def _stop_safe_client_class() -> type[MlflowClient]:
    """MLflow's client whose every call finishes before a stop (SIGTERM, Ctrl-C) takes effect,
    for SQLite stores: a stop inside a metric write left the database locked, so the stopped
    run could not be closed as killed (MLflow waits 20 s for the lock, then fails). A tracking
    server's client is not held back: its calls retry for minutes."""
    from mlflow.tracking import MlflowClient

    @finishing_before_a_stop
    class StopSafeMlflowClient(MlflowClient):
        pass

    return StopSafeMlflowClient


def mlflow_client(uri: str) -> MlflowClient:
    """An MLflow client of ``uri`` (a relative ``sqlite:///`` made absolute, see
    :func:`absolute_tracking_uri`). A new SQLite database is made whole or not at all (see
    :func:`_make_sqlite_store`); one whose tables cannot be read is a :class:`DataError`
    naming it and the ways out."""
    from mlflow.tracking import MlflowClient

    uri = absolute_tracking_uri(uri)
    if not uri.startswith(SQLITE_PREFIX):
        return MlflowClient(uri)
    database = Path(uri.removeprefix(SQLITE_PREFIX))
    if not database.exists():
        _make_sqlite_store(database)
    _remove_stale_partials(database)
    try:
        client = _stop_safe_client_class()(uri)
        client.search_experiments(max_results=1)  # opens it: the tables, their version
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's and MLflow's many errors
        text = str(exc)
        if not any(sign in text for sign in UNREADABLE_STORE):
            raise
        reason = textwrap.shorten(text.strip().splitlines()[0], 200, placeholder=" ...")
        raise DataError(
            f"the MLflow database {database} cannot be opened ({reason}). If an older MLflow "
            f"made it: mlflow db upgrade {uri}; if a run was stopped while it was being made: "
            "delete it; or log to another tracking_uri"
        ) from exc
    return client


# what SQLite, SQLAlchemy and MLflow say of a database whose tables cannot be used
UNREADABLE_STORE = (
    "OperationalError",
    "DatabaseError",
    "file is not a database",
    "out-of-date database schema",
    "mlflow db upgrade",
)


def _make_sqlite_store(database: Path) -> None:
    """Let MLflow make its tables in a new SQLite file beside ``database``, then link it into
    place: a run stopped meanwhile (Ctrl-C, SIGTERM) leaves no half-made database behind,
    and of several processes making it at once the first one's is kept."""
    from mlflow.tracking import MlflowClient

    # a name never used before: MLflow keeps the store of each URI for the whole process
    partial = database.with_name(f".{database.name}.{uuid.uuid4().hex}.partial")
    quiet = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:  # "Creating initial MLflow database tables...": not news here
            logger.setLevel(logging.WARNING)
        MlflowClient(f"{SQLITE_PREFIX}{partial}").search_experiments(max_results=1)
        try:
            os.link(partial, database)  # never over a database made meanwhile
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not database.exists():
                os.replace(partial, database)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
        partial.unlink(missing_ok=True)


STALE_PARTIAL_SECONDS = 3600  # making the tables takes seconds; older ones were killed


def _remove_stale_partials(database: Path) -> None:
    """Delete the half-made databases (and their SQLite journals) that runs killed outright
    (SIGKILL, a lost machine) left beside ``database`` more than an hour ago; each time a
    store is opened, so one left just before a rerun goes on a later run."""
    for leftover in database.parent.glob(f".{glob.escape(database.name)}.*.partial*"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_PARTIAL_SECONDS:
                leftover.unlink()
        except OSError:  # removed by another process meanwhile, or not ours to remove
            continue


MLFLOW_RUN_FILE = "mlflow_run.json"


def record_mlflow_run(run_dir: str | Path, tracking_uri: str, run_id: str) -> Path:
    """Note in a run directory which MLflow run it was logged to (the tracking URI made
    absolute), so later artifacts (an evaluation report) can join that record from any
    working directory."""
    tracking_uri = absolute_tracking_uri(tracking_uri)
    if tracking_uri.startswith("file:") and not tracking_uri.startswith("file:///"):
        tracking_uri = Path(tracking_uri.removeprefix("file:")).resolve().as_uri()
    elif "://" not in tracking_uri and not tracking_uri.startswith("file:"):  # a plain path
        tracking_uri = str(Path(tracking_uri).resolve())
    path = Path(run_dir) / MLFLOW_RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"tracking_uri": tracking_uri, "run_id": run_id}
    if tracking_uri.startswith(SQLITE_PREFIX):  # found again after the project is moved
        database = Path(tracking_uri.removeprefix(SQLITE_PREFIX))
        record["database_from_run"] = os.path.relpath(database, path.parent.resolve())
    path.write_text(json.dumps(record) + "\n")
    return path


def log_to_recorded_run(run_dir: str | Path, folder: str | Path, artifact_path: str) -> str | None:
    """Log ``folder``'s files as artifacts of the MLflow run recorded in ``run_dir``; returns
    the run id, or None when the run directory records no MLflow run."""
    record = Path(run_dir) / MLFLOW_RUN_FILE
    if not record.is_file():
        return None
    from mlflow.tracking import MlflowClient

    recorded = json.loads(record.read_text())
    uri = recorded["tracking_uri"]
    if uri.startswith(SQLITE_PREFIX) and not Path(uri.removeprefix(SQLITE_PREFIX)).is_file():
        # the project moved: its database is where it was relative to the run, or nowhere
        # (it is not made anew at the old place)
        moved = (record.parent / recorded.get("database_from_run", "")).resolve()
        if "database_from_run" not in recorded or not moved.is_file():
            raise DataError(f"the run's MLflow database {uri.removeprefix(SQLITE_PREFIX)} is gone")
        uri = f"{SQLITE_PREFIX}{moved}"
        # MLflow keeps the run's artifact folder as an absolute path: logging there would
        # make the old project's folders anew
        artifacts = urlparse(MlflowClient(uri).get_run(recorded["run_id"]).info.artifact_uri)
        if artifacts.scheme in ("", "file") and not Path(artifacts.path).parent.is_dir():
            raise DataError(
                f"the run's MLflow artifact folder {artifacts.path} is gone (the project "
                "moved); MLflow cannot log artifacts of that run anew"
            )
    client = mlflow_client(uri)
    client.log_artifacts(recorded["run_id"], str(folder), artifact_path=artifact_path)
    return recorded["run_id"]


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of MLflow experiment ``name``, created if there is none; safe when several
    processes create it at once (the one that loses the race reads the winner's)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise DataError(
            f"MLflow experiment {name!r} was deleted; restore it (mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}) or log under another name"
        )
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:  # not a race: a real error
            raise
        return experiment.experiment_id


def warn_if_artifacts_elsewhere(client: MlflowClient, experiment: str) -> None:
    """Warn when an experiment keeps its artifacts in a local folder whose parent is gone:
    MLflow stores that location as an absolute path, so in a moved project new runs' artifacts
    would go back to (and recreate) the old place."""
    location = urlparse(client.get_experiment(experiment).artifact_location)
    if location.scheme not in ("", "file"):
        return
    folder = Path(location.path)
    if not folder.parent.exists():
        log.warning(
            "MLflow experiment %s keeps its artifacts in %s, whose folder %s does not exist: "
            "they will be written there. If this project was moved, log under a new "
            "experiment_name (or tracking database) to keep them inside it.",
            experiment,
            folder,
            folder.parent,
        )
