"""Self-supervised pretraining on RDKit descriptors, and fine-tuning from pretrained encoders."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import nci_smiles, write_task_csv
from torch_geometric.data import Batch

import molml
from molml.chem.featurizer import MolGraphFeaturizer
from molml.data.datamodule import MoleculeDataModule
from molml.data.pretraining import PretrainDataModule, load_shard, zinc_smiles_path
from molml.errors import CheckpointError, DataError
from molml.models import DMPNN, GINE, MoleculeModel
from molml.models.checkpoint import load_checkpoint
from molml.models.pretrained import pretrained_names, pretrained_path
from molml.training import full_config

REPO = Path(__file__).resolve().parents[1]
TELLURIUM = "C[Te]C"  # RDKit has no Gasteiger charges for Te: 12 descriptors fail


def write_smiles(path: Path, n: int, extra: tuple[str, ...] = ()) -> Path:
    """A SMILES file of ``n`` NCI molecules plus ``extra`` lines, after the 60th molecule."""
    smiles = nci_smiles(n)
    lines = [*smiles[:60], *extra, *smiles[60:]]
    path.write_text("smiles\n" + "\n".join(lines) + "\n")
    return path


def pretrain_config(tmp_path: Path, source: Path, **trainer: object) -> Path:
    config = {
        "seed_everything": 0,
        "data": {
            "sources": [str(source)],
            "val_size": 100,
            "shard_size": 150,
            "batch_size": 16,
            "cache_dir": str(tmp_path / "cache"),
            "featurize_jobs": 1,
        },
        "model": {
            "encoder": {
                "class_path": "molml.models.DMPNN",
                "init_args": {"hidden_dim": 32, "depth": 2},
            },
            "readout": "sum",
            "ffn_hidden_dim": 32,
            "lr": 0.003,
            "warmup_epochs": 0,
        },
        "trainer": {
            "max_epochs": 8,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "pre"},
            },
            "callbacks": [
                {
                    "class_path": "molml.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(tmp_path / "checkpoints"),
                        "monitor": "val/loss",
                        "filename": "best",
                        "save_last": True,
                    },
                }
            ],
            **trainer,
        },
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def shard_sizes(tmp_path: Path) -> list[int]:
    """Molecules per shard of the pretraining cache under ``tmp_path``."""
    (manifest,) = (tmp_path / "cache").glob("*/manifest.json")
    return json.loads(manifest.read_text())["sizes"]


def molml_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "molml.cli", *args]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``molml pretrain`` on 450 NCI molecules (plus an invalid SMILES and a molecule whose
    descriptors fail), 8 epochs: its checkpoint directory and metrics."""
    tmp_path = tmp_path_factory.mktemp("pretrain")
    source = write_smiles(tmp_path / "unlabelled.csv", 450, ("not_a_smiles", TELLURIUM))
    config = pretrain_config(tmp_path, source)
    result = subprocess.run(
        molml_command("pretrain", "--config", str(config)),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / "runs" / "pre" / "version_0" / "metrics.csv")
    return {
        "dir": tmp_path,
        "best": tmp_path / "checkpoints" / "best.ckpt",
        "metrics": metrics,
        "stderr": result.stderr,
        "config": config,
        "source": source,
    }


def test_pretraining_lowers_the_descriptor_loss(pretrained_run: dict) -> None:
    val = pretrained_run["metrics"]["val/loss"].dropna().to_numpy()
    assert len(val) == 8
    assert val[-1] < 0.9 * val[0]
    model = molml.load_model(pretrained_run["best"])
    assert "MolWt" in model.tasks and "Ipc_slog" in model.tasks  # Ipc spans 1..1e6+: log-scaled
    assert model.metadata["training_data"]["train"] > 300
    # the descriptors come out in their own units: MolWt of ethanol is 46.07
    predicted = model.predict(["CCO", "CCCCCCCCO"])
    assert predicted["MolWt"].iloc[1] > predicted["MolWt"].iloc[0]


def test_invalid_smiles_and_failed_descriptors_are_skipped_and_counted(
    pretrained_run: dict,
) -> None:
    seen = molml.load_model(pretrained_run["best"]).metadata["training_data"]
    skipped = seen["skipped"]
    assert skipped["invalid molecule"] == 1
    assert skipped["descriptors failed"] >= 1  # tellurium, and NCI molecules like it
    assert sum(skipped.values()) + seen["train"] + seen["val"] == 452  # every input accounted
    stderr = pretrained_run["stderr"]
    assert f"{sum(skipped.values())} molecules skipped" in stderr
    assert "molecule 60: invalid SMILES" in stderr
    assert "molecule 61: descriptors failed or not finite: MaxPartialCharge" in stderr
    assert "LightningCLI's args parameter" not in stderr  # no warning about molml's own call


def test_a_killed_pretraining_run_resumes_from_its_last_checkpoint(
    pretrained_run: dict, tmp_path: Path
) -> None:
    config = pretrain_config(tmp_path, pretrained_run["source"], max_epochs=40)
    command = molml_command("pretrain", "--config", str(config))
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["global_step"] >= 30:
            break
        time.sleep(0.5)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = torch.load(last, weights_only=True)
    killed_at, steps_per_epoch = (
        killed["global_step"],
        killed["global_step"] // (killed["epoch"] + 1),
    )
    # the same command again, to one epoch beyond the last one the killed run finished
    resumed_epochs = killed["epoch"] + 2
    result = subprocess.run(
        [*command, "--trainer.max_epochs", str(resumed_epochs)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming pretraining from {last}" in result.stderr
    final = torch.load(last, weights_only=True)
    # one more epoch's steps on top of the killed run's, not a new run
    assert final["global_step"] == killed_at + steps_per_epoch
    # Lightning records the epoch index before or after its end-of-epoch increment, depending
    # on whether the last save came from validation end or from the end of the epoch/fit
    assert final["epoch"] in (resumed_epochs - 1, resumed_epochs)
    assert final["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == resumed_epochs
    # a changed model is not resumed from that checkpoint
    changed = subprocess.run(
        [*command, "--model.lr", "0.01"], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert changed.returncode == 2 and "another model hparams" in changed.stderr
    # nor is other data: it would continue a run whose record names only the new data
    other = tmp_path / "other.smi"
    other.write_text(Path(pretrained_run["source"]).read_text())
    moved = subprocess.run(
        [*command, "--data.sources", f"[{other}]"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert moved.returncode == 2 and "pretrained on other data (sources:" in moved.stderr
    # nor an edited source of the same size and molecule count (two lines swapped)
    source = Path(pretrained_run["source"])
    original = source.read_text()
    header, first, second, *rest = original.splitlines(keepends=True)
    source.write_text("".join([header, second, first, *rest]))
    edited = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    source.write_text(original)
    assert edited.returncode == 2 and "(source_sha256:" in edited.stderr
    # --resume false starts afresh: the earlier run's checkpoints are deleted before it trains
    # (one that this run does not write again too), so none is left beside its own
    (last.parent / "best-v1.ckpt").write_bytes(last.read_bytes())
    (last.parent / "my_weights.ckpt").write_bytes(b"a file of the user's")  # left be
    (last.parent / "best_finetuned.ckpt").write_bytes(b"named like the run's: left be too")
    (last.parent / "lastyear.ckpt").write_bytes(b"and this one")
    afresh = subprocess.run(
        [*command, "--resume", "false", "--trainer.max_epochs", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert afresh.returncode == 0, afresh.stderr[-3000:]
    assert "starting afresh: deleting the earlier run's checkpoints" in afresh.stderr
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == [
        "best.ckpt",
        "best_finetuned.ckpt",
        "last.ckpt",
        "lastyear.ckpt",
        "my_weights.ckpt",
    ]
    for name in ("my_weights.ckpt", "best_finetuned.ckpt", "lastyear.ckpt"):
        (last.parent / name).unlink()
    assert torch.load(last, weights_only=True)["global_step"] == steps_per_epoch
    # a damaged last.ckpt (a stop while it was written) names the way out
    last.write_bytes(last.read_bytes()[:5000])
    damaged = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert damaged.returncode == 3 and "pass --resume false" in damaged.stderr


def test_pretraining_without_a_fixed_checkpoint_folder_says_it_cannot_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a ModelCheckpoint saving last.ckpt in a fixed dirpath each run writes a new
    version folder: running the command again would start afresh, and it says so."""
    from molml.training import make_pretrain_cli

    source = write_smiles(tmp_path / "unlabelled.csv", 150, ())
    config = pretrain_config(tmp_path, source, max_epochs=1)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        make_pretrain_cli(["--config", str(config), "--trainer.callbacks=[]"])
    assert "no ModelCheckpoint saves last.ckpt in a fixed dirpath" in caplog.text


def test_pretraining_data_refuses_what_it_cannot_learn_from(tmp_path: Path) -> None:
    source = tmp_path / "alkanes.csv"
    source.write_text("smiles\n" + "\n".join("C" * n for n in range(2, 40)) + "\n")
    with pytest.raises(DataError, match="every descriptor .* takes one value"):
        PretrainDataModule(
            sources=[str(source)],
            val_size=20,
            descriptors=["NumHDonors", "NumAromaticRings"],
            cache_dir=str(tmp_path),
            featurize_jobs=1,
        )
    with pytest.raises(DataError, match="0 or 1 worker"):
        PretrainDataModule(sources=[str(source)], num_workers=2, cache_dir=str(tmp_path))
    # valid validation molecules, then only invalid SMILES: it trained on nothing and exit 0
    broken = tmp_path / "broken.smi"
    valid = [f"C{'C' * n}O" for n in range(12)] + [f"c1ccccc1{'C' * n}N" for n in range(6)]
    broken.write_text("\n".join(valid + [f"C1CC{'C' * n}" for n in range(30)]) + "\n")
    data = PretrainDataModule(
        sources=[str(broken)], val_size=18, shard_size=30, cache_dir=str(tmp_path), featurize_jobs=1
    )
    with pytest.raises(DataError, match=r"none of the 30 pretraining SMILES after the 18 .*e\.g\."):
        data.prepare_data()


def test_pretraining_validation_is_split_over_processes_without_repeats(tmp_path: Path) -> None:
    """Each validation molecule on one rank only (a padded sampler counted some twice)."""
    from types import SimpleNamespace

    source = tmp_path / "few.smi"
    source.write_text("\n".join([f"C{'C' * n}O" for n in range(25)]) + "\n")
    kept = {"sources": [str(source)], "cache_dir": str(tmp_path), "featurize_jobs": 1}
    with pytest.raises(DataError, match="hold 25 SMILES, all taken as validation molecules"):
        PretrainDataModule(val_size=30, **kept).prepare_data()
    data = PretrainDataModule(val_size=11, shard_size=20, batch_size=4, **kept)
    data.prepare_data()
    data.setup("fit")
    seen = []
    for rank in (0, 1):
        data.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        seen += list(data.val_dataloader().sampler)
    assert sorted(seen) == list(range(11))
    data.trainer = SimpleNamespace(world_size=12, global_rank=0)
    with pytest.raises(DataError, match="11 pretraining validation molecules are fewer than"):
        data.val_dataloader()


def test_fine_tuning_starts_from_the_pretrained_encoder(pretrained_run: dict) -> None:
    best = str(pretrained_run["best"])
    source, _ = load_checkpoint(best)
    encoder = DMPNN(hidden_dim=32, depth=2)
    tuned = MoleculeModel(encoder=encoder, readout="sum", ffn_hidden_dim=16, pretrained=best)
    for key, value in source.state_dict().items():
        if key.startswith(("encoder.", "atom_embedding.", "bond_embedding.")):
            assert torch.equal(tuned.state_dict()[key], value), key
    fresh = MoleculeModel(encoder=DMPNN(hidden_dim=32, depth=2), readout="sum")
    assert not torch.equal(fresh.encoder.W_h.weight, source.encoder.W_h.weight)
    # embeddings of the fine-tuning model before any training equal the pretrained model's
    graphs = molml.load_model(best).featurizer
    batch = torch_batch(graphs, ["CCO", "c1ccccc1O"])
    with torch.no_grad():
        assert torch.allclose(tuned.eval().embed_batch(batch), source.embed_batch(batch))


def torch_batch(featurizer: MolGraphFeaturizer, smiles: list[str]):
    from torch_geometric.data import Batch

    return Batch.from_data_list([featurizer(s) for s in smiles])


def fit(model: MoleculeModel, data: MoleculeDataModule, epochs: int) -> None:
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=Path(data.hparams.path).parent,  # split reports go next to the data
    )
    trainer.fit(model, datamodule=data)


@pytest.mark.parametrize("encoder_class", [DMPNN, GINE])
def test_frozen_encoder_epochs_leave_the_encoder_unchanged(
    encoder_class: type, tmp_path: Path
) -> None:
    csv = write_task_csv(tmp_path / "logp.csv", 120)
    data = MoleculeDataModule(path=str(csv), cache_dir=None, featurize_jobs=1, batch_size=32)
    model = MoleculeModel(
        encoder=encoder_class(hidden_dim=16, depth=2),
        ffn_hidden_dim=16,
        tasks=["logp"],
        warmup_epochs=0,
        freeze_encoder_epochs=1,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, epochs=1)
    after = model.state_dict()
    body = [k for k in before if k.startswith(("encoder.", "atom_embedding.", "bond_embedding."))]
    assert body and all(torch.equal(before[k], after[k]) for k in body)  # BN statistics too
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])
    fit(model, data, epochs=2)  # a fresh Trainer: epoch 0 frozen again, epoch 1 trains all
    assert not all(torch.equal(before[k], model.state_dict()[k]) for k in body)
    assert model.encoder.training  # back in training mode once the frozen epochs are over


def test_encoder_learning_rate_ratio_scales_the_encoder_group(tmp_path: Path) -> None:
    csv = write_task_csv(tmp_path / "logp.csv", 60)
    data = MoleculeDataModule(path=str(csv), cache_dir=None, featurize_jobs=1)
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=16, depth=2), tasks=["logp"], lr=0.01, encoder_lr_ratio=0.1
    )
    fit(model, data, epochs=1)
    body, head = model.trainer.optimizers[0].param_groups
    assert body["initial_lr"] == pytest.approx(0.001) and head["initial_lr"] == pytest.approx(0.01)


def test_pretrained_l2_weight_keeps_the_encoder_near_its_pretrained_weights(
    pretrained_run: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    best = str(pretrained_run["best"])
    csv = write_task_csv(tmp_path / "logp.csv", 120)
    data = MoleculeDataModule(path=str(csv), cache_dir=None, featurize_jobs=1, batch_size=32)

    def distance_after_fitting(weight: float) -> float:
        L.seed_everything(0)
        model = MoleculeModel(
            encoder=DMPNN(hidden_dim=32, depth=2),
            readout="sum",
            ffn_hidden_dim=16,
            tasks=["logp"],
            lr=0.01,
            pretrained=best,
            pretrained_l2_weight=weight,
        )
        start = model._transferred().detach().clone()
        fit(model, data, epochs=3)
        return float((model._transferred().detach() - start).norm())

    free, anchored = distance_after_fitting(0.0), distance_after_fitting(10.0)
    assert anchored < free / 3, (anchored, free)
    # the anchor is part of the model's state: a saved model loads and keeps it
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=32, depth=2),
        readout="sum",
        pretrained=best,
        pretrained_l2_weight=0.1,
    )
    reloaded = MoleculeModel(
        encoder=DMPNN(hidden_dim=32, depth=2), readout="sum", pretrained_l2_weight=0.1
    )
    reloaded.load_state_dict(model.state_dict())
    assert torch.equal(reloaded.pretrained_anchor, model._transferred().detach())
    # without a pretrained encoder there is nothing to pull towards
    unanchored = MoleculeModel(
        encoder=DMPNN(hidden_dim=16, depth=2), tasks=["logp"], pretrained_l2_weight=0.1
    )
    with pytest.raises(DataError, match="set model.pretrained as well"):
        fit(unanchored, data, epochs=1)
    # fine-tuning options without a pretrained encoder are said to act on random weights
    for option in ({"freeze_encoder_epochs": 1}, {"encoder_lr_ratio": 0.1}):
        random_encoder = MoleculeModel(
            encoder=DMPNN(hidden_dim=16, depth=2), tasks=["logp"], **option
        )
        with caplog.at_level(logging.WARNING, logger="molml"):
            fit(random_encoder, data, epochs=1)
        assert f"model.{next(iter(option))} sets how a pretrained encoder" in caplog.text
        assert "starts from random weights" in caplog.text
        caplog.clear()


def test_a_pretrained_model_with_another_featurizer_or_encoder_is_refused(
    pretrained_run: dict,
) -> None:
    best = str(pretrained_run["best"])
    other = MolGraphFeaturizer(random_walk_steps=4).to_config()
    with pytest.raises(CheckpointError, match=r"random_walk_steps: pretrained 0, here 4"):
        MoleculeModel(encoder=DMPNN(hidden_dim=32, depth=2), featurizer=other, pretrained=best)
    chemprop = MolGraphFeaturizer(preset="chemprop").to_config()
    with pytest.raises(
        CheckpointError,
        match=r"reads the 'molml' .*data the 'chemprop' preset; set \S+preset molml",
    ):
        MoleculeModel(encoder=DMPNN(hidden_dim=32, depth=2), featurizer=chemprop, pretrained=best)
    with pytest.raises(CheckpointError, match=r"hidden_dim: pretrained 32, here 64"):
        MoleculeModel(encoder=DMPNN(hidden_dim=64, depth=2), pretrained=best)
    with pytest.raises(CheckpointError, match=r"DMPNN encoder, this model a \S+GINE"):
        MoleculeModel(encoder=GINE(hidden_dim=32, depth=2), pretrained=best)


def test_an_unknown_pretrained_name_lists_the_available_ones() -> None:
    with pytest.raises(CheckpointError, match="available: " + ", ".join(pretrained_names())):
        MoleculeModel(pretrained="no-such-encoder")


def test_a_file_that_is_no_checkpoint_is_refused_without_torchs_unpickling_advice(
    tmp_path: Path,
) -> None:
    (tmp_path / "mols.smi").write_text("CCO\n")
    (tmp_path / "ensemble.json").write_text('{"models": ["a.ckpt", "b.ckpt"]}')
    with pytest.raises(CheckpointError, match="neither a molml nor a chemprop checkpoint") as info:
        MoleculeModel(pretrained=str(tmp_path / "mols.smi"))
    assert "weights_only" not in str(info.value)
    with pytest.raises(CheckpointError, match="pass one member's checkpoint"):
        MoleculeModel(pretrained=str(tmp_path / "ensemble.json"))


def test_fine_tuning_from_the_command_line(pretrained_run: dict, tmp_path: Path) -> None:
    csv = write_task_csv(tmp_path / "logp.csv", 120)
    encoder = tmp_path / "encoder.ckpt"  # a local pretrained file, moved after fine-tuning
    shutil.copy(pretrained_run["best"], encoder)
    result = subprocess.run(
        molml_command(
            "fit",
            "--data.path",
            str(csv),
            "--data.cache_dir",
            "null",
            "--data.featurize_jobs",
            "1",
            "--model.encoder",
            "molml.models.DMPNN",
            "--model.encoder.hidden_dim",
            "32",
            "--model.encoder.depth",
            "2",
            "--model.pretrained",
            str(encoder),
            "--model.freeze_encoder_epochs",
            "1",
            "--model.encoder_lr_ratio",
            "0.5",
            "--model.pretrained_l2_weight",
            "0.01",
            "--trainer.max_epochs",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            "runs",
            "--trainer.callbacks",
            "molml.callbacks.ModelCheckpoint",
            "--trainer.callbacks.filename",
            "best",
        ),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the fine-tuned checkpoint is tested from its run's config without the encoder file
    encoder.unlink()
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    result = subprocess.run(
        molml_command(
            "test",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints" / "best.ckpt"),
        ),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/rmse" in result.stdout


def test_zinc_is_found_through_the_molsets_distribution_or_explained() -> None:
    try:
        path = zinc_smiles_path()
    except DataError as exc:
        assert "pip install --no-deps molsets==0.3.1" in str(exc)
    else:
        assert path.name == "train.csv.gz" and path.stat().st_size > 10_000_000


def small_cache(tmp_path: Path) -> dict[str, object]:
    """Data options over 200 NCI molecules: 40 for validation, then shards of 50."""
    source = write_smiles(tmp_path / "unlabelled.csv", 200)
    return dict(
        sources=[str(source)],
        val_size=40,
        shard_size=50,
        batch_size=16,
        cache_dir=str(tmp_path),
        featurize_jobs=1,
    )


def test_the_pretraining_cache_follows_the_sources_content(tmp_path: Path) -> None:
    """A source file moved or touched keeps its featurized cache; one edited in place,
    keeping its size and time stamp, gets a new one."""
    kwargs = small_cache(tmp_path)
    source = Path(kwargs["sources"][0])
    first = PretrainDataModule(**{**kwargs, "shard_size": 200})
    first.prepare_shards()
    moved = source.rename(tmp_path / "moved.csv")
    os.utime(moved, ns=(1, 1))
    again = PretrainDataModule(**{**kwargs, "shard_size": 200, "sources": [str(moved)]})
    again.prepare_shards()
    assert again.directory == first.directory
    lines = moved.read_text().splitlines()
    stamp = moved.stat().st_mtime_ns
    edited = [*lines[:-2], lines[-1], lines[-2]]  # same bytes, another order
    moved.write_text("\n".join(edited) + "\n")
    os.utime(moved, ns=(stamp, stamp))
    changed = PretrainDataModule(**{**kwargs, "shard_size": 200, "sources": [str(moved)]})
    changed.prepare_shards()
    assert changed.directory != first.directory


def test_the_pretraining_cache_resumes_shard_by_shard(tmp_path: Path) -> None:
    kwargs = small_cache(tmp_path)
    data = PretrainDataModule(**kwargs)
    data.prepare_shards()
    shards = sorted(data.directory.glob("shard_*.pt"))
    assert len(data.shard_sizes) == 4 and data.shard_sizes[-1] <= 10
    # every input molecule is in the validation set, a shard, or counted as skipped
    assert sum(data.shard_sizes) + len(data.val_store) + sum(data.skipped.values()) == 200
    shards[1].unlink()  # as if the preparation had been killed there
    (data.directory / "manifest.json").unlink()
    mtime = shards[0].stat().st_mtime_ns
    again = PretrainDataModule(**kwargs)
    again.prepare_shards()
    assert shards[1].exists() and shards[0].stat().st_mtime_ns == mtime
    # files deleted from a finished cache (its manifest kept): completed, not a crash
    shards[2].with_suffix(".json").unlink()
    shards[3].unlink()
    completed = PretrainDataModule(**kwargs)
    completed.prepare_shards()
    assert shards[2].with_suffix(".json").exists() and shards[3].exists()
    assert completed.shard_sizes == again.shard_sizes
    stream = again.train_dataloader().dataset

    def rows_of(batches) -> list[int]:
        return [int(row) for batch in batches for row in batch.row]

    batches = list(stream)
    sizes = [b.num_graphs for b in batches]
    assert len(batches) == len(stream) == sum(-(-n // 16) for n in again.shard_sizes)
    # 50-molecule shards give batches of 12-13, not 16 + a tail of 2; the small last shard: one
    assert max(sizes) <= 16 and sorted(sizes)[1] >= 12
    rows = rows_of(batches)
    # every training molecule once per epoch, none of the first 40 (the validation block)
    assert len(set(rows)) == len(rows) == sum(again.shard_sizes) and min(rows) >= 40
    assert rows == rows_of(stream)  # an epoch's order is reproducible

    next_epoch = type(stream)(**{**vars(stream), "epoch": 1})
    assert rows != rows_of(next_epoch)  # and the next epoch's is another
    halves = [type(stream)(**{**vars(stream), "rank": r, "world_size": 2}) for r in (0, 1)]
    first_rank, second_rank = rows_of(halves[0]), rows_of(halves[1])
    share = sum(size // 2 for size in again.shard_sizes)
    assert len(first_rank) == len(second_rank) == share and not set(first_rank) & set(second_rank)
    assert len(halves[0]) == len(halves[1]) == len(list(halves[0]))  # DDP ranks step together
    # a gathered batch holds the same graphs as PyG's collation of the same molecules
    store = load_shard(shards[0], again.targets, again.descriptors.names)
    by_row = {int(store.rows[i]): i for i in range(len(store))}
    first = next(b for b in batches if int(b.row[0]) in by_row)
    reference = Batch.from_data_list([store[by_row[int(r)]] for r in first.row])
    for key in ("x", "edge_index", "edge_attr", "batch", "ptr", "y"):
        assert torch.equal(getattr(first, key), getattr(reference, key)), key
    assert np.isfinite(next(iter(stream)).y.numpy()).all()


@pytest.mark.parametrize("name", pretrained_names())
def test_the_shipped_encoder_learned_the_descriptors(name: str) -> None:
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    encoder = molml.load_pretrained(name)
    # drug-like NCI molecules (never seen in pretraining): ZINC's elements and weights
    organic = {"C", "N", "O", "S", "F", "Cl", "Br", "H"}
    smiles = [
        s
        for s in nci_smiles(300)
        if {a.GetSymbol() for a in Chem.MolFromSmiles(s).GetAtoms()} <= organic
        and 150 < Descriptors.MolWt(Chem.MolFromSmiles(s)) < 450
    ]
    assert len(smiles) > 100
    predicted = encoder.predict(smiles)
    assert (predicted["status"] == "ok").all()
    for name in ("MolWt", "TPSA", "MolLogP", "NumHDonors"):
        true = np.array([getattr(Descriptors, name)(Chem.MolFromSmiles(s)) for s in smiles])
        r = np.corrcoef(true, predicted[name].to_numpy())[0, 1]
        assert r > 0.8, (name, r)  # an untrained encoder: about 0
    embeddings = encoder.embed(smiles[:3])
    # one value per hidden unit of the encoder (a sum readout)
    assert embeddings.shape == (3, encoder.model.encoder.hidden_dim)
    assert np.isfinite(embeddings).all()
    config = encoder.metadata["training_data"]
    assert config["sources"] == ["zinc"] and config["train"] > 100_000


def test_raising_max_molecules_featurizes_only_the_new_molecules(tmp_path: Path) -> None:
    kwargs = small_cache(tmp_path)

    def prepared(limit: int | None) -> PretrainDataModule:
        data = PretrainDataModule(max_molecules=limit, **kwargs)
        data.prepare_shards()
        return data

    def modified(data: PretrainDataModule) -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in [data.val_path, *data.shard_paths]}

    def training_rows(data: PretrainDataModule) -> list[int]:
        return sorted(int(r) for b in data.train_dataloader().dataset for r in b.row)

    small = prepared(120)  # validation 40, a full shard of 50, and 30 cut short by the limit
    assert [p.name for p in small.shard_paths] == ["shard_00000.pt", "shard_00001_first120.pt"]
    before = modified(small)
    whole = prepared(None)
    assert whole.directory == small.directory  # one cache for every limit
    assert [p.name for p in whole.shard_paths] == [f"shard_{k:05d}.pt" for k in range(4)]
    after = modified(whole)
    # the validation block and the full shard were reused, not featurized again
    assert after["val.pt"] == before["val.pt"]
    assert after["shard_00000.pt"] == before["shard_00000.pt"]
    for data, inputs in ((small, 120), (whole, 200)):
        counted = sum(data.shard_sizes) + len(data.val_store) + sum(data.skipped.values())
        assert counted == inputs
        rows = training_rows(data)
        assert len(rows) == sum(data.shard_sizes) and min(rows) >= 40 and max(rows) < inputs
    again = prepared(120)  # the smaller run still finds its own shards, untouched
    assert modified(again) == before and again.shard_sizes == small.shard_sizes
    assert training_rows(again) == training_rows(small)


def test_the_shipped_encoder_fine_tunes_with_the_default_featurizer() -> None:
    model = MoleculeModel(encoder=DMPNN(hidden_dim=300, depth=3), pretrained="zinc-dmpnn")
    shipped, _ = load_checkpoint(pretrained_path("zinc-dmpnn"))
    assert torch.equal(model.encoder.W_o.weight, shipped.encoder.W_o.weight)
    assert model.spec()["pretrained_from"] == "zinc-dmpnn"
    assert "pretrained" not in model.spec()["hparams"]  # loading the fine-tuned model needs none


def shipped_fine_tuning_configs() -> list[Path]:
    """The shipped configs that fine-tune a shipped pretrained encoder."""
    return [
        path
        for path in sorted((REPO / "configs").glob("*.yaml"))
        if (yaml.safe_load(path.read_text()).get("model") or {}).get("pretrained")
        in pretrained_names()
    ]


def test_every_shipped_encoder_has_a_fine_tuning_config() -> None:
    named = {
        yaml.safe_load(p.read_text())["model"]["pretrained"] for p in shipped_fine_tuning_configs()
    }
    assert named == set(pretrained_names())


@pytest.mark.parametrize("config", shipped_fine_tuning_configs(), ids=lambda p: p.stem)
def test_shipped_fine_tuning_configs_match_their_encoders(config: Path) -> None:
    """Each config's featurizer, encoder and readout fit the weights it names, so the model
    builds from them (a mismatch is refused when the model is built)."""
    args = full_config(["--config", str(config)])
    model_args = args["model"]
    featurizer = MolGraphFeaturizer(**(args["data"]["featurizer"] or {}).get("init_args", {}))
    model = MoleculeModel(
        encoder=DMPNN(**model_args["encoder"]["init_args"]),
        readout=model_args["readout"],
        featurizer=featurizer.to_config(),
        pretrained=model_args["pretrained"],
    )
    shipped, _ = load_checkpoint(pretrained_path(model_args["pretrained"]))
    assert model.spec()["featurizer"] == shipped.spec()["featurizer"]
    assert torch.equal(model.encoder.W_o.weight, shipped.encoder.W_o.weight)


def test_train_fraction_keeps_a_seeded_part_of_the_training_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = write_task_csv(tmp_path / "logp.csv", 200)
    common = dict(path=str(csv), cache_dir=None, featurize_jobs=1)
    whole = MoleculeDataModule(**common)
    whole.setup("fit")
    quarter = MoleculeDataModule(**common, train_fraction=0.25)
    with caplog.at_level(logging.INFO, logger="molml"):
        quarter.setup("fit")
    # the molecules set aside on purpose are said so, not warned of as unused
    assert "train_fraction 0.25 keeps" in caplog.text and "in no part" not in caplog.text
    assert len(quarter.split.train) == round(0.25 * len(whole.split.train))
    half = MoleculeDataModule(**common, train_fraction=0.5)
    half.setup("fit")
    assert set(quarter.split.train) < set(half.split.train) < set(whole.split.train)
    # the split report says so too: set aside, not "unassigned" (a split file's symptom)
    set_aside = len(whole.split.train) - len(quarter.split.train)
    assert quarter.report["n_set_aside_by_train_fraction"] == set_aside > 0
    assert quarter.report["n_unassigned"] == 0 and quarter.report["train_fraction"] == 0.25
    assert np.array_equal(quarter.split.val, whole.split.val)
    assert np.array_equal(quarter.split.test, whole.split.test)
    with pytest.raises(DataError, match="train_fraction must be in"):
        MoleculeDataModule(**common, train_fraction=0.0)
    # the kept part is checked like a whole training part: one class only is refused
    frame = pd.read_csv(csv)
    frame["active"] = (np.arange(len(frame)) % 40 == 0).astype(int)
    frame.drop(columns="logp").to_csv(tmp_path / "rare.csv", index=False)
    rare = MoleculeDataModule(
        **{**common, "path": str(tmp_path / "rare.csv")}, split="random", train_fraction=0.02
    )
    with pytest.raises(DataError, match=r"only class 0 in the train split .*train_fraction 0.02"):
        rare.setup("fit")


def test_pretraining_runs_on_two_processes_in_bf16(pretrained_run: dict, tmp_path: Path) -> None:
    config = pretrain_config(tmp_path, pretrained_run["source"], max_epochs=1)
    extra = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    result = subprocess.run(
        [
            *molml_command("pretrain", "--config", str(config)),
            *extra,
            "--trainer.precision",
            "bf16-mixed",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    encoder = molml.load_model(tmp_path / "checkpoints" / "last.ckpt")
    train = encoder.metadata["training_data"]["train"]
    # each rank reads half of every shard, in batches of 16 that end with the shard
    steps = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    halves = [size // 2 for size in shard_sizes(tmp_path)]
    assert steps == sum(-(-half // 16) for half in halves) and sum(halves) < train


def test_masked_atom_pretraining_learns_to_name_hidden_atoms(
    pretrained_run: dict, tmp_path: Path
) -> None:
    """``model.masked_atom_weight``: pretraining also learns the elements of hidden atoms (the
    validation accuracy starts where answering carbon for every atom leaves it and rises
    from there), and fine-tuning takes the encoder but not the atom head."""
    config = pretrain_config(tmp_path, pretrained_run["source"], max_epochs=8)
    command = ["pretrain", "--config", str(config), "--model.masked_atom_weight", "1.0"]
    result = subprocess.run(
        molml_command(*command), capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / "runs" / "pre" / "version_0" / "metrics.csv")
    loss = metrics["train/masked_atom_loss_epoch"].dropna().to_numpy()
    accuracy = metrics["val/masked_atom_accuracy"].dropna().to_numpy()
    assert len(loss) == len(accuracy) == 8 and loss[-1] < 0.8 * loss[0]
    assert accuracy[-1] > accuracy[0] + 0.03
    best = tmp_path / "checkpoints" / "best.ckpt"
    source, _ = load_checkpoint(str(best))
    assert source.atom_head.out_features == source.featurizer.element_classes
    tuned = MoleculeModel(
        encoder=DMPNN(hidden_dim=32, depth=2), readout="sum", pretrained=str(best)
    )
    assert not hasattr(tuned, "atom_head")
    assert torch.equal(tuned.encoder.W_h.weight, source.encoder.W_h.weight)
