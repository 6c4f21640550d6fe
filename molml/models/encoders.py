"""Graph encoders: embedded atoms and bonds in, atom embeddings out.

The model embeds raw atom and bond features to ``encoder.hidden_dim`` before calling an
encoder, so encoders never depend on the featurizer's widths and can be picked freely from a
config. Every encoder records its constructor arguments in ``self.config`` so a checkpoint can
rebuild it without pickling code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import GINEConv

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "elu": nn.ELU}


def make_activation(name: str) -> nn.Module:
    """Activation module by name (relu, leaky_relu, gelu, elu)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Encoder(nn.Module):
    """Base class: ``forward(x, edge_index, edge_attr, batch) -> [num_atoms, out_dim]``.

    ``x`` and ``edge_attr`` arrive already embedded to ``hidden_dim``.
    """

    hidden_dim: int
    out_dim: int

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        raise NotImplementedError


class DMPNN(Encoder):
    """Directed message passing (Yang et al. 2019, chemprop's bond message passing).

    Hidden states live on directed bonds. A bond ``u->v`` receives the sum of the states of all
    bonds entering ``u`` except its own reverse ``v->u``; after ``depth`` steps each atom sums
    its incoming bond states and mixes them with its own features. Expects the featurizer's edge
    order, where edge ``e`` and ``e ^ 1`` are the two directions of one bond.
    """

    def __init__(
        self, hidden_dim: int = 300, depth: int = 3, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__(hidden_dim=hidden_dim, depth=depth, dropout=dropout, activation=activation)
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.hidden_dim = self.out_dim = hidden_dim
        self.depth = depth
        self.W_h = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.W_o = nn.Linear(2 * hidden_dim, hidden_dim)
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        src, dst = edge_index
        reverse = torch.arange(edge_index.size(1), device=x.device) ^ 1
        h_input = x[src] + edge_attr  # W_i [x_u || e_uv], split over the two embeddings
        h = self.act(h_input)
        for _ in range(self.depth - 1):
            incoming = torch.zeros_like(x).index_add_(0, dst, h)
            message = incoming[src] - h[reverse]
            h = self.dropout(self.act(h_input + self.W_h(message)))
        atom_messages = torch.zeros_like(x).index_add_(0, dst, h)
        return self.dropout(self.act(self.W_o(torch.cat([x, atom_messages], dim=1))))


class GINE(Encoder):
    """GIN with edge features (Hu et al. 2020) on PyG's ``GINEConv``, with residual connections."""

    def __init__(
        self, hidden_dim: int = 300, depth: int = 3, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__(hidden_dim=hidden_dim, depth=depth, dropout=dropout, activation=activation)
        self.hidden_dim = self.out_dim = hidden_dim
        self.convs = nn.ModuleList(
            GINEConv(
                nn.Sequential(
                    nn.Linear(hidden_dim, hidden_dim),
                    nn.BatchNorm1d(hidden_dim),
                    make_activation(activation),
                    nn.Linear(hidden_dim, hidden_dim),
                ),
                train_eps=True,
            )
            for _ in range(depth)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden_dim) for _ in range(depth))
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + self.dropout(self.act(norm(conv(h, edge_index, edge_attr))))
        return h
