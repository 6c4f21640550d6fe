"""MLflow tracking-URI helpers shared by the graph-model CLI and the baselines."""

from __future__ import annotations

from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def absolute_tracking_uri(uri: str) -> str:
    """Resolve a relative ``sqlite:///`` URI against the working directory and create its folder.

    MLflow caches one store per URI string for the whole process, so a relative URI used from
    two working directories would silently write both runs into the first database.
    """
    if not uri.startswith(SQLITE_PREFIX):
        return uri
    database = Path(uri.removeprefix(SQLITE_PREFIX)).resolve()
    database.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
    return f"{SQLITE_PREFIX}{database}"
