"""Readouts: pool atom embeddings into one molecule embedding (PyG aggregation modules)."""

from __future__ import annotations

from torch import nn
from torch_geometric.nn import aggr

READOUTS = ("sum", "mean", "max", "attention")


def make_readout(name: str, dim: int) -> aggr.Aggregation:
    """``sum``, ``mean``, ``max`` or ``attention`` (gated attention pooling, Li et al. 2016)."""
    if name == "sum":
        return aggr.SumAggregation()
    if name == "mean":
        return aggr.MeanAggregation()
    if name == "max":
        return aggr.MaxAggregation()
    if name == "attention":
        return aggr.AttentionalAggregation(gate_nn=nn.Linear(dim, 1), nn=nn.Linear(dim, dim))
    raise ValueError(f"unknown readout {name!r}; choose from {READOUTS}")
