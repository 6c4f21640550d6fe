"""MoleculeModel with real Lightning training on generated data (RDKit's NCI molecules with
Crippen logP and TPSA; CPU, few epochs): learning, masking, metrics against scikit-learn, the
learning-rate schedule, checkpoints, and the ``molml fit | validate | predict`` commands."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import write_property_csv, write_task_csv
from lightning.pytorch.callbacks import ModelCheckpoint
from rdkit import Chem
from sklearn.metrics import (
    average_precision_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

import molml
from molml.chem.featurizer import DEFAULT_ELEMENTS, MolGraphFeaturizer
from molml.cli import main as molml_main
from molml.data.datamodule import MoleculeDataModule
from molml.errors import CheckpointError, DataError
from molml.models import DMPNN, GINE, MoleculeModel
from molml.predict import GraphPredictor
from molml.tasks import MolecularMetrics

INVALID = "C1CC"
CHIRAL = slice(len(DEFAULT_ELEMENTS) + 17, len(DEFAULT_ELEMENTS) + 21)  # chirality tag one-hot


def chiral_slot(atom_row: torch.Tensor) -> int:
    return int(torch.nonzero(atom_row[CHIRAL]).flatten()[0])


def binary_csv(n: int, tmp_path: Path) -> Path:
    """``smiles``, ``active`` (rare: logP > 4.5) and ``polar`` (TPSA > 60; missing where TPSA
    is, on every 7th molecule), plus the invalid SMILES rows."""
    frame = pd.read_csv(write_property_csv(tmp_path / "properties.csv", n))
    frame["polar"] = np.where(frame["tpsa"].isna(), np.nan, (frame["tpsa"] > 60).astype(float))
    path = tmp_path / "binary.csv"
    frame[["smiles", "active", "polar"]].to_csv(path, index=False)
    return path


def make_dm(path: Path, **kwargs) -> MoleculeDataModule:
    options = {"split": "random", "batch_size": 32, "cache_dir": None, "featurize_jobs": 1}
    return MoleculeDataModule(path=str(path), **{**options, **kwargs})


def make_model(dm: MoleculeDataModule, encoder=None, **kwargs) -> MoleculeModel:
    return MoleculeModel(
        encoder=encoder or DMPNN(hidden_dim=64, depth=3),
        ffn_hidden_dim=64,
        tasks=dm.tasks,
        task_type=dm.task_type,
        num_classes=dm.num_classes,
        featurizer=dm.featurizer_config,
        **kwargs,
    )


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 5,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "deterministic": True,
    }
    return L.Trainer(**{**options, **kwargs})


def params_finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        yield


# ---------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_beats_the_mean_predictor(tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = make_dm(write_task_csv(tmp_path / "logp.csv", 300))
    dm.setup("fit")
    model = make_model(dm, lr=3e-3, warmup_epochs=1)
    fixed = next(iter(dm._loader(dm.split.train, shuffle=False)))

    def fixed_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model.loss(model(fixed), fixed).item()

    mean, std = dm.target_statistics()  # what the model's setup() installs for fit
    model.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    model.target_std.copy_(torch.as_tensor(std, dtype=torch.float32))
    before = fixed_loss()
    fit = trainer(tmp_path, max_epochs=10)
    fit.fit(model, datamodule=dm)
    after = fixed_loss()
    assert math.isfinite(after)
    assert after < 0.5 * before, (before, after)
    # targets are standardized with the training split's statistics, kept as buffers
    assert torch.allclose(model.target_mean, torch.as_tensor(mean, dtype=torch.float32))

    # on the test split, in logP units, it clearly beats always predicting the training mean
    rows = dm.split_rows()
    truth = dm.table["logp"].to_numpy()[rows.test]
    predicted = GraphPredictor(model).predict(dm.table["smiles"].iloc[rows.test].tolist())
    rmse = math.sqrt(mean_squared_error(truth, predicted["logp"]))
    baseline = math.sqrt(mean_squared_error(truth, np.full_like(truth, mean[0])))
    assert rmse < 0.7 * baseline, (rmse, baseline)  # about 0.5 in practice
    (tested,) = fit.test(model, datamodule=dm, verbose=False)
    assert tested["test/rmse"] == pytest.approx(rmse, rel=1e-4)
    assert tested["test/r2"] == pytest.approx(r2_score(truth, predicted["logp"]), abs=1e-4)


def test_classification_multitask_with_missing_labels(tmp_path) -> None:
    L.seed_everything(0)
    dm = make_dm(binary_csv(240, tmp_path), split="scaffold_stratified")
    assert dm.task_type == "classification" and dm.tasks == ["active", "polar"]
    assert np.isnan(dm.targets[:, 1]).any()  # really has missing labels
    model = make_model(dm)
    fit = trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    fit.fit(model, datamodule=dm)
    loss = fit.callback_metrics["train/loss_epoch"]
    assert torch.isfinite(loss) and loss > 0
    assert params_finite(model)
    (tested,) = fit.test(model, datamodule=dm, verbose=False)
    # the logged test metrics are those of the model's probabilities on the labelled molecules
    rows = dm.split_rows().test
    out = GraphPredictor(model).predict(dm.table["smiles"].iloc[rows].tolist())
    values = out[dm.tasks].to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    for j, task in enumerate(dm.tasks):
        labels = dm.targets[rows, j]
        labelled = ~np.isnan(labels)
        expected = roc_auc_score(labels[labelled], values[labelled, j])
        assert tested[f"test/roc_auc/{task}"] == pytest.approx(expected, abs=1e-4), task
        expected = average_precision_score(labels[labelled], values[labelled, j])
        assert tested[f"test/pr_auc/{task}"] == pytest.approx(expected, abs=1e-4), task


# ---------------------------------------------------------------------------- masking


def _masked_batch(feat: MolGraphFeaturizer) -> Batch:
    nan = float("nan")
    data = [
        feat("CCO", y=[1.0, nan, 0.0]),
        feat("c1ccccc1O", y=[nan, 0.0, 1.0]),
        feat("CC(=O)Nc1ccc(O)cc1", y=[0.0, 1.0, nan]),
    ]
    return Batch.from_data_list(data)


def _loss_and_grads(model: MoleculeModel, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = model.loss(model(batch), batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("task_type", ["regression", "classification", "multiclass"])
def test_missing_labels_give_no_loss_or_gradient(task_type: str) -> None:
    torch.manual_seed(0)
    feat = MolGraphFeaturizer()
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=32),
        ffn_hidden_dim=32,
        tasks=["a", "b", "c"],
        task_type=task_type,
        num_classes=3,
        featurizer=feat.to_config(),
    )
    model.target_mean.fill_(0.3)
    model.target_std.fill_(2.0)
    batch = _masked_batch(feat)
    assert batch.y_mask.sum() == 6
    loss, grads = _loss_and_grads(model, batch)
    assert torch.isfinite(loss)
    for value in (2.0, -57.0, 1e30, float("nan"), float("inf")):
        changed = batch.clone()
        changed.y = batch.y.clone()
        changed.y[~batch.y_mask] = value
        loss2, grads2 = _loss_and_grads(model, changed)
        assert torch.equal(loss, loss2), value
        assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True)), value
    # ... whereas changing a labelled entry does change the loss
    changed = batch.clone()
    changed.y = batch.y.clone()
    changed.y[0, 0] = 2.0 if task_type != "classification" else 0.0
    assert not torch.equal(loss, _loss_and_grads(model, changed)[0])


def test_loss_is_mean_over_labelled_entries() -> None:
    torch.manual_seed(0)
    feat = MolGraphFeaturizer()
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=16),
        ffn_hidden_dim=16,
        tasks=["a", "b", "c"],
        featurizer=feat.to_config(),
    )
    batch = _masked_batch(feat)
    out = model(batch)
    expected = ((out - batch.y) ** 2)[batch.y_mask].mean()
    assert torch.allclose(model.loss(out, batch), expected)


# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "option, value",
    [("lr", -1.0), ("lr", float("nan")), ("weight_decay", -0.1), ("dropout", 1.0),
     ("warmup_epochs", -1)],
)  # fmt: skip
def test_training_settings_that_cannot_train_are_refused(option: str, value: float) -> None:
    """A negative learning rate would train by gradient ascent and still exit 0."""
    with pytest.raises(DataError, match=f"model.{option} must be"):
        MoleculeModel(encoder=DMPNN(hidden_dim=8, depth=1), **{option: value})


def test_a_negative_learning_rate_is_a_usage_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv = write_property_csv(tmp_path / "data.csv", 30)
    with pytest.raises(SystemExit) as exit_info:
        molml_main(["fit", "--data.path", str(csv), "--data.target_columns", "logp",
                    "--model.lr", "-1",
                    "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert exit_info.value.code == 2
    assert "model.lr must be a number >= 0, got -1.0" in capsys.readouterr().err
    assert not (tmp_path / "lightning_logs").exists()


def test_load_model_round_trip(tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = make_dm(write_task_csv(tmp_path / "logp.csv", 120))
    model = make_model(dm, encoder=DMPNN(hidden_dim=32, depth=2))
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best")
    trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint]).fit(
        model, datamodule=dm
    )
    best = Path(checkpoint.best_model_path)
    assert best.is_file() and best.name == "best.ckpt"

    raw = torch.load(best, weights_only=True)  # no pickled code in a molml checkpoint
    assert raw["molml"]["tasks"] == ["logp"]
    assert raw["molml"]["featurizer"] == dm.featurizer_config

    smiles = [*dm.table["smiles"].head(6).tolist(), INVALID, "c1ccccc1CCN"]
    expected = GraphPredictor(model).predict(smiles)
    loaded = molml.load_model(best)
    assert not loaded.model.training
    got = loaded.predict(smiles)
    assert list(got.columns) == ["smiles", "logp", "status"]
    assert got["status"].tolist()[6].startswith("invalid SMILES") and "C1CC" in got["status"][6]
    assert (got["status"].drop(index=6) == "ok").all()
    assert np.isnan(got["logp"][6])
    assert np.allclose(
        got["logp"].to_numpy(),
        expected["logp"].to_numpy(),
        atol=1e-6,
        equal_nan=True,
    )
    assert torch.equal(loaded.model.target_mean, model.target_mean)
    own = GraphPredictor(model).embed(smiles)
    assert np.allclose(loaded.embed(smiles), own, atol=1e-6, equal_nan=True)


def test_load_model_rejects_other_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("this is not a checkpoint\n")
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, plain)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    code = tmp_path / "code.pt"
    torch.save({"molml": argparse.Namespace(a=1)}, code)  # needs unpickling code
    no_spec = tmp_path / "no_spec.pt"
    torch.save({"molml": {"format": 1}, "state_dict": {}}, no_spec)
    not_dict = tmp_path / "not_dict.pt"
    torch.save({"molml": 5, "state_dict": {}}, not_dict)
    future = tmp_path / "future.pt"
    torch.save({"molml": {"format": 99, "molml_version": "9.0"}, "state_dict": {}}, future)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")

    for path, pattern in [
        (text, "not a molml checkpoint .*: it is not a PyTorch file, or a damaged one"),
        (plain, "not a molml checkpoint"),
        (listing, "not a molml checkpoint"),
        (code, "with weights_only=True: it holds Python objects besides tensors and plain data"),
        (future, "format 99"),
        (no_spec, "spec is incomplete"),
        (not_dict, "malformed"),
        (empty, "not a molml checkpoint"),
        (tmp_path / "missing.ckpt", "not found"),
    ]:
        with pytest.raises(CheckpointError, match=pattern):
            molml.load_model(path)


# ---------------------------------------------------------------------------- metrics


def test_single_class_task_is_skipped_with_a_warning() -> None:
    metric = MolecularMetrics("classification", ["mixed", "all_zero", "unlabelled"])
    preds = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, 0.5], [0.8, 0.1, 0.5], [0.3, 0.6, 0.5]])
    target = torch.tensor([[1.0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    mask = torch.tensor([[True, True, False]] * 4)
    metric.update(preds, target, mask)
    with pytest.warns(UserWarning) as warned:
        values = metric.compute()
    messages = " ".join(str(w.message) for w in warned)
    assert "'all_zero' has one class" in messages
    assert "'unlabelled' has no labelled molecule among those evaluated" in messages  # was silent
    assert values["roc_auc/mixed"].item() == pytest.approx(1.0)
    assert "roc_auc/all_zero" not in values and "roc_auc/unlabelled" not in values
    assert values["roc_auc"].item() == pytest.approx(1.0)  # average over the scored tasks only
    assert values["pr_auc"].item() == pytest.approx(1.0)


def test_regression_metrics_ignore_masked_entries() -> None:
    metric = MolecularMetrics("regression", ["a"])
    metric.update(
        torch.tensor([[1.0], [2.0], [100.0]]),
        torch.tensor([[1.0], [4.0], [0.0]]),
        torch.tensor([[True], [True], [False]]),
    )
    values = metric.compute()
    assert values["rmse"].item() == pytest.approx(math.sqrt(2.0))
    assert values["mae/a"].item() == pytest.approx(1.0)


def test_regression_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 2))
    preds = target + rng.normal(scale=0.5, size=(50, 2))
    mask = rng.random((50, 2)) > 0.2
    metric = MolecularMetrics("regression", ["a", "b"])
    for chunk in np.array_split(np.arange(50), 4):  # several updates, as over batches
        metric.update(*(torch.as_tensor(v[chunk]) for v in (preds, target, mask)))
    values = metric.compute()
    per_task = {"rmse": [], "mae": [], "r2": []}
    for j, task in enumerate(["a", "b"]):
        y, p = target[mask[:, j], j], preds[mask[:, j], j]
        expected = {
            "rmse": math.sqrt(mean_squared_error(y, p)),
            "mae": mean_absolute_error(y, p),
            "r2": r2_score(y, p),
        }
        for name, value in expected.items():
            assert values[f"{name}/{task}"].item() == pytest.approx(value, rel=1e-5), name
            per_task[name].append(value)
    for name, task_values in per_task.items():
        assert values[name].item() == pytest.approx(np.mean(task_values), rel=1e-5), name


def test_classification_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    target = (rng.random((60, 2)) < 0.3).astype(float)
    preds = np.clip(0.4 * target + 0.6 * rng.random((60, 2)), 0, 1)
    mask = rng.random((60, 2)) > 0.25
    metric = MolecularMetrics("classification", ["a", "b"])
    metric.update(*(torch.as_tensor(v) for v in (preds, target, mask)))
    values = metric.compute()
    aucs = []
    for j, task in enumerate(["a", "b"]):
        y, p = target[mask[:, j], j], preds[mask[:, j], j]
        aucs.append(roc_auc_score(y, p))
        assert values[f"roc_auc/{task}"].item() == pytest.approx(aucs[-1], abs=1e-6)
        expected = average_precision_score(y, p)
        assert values[f"pr_auc/{task}"].item() == pytest.approx(expected, abs=1e-6)
    assert values["roc_auc"].item() == pytest.approx(np.mean(aucs), abs=1e-6)
    assert 0.6 < values["roc_auc"].item() < 1.0  # informative, not perfect: a real check


def test_multiclass_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, size=40)
    logits = rng.normal(size=(40, 3)) + 1.5 * np.eye(3)[labels]
    probabilities = torch.softmax(torch.as_tensor(logits), dim=-1).numpy()
    metric = MolecularMetrics("multiclass", ["c"])
    metric.update(
        torch.as_tensor(probabilities[:, None, :]),
        torch.as_tensor(labels[:, None].astype(float)),
        torch.ones(40, 1, dtype=torch.bool),
    )
    values = metric.compute()
    accuracy = (probabilities.argmax(1) == labels).mean()
    assert values["accuracy/c"].item() == pytest.approx(accuracy)
    expected = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    assert values["roc_auc/c"].item() == pytest.approx(expected, abs=1e-6)
    # a split without one of the classes: ROC-AUC is left out, and says so
    present = labels != 2
    metric.reset()
    metric.update(
        torch.as_tensor(probabilities[present][:, None, :]),
        torch.as_tensor(labels[present][:, None].astype(float)),
        torch.ones(int(present.sum()), 1, dtype=torch.bool),
    )
    with pytest.warns(UserWarning, match="has 2 of its 3 classes in this split; ROC-AUC skipped"):
        assert "roc_auc/c" not in metric.compute()


def test_r2_of_a_constant_task_is_left_out_of_the_mean() -> None:
    metric = MolecularMetrics("regression", ["varied", "constant"])
    target = torch.tensor([[1.0, 2.0], [2.0, 2.0], [4.0, 2.0], [3.0, 2.0]])
    preds = torch.tensor([[1.5, 2.5], [2.0, 1.0], [3.0, 2.0], [3.5, 2.0]])
    metric.update(preds, target, torch.ones_like(target, dtype=torch.bool))
    with pytest.warns(UserWarning, match="'constant' has constant targets"):
        values = metric.compute()
    expected = r2_score(target[:, 0].numpy(), preds[:, 0].numpy())
    assert "r2/constant" not in values
    assert values["r2/varied"].item() == pytest.approx(expected, rel=1e-6)
    assert values["r2"].item() == pytest.approx(expected, rel=1e-6)  # not averaged with NaN/0
    rmse = [math.sqrt(mean_squared_error(target[:, j], preds[:, j])) for j in range(2)]
    assert values["rmse"].item() == pytest.approx(np.mean(rmse), rel=1e-6)  # both tasks count


def test_val_loss_is_the_mean_over_labelled_entries_of_all_batches() -> None:
    torch.manual_seed(0)
    feat = MolGraphFeaturizer()
    nan = float("nan")
    labelled = [
        feat("CCO", y=[1.0, nan]),
        feat("c1ccccc1O", y=[0.5, 2.0]),
        feat("CC(=O)Nc1ccc(O)cc1", y=[nan, -1.0]),
    ]
    unlabelled = [feat(s, y=[nan, nan]) for s in ("CCN", "CCCl", "OCC(O)CO")]
    last = [feat("CCCCCCO", y=[3.0, nan]), feat("c1ccncc1", y=[nan, 0.1])]
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=16, depth=2),
        ffn_hidden_dim=16,
        tasks=["a", "b"],
        featurizer=feat.to_config(),
    )
    model.target_mean.copy_(torch.tensor([0.5, 1.0]))
    model.target_std.copy_(torch.tensor([2.0, 0.5]))

    def validate(data: list) -> float:
        evaluation = trainer(Path("."), enable_checkpointing=False, default_root_dir=None)
        loader = DataLoader(data, batch_size=3, shuffle=False)
        (metrics,) = evaluation.validate(model, dataloaders=loader, verbose=False)
        return metrics["val/loss"]

    everything = Batch.from_data_list(labelled + last)
    with torch.no_grad():
        out = model.eval()(everything)
    scaled = (everything.y - model.target_mean) / model.target_std
    by_hand = ((out - scaled) ** 2)[everything.y_mask].mean().item()  # 6 labelled entries
    with_empty = validate(labelled + unlabelled + last)
    assert with_empty == pytest.approx(by_hand, rel=1e-5)
    assert validate(labelled + last) == pytest.approx(with_empty, rel=1e-6)


class RecordLR(L.Callback):
    """The learning rate at the start of every training batch."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_learning_rate_warms_up_linearly_then_decays_by_cosine(tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = make_dm(write_task_csv(tmp_path / "logp.csv", 80), batch_size=16)
    model = make_model(dm, encoder=DMPNN(hidden_dim=16, depth=1), lr=1e-3, warmup_epochs=2)
    recorder = RecordLR()
    seen = recorder.seen
    fit = trainer(tmp_path, max_epochs=4, limit_val_batches=0, callbacks=[recorder])
    fit.fit(model, datamodule=dm)
    steps_per_epoch = math.ceil(len(dm.split.train) / 16)
    total = 4 * steps_per_epoch
    assert len(seen) == total and total % 4 == 0
    warmup, lr = total // 2, 1e-3  # two of four epochs
    assert seen[0] == pytest.approx(lr / 10)  # starts at lr/10
    assert seen[warmup // 2] == pytest.approx(0.55 * lr)  # linear: half-way at half the warm-up
    assert np.allclose(np.diff(seen[: warmup + 1]), 0.9 * lr / warmup)
    assert seen[warmup] == pytest.approx(lr) and max(seen) == pytest.approx(lr)
    assert seen[warmup + (total - warmup) // 2] == pytest.approx(0.55 * lr)  # cosine mid-point
    assert (np.diff(seen[warmup:]) < 0).all()
    scheduler = fit.lr_scheduler_configs[0].scheduler
    assert scheduler.get_last_lr()[0] == pytest.approx(lr / 10)  # ends at lr/10


def test_warm_up_counts_epochs_of_steps_when_max_steps_ends_the_run(tmp_path: Path) -> None:
    """The warm-up is warmup_epochs epochs of steps, also when max_steps ends the run before
    max_epochs would (it used to shrink to warmup_epochs / max_epochs of the steps); a run
    without a step count (max_epochs -1) is refused, as the cosine schedule needs one; true
    reduced precisions are refused (Lightning casts the weights, not a PyG batch)."""
    L.seed_everything(0)
    dm = make_dm(write_task_csv(tmp_path / "logp.csv", 80), batch_size=16)
    model = make_model(dm, encoder=DMPNN(hidden_dim=16, depth=1), lr=1e-3, warmup_epochs=1)
    recorder = RecordLR()
    seen = recorder.seen
    dm.setup("fit")
    steps_per_epoch = math.ceil(len(dm.split.train) / 16)
    fit = trainer(tmp_path, max_epochs=50, max_steps=3 * steps_per_epoch, limit_val_batches=0,
                  callbacks=[recorder])  # fmt: skip
    fit.fit(model, datamodule=dm)
    assert len(seen) == 3 * steps_per_epoch
    assert seen[steps_per_epoch] == pytest.approx(1e-3) == max(seen)  # one epoch of warm-up
    endless = trainer(tmp_path, max_epochs=-1, max_time={"seconds": 30}, limit_val_batches=0)
    with pytest.raises(DataError, match="needs a finite number of steps"):
        endless.fit(make_model(dm, encoder=DMPNN(hidden_dim=16, depth=1)), datamodule=dm)
    bf16 = trainer(tmp_path, max_epochs=1, precision="bf16-true", limit_val_batches=0)
    with pytest.raises(DataError, match="bf16-true is not supported"):
        bf16.fit(make_model(dm, encoder=DMPNN(hidden_dim=16, depth=1)), datamodule=dm)


def test_sync_batchnorm_on_cpus_is_refused() -> None:
    """PyTorch's DDP would refuse SyncBatchNorm on CPU modules only once its processes run
    (``ValueError``, exit 1); the model's setup refuses it first, as bad input."""
    model = MoleculeModel(tasks=["y"], encoder=GINE(hidden_dim=8, depth=1))
    model.trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", sync_batchnorm=True,
                              logger=False)  # fmt: skip
    with pytest.raises(DataError, match="sync_batchnorm: .* over GPUs only"):
        model.setup("fit")


# ---------------------------------------------------------------------------- invariance


def renumbered_smiles(smiles: str, rng: np.random.Generator) -> str:
    """The same molecule written with its atoms in a random order."""
    mol = Chem.MolFromSmiles(smiles)
    text = smiles
    while text == smiles:  # a permutation can happen to write the same string; draw again
        order = rng.permutation(mol.GetNumAtoms()).tolist()
        text = Chem.MolToSmiles(Chem.RenumberAtoms(mol, order), canonical=False)
    assert Chem.MolToSmiles(Chem.MolFromSmiles(text)) == Chem.MolToSmiles(mol)
    return text


@pytest.mark.parametrize("encoder_cls", [DMPNN, GINE], ids=["dmpnn", "gine"])
def test_atom_order_does_not_change_predictions(encoder_cls) -> None:
    torch.manual_seed(0)
    feat = MolGraphFeaturizer()
    model = MoleculeModel(
        encoder=encoder_cls(hidden_dim=32, depth=3),
        ffn_hidden_dim=32,
        readout="sum",
        tasks=["a", "b"],
        featurizer=feat.to_config(),
    ).eval()
    predictor = GraphPredictor(model)
    rng = np.random.default_rng(0)
    originals = ["CC(=O)Nc1ccc(O)cc1", "O=C(O)c1ccccc1OC(C)=O", "C/C=C/CO", "CC(=O)[O-].[Na+]"]
    shuffled = [renumbered_smiles(s, rng) for s in originals]
    a = predictor.predict(originals)[["a", "b"]].to_numpy()
    b = predictor.predict(shuffled)[["a", "b"]].to_numpy()
    assert np.allclose(a, b, atol=1e-5)
    assert not np.allclose(a[0], a[1], atol=1e-5)  # the model does tell molecules apart
    embed_a, embed_b = predictor.embed(originals), predictor.embed(shuffled)
    assert np.allclose(embed_a, embed_b, atol=1e-5)


def test_atom_order_of_stereocentres_does_not_change_features() -> None:
    feat = MolGraphFeaturizer()
    rng = np.random.default_rng(0)
    smiles = "F[C@H](Cl)Br"
    mol = Chem.MolFromSmiles(smiles)
    tags = set()
    for _ in range(10):
        text = renumbered_smiles(smiles, rng)
        other = Chem.MolFromSmiles(text)
        carbon = next(a for a in other.GetAtoms() if a.GetSymbol() == "C")
        tags.add(chiral_slot(feat(text).x[carbon.GetIdx()]))
    carbon = next(a for a in mol.GetAtoms() if a.GetSymbol() == "C")
    tags.add(chiral_slot(feat(smiles).x[carbon.GetIdx()]))
    assert len(tags) == 1, f"chirality feature varies with atom order: {tags}"


# ---------------------------------------------------------------------------- the molml command


def cli(root: Path, *args: str) -> Path:
    """Run ``molml ARGS`` in ``root``; return the run directory it made."""
    runs = root / "runs" / "multiclass"
    before = set(runs.glob("version_*"))
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.chdir(root)
        mp.setattr(sys, "argv", ["molml"])  # pytest's own arguments are not the CLI's
        molml_main([*args, "--trainer.enable_progress_bar", "false"])
    (run,) = set(runs.glob("version_*")) - before
    return run


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``molml fit`` of a 3-class task (logP terciles) for two epochs."""
    root = tmp_path_factory.mktemp("multiclass")
    data = write_task_csv(root / "classes.csv", 240, columns=("logp_class",))
    config = {
        "seed_everything": 0,
        "data": {
            "path": str(data),
            "target_columns": ["logp_class"],
            "task_type": "multiclass",
            "split": "random",
            "batch_size": 32,
            "cache_dir": str(root / "cache"),
            "featurize_jobs": 1,
        },
        "model": {
            "encoder": {"class_path": "molml.models.DMPNN", "init_args": {"hidden_dim": 32}},
            "ffn_hidden_dim": 32,
            "lr": 3e-3,
        },
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "runs", "name": "multiclass"},
            },
        },
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    run = cli(root, "fit", "--config", str(root / "config.yaml"))
    return {"root": root, "data": data, "run": run, "best": run / "checkpoints" / "best.ckpt"}


def test_molml_validate_logs_the_checkpoints_own_metrics(multiclass_run) -> None:
    root, run, best = multiclass_run["root"], multiclass_run["run"], multiclass_run["best"]
    validated = cli(
        root, "validate", "--config", str(run / "config.yaml"), "--ckpt_path", str(best)
    )
    logged = pd.read_csv(validated / "metrics.csv").iloc[-1]

    table = pd.read_csv(multiclass_run["data"])
    val_rows = json.loads((run / "split.json").read_text())[0]["val"]
    labels = table["logp_class"].to_numpy()[val_rows].astype(int)
    predictor = molml.load_model(best)
    columns = predictor.prediction_columns()
    assert columns == [f"logp_class_class{k}" for k in range(3)]
    probabilities = predictor.predict(table["smiles"].iloc[val_rows].tolist())[columns].to_numpy()
    accuracy = (probabilities.argmax(1) == labels).mean()
    cross_entropy = -np.log(probabilities[np.arange(len(labels)), labels]).mean()
    assert logged["val/accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert logged["val/loss"] == pytest.approx(cross_entropy, rel=1e-4)
    assert 0.0 < logged["val/loss"] < 2 * math.log(3)


def test_tasks_with_fewer_classes_get_no_probability_for_the_others(
    multiclass_run, tmp_path
) -> None:
    """A binary task beside a 3-class one: its third class has probability exactly 0 (fit,
    load_model, ONNX export), it is scored on its own two classes (ROC-AUC, not skipped), and
    the run's config rebuilds the model for ``molml test``."""
    root = multiclass_run["root"]
    table = pd.read_csv(multiclass_run["data"])
    table["above_median"] = (table["logp_class"] >= 1).astype(int)
    data = root / "two_tasks.csv"
    table.to_csv(data, index=False)
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["data"]["path"] = str(data)
    config["data"]["target_columns"] = ["logp_class", "above_median"]
    config["trainer"]["max_epochs"] = 1
    (root / "two_tasks.yaml").write_text(yaml.safe_dump(config))
    run = cli(root, "fit", "--config", str(root / "two_tasks.yaml"))
    best = run / "checkpoints" / "best.ckpt"
    tested = json.loads((run / "test_metrics.json").read_text())["best.ckpt"]
    assert 0.0 <= tested["roc_auc/above_median"] <= 1.0
    predictor = molml.load_model(best)
    assert predictor.model.hparams.task_classes == [3, 2]
    out = predictor.predict(table["smiles"].head(20).tolist())
    assert (out["above_median_class2"] == 0.0).all()
    binary = out[["above_median_class0", "above_median_class1"]].sum(axis=1)
    assert np.allclose(binary, 1.0, atol=1e-6)
    assert (out[[f"logp_class_class{k}" for k in range(3)]] > 0).all().all()
    exported = tmp_path / "model.onnx"
    molml_main(["export", "--model", str(best), "--output", str(exported)])
    onnx_out = molml.load_model(exported).predict(table["smiles"].head(20).tolist())
    assert (onnx_out["above_median_class2"] == 0.0).all()
    assert np.allclose(onnx_out["above_median_class1"], out["above_median_class1"], atol=1e-4)
    retested = cli(root, "test", "--config", str(run / "config.yaml"), "--ckpt_path", str(best))
    logged = pd.read_csv(retested / "metrics.csv").iloc[-1]
    assert logged["test/roc_auc/above_median"] == pytest.approx(
        tested["roc_auc/above_median"], abs=1e-6
    )
    # a checkpoint written before per-task class counts were recorded is still tested with
    # its run's config (the counts the data gives mask its extra class)
    checkpoint = torch.load(best, weights_only=False)
    del (
        checkpoint["hyper_parameters"]["task_classes"],
        checkpoint["molml"]["hparams"]["task_classes"],
    )
    torch.save(checkpoint, tmp_path / "older.ckpt")
    older = cli(
        root,
        "test",
        "--config",
        str(run / "config.yaml"),
        "--ckpt_path",
        str(tmp_path / "older.ckpt"),
    )
    assert pd.read_csv(older / "metrics.csv").iloc[-1]["test/roc_auc/above_median"] == (
        pytest.approx(tested["roc_auc/above_median"], abs=1e-6)
    )


def test_molml_predict_on_a_file_gives_one_row_per_input_row(multiclass_run, tmp_path) -> None:
    root, run, best = multiclass_run["root"], multiclass_run["run"], multiclass_run["best"]
    smiles = pd.read_csv(multiclass_run["data"])["smiles"].head(12).tolist()
    smiles[2:2], smiles[9:9] = ["C1CC", "not_a_smiles"], ["c1cccc1"]  # 3 invalid among 15
    library = tmp_path / "library.csv"
    names = [f"m{i}" for i in range(15)]
    measured = pd.DataFrame({"smiles": smiles, "name": names, "status": "in stock"})
    measured["logp_class_class0"] = 0.5  # an input column named like an output: kept
    measured.to_csv(library, index=False)
    predicted = cli(
        root,
        "predict",
        "--config",
        str(run / "config.yaml"),
        "--ckpt_path",
        str(best),
        "--data.predict_path",
        str(library),
    )
    out = pd.read_csv(predicted / "predictions.csv")
    columns = [f"logp_class_class{k}" for k in range(3)]
    assert len(out) == 15 and out["name"].tolist() == [f"m{i}" for i in range(15)]
    assert out["row"].tolist() == list(range(2, 17))  # file lines, the header being line 1
    assert list(out.columns) == [
        "row", "smiles", "name", "input_status", "input_logp_class_class0", *columns, "status"
    ]  # fmt: skip
    assert (out["input_status"] == "in stock").all() and (
        out["input_logp_class_class0"] == 0.5
    ).all()
    bad = out["smiles"].isin(["C1CC", "not_a_smiles", "c1cccc1"]).to_numpy()
    assert bad.sum() == 3 and (out.loc[~bad, "status"] == "ok").all()
    assert out.loc[bad, "status"].str.contains("SMILES").all()
    assert out.loc[bad, columns].isna().all().all()
    assert np.allclose(out.loc[~bad, columns].sum(axis=1), 1.0, atol=1e-5)
    expected = molml.load_model(best).predict(smiles)
    assert np.allclose(out[columns], expected[columns], atol=1e-5, equal_nan=True)


def test_paths_and_numpy_numbers_from_python_give_a_loadable_checkpoint(tmp_path: Path) -> None:
    """A ``Path`` or numpy number given to the data module or model (``lr`` from np.logspace)
    was stored as such: the checkpoint could not be read with weights_only=True and was
    called "not a molml checkpoint"."""
    csv = write_property_csv(tmp_path / "props.csv", 60)
    dm = MoleculeDataModule(
        path=csv, target_columns=["logp"], split="random", cache_dir=None, featurize_jobs=1
    )
    model = make_model(dm, encoder=DMPNN(hidden_dim=np.int64(16), depth=2), lr=np.float64(1e-3))
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best", monitor="val/loss")
    trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint]).fit(
        model, datamodule=dm
    )
    loaded = molml.load_model(checkpoint.best_model_path)
    assert loaded.model.hparams.lr == 1e-3 and loaded.tasks == ["logp"]
    expected = GraphPredictor(model.eval()).predict(["CCO", "c1ccccc1O"])["logp"]
    np.testing.assert_allclose(loaded.predict(["CCO", "c1ccccc1O"])["logp"], expected, rtol=1e-5)


def test_a_model_built_for_other_data_than_its_data_module_is_refused(tmp_path: Path) -> None:
    """Built in Python without the data module's tasks and featurizer (as ``molml fit`` links
    them), the model trained under the task name ``target`` with the default featurizer,
    whatever the data said, and its checkpoint would featurize molecules otherwise."""
    csv = write_property_csv(tmp_path / "props.csv", 40)
    dm = make_dm(csv, target_columns=["logp"], featurizer=MolGraphFeaturizer(standardize=True))
    bare = MoleculeModel(encoder=DMPNN(hidden_dim=16, depth=2))
    with pytest.raises(DataError, match=r"tasks: model \['target'\], data \['logp'\].*featurizer"):
        trainer(tmp_path, max_epochs=1).fit(bare, datamodule=dm)
    model = make_model(dm, encoder=DMPNN(hidden_dim=16, depth=2))  # built from dm: accepted
    trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    assert model.featurizer.to_config() == dm.featurizer_config


def test_without_a_logger_a_trainer_draws_the_test_plot_of_the_model_it_trained(
    tmp_path: Path,
) -> None:
    """``fit`` then ``test`` of the model in memory is the trainer's own run: its plot is
    drawn; another trainer's test of it writes nothing into the shared folder."""
    from molml.callbacks import EvaluationPlots

    csv = write_property_csv(tmp_path / "props.csv", 40)
    dm = make_dm(csv, target_columns=["logp"])
    model = make_model(dm, encoder=DMPNN(hidden_dim=16, depth=2))
    fitted = trainer(tmp_path / "a", max_epochs=1, callbacks=[EvaluationPlots()])
    fitted.fit(model, datamodule=dm)
    fitted.test(model, datamodule=dm, verbose=False)
    assert (tmp_path / "a" / "test_parity.png").is_file()
    other = trainer(tmp_path / "b", max_epochs=1, callbacks=[EvaluationPlots()])
    other.test(model, datamodule=dm, verbose=False)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_a_multiclass_model_takes_data_with_fewer_classes_but_not_more() -> None:
    """Testing a 3-class model on a subset without class 2 is fine; data with a fourth class
    is not what the model was built for."""
    from types import SimpleNamespace

    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=16, depth=2), tasks=["c"], task_type="multiclass", num_classes=3
    )
    data = {
        "tasks": ["c"],
        "task_type": "multiclass",
        "featurizer_config": model.featurizer.to_config(),
        "molecule_features_config": None,
    }
    model._check_data(SimpleNamespace(**data, num_classes=2))
    with pytest.raises(DataError, match="num_classes: model 3, data 4"):
        model._check_data(SimpleNamespace(**data, num_classes=4))
    model._check_data(SimpleNamespace(featurizer_config=data["featurizer_config"]))  # says less
