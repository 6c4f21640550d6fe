"""Chemprop 2 checkpoints as pretrained molml D-MPNNs: a chemprop-style checkpoint is built here
(chemprop's key names and hyper_parameters, random weights; chemprop itself is not imported) and
molml's embeddings are compared with chemprop's BondMessagePassing math written out in torch on
chemprop's featurization, also written out here."""

from __future__ import annotations

import logging
import pickle
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import AttributeDict
from rdkit import Chem
from torch import Tensor
from torch_geometric.data import Batch

from molml.chem.featurizer import MolGraphFeaturizer
from molml.errors import CheckpointError
from molml.models import MoleculeModel
from molml.models.encoders import DMPNN
from molml.models.pretrained import read_pretrained

SMILES = [
    "CCO",
    "c1ccccc1O",
    "CC(=O)Nc1ccc(O)cc1",
    "C[C@H](N)C(=O)O",
    "F/C=C/F",
    "[NH4+].[Cl-]",
    "C",
    "[13CH3]C#N",
    "CN1CCC[C@H]1c1cccnc1",
    "O=S(=O)([O-])c1ccc(I)cc1",
]
D_V, D_E, D_H, DEPTH = 72, 14, 96, 3

# chemprop 2.3.1 MultiHotAtomFeaturizer.v2() and MultiHotBondFeaturizer(), written out
HYBRIDIZATIONS = [
    Chem.HybridizationType.S,
    Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2,
    Chem.HybridizationType.SP2D,
    Chem.HybridizationType.SP3,
    Chem.HybridizationType.SP3D,
    Chem.HybridizationType.SP3D2,
]
ATOM_CHOICES = [
    [*range(1, 37), 53],  # atomic number
    list(range(6)),  # total degree
    [-1, -2, 1, 2, 0],  # formal charge
    list(range(4)),  # chiral tag
    list(range(5)),  # total H count
    HYBRIDIZATIONS,
]
BOND_TYPES = [
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
]


def chemprop_atom(atom: Chem.Atom) -> list[float]:
    values = [
        atom.GetAtomicNum(),
        atom.GetTotalDegree(),
        atom.GetFormalCharge(),
        int(atom.GetChiralTag()),
        atom.GetTotalNumHs(),
        atom.GetHybridization(),
    ]
    row: list[float] = []
    for value, choices in zip(values, ATOM_CHOICES, strict=True):
        one_hot = [0.0] * (len(choices) + 1)
        one_hot[choices.index(value) if value in choices else len(choices)] = 1.0
        row += one_hot
    return [*row, float(atom.GetIsAromatic()), 0.01 * atom.GetMass()]


def chemprop_bond(bond: Chem.Bond) -> list[float]:
    row = [0.0] * 14
    if bond.GetBondType() in BOND_TYPES:
        row[1 + BOND_TYPES.index(bond.GetBondType())] = 1.0
    row[5], row[6] = float(bond.GetIsConjugated()), float(bond.IsInRing())
    stereo = int(bond.GetStereo())
    row[7 + (stereo if stereo < 6 else 6)] = 1.0
    return row


def chemprop_graph(smiles: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(V, E, edge_index, rev_edge_index)`` as chemprop's SimpleMoleculeMolGraphFeaturizer."""
    mol = Chem.MolFromSmiles(smiles)
    V = torch.tensor([chemprop_atom(a) for a in mol.GetAtoms()], dtype=torch.float32)
    E, edges = [], []
    for bond in mol.GetBonds():
        E += [chemprop_bond(bond)] * 2
        u, v = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        edges += [(u, v), (v, u)]
    E_t = torch.tensor(E, dtype=torch.float32).reshape(-1, D_E)
    edge_index = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).T
    rev = torch.arange(len(E)).reshape(-1, 2).flip(1).reshape(-1)
    return V, E_t, edge_index, rev


def chemprop_encoding(state: dict[str, Tensor], smiles: str, aggregation: str) -> Tensor:
    """chemprop's BondMessagePassing (relu, no bias, directed) and aggregation on one molecule."""
    V, E, edge_index, rev = chemprop_graph(smiles)
    W_i, W_h = state["message_passing.W_i.weight"], state["message_passing.W_h.weight"]
    W_o, b_o = state["message_passing.W_o.weight"], state["message_passing.W_o.bias"]
    src, dst = edge_index
    H_0 = torch.cat([V[src], E], dim=1) @ W_i.T
    H = H_0.relu()
    for _ in range(1, DEPTH):
        M_all = torch.zeros(len(V), D_H).index_add_(0, dst, H)
        H = (H_0 + (M_all[src] - H[rev]) @ W_h.T).relu()
    M = torch.zeros(len(V), D_H).index_add_(0, dst, H)
    atoms = (torch.cat([V, M], dim=1) @ W_o.T + b_o).relu()
    pooled = {"mean": atoms.mean(0), "sum": atoms.sum(0), "norm": atoms.sum(0) / 100}
    return pooled[aggregation]


def chemprop_checkpoint(
    d_h: int = D_H, aggregation: str = "MeanAggregation", **mp_hparams: Any
) -> dict[str, Any]:
    """A checkpoint laid out as chemprop's ``save_model`` writes it (classes as names)."""
    generator = torch.Generator().manual_seed(0)

    def weight(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator) / shape[-1] ** 0.5

    state = {
        "message_passing.W_i.weight": weight(d_h, D_V + D_E),
        "message_passing.W_h.weight": weight(d_h, d_h),
        "message_passing.W_o.weight": weight(d_h, D_V + d_h),
        "message_passing.W_o.bias": weight(d_h),
        "predictor.ffn.0.0.weight": weight(300, d_h),
        "predictor.ffn.0.0.bias": weight(300),
    }
    message_passing = {
        "d_v": D_V,
        "d_e": D_E,
        "d_h": d_h,
        "bias": False,
        "depth": DEPTH,
        "dropout": 0.0,
        "activation": "relu",
        "undirected": False,
        "d_vd": None,
        **mp_hparams,
    }
    if mp_hparams.get("d_vd"):
        dim = d_h + mp_hparams["d_vd"]
        state |= {
            "message_passing.W_d.weight": weight(dim, dim),
            "message_passing.W_d.bias": weight(dim),
        }
    agg = {"dim": 0, "norm": 100.0} if aggregation == "NormAggregation" else {"dim": 0}
    return {
        "hyper_parameters": {
            "batch_norm": False,
            "metrics": None,
            "warmup_epochs": 2,
            "message_passing": message_passing,
            "agg": agg | {"aggregation": aggregation},  # chemprop stores the class itself
            "predictor": {"n_tasks": 1, "input_dim": d_h, "hidden_dim": 300},
        },
        "state_dict": state,
        "output_columns": ["y"],
    }


def save(checkpoint: dict[str, Any], path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Save as chemprop does: hyper_parameters hold chemprop's classes, an Activation member
    and Lightning AttributeDicts. Stand-ins named as chemprop's are pickled, then removed."""
    hparams = checkpoint["hyper_parameters"]
    mp, agg = hparams["message_passing"], hparams["agg"]
    activation = Enum(
        "Activation", {"RELU": "relu", "TANH": "tanh"}, module="chemprop.nn.utils", type=str
    )
    classes = {
        "chemprop.nn.message_passing.base": type(
            "BondMessagePassing", (), {"__module__": "chemprop.nn.message_passing.base"}
        ),
        "chemprop.nn.agg": type(agg.pop("aggregation"), (), {"__module__": "chemprop.nn.agg"}),
        "chemprop.nn.utils": activation,
    }
    monkeypatch.setitem(sys.modules, "chemprop", types.ModuleType("chemprop"))
    for module_name, cls in classes.items():
        module = types.ModuleType(module_name)
        setattr(module, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, module_name, module)
    mp["cls"] = classes["chemprop.nn.message_passing.base"]
    mp["activation"] = activation(mp["activation"])
    agg["cls"] = classes["chemprop.nn.agg"]
    for key in ("message_passing", "agg", "predictor"):
        hparams[key] = AttributeDict(hparams[key])
    checkpoint["hyper_parameters"] = AttributeDict(hparams)
    torch.save(checkpoint, path)
    monkeypatch.undo()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    return path


def model_for(path: Path, readout: str = "mean") -> MoleculeModel:
    return MoleculeModel(
        encoder=DMPNN(hidden_dim=D_H, depth=DEPTH),
        readout=readout,
        featurizer=MolGraphFeaturizer(preset="chemprop").to_config(),
        pretrained=str(path),
    ).eval()


def test_chemprop_featurization_is_reproduced() -> None:
    featurizer = MolGraphFeaturizer(preset="chemprop")
    for smiles in SMILES:
        V, E, edge_index, _ = chemprop_graph(smiles)
        graph = featurizer(smiles)
        assert torch.equal(graph.x, V), smiles
        assert torch.equal(graph.edge_attr, E), smiles
        assert torch.equal(graph.edge_index, edge_index), smiles


@pytest.mark.parametrize(
    ("aggregation", "readout"),
    [("MeanAggregation", "mean"), ("SumAggregation", "sum"), ("NormAggregation", "norm")],
)
def test_embeddings_match_chemprop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aggregation: str, readout: str
) -> None:
    checkpoint = chemprop_checkpoint(aggregation=aggregation)
    reference = torch.stack(
        [chemprop_encoding(checkpoint["state_dict"], s, readout) for s in SMILES]
    )
    path = save(checkpoint, tmp_path / "model.pt", monkeypatch)
    assert read_pretrained(str(path)).readout == readout
    model = model_for(path, readout)
    featurizer = MolGraphFeaturizer(preset="chemprop")
    with torch.no_grad():
        embeddings = model.embed_batch(Batch.from_data_list([featurizer(s) for s in SMILES]))
    np.testing.assert_allclose(embeddings.numpy(), reference.numpy(), atol=1e-5)


def test_model_starts_from_the_chemprop_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = chemprop_checkpoint()
    state = {k: v.clone() for k, v in checkpoint["state_dict"].items()}
    model = model_for(save(checkpoint, tmp_path / "model.pt", monkeypatch))
    W_i = state["message_passing.W_i.weight"]
    assert torch.equal(model.atom_embedding.weight, W_i[:, :D_V])
    assert torch.equal(model.bond_embedding.weight, W_i[:, D_V:])
    assert not model.atom_embedding.bias.any() and not model.bond_embedding.bias.any()
    assert torch.equal(model.encoder.W_h.weight, state["message_passing.W_h.weight"])
    W_o = state["message_passing.W_o.weight"]
    assert torch.equal(model.encoder.W_o.weight[:, D_H:], W_o[:, D_V:])
    torch.testing.assert_close(
        model.encoder.W_o.weight[:, :D_H] @ W_i[:, :D_V], W_o[:, :D_V], atol=1e-5, rtol=0
    )
    assert torch.equal(model.encoder.W_o.bias, state["message_passing.W_o.bias"])


def test_bare_message_passing_file(tmp_path: Path) -> None:
    """CheMeleon's layout: the message passing's own hyper_parameters and state_dict."""
    checkpoint = chemprop_checkpoint()
    mp = checkpoint["hyper_parameters"]["message_passing"]
    state = {
        k.removeprefix("message_passing."): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith("message_passing.")
    }
    path = tmp_path / "mp.pt"
    torch.save({"hyper_parameters": mp, "state_dict": state}, path)
    pretrained = read_pretrained(str(path))
    assert pretrained.readout == "mean"
    assert pretrained.featurizer == MolGraphFeaturizer(preset="chemprop").to_config()
    assert pretrained.encoder["init_args"] == {
        "hidden_dim": D_H,
        "depth": DEPTH,
        "dropout": 0.0,
        "activation": "relu",
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d_vd": 4}, "extra atom descriptors"),
        ({"d_h": 48}, "hidden size 48 is below the atom feature width 72"),
        ({"undirected": True}, "undirected"),
        ({"activation": "tanh"}, "activation 'tanh'"),
        ({"aggregation": "AttentiveAggregation"}, "aggregation 'attentiveaggregation'"),
    ],
)
def test_unsupported_checkpoints_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], message: str
) -> None:
    path = save(chemprop_checkpoint(**changes), tmp_path / "model.pt", monkeypatch)
    with pytest.raises(CheckpointError, match=message):
        read_pretrained(str(path))


def test_featurizer_must_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(chemprop_checkpoint(), tmp_path / "model.pt", monkeypatch)
    with pytest.raises(CheckpointError, match=r"reads the 'chemprop' .*\S+preset chemprop"):
        MoleculeModel(encoder=DMPNN(hidden_dim=D_H, depth=DEPTH), pretrained=str(path))


def test_a_readout_other_than_the_files_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The model would not encode molecules as chemprop did: a warning says so."""
    path = save(chemprop_checkpoint(aggregation="NormAggregation"), tmp_path / "m.pt", monkeypatch)
    with caplog.at_level(logging.WARNING):
        model_for(path, "mean")
    assert "was trained with readout 'norm'; this model pools with 'mean'" in caplog.text


def test_a_file_shaped_like_a_chemprop_checkpoint_with_other_contents_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "weird.pt"
    torch.save({"hyper_parameters": 5, "state_dict": {"W_i.weight": 1}}, path)
    with pytest.raises(CheckpointError, match="looks like a chemprop checkpoint but cannot"):
        read_pretrained(str(path))
