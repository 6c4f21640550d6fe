"""Readouts: pool atom embeddings into one molecule embedding (PyG aggregation modules)."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, aggr

from molml.errors import DataError

Readout = Literal["sum", "mean", "max", "norm", "attention", "set2set", "attentivefp"]
READOUTS = get_args(Readout)
NORM = 100.0  # the ``norm`` readout's divisor (chemprop's default)
SET2SET_STEPS = 3
ATTENTIVEFP_STEPS = 2


class NormAggregation(aggr.SumAggregation):
    """The sum of the atoms divided by :data:`NORM` (chemprop's ``norm`` aggregation)."""

    def forward(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
    ) -> Tensor:
        return super().forward(x, index, ptr, dim_size, dim) / NORM


class AttentiveFPReadout(aggr.Aggregation):
    """The molecule-level part of Attentive FP (Xiong et al. 2019).

    The molecule starts as the sum of its atoms; then, for ``steps`` rounds, it attends over its
    atoms with a graph attention layer (PyG's ``GATConv`` on atom -> molecule edges) and a GRU
    cell updates it from that context.
    """

    def __init__(self, dim: int, steps: int = ATTENTIVEFP_STEPS) -> None:
        super().__init__()
        self.steps = steps
        self.attention = GATConv(dim, dim, add_self_loops=False, negative_slope=0.01)
        self.gru = nn.GRUCell(dim, dim)

    def forward(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
    ) -> Tensor:
        self.assert_index_present(index)
        self.assert_two_dimensional_input(x, dim)
        molecule = self.reduce(x, index, ptr, dim_size, dim, reduce="sum").relu()
        atoms = torch.arange(x.size(0), device=x.device)
        atom_to_molecule = torch.stack([atoms, index])
        for _ in range(self.steps):
            context = F.elu(self.attention((x, molecule), atom_to_molecule))
            molecule = self.gru(context, molecule).relu()
        return molecule


class Set2Set(aggr.Set2Set):
    """PyG's Set2Set with its LSTM in fp32 under CPU autocast: oneDNN has no bf16 LSTM on
    CPUs without native bf16 (it fails to build one), and three steps over one state per
    molecule cost little in fp32. GPUs keep autocast's LSTM."""

    def forward(
        self,
        x: torch.Tensor,
        index: torch.Tensor | None = None,
        ptr: torch.Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
    ) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x, index, ptr, dim_size, dim)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float(), index, ptr, dim_size, dim)


def make_readout(name: str, dim: int) -> aggr.Aggregation:
    """``sum``, ``mean``, ``max``, ``norm`` (sum / 100, as chemprop's ``norm`` aggregation),
    ``attention`` (gated attention pooling, Li et al. 2016),
    ``set2set`` (Vinyals et al. 2016, 3 LSTM steps; its output is ``2 * dim`` wide) or
    ``attentivefp`` (Attentive FP's molecule-level attention with GRU updates, 2 steps)."""
    if name == "sum":
        return aggr.SumAggregation()
    if name == "mean":
        return aggr.MeanAggregation()
    if name == "max":
        return aggr.MaxAggregation()
    if name == "norm":
        return NormAggregation()
    if name == "attention":
        return aggr.AttentionalAggregation(gate_nn=nn.Linear(dim, 1), nn=nn.Linear(dim, dim))
    if name == "set2set":
        return Set2Set(dim, processing_steps=SET2SET_STEPS)
    if name == "attentivefp":
        return AttentiveFPReadout(dim)
    raise DataError(f"unknown readout {name!r}; choose from {READOUTS}")


def readout_dim(name: str, dim: int) -> int:
    """Width of the molecule embedding a readout makes from ``dim``-wide atom embeddings."""
    return 2 * dim if name == "set2set" else dim
