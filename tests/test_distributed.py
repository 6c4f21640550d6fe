"""Real multi-process training and evaluation (2 CPU processes, gloo) and bf16 mixed precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import write_task_csv

import molml
from molml.data.datamodule import MoleculeDataModule

TESTS = Path(__file__).resolve().parent
# the subprocesses import this module, for GatheredTestOutputs
ENV = {
    **os.environ,
    "PYTHONWARNINGS": "ignore",
    "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p),
}


class GatheredTestOutputs(L.Callback):
    """Write what each rank's model holds in ``test_outputs`` after ``test`` (for the plots)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        preds, target, mask = (t.cpu().numpy() for t in pl_module.test_outputs)
        record = {"preds": preds.tolist(), "target": target.tolist(), "mask": mask.tolist()}
        path = self.directory / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))


def write_config(tmp_path: Path, n_molecules: int) -> Path:
    """A small D-MPNN config on ``n_molecules`` NCI molecules with Crippen logP (plus three
    invalid rows), logging to ``tmp_path``."""
    subset = write_task_csv(tmp_path / "logp_subset.csv", n_molecules)
    config = {
        "seed_everything": 0,
        "data": {
            "path": str(subset),
            "split": "scaffold",
            "batch_size": 16,
            "cache_dir": str(tmp_path / "cache"),
            "featurize_jobs": 1,
        },
        "model": {
            "encoder": {
                "class_path": "molml.models.DMPNN",
                "init_args": {"hidden_dim": 32, "depth": 2},
            },
            "ffn_hidden_dim": 32,
        },
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "ddp"},
            },
            "callbacks": [
                {
                    "class_path": "molml.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/rmse", "filename": "best"},
                },
                {"class_path": "molml.callbacks.EvaluationPlots"},  # as in the shipped configs
            ],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def molml_cli(*args: str, cwd: Path) -> None:
    command = [sys.executable, "-m", "molml.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def logged(run: Path, key: str) -> float:
    metrics = pd.read_csv(run / "metrics.csv")
    return float(metrics[key].dropna().iloc[-1])


def test_two_process_ddp_fit_and_test_match_single_process_evaluation(tmp_path: Path) -> None:
    # 151 molecules: a scaffold split with 15 test molecules cannot be split evenly over 2 ranks
    # with the default sampler without repeating one, so padding would show up in the metric
    config = write_config(tmp_path, 151)
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    molml_cli("fit", "--config", str(config), *ddp, cwd=tmp_path)
    fit_run = tmp_path / "runs" / "ddp" / "version_0"
    best = fit_run / "checkpoints" / "best.ckpt"
    assert best.is_file()
    probe = {
        "class_path": "test_distributed.GatheredTestOutputs",
        "init_args": {"directory": str(tmp_path)},
    }
    with_probe = yaml.safe_load(config.read_text())
    with_probe["trainer"]["callbacks"].append(probe)
    test_config = tmp_path / "test_config.yaml"
    test_config.write_text(yaml.safe_dump(with_probe))
    molml_cli("test", "--config", str(test_config), "--ckpt_path", str(best), *ddp, cwd=tmp_path)
    test_run = tmp_path / "runs" / "ddp" / "version_1"
    # a later test of the checkpoint records its metrics and plot in its own run folder
    recorded = json.loads((test_run / "test_metrics.json").read_text())
    assert list(recorded) == [str(best.resolve())] and (test_run / "test_parity.png").is_file()

    dm = MoleculeDataModule(
        path=str(tmp_path / "logp_subset.csv"), split="scaffold", cache_dir=None, featurize_jobs=1
    )
    model = molml.load_model(best).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            default_root_dir=tmp_path,
        )
        (single,) = trainer.test(model, datamodule=dm, verbose=False)
    assert len(dm.split.test) % 2 == 1
    for key in ("test/rmse", "test/mae", "test/r2", "test/loss"):
        assert logged(test_run, key) == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
    n_test = len(dm.split.test)
    assert model.test_outputs[0].shape[0] == n_test
    # under DDP every rank holds all ranks' test molecules (plots are drawn from them), each
    # once: the same targets and predictions as one process, in rank-interleaved order
    single_preds, single_target, _ = (t.numpy()[:, 0] for t in model.test_outputs)
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        preds, target = np.array(record["preds"])[:, 0], np.array(record["target"])[:, 0]
        assert len(preds) == len(target) == n_test, rank
        assert np.all(record["mask"])
        assert np.allclose(np.sort(target), np.sort(single_target))
        assert np.allclose(np.sort(preds), np.sort(single_preds), atol=1e-5)
    # a file of fewer molecules than processes: refused as bad input, not a sampler assertion
    one = tmp_path / "one.csv"
    one.write_text("smiles\nCCO\n")
    command = [sys.executable, "-m", "molml.cli", "predict", "--config", str(config),
               "--ckpt_path", str(best), "--data.predict_path", str(one), *ddp]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"data.predict_path {one} has 1 valid molecule(s), fewer than the 2 processes" in (
        result.stderr
    )


def test_bf16_mixed_training_on_cpu_saves_a_loadable_checkpoint(tmp_path: Path) -> None:
    config = write_config(tmp_path, 120)
    molml_cli("fit", "--config", str(config), "--trainer.precision", "bf16-mixed", cwd=tmp_path)
    best = tmp_path / "runs" / "ddp" / "version_0" / "checkpoints" / "best.ckpt"
    model = molml.load_model(best)
    assert all(p.dtype == torch.float32 for p in model.model.parameters())  # fp32 master weights
    predictions = model.predict(["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"])
    assert (predictions["status"] == "ok").all()
    assert np.isfinite(predictions["logp"]).all()
    assert np.isfinite(logged(tmp_path / "runs" / "ddp" / "version_0", "val/rmse"))


def test_sigterm_under_ddp_forwards_the_signal_without_a_collective(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broadcast inside the SIGTERM handler could meet another rank's different collective
    and hang both; molml's notifier forwards the signal once and calls no collective."""
    from types import SimpleNamespace

    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    from molml.models.sigterm import LIGHTNING_SIGTERM_NOTIFIER, forward_sigterm_without_broadcast

    def no_collective(*args: object, **kwargs: object) -> None:
        raise AssertionError("a collective inside the signal handler")

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "broadcast", no_collective)
    # Lightning's notifier first, whether or not an earlier molml run replaced it already
    monkeypatch.setattr(_SignalConnector, "_sigterm_notifier_fn", LIGHTNING_SIGTERM_NOTIFIER)
    killed: list[int] = []
    launcher = SimpleNamespace(kill=killed.append)
    trainer = SimpleNamespace(
        world_size=2, local_rank=0, strategy=SimpleNamespace(launcher=launcher, root_device="cpu")
    )
    connector = _SignalConnector(trainer)
    with pytest.raises(AssertionError, match="collective"):  # Lightning's own notifier
        connector._sigterm_notifier_fn(15, None)
    forward_sigterm_without_broadcast()
    connector = _SignalConnector(trainer)
    connector._sigterm_notifier_fn(15, None)
    connector._sigterm_notifier_fn(15, None)
    assert killed == [15, 15] and connector.received_sigterm  # Lightning's call, then ours once
