"""molml as a user gets it: a built wheel installed non-editable, run from outside the checkout.

The wheel is installed with ``pip --target`` into a temporary directory that is put first on
``PYTHONPATH``; the checkout is not importable from there, so the configs and dataset cards the
commands need must come from the installed package itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import REPO, require_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the checkout."""
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("molml-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel installed non-editable into its own directory (used as ``PYTHONPATH``)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    yield target


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m molml.cli ARGS`` importing molml from ``site`` only, run in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_wheel_ships_every_module_and_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "molml").rglob("*.py")}
    assert sources - names == set()
    for folder in ("configs", "datasets"):
        prefix = f"molml/{folder}/"
        shipped = {n.removeprefix(prefix) for n in names if n.startswith(prefix)}
        expected = {p.relative_to(REPO / folder).as_posix() for p in (REPO / folder).rglob("*")}
        assert shipped == {name for name in expected if name.endswith(".yaml")}, folder


def test_installed_molml_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    code = "import molml; print(molml.__file__)"
    result = run_installed(installed, tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(installed)


def test_quickstart_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """Into a folder whose name starts with '-' (passed on as option values, such a path was
    read as an option)."""
    out = tmp_path / "-qs"
    result = run_installed(
        installed, tmp_path, "-m", "molml.cli", "quickstart", "--max-epochs", "1", "--out=-qs"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "molml quickstart done" in result.stdout
    scores = pd.read_csv(out / "library_scores.csv")
    assert len(scores) == len(pd.read_csv(out / "nci5k_logp.csv")) > 4900
    assert (scores["status"] == "ok").mean() > 0.99
    # the run is under --out too, and MLflow's database beside it
    assert list(out.glob("version_*/checkpoints/best.ckpt"))
    assert (tmp_path / "mlflow.db").is_file() and not (tmp_path / "runs").exists()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.run_name == "-qs/version_0"  # named after its folder, not a random name


def test_fit_a_shipped_config_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """The README's ``molml fit --config configs/esol_dmpnn.yaml`` from a folder without
    configs/: the copy inside the package is read."""
    require_dataset("esol")
    assert not (tmp_path / "configs").exists()
    result = run_installed(
        installed,
        tmp_path,
        "-m",
        "molml.cli",
        "fit",
        "--config",
        "configs/esol_dmpnn.yaml",
        "--model.encoder.init_args.hidden_dim",
        "32",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "2",
        "--data.cache_dir",
        str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "runs").glob("esol_dmpnn/version_0/checkpoints/best.ckpt"))
