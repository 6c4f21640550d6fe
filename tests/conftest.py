"""Shared test setup: where the MoleculeNet CSVs live, and helpers for tests that need them.

``MOLML_DATA_DIR`` wins when set; otherwise the CI layout is assumed: a clean clone with the
shared data beside it (``<clone>/../shared/datasets``). Tests that need a dataset skip with a
clear reason when the file is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def logp_classes(logp) -> np.ndarray:  # noqa: F821 - numpy is imported lazily below
    """A 3-class label from logP terciles (0 = lowest third); NaN stays NaN."""
    import numpy as np

    logp = np.asarray(logp, dtype=float)
    edges = np.nanquantile(logp, [1 / 3, 2 / 3])
    return np.where(np.isnan(logp), np.nan, np.digitize(logp, edges).astype(float))


def write_task_csv(path: Path, n: int, columns: tuple[str, ...] = ("logp",), **kwargs) -> Path:
    """``smiles`` plus the chosen columns of :func:`write_property_csv` (``logp``, ``tpsa``,
    ``active``) or ``logp_class`` (:func:`logp_classes`); ``invalid`` as there."""
    import pandas as pd

    frame = pd.read_csv(write_property_csv(path, n, **kwargs))
    frame["logp_class"] = logp_classes(frame["logp"])
    frame[["smiles", *columns]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def classification_runs(property_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny D-MPNN (``model.pos_weight: auto``) and an XGBoost baseline fitted with the molml
    command on the rare ``active`` label of :func:`property_csv`, same scaffold-stratified split:
    ``{"graph": run dir, "baseline": run dir}``."""
    import yaml

    from molml.cli import main

    root = tmp_path_factory.mktemp("classification_runs")
    data = {"path": str(property_csv), "target_columns": ["active"], "split": "scaffold_stratified"}
    graph = {
        "seed_everything": 0,
        "data": {**data, "batch_size": 32, "cache_dir": None, "featurize_jobs": 1},
        "model": {
            "encoder": {"class_path": "molml.models.DMPNN", "init_args": {"hidden_dim": 32}},
            "ffn_hidden_dim": 32,
            "pos_weight": "auto",
        },
        "trainer": {
            "max_epochs": 2,
            "enable_progress_bar": False,
            "logger": [
                {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": str(root / "runs"), "name": "gnn"},
                }
            ],
        },
    }
    baseline = {
        "data": data,
        "features": {"name": "ecfp4", "params": {"n_bits": 1024}},
        "estimator": {"name": "xgboost", "params": {"n_estimators": 30}},
        "name": "xgb",
        "output_dir": str(root / "runs"),
        "tracking_uri": None,
    }
    (root / "gnn.yaml").write_text(yaml.safe_dump(graph))
    (root / "xgb.yaml").write_text(yaml.safe_dump(baseline))
    main(["fit", "--config", str(root / "gnn.yaml")])
    main(["baseline", "fit", "--config", str(root / "xgb.yaml")])
    return {
        "graph": root / "runs" / "gnn" / "version_0",
        "baseline": root / "runs" / "xgb" / "version_0",
    }


@pytest.fixture(scope="session")
def ecfp_baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved ECFP4 (1024 bits) baselines on 300 NCI molecules: an XGBoost regressor of Crippen
    logP (``xgb``) and a random forest classifier of "has a nitrogen" (``forest``)."""
    import numpy as np
    import xgboost as xgb
    from rdkit import Chem
    from rdkit.Chem import Crippen
    from sklearn.ensemble import RandomForestClassifier

    from molml.baselines.estimators import ForestTaskModel, XGBoostTaskModel
    from molml.baselines.model import BaselineModel
    from molml.chem.fingerprints import MorganFingerprint

    smiles = nci_smiles(300)
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    fingerprint = MorganFingerprint(radius=2, n_bits=1024)
    X, _ = fingerprint.transform(smiles)
    logp = np.array([Crippen.MolLogP(m) for m in mols])
    nitrogen = np.array([any(a.GetSymbol() == "N" for a in m.GetAtoms()) for m in mols])
    root = tmp_path_factory.mktemp("baselines")
    booster = xgb.XGBRegressor(n_estimators=60, max_depth=4, n_jobs=1).fit(X, logp).get_booster()
    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0, n_jobs=1)
    forest.fit(X, nitrogen.astype(int))
    return {
        "xgb": BaselineModel(
            fingerprint, ["logp"], "regression", "xgboost", [XGBoostTaskModel(booster)]
        ).save(root / "xgb"),
        "forest": BaselineModel(
            fingerprint,
            ["has_n"],
            "classification",
            "random_forest",
            [ForestTaskModel.from_sklearn(forest)],
        ).save(root / "forest"),
    }


# ---------------------------------------------------------------------------- molml serve


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


def run_stopped_at_line(call: Callable[[], object], line: int, in_file: str = "") -> bool:
    """Run ``call`` as a molml verb with SIGTERM sent at the ``line``-th line it runs (counting
    only lines of files whose path ends with ``in_file``); whether the signal was sent, the
    verb then having exited 143."""
    import signal
    import sys

    from molml.errors import EXIT_TERMINATED, run_command

    lines_run = 0

    def stop_at_line(frame: object, event: str, arg: object) -> object:
        nonlocal lines_run
        if event == "line" and frame.f_code.co_filename.endswith(in_file):  # type: ignore[attr-defined]
            lines_run += 1
            if lines_run == line:
                os.kill(os.getpid(), signal.SIGTERM)
        return stop_at_line

    def traced() -> None:
        sys.settrace(stop_at_line)
        try:
            call()
        finally:
            sys.settrace(None)

    try:
        run_command("molml test", traced)
    except SystemExit as stopped:
        assert stopped.code == EXIT_TERMINATED
        return True
    assert lines_run < line  # it ran to the end before the line came
    return False
