"""MoleculeModel with real Lightning training on small MoleculeNet subsets (CPU, few epochs)."""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require_dataset
from lightning.pytorch.callbacks import ModelCheckpoint
from rdkit import Chem
from torch_geometric.data import Batch

import molml
from molml.chem.featurizer import DEFAULT_ELEMENTS, MolGraphFeaturizer
from molml.data.datamodule import MoleculeDataModule
from molml.errors import CheckpointError
from molml.models import DMPNN, GINE, MoleculeModel
from molml.predict import GraphPredictor
from molml.tasks import MolecularMetrics

INVALID = "C1CC"
CHIRAL = slice(len(DEFAULT_ELEMENTS) + 17, len(DEFAULT_ELEMENTS) + 21)  # chirality tag one-hot


def chiral_slot(atom_row: torch.Tensor) -> int:
    return int(torch.nonzero(atom_row[CHIRAL]).flatten()[0])


def subset_csv(name: str, n: int, tmp_path: Path) -> Path:
    frame = pd.read_csv(require_dataset(name)).head(n)
    path = tmp_path / f"{name}_{n}.csv"
    frame.to_csv(path, index=False)
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


def test_training_lowers_the_loss(tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = make_dm(subset_csv("esol", 150, tmp_path))
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
    trainer(tmp_path, max_epochs=10).fit(model, datamodule=dm)
    after = fixed_loss()
    assert math.isfinite(after)
    assert after < 0.7 * before, (before, after)  # about 0.47x in practice
    # targets are standardized with the training split's statistics, kept as buffers
    assert torch.allclose(model.target_mean, torch.as_tensor(mean, dtype=torch.float32))
    predictions = GraphPredictor(model).predict(dm.table["smiles"].head(10).tolist())
    assert predictions["logSolubility"].between(-12, 3).all()  # original units, not z-scores


@pytest.mark.parametrize(
    "dataset, n, tasks", [("bbbp", 160, ["p_np"]), ("tox21", 200, None)], ids=["bbbp", "tox21"]
)
def test_classification_and_multitask_train_without_nan(tmp_path, dataset, n, tasks) -> None:
    L.seed_everything(0)
    dm = make_dm(subset_csv(dataset, n, tmp_path), task_type="classification")
    if dataset == "tox21":
        assert len(dm.tasks) == 12 and np.isnan(dm.targets).any()  # really has missing labels
    model = make_model(dm)
    fit = trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0)
    fit.fit(model, datamodule=dm)
    loss = fit.callback_metrics["train/loss_epoch"]
    assert torch.isfinite(loss) and loss > 0
    assert params_finite(model)
    out = GraphPredictor(model).predict(dm.table["smiles"].head(20).tolist())
    values = out[dm.tasks].to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()


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


def test_load_model_round_trip(tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = make_dm(subset_csv("esol", 120, tmp_path))
    model = make_model(dm)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best")
    trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint]).fit(
        model, datamodule=dm
    )
    best = Path(checkpoint.best_model_path)
    assert best.is_file() and best.name == "best.ckpt"

    raw = torch.load(best, weights_only=True)  # no pickled code in a molml checkpoint
    assert raw["molml"]["tasks"] == ["logSolubility"]
    assert raw["molml"]["featurizer"] == dm.featurizer_config

    smiles = [*dm.table["smiles"].head(6).tolist(), INVALID, "c1ccccc1CCN"]
    expected = GraphPredictor(model).predict(smiles)
    loaded = molml.load_model(best)
    assert not loaded.model.training
    got = loaded.predict(smiles)
    assert list(got.columns) == ["smiles", "logSolubility", "status"]
    assert got["status"].tolist()[6].startswith("invalid SMILES") and "C1CC" in got["status"][6]
    assert (got["status"].drop(index=6) == "ok").all()
    assert np.isnan(got["logSolubility"][6])
    assert np.allclose(
        got["logSolubility"].to_numpy(),
        expected["logSolubility"].to_numpy(),
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
        (text, "not a molml checkpoint"),
        (plain, "not a molml checkpoint"),
        (listing, "not a molml checkpoint"),
        (code, "not a molml checkpoint"),
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
    with pytest.warns(UserWarning, match="'all_zero' has one class"):
        values = metric.compute()
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
