"""The model zoo: every encoder with a few readouts on tiny real molecules (CPU, seconds)."""

from __future__ import annotations

import math
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from rdkit import Chem
from rdkit.Chem import Crippen
from torch_geometric.data import Batch
from torch_geometric.nn import GPSConv
from torch_geometric.utils import to_dense_adj, to_dense_batch

import molml
from molml.chem.featurizer import MolGraphFeaturizer
from molml.data.datamodule import MoleculeDataModule
from molml.errors import DataError
from molml.models import (
    DMPNN,
    GINE,
    GPS,
    PNA,
    AttentiveFP,
    Encoder,
    GATv2,
    Graphormer,
    MoleculeModel,
)
from molml.models.encoders import (
    PaddedLayout,
    _GPSLayer,
    guard_sync_batch_norms,
    shortest_path_buckets,
)
from molml.models.readout import make_readout, readout_dim
from molml.predict import GraphPredictor

HIDDEN = 32
RANDOM_WALK_STEPS = 8
FEATURIZER = MolGraphFeaturizer(random_walk_steps=RANDOM_WALK_STEPS)
ENCODERS = {
    "dmpnn": partial(DMPNN, hidden_dim=HIDDEN),
    "gine": partial(GINE, hidden_dim=HIDDEN),
    "gatv2": partial(GATv2, hidden_dim=HIDDEN, heads=4),
    "attentivefp": partial(AttentiveFP, hidden_dim=HIDDEN),
    "pna": partial(PNA, hidden_dim=HIDDEN, towers=4),
    "gps": partial(GPS, hidden_dim=HIDDEN, heads=4),
    "graphormer": partial(Graphormer, hidden_dim=HIDDEN, heads=4, ffn_dim=2 * HIDDEN),
}
NEW_ENCODERS = ["gatv2", "attentivefp", "pna", "gps", "graphormer"]
CASES = [
    *[(name, readout) for name in ENCODERS for readout in ("sum", "set2set")],
    ("attentivefp", "attentivefp"),
    ("gatv2", "attention"),
]
CASE_IDS = [f"{name}-{readout}" for name, readout in CASES]

# a ring, a salt, an aromatic ester, a single atom, a fused ring system, a charged amine
MOLECULES = [
    "CC(=O)Nc1ccc(O)cc1",
    "CC(=O)[O-].[Na+]",
    "O=C(O)c1ccccc1OC(C)=O",
    "[Cl-]",
    "CN1CCC23c4c5ccc(O)c4OC2C(O)C=CC3C1C5",
    "C[NH+](C)CCc1c[nH]c2ccccc12",
]
TRAINING_SMILES = [
    "CCO",
    "CCCCCCO",
    "c1ccccc1",
    "Cc1ccccc1C",
    "OC(=O)CC(O)(CC(=O)O)C(=O)O",
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "ClC(Cl)(Cl)Cl",
    "CCN(CC)CC",
    "OCC(O)CO",
    "c1ccc2ccccc2c1",
    "CC(=O)Nc1ccc(O)cc1",
    "CCCCCCCCCCCCCCCC",
    "O=C(O)c1ccccc1O",
    "NCCc1ccc(O)c(O)c1",
    "CC(=O)[O-].[Na+]",
]
HUGE = "c1ccccc1" + "CCO" * 20  # 66 atoms, padded against in the Graphormer tests


def build_model(encoder: str, readout: str, dtype: torch.dtype = torch.float64) -> MoleculeModel:
    torch.manual_seed(0)
    model = MoleculeModel(
        encoder=ENCODERS[encoder](),
        readout=readout,
        ffn_hidden_dim=HIDDEN,
        tasks=["target"],
        featurizer=FEATURIZER.to_config(),
    )
    return model.to(dtype).eval()


def graph_batch(molecules: list, dtype: torch.dtype = torch.float64) -> Batch:
    batch = Batch.from_data_list([FEATURIZER(m) for m in molecules])
    batch.x = batch.x.to(dtype)
    batch.edge_attr = batch.edge_attr.to(dtype)
    return batch


def logp_targets(smiles: list[str]) -> torch.Tensor:
    values = torch.tensor([Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in smiles])
    return ((values - values.mean()) / values.std()).reshape(-1, 1)


def renumbered(smiles: str, rng: np.random.Generator) -> tuple[Chem.Mol, list[int]]:
    """The molecule with its atoms in a random (non-identity) order, and that order."""
    mol = Chem.MolFromSmiles(smiles)
    order = list(range(mol.GetNumAtoms()))
    while mol.GetNumAtoms() > 1 and order == sorted(order):
        order = rng.permutation(mol.GetNumAtoms()).tolist()
    return Chem.RenumberAtoms(mol, order), order


@pytest.fixture(autouse=True)
def _one_thread_quietly():
    """Tiny models run faster on one thread, which also keeps them immune to OpenMP threads
    spinning while other work holds the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- shapes + training


@pytest.mark.parametrize("encoder, readout", CASES, ids=CASE_IDS)
def test_output_shapes(encoder: str, readout: str) -> None:
    model = build_model(encoder, readout)
    batch = graph_batch(MOLECULES)
    x = model.atom_embedding(batch.x)
    edge_attr = model.bond_embedding(batch.edge_attr)
    atoms = model.encoder(x, batch.edge_index, edge_attr, batch.batch)
    assert atoms.shape == (batch.num_nodes, model.encoder.out_dim)
    embedding = model.embed_batch(batch)
    assert embedding.shape == (len(MOLECULES), readout_dim(readout, HIDDEN))
    out = model(batch)
    assert out.shape == (len(MOLECULES), 1) and torch.isfinite(out).all()
    # the parts compose: head(readout(encoder(embedded atoms))), each molecule from its atoms
    assert torch.allclose(out, model.head(embedding), atol=1e-12)
    if readout == "sum":
        sums = torch.zeros(len(MOLECULES), atoms.size(1), dtype=atoms.dtype)
        assert torch.allclose(embedding, sums.index_add(0, batch.batch, atoms), atol=1e-10)


@pytest.mark.parametrize("encoder, readout", CASES, ids=CASE_IDS)
def test_a_few_optimizer_steps_lower_the_loss(encoder: str, readout: str) -> None:
    model = build_model(encoder, readout, torch.float32).train()
    batch = graph_batch(TRAINING_SMILES, torch.float32)
    batch.y = logp_targets(TRAINING_SMILES)
    batch.y_mask = torch.ones_like(batch.y, dtype=torch.bool)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.loss(model(batch), batch)
        loss.backward()
        if not losses:  # every weight is used (DDP needs no find_unused_parameters)
            unused = [n for n, p in model.named_parameters() if p.grad is None]
            assert not unused, unused
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.3 * losses[0], losses  # 0.001-0.1 in practice


@pytest.mark.parametrize("sync", [False, True], ids=["", "sync_batchnorm"])
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_a_training_batch_of_one_atom_takes_a_step(encoder: str, sync: bool) -> None:
    """A data set whose size leaves one methane for the last batch of an epoch (FreeSolv's
    513 training molecules at batch size 64): batch norms over atoms must not fail on it,
    also once made ``SyncBatchNorm`` for ``--trainer.sync_batchnorm`` (on one device)."""
    model = build_model(encoder, "sum", torch.float32).train()
    if sync:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        guard_sync_batch_norms(model)
    model(graph_batch(TRAINING_SMILES, torch.float32))  # running statistics of a real batch
    batch = graph_batch(["C"], torch.float32)
    batch.y, batch.y_mask = torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool)
    loss = model.loss(model(batch), batch)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_bf16_autocast_forward_and_backward(encoder: str) -> None:
    model = build_model(encoder, "set2set", torch.float32).train()
    batch = graph_batch(MOLECULES, torch.float32)
    batch.y = torch.ones(len(MOLECULES), 1)
    batch.y_mask = torch.ones_like(batch.y, dtype=torch.bool)
    reference = model.loss(model(batch), batch)
    expected = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        loss = model.loss(out.float(), batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # bf16 keeps about 3 significant digits: the loss and the gradient's direction agree
    assert loss.item() == pytest.approx(reference.item(), rel=0.05)
    got = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    want = torch.cat([g.flatten() for g in expected if g is not None])
    assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 0.95


# ---------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("encoder, readout", CASES, ids=CASE_IDS)
def test_atom_order_does_not_change_predictions(encoder: str, readout: str) -> None:
    model = build_model(encoder, readout)
    rng = np.random.default_rng(0)
    shuffled = [renumbered(s, rng)[0] for s in MOLECULES]
    with torch.no_grad():
        expected = model(graph_batch(MOLECULES))
        got = model(graph_batch(shuffled))
    assert torch.allclose(expected, got, atol=1e-5, rtol=0), (expected - got).abs().max()
    assert (expected[:, 0] - expected[0, 0]).abs().max() > 1e-3  # it tells molecules apart


@pytest.mark.parametrize("encoder, readout", CASES, ids=CASE_IDS)
def test_prediction_does_not_depend_on_the_rest_of_the_batch(encoder: str, readout: str) -> None:
    model = build_model(encoder, readout)
    molecules = [*MOLECULES, HUGE]
    with torch.no_grad():
        together = model(graph_batch(molecules))
        reversed_order = model(graph_batch(molecules[::-1])).flip(0)
        alone = torch.cat([model(graph_batch([m])) for m in molecules])
    assert torch.allclose(together, alone, atol=1e-8, rtol=0), (together - alone).abs().max()
    assert torch.allclose(together, reversed_order, atol=1e-8, rtol=0)


# ---------------------------------------------------------------------------- Graphormer


def test_graphormer_padding_never_reaches_real_atoms(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    encoder = ENCODERS["graphormer"]().double().eval()
    small, huge = graph_batch(["CC(=O)[O-].[Na+]"]), graph_batch([HUGE, "CC(=O)[O-].[Na+]"])
    x_small = torch.randn(small.num_nodes, HIDDEN, dtype=torch.float64)
    x_huge = torch.randn(huge.num_nodes, HIDDEN, dtype=torch.float64)
    x_huge[-small.num_nodes :] = x_small
    edge_small = torch.randn(small.num_edges, HIDDEN, dtype=torch.float64)
    edge_huge = torch.randn(huge.num_edges, HIDDEN, dtype=torch.float64)
    edge_huge[-small.num_edges :] = edge_small
    with torch.no_grad():
        alone = encoder(x_small, small.edge_index, edge_small, small.batch)
        batched = encoder(x_huge, huge.edge_index, edge_huge, huge.batch)
    assert batched.shape == (huge.num_nodes, HIDDEN)
    assert torch.allclose(alone, batched[-small.num_nodes :], atol=1e-10, rtol=0)

    # whatever sits in the padded slots (61 for the salt here) changes nothing
    layout = PaddedLayout.of(huge.batch)
    assert layout.mask.shape == (2, 66) and (~layout.mask).sum() == 66 - 5
    bias = encoder.attention_bias(huge.edge_index, edge_huge, layout)
    assert torch.isinf(bias[1, :, :, 5:]).all() and torch.isfinite(bias[1, :, :, :5]).all()
    padded_slots = []
    plain_pad = PaddedLayout.pad

    def noisy_pad(self: PaddedLayout, x: torch.Tensor) -> torch.Tensor:
        dense = plain_pad(self, x)
        padded_slots.append(int((~self.mask).sum()))
        noise = 1e3 * torch.randn_like(dense)
        return torch.where(self.mask[..., None], dense, noise)

    monkeypatch.setattr(PaddedLayout, "pad", noisy_pad)
    with torch.no_grad():
        noisy = encoder(x_huge, huge.edge_index, edge_huge, huge.batch)
    assert padded_slots == [61] * 3  # each block's attention got noise in every padded slot
    assert torch.isfinite(noisy).all()
    # equal up to float rounding (the attention kernel may sum in another order)
    assert torch.allclose(noisy, batched, atol=1e-10, rtol=0)
    # sizes given (as an exported graph gives them, from input shapes) change nothing either
    with torch.no_grad():
        sized = encoder(x_huge, huge.edge_index, edge_huge, huge.batch, padded_size=(2, 66))
    assert torch.equal(sized, batched)


def test_padded_layout_round_trips_and_matches_pyg() -> None:
    batch = graph_batch(["C", HUGE, "CC(=O)[O-].[Na+]"])
    x = torch.randn(batch.num_nodes, 5)
    layout = PaddedLayout.of(batch.batch)
    dense, mask = to_dense_batch(x, batch.batch)
    assert torch.equal(layout.pad(x), dense) and torch.equal(layout.mask, mask)
    assert torch.equal(layout.unpad(dense), x)
    sized = PaddedLayout.of(batch.batch, (3, 70))  # more slots than the largest molecule
    assert sized.mask.shape == (3, 70) and torch.equal(sized.unpad(sized.pad(x)), x)
    assert torch.equal(sized.pad(x)[:, :66], dense)
    pairs = layout.pair_values(batch.edge_index, torch.ones(batch.num_edges))
    assert torch.equal(pairs, to_dense_adj(batch.edge_index, batch.batch))


def test_gps_layer_computes_what_pyg_gpsconv_computes() -> None:
    torch.manual_seed(0)
    encoder = ENCODERS["gps"]().double().eval()
    batch = graph_batch(["C", HUGE, "CC(=O)[O-].[Na+]", "c1ccccc1O"])
    x = torch.randn(batch.num_nodes, HIDDEN, dtype=torch.float64)
    edge_attr = torch.randn(batch.num_edges, HIDDEN, dtype=torch.float64)
    layer = encoder.layers[0]
    assert isinstance(layer, _GPSLayer)
    with torch.no_grad():
        ours = layer(x, batch.edge_index, edge_attr, PaddedLayout.of(batch.batch))
        pyg = GPSConv.forward(layer, x, batch.edge_index, batch.batch, edge_attr=edge_attr)
    assert torch.allclose(ours, pyg, atol=1e-10, rtol=0)


def test_graphormer_single_atoms_give_finite_outputs() -> None:
    model = build_model("graphormer", "set2set")
    atoms = ["[Na+]", "C", "[Cl-]"]
    with torch.no_grad():
        out = model(graph_batch(atoms))
        alone = torch.cat([model(graph_batch([a])) for a in atoms])
    assert torch.isfinite(out).all()
    assert torch.allclose(out, alone, atol=1e-10)  # attention over one real atom, not padding
    assert (out[1:] - out[0]).abs().min() > 1e-4  # and different atoms stay apart


def test_shortest_path_buckets_match_rdkit() -> None:
    molecules = ["CC(=O)[O-].[Na+]", "C" * 12, "CN1CCC23c4c5ccc(O)c4OC2C(O)C=CC3C1C5"]
    batch = graph_batch(molecules)
    max_distance = 5
    layout = PaddedLayout.of(batch.batch, (3, 21))
    buckets = shortest_path_buckets(batch.edge_index, layout, max_distance)
    assert buckets.shape == (3, 21, 21)
    for i, smiles in enumerate(molecules):
        distances = Chem.GetDistanceMatrix(Chem.MolFromSmiles(smiles))
        n = len(distances)
        expected = np.where(distances > 1e6, max_distance + 1, np.minimum(distances, max_distance))
        assert np.array_equal(buckets[i, :n, :n].numpy(), expected.astype(np.int64)), smiles
    assert buckets[1, 0, 11] == max_distance  # 11 bonds apart: "max_distance or more"
    assert buckets[0, 0, 4] == max_distance + 1  # acetate carbon and sodium: not connected


# ---------------------------------------------------------------------------- RWSE


def test_random_walk_columns_on_a_six_ring() -> None:
    featurizer = MolGraphFeaturizer(random_walk_steps=RANDOM_WALK_STEPS)
    assert featurizer.atom_dim == MolGraphFeaturizer().atom_dim + RANDOM_WALK_STEPS
    x = featurizer("C1CCCCC1").x
    encoding = x[:, -RANDOM_WALK_STEPS:]
    steps = torch.arange(1, RANDOM_WALK_STEPS + 1, dtype=torch.float64)
    # a walk on a 6-cycle is back home after k steps with probability mean_j cos(2 pi j / 6)^k
    angles = 2 * math.pi * torch.arange(6, dtype=torch.float64) / 6
    expected = torch.cos(angles)[:, None].pow(steps).mean(0).float()
    assert torch.allclose(encoding, expected.expand(6, -1), atol=1e-6)
    assert encoding[0, 1] == pytest.approx(0.5) and encoding[0, 0] == 0.0
    # the other columns are the default featurizer's, and a lone ion gets zeros
    assert torch.equal(x[:, : MolGraphFeaturizer().atom_dim], MolGraphFeaturizer()("C1CCCCC1").x)
    assert not featurizer("[Na+]").x[:, -RANDOM_WALK_STEPS:].any()


def test_random_walk_columns_follow_the_atoms() -> None:
    rng = np.random.default_rng(1)
    for smiles in (
        "CC(=O)Nc1ccc(O)cc1",
        "CC(=O)[O-].[Na+]",
        "CN1CCC23c4c5ccc(O)c4OC2C(O)C=CC3C1C5",
    ):
        mol, order = renumbered(smiles, rng)
        original = FEATURIZER(Chem.MolFromSmiles(smiles)).x
        shuffled = FEATURIZER(mol).x
        assert torch.allclose(shuffled, original[order], atol=1e-6)


def test_random_walk_steps_travel_in_the_config() -> None:
    config = FEATURIZER.to_config()
    assert config["random_walk_steps"] == RANDOM_WALK_STEPS
    assert MolGraphFeaturizer.from_config(config).atom_dim == FEATURIZER.atom_dim
    assert MolGraphFeaturizer().to_config()["random_walk_steps"] == 0
    with pytest.raises(ValueError, match="random_walk_steps"):
        MolGraphFeaturizer(random_walk_steps=-1)


# ---------------------------------------------------------------------------- construction


def test_bad_arguments_are_refused() -> None:
    for make in (partial(GATv2, heads=7), partial(GPS, heads=7), partial(Graphormer, heads=7)):
        with pytest.raises(DataError, match="multiple of heads"):
            make(hidden_dim=HIDDEN)
    with pytest.raises(DataError, match="towers"):
        PNA(hidden_dim=HIDDEN, towers=5)
    with pytest.raises(DataError, match="degree_histogram"):
        PNA(hidden_dim=HIDDEN, towers=4, degree_histogram=[0, 0])
    with pytest.raises(DataError, match="unknown readout"):
        make_readout("median", HIDDEN)
    with pytest.raises(DataError, match="unknown activation"):
        DMPNN(hidden_dim=HIDDEN, activation="relu6")


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_config_is_plain_data_that_rebuilds_the_encoder(encoder: str) -> None:
    built = ENCODERS[encoder]()
    assert isinstance(built, Encoder)
    assert all(isinstance(v, int | float | str | list) for v in built.config.values())
    again = type(built)(**built.config)
    assert again.config == built.config
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in built.parameters())


# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("encoder", NEW_ENCODERS)
def test_checkpoint_rebuilds_through_load_model(encoder: str, tmp_path: Path) -> None:
    L.seed_everything(0)
    csv = tmp_path / "tiny.csv"
    smiles = TRAINING_SMILES * 2
    pd.DataFrame({"smiles": smiles, "logp": logp_targets(smiles)[:, 0].numpy()}).to_csv(csv)
    dm = MoleculeDataModule(
        path=str(csv),
        smiles_column="smiles",
        target_columns=["logp"],
        featurizer=FEATURIZER,
        split="random",
        batch_size=8,
        cache_dir=None,
        featurize_jobs=1,
    )
    model = MoleculeModel(
        encoder=ENCODERS[encoder](),
        readout="attentivefp" if encoder == "attentivefp" else "mean",
        ffn_hidden_dim=HIDDEN,
        tasks=dm.tasks,
        featurizer=dm.featurizer_config,
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best")
    L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    ).fit(model, datamodule=dm)

    loaded = molml.load_model(checkpoint.best_model_path)
    assert type(loaded.model.encoder) is type(model.encoder)
    assert loaded.model.encoder.config == model.encoder.config
    assert loaded.featurizer.random_walk_steps == RANDOM_WALK_STEPS
    probe = [*MOLECULES, "not a smiles"]
    expected, got = GraphPredictor(model).predict(probe), loaded.predict(probe)
    assert got["status"].tolist() == expected["status"].tolist()
    assert np.allclose(got["logp"], expected["logp"], atol=1e-6, equal_nan=True)
    assert np.isfinite(got["logp"][: len(MOLECULES)]).all()
