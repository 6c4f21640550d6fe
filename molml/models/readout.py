"""Readouts: pool atom embeddings into one molecule embedding (PyG aggregation modules)."""

from __future__ import annotations

from torch import nn
from torch_geometric.nn import aggr

READOUTS = ("sum", "mean", "max", "attention", "set2set")
SET2SET_STEPS = 3


def make_readout(name: str, dim: int) -> aggr.Aggregation:
    """``sum``, ``mean``, ``max``, ``attention`` (gated attention pooling, Li et al. 2016) or
    ``set2set`` (Vinyals et al. 2016, 3 LSTM steps; its output is ``2 * dim`` wide)."""
    if name == "sum":
        return aggr.SumAggregation()
    if name == "mean":
        return aggr.MeanAggregation()
    if name == "max":
        return aggr.MaxAggregation()
    if name == "attention":
        return aggr.AttentionalAggregation(gate_nn=nn.Linear(dim, 1), nn=nn.Linear(dim, dim))
    if name == "set2set":
        return aggr.Set2Set(dim, processing_steps=SET2SET_STEPS)
    raise ValueError(f"unknown readout {name!r}; choose from {READOUTS}")


def readout_dim(name: str, dim: int) -> int:
    """Width of the molecule embedding a readout makes from ``dim``-wide atom embeddings."""
    return 2 * dim if name == "set2set" else dim
