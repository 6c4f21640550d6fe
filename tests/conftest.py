"""Shared test setup: where the MoleculeNet CSVs live, and helpers for tests that need them.

``MOLML_DATA_DIR`` wins when set; otherwise the CI layout is assumed: a clean clone with the
shared data beside it (``<clone>/../shared/datasets``). Tests that need a dataset skip with a
clear reason when the file is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def data_dir() -> Path:
    """The dataset directory the tests use (``$MOLML_DATA_DIR`` or ``../shared/datasets``)."""
    return Path(os.environ.get("MOLML_DATA_DIR") or DEFAULT_DATA_DIR)


def pytest_configure(config: pytest.Config) -> None:
    # Set before test modules are imported, so module-level constants see the same directory.
    if not os.environ.get("MOLML_DATA_DIR"):
        os.environ["MOLML_DATA_DIR"] = str(DEFAULT_DATA_DIR)


@pytest.fixture(scope="session", autouse=True)
def molml_data_dir() -> Iterator[Path]:
    """Export ``MOLML_DATA_DIR`` for the whole session (it may not exist; see ``dataset_csv``)."""
    path = data_dir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOLML_DATA_DIR", str(path))
        yield path


def require_dataset(name: str) -> Path:
    """Path of ``<data dir>/<name>.csv``; skips the calling test when it is missing."""
    path = data_dir() / f"{name}.csv"
    if not path.is_file():
        pytest.skip(
            f"dataset {path} not found: set MOLML_DATA_DIR to the MoleculeNet CSVs "
            f"(or put them in {DEFAULT_DATA_DIR})"
        )
    return path


@pytest.fixture
def dataset_csv() -> Callable[[str], Path]:
    """``dataset_csv("esol")`` -> the CSV path, or skip the test when it is missing."""
    return require_dataset
