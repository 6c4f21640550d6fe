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


# ---------------------------------------------------------------------------- generated data
# Data the project makes itself, so the data and model paths are tested on any machine:
# real NCI molecules shipped with RDKit, with targets RDKit computes.

NCI_LIBRARY = Path(__import__("rdkit").__file__).parent / "Data" / "NCI" / "first_5K.smi"
GENERATED_TASKS = ["logp", "tpsa"]
INVALID_SMILES = ["C1CC", "not_a_smiles", "c1cccc1"]  # unclosed ring, garbage, bad aromaticity


def nci_smiles(n: int) -> list[str]:
    """The first ``n`` SMILES of RDKit's NCI sample that RDKit parses."""
    from rdkit import Chem

    out = []
    with NCI_LIBRARY.open() as handle:
        for line in handle:
            smiles = line.split()[0]
            if Chem.MolFromSmiles(smiles) is not None:
                out.append(smiles)
                if len(out) == n:
                    break
    return out


def write_property_csv(path: Path, n: int, *, invalid: bool = True) -> Path:
    """``smiles,id,logp,tpsa,active``: Crippen logP and TPSA (regression, TPSA masked on every
    7th row) and a rare binary label (logP > 4.5, ~8% positives); plus invalid SMILES rows."""
    import numpy as np
    import pandas as pd
    from rdkit import Chem
    from rdkit.Chem import Crippen, rdMolDescriptors

    smiles = nci_smiles(n)
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    logp = np.array([Crippen.MolLogP(m) for m in mols])
    tpsa = np.array([rdMolDescriptors.CalcTPSA(m) for m in mols])
    tpsa[::7] = np.nan
    frame = pd.DataFrame(
        {
            "smiles": smiles,
            "id": [f"nci{i}" for i in range(n)],
            "logp": logp.round(4),
            "tpsa": tpsa.round(3),
            "active": (logp > 4.5).astype(float),
        }
    )
    if invalid:
        bad = pd.DataFrame({"smiles": INVALID_SMILES, "id": [f"bad{i}" for i in range(3)]})
        frame = pd.concat([frame.iloc[:40], bad, frame.iloc[40:]], ignore_index=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def property_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 NCI molecules + 3 invalid rows with RDKit-computed targets (see
    :func:`write_property_csv`)."""
    return write_property_csv(tmp_path_factory.mktemp("generated") / "nci_props.csv", 400)


@pytest.fixture(scope="session")
def graph_run(property_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small D-MPNN trained for two epochs on logP + TPSA, its checkpoint, tested once."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from molml.callbacks import EvaluationPlots
    from molml.data.datamodule import MoleculeDataModule
    from molml.models import DMPNN, MoleculeModel

    root = tmp_path_factory.mktemp("graph_run")
    L.seed_everything(0)
    dm = MoleculeDataModule(
        path=str(property_csv),
        target_columns=GENERATED_TASKS,
        cache_dir=None,
        featurize_jobs=1,
        batch_size=32,
    )
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=48, depth=2),
        ffn_hidden_dim=48,
        tasks=dm.tasks,
        featurizer=dm.featurizer_config,
    )
    checkpoint = ModelCheckpoint(dirpath=root / "run" / "checkpoints", filename="best")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        callbacks=[checkpoint, EvaluationPlots()],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=dm)
    (tested,) = trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False)
    return {"dm": dm, "model": model, "ckpt": Path(checkpoint.best_model_path), "tested": tested}


# ---------------------------------------------------------------------------- molml serve

from contextlib import contextmanager  # noqa: E402 - for the helpers below


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def molml_server(args: list[str], cwd: Path | None = None, timeout: float = 120) -> Iterator[str]:
    """Run ``molml serve ARGS --port P`` (this checkout's molml) in its own process; yields its
    URL once ``/health`` answers, then stops it and checks that it shut down cleanly."""
    import signal
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    command = [sys.executable, "-m", "molml.cli", "serve", *args, "--port", str(port)]
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])  # this checkout's molml
    env = {**os.environ, "PYTHONPATH": path}
    server = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, server.communicate()[0].decode()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"molml serve did not answer in {timeout} s"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    # uvicorn shuts down gracefully, then exits by the signal it was sent
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
