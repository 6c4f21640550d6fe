"""Graph encoders: embedded atoms and bonds in, atom embeddings out.

The model embeds raw atom and bond features to ``encoder.hidden_dim`` before calling an
encoder, so encoders never depend on the featurizer's widths and can be picked freely from a
config. Every encoder records its constructor arguments in ``self.config`` so a checkpoint can
rebuild it without pickling code.

==============  ===============================================================================
encoder         idea
==============  ===============================================================================
``DMPNN``       directed bond messages (Yang et al. 2019, chemprop)
``GINE``        GIN with bond features (Hu et al. 2020)
``GATv2``       multi-head dynamic attention over bonded neighbours (Brody et al. 2022)
``AttentiveFP`` gated graph attention + GRU updates (Xiong et al. 2019)
``PNA``         several aggregators with degree scalers (Corso et al. 2020)
``GPS``         local GINE messages + global attention per layer (Rampasek et al. 2022);
                pair it with ``MolGraphFeaturizer(random_walk_steps=16)``
``Graphormer``  a pure Transformer with shortest-path and degree encodings (Ying et al. 2021)
==============  ===============================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, GINEConv, GPSConv, PNAConv
from torch_geometric.nn.models.attentive_fp import GATEConv
from torch_geometric.utils import degree

from molml.errors import DataError
from molml.options import plain_data

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "elu": nn.ELU}


def make_activation(name: str) -> nn.Module:
    """Activation module by name (relu, leaky_relu, gelu, elu)."""
    if name not in ACTIVATIONS:
        raise DataError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Encoder(nn.Module):
    """Base class: ``forward(x, edge_index, edge_attr, batch) -> [num_atoms, out_dim]``.

    ``x`` and ``edge_attr`` arrive already embedded to ``hidden_dim``. An encoder that pads
    molecules to a common size (``pads_molecules``) also takes ``padded_size=(molecules,
    atoms per molecule)``; without it the sizes are read from ``batch``'s values, which an
    exported graph cannot do (see :class:`PaddedLayout`).
    """

    hidden_dim: int
    out_dim: int
    pads_molecules: bool = False

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = plain_data(config)  # numpy numbers as Python's: checkpoints hold these

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        raise NotImplementedError


def unrecorded_arguments(encoder: Encoder) -> list[str]:
    """Named constructor arguments of ``encoder``'s class that its ``config`` lacks: a
    checkpoint rebuilds the encoder from ``config`` alone, so it would rebuild them with
    their defaults."""
    parameters = inspect.signature(type(encoder).__init__).parameters.values()
    named = [
        p.name
        for p in parameters
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return [name for name in named if name not in encoder.config]


EncoderType = TypeVar("EncoderType", bound=type[Encoder])
_REGISTRY: dict[str, type[Encoder]] = {}


def class_path(cls: type) -> str:
    """The dotted import path of a class, as configs and checkpoints name it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_encoder(cls: EncoderType) -> EncoderType:
    """Allow checkpoints to rebuild encoder class ``cls`` (usable as a class decorator).

    Checkpoints name their encoder by class path; ``load_model`` builds only registered
    classes and never imports a module a checkpoint names. molml's own encoders are
    registered; register your own subclass of :class:`Encoder` before loading its checkpoints.
    """
    if not (isinstance(cls, type) and issubclass(cls, Encoder)) or cls is Encoder:
        raise TypeError(f"{cls!r} is not a concrete subclass of molml's Encoder")
    _REGISTRY[class_path(cls)] = cls
    return cls


def registered_encoder(path: str) -> type[Encoder] | None:
    """The registered encoder class with this class path, or None."""
    return _REGISTRY.get(path)


def registered_encoders() -> list[str]:
    """Class paths of all registered encoders."""
    return sorted(_REGISTRY)


@register_encoder
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
            raise DataError("depth must be at least 1")
        self.hidden_dim = self.out_dim = hidden_dim
        self.depth = depth
        self.W_h = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.W_o = nn.Linear(2 * hidden_dim, hidden_dim)
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        src, dst = edge_index
        reverse = torch.arange(edge_index.size(1), device=x.device) ^ 1
        # W_i [x_u || e_uv], split over the two embeddings
        h_input = x.index_select(0, src) + edge_attr
        h = self.act(h_input)
        # scatter_add_ rather than index_add_: the same sums, but index_add_ exports to ONNX
        # ScatterND, whose multithreaded onnxruntime kernel races on repeated indices
        into_atoms = dst[:, None].expand(-1, x.size(1))
        for _ in range(self.depth - 1):
            incoming = torch.zeros_like(x).scatter_add_(0, into_atoms, h)
            # index_select rather than fancy indexing: the same values, and a backward pass
            # that adds rows (index_add) instead of accumulating scattered writes (index_put)
            message = incoming.index_select(0, src) - h.index_select(0, reverse)
            h = self.dropout(self.act(h_input + self.W_h(message)))
        atom_messages = torch.zeros_like(x).scatter_add_(0, into_atoms, h)
        return self.dropout(self.act(self.W_o(torch.cat([x, atom_messages], dim=1))))


class AtomBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over atoms that normalizes a training batch of one atom (a lone methane
    or chloride ion at the end of an epoch) with its running statistics, as in evaluation,
    instead of failing: PyG's ``BatchNorm(allow_single_element=True)``, with the parameter
    names of ``BatchNorm1d`` so that existing checkpoints load."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.size(0) == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class AtomSyncBatchNorm(nn.SyncBatchNorm):
    """``SyncBatchNorm`` (``--trainer.sync_batchnorm true``) with :class:`AtomBatchNorm`'s
    guard: a training batch of one atom in a process without others to pool with (one device)
    is normalized with the running statistics."""

    def forward(self, x: Tensor) -> Tensor:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        alone = not distributed or torch.distributed.get_world_size() == 1
        if self.training and alone and x.size(0) == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def guard_sync_batch_norms(model: nn.Module) -> None:
    """Give the ``SyncBatchNorm`` layers Lightning made of ``model``'s atom batch norms (for
    ``--trainer.sync_batchnorm true``) the one-atom guard back."""
    for module in model.modules():
        if type(module) is nn.SyncBatchNorm:
            module.__class__ = AtomSyncBatchNorm


@register_encoder
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
                    AtomBatchNorm(hidden_dim),
                    make_activation(activation),
                    nn.Linear(hidden_dim, hidden_dim),
                ),
                train_eps=True,
            )
            for _ in range(depth)
        )
        self.norms = nn.ModuleList(AtomBatchNorm(hidden_dim) for _ in range(depth))
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + self.dropout(self.act(norm(conv(h, edge_index, edge_attr))))
        return h


def _check_heads(hidden_dim: int, heads: int) -> None:
    if heads < 1 or hidden_dim % heads:
        raise DataError(f"hidden_dim ({hidden_dim}) must be a multiple of heads ({heads})")


@register_encoder
class GATv2(Encoder):
    """Multi-head GATv2 attention over bonded neighbours (Brody et al. 2022), on PyG's
    ``GATv2Conv`` with bond features in the attention scores, plus residual connections and
    batch norm. Each layer's ``heads`` heads of width ``hidden_dim / heads`` are concatenated.
    """

    def __init__(
        self,
        hidden_dim: int = 300,
        depth: int = 3,
        heads: int = 4,
        dropout: float = 0.0,
        activation: str = "elu",
    ) -> None:
        super().__init__(
            hidden_dim=hidden_dim, depth=depth, heads=heads, dropout=dropout, activation=activation
        )
        _check_heads(hidden_dim, heads)
        self.hidden_dim = self.out_dim = hidden_dim
        self.convs = nn.ModuleList(
            GATv2Conv(
                hidden_dim,
                hidden_dim // heads,
                heads=heads,
                edge_dim=hidden_dim,
                dropout=dropout,
                add_self_loops=True,  # atoms attend to themselves too, so lone ions get a message
            )
            for _ in range(depth)
        )
        self.norms = nn.ModuleList(AtomBatchNorm(hidden_dim) for _ in range(depth))
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + self.dropout(self.act(norm(conv(h, edge_index, edge_attr))))
        return h


@register_encoder
class AttentiveFP(Encoder):
    """The atom-level part of Attentive FP (Xiong et al. 2019), on PyG's layers.

    The first layer is a gated attention layer that reads bond features (PyG's ``GATEConv``);
    the next ``depth - 1`` are graph attention layers (``GATConv``). After each, a GRU cell
    updates every atom's state from the attention context, as in the paper.

    The paper's molecule-level part (a super node that attends over the atoms for a few GRU
    steps) is the ``attentivefp`` readout (:class:`molml.models.readout.AttentiveFPReadout`),
    not part of this class: encoders return atom embeddings, so the molecule-level attention
    stays swappable like any other readout and the paper's full model is
    ``MoleculeModel(encoder=AttentiveFP(), readout="attentivefp")``.
    """

    def __init__(self, hidden_dim: int = 300, depth: int = 3, dropout: float = 0.0) -> None:
        super().__init__(hidden_dim=hidden_dim, depth=depth, dropout=dropout)
        if depth < 1:
            raise DataError("depth must be at least 1")
        self.hidden_dim = self.out_dim = hidden_dim
        self.gate_conv = GATEConv(hidden_dim, hidden_dim, edge_dim=hidden_dim, dropout=dropout)
        self.convs = nn.ModuleList(
            GATConv(
                hidden_dim, hidden_dim, dropout=dropout, add_self_loops=False, negative_slope=0.01
            )
            for _ in range(depth - 1)
        )
        self.grus = nn.ModuleList(nn.GRUCell(hidden_dim, hidden_dim) for _ in range(depth))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        h = F.leaky_relu(x)
        context = self.gate_conv(h, edge_index, edge_attr)
        h = self.grus[0](self.dropout(F.elu(context)), h).relu()
        for conv, gru in zip(self.convs, self.grus[1:], strict=True):
            context = conv(h, edge_index)
            h = gru(self.dropout(F.elu(context)), h).relu()
        return h


# Atoms per 1,000 with 0..6 heavy-atom neighbours in MoleculeNet lipo, esol and bbbp (mean).
DRUG_LIKE_DEGREE_HISTOGRAM = (1, 209, 471, 294, 25, 0, 0)


@register_encoder
class PNA(Encoder):
    """Principal Neighbourhood Aggregation (Corso et al. 2020) on PyG's ``PNAConv``, with bond
    features, residual connections and batch norm.

    Each layer aggregates neighbours with mean, min, max and standard deviation, each scaled by
    identity, amplification and attenuation, which need the average log-degree of the training
    graphs. ``degree_histogram[d]`` is the number (or share) of atoms with ``d`` neighbours; the
    default is the share per 1,000 atoms of heavy-atom degrees 0..6 in MoleculeNet molecules,
    which fits drug-like sets. Give your own (``torch_geometric.utils.degree`` over the training
    graphs) for very different molecules or with explicit hydrogens. ``towers`` splits the
    channels into independent towers, which keeps the layer at the size of the other encoders.
    """

    def __init__(
        self,
        hidden_dim: int = 300,
        depth: int = 3,
        towers: int = 5,
        degree_histogram: Sequence[int] = DRUG_LIKE_DEGREE_HISTOGRAM,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        degree_histogram = [int(count) for count in degree_histogram]
        super().__init__(
            hidden_dim=hidden_dim,
            depth=depth,
            towers=towers,
            degree_histogram=degree_histogram,
            dropout=dropout,
            activation=activation,
        )
        if towers < 1 or hidden_dim % towers:
            raise DataError(f"hidden_dim ({hidden_dim}) must be a multiple of towers ({towers})")
        if not any(degree_histogram) or min(degree_histogram) < 0:
            raise DataError("degree_histogram needs non-negative counts, not all zero")
        self.hidden_dim = self.out_dim = hidden_dim
        # on the CPU even when built on the meta device: PNAConv reads the values
        histogram = torch.tensor(degree_histogram, dtype=torch.long, device="cpu")
        self.convs = nn.ModuleList(
            PNAConv(
                hidden_dim,
                hidden_dim,
                aggregators=["mean", "min", "max", "std"],
                scalers=["identity", "amplification", "attenuation"],
                deg=histogram,
                edge_dim=hidden_dim,
                towers=towers,
                divide_input=True,
            )
            for _ in range(depth)
        )
        self.norms = nn.ModuleList(AtomBatchNorm(hidden_dim) for _ in range(depth))
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + self.dropout(self.act(norm(conv(h, edge_index, edge_attr))))
        return h


@register_encoder
class GPS(Encoder):
    """GPS graph Transformer (Rampasek et al. 2022) on PyG's ``GPSConv``.

    Each layer adds a local GINE message-passing update and a global multi-head attention over
    all atoms of the molecule, each with a residual connection and batch norm, then a
    feed-forward block. Attention alone cannot see the bonds, so atoms need positional or
    structural encodings: use ``MolGraphFeaturizer(random_walk_steps=16)``, whose random-walk
    columns reach this encoder through the model's atom embedding.
    """

    def __init__(
        self,
        hidden_dim: int = 300,
        depth: int = 3,
        heads: int = 4,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__(
            hidden_dim=hidden_dim,
            depth=depth,
            heads=heads,
            dropout=dropout,
            attention_dropout=attention_dropout,
            activation=activation,
        )
        _check_heads(hidden_dim, heads)
        self.hidden_dim = self.out_dim = hidden_dim
        self.layers = nn.ModuleList(
            _GPSLayer(
                hidden_dim,
                GINEConv(
                    nn.Sequential(
                        nn.Linear(hidden_dim, hidden_dim),
                        make_activation(activation),
                        nn.Linear(hidden_dim, hidden_dim),
                    ),
                    train_eps=True,
                ),
                heads=heads,
                dropout=dropout,
                act=activation,
                norm_kwargs={"allow_single_element": True},  # a one-atom training batch
                attn_kwargs={"dropout": attention_dropout},
            )
            for _ in range(depth)
        )

    pads_molecules = True

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        padded_size: tuple[int, int] | None = None,
    ) -> Tensor:
        layout = PaddedLayout.of(batch, padded_size)
        h = x
        for layer in self.layers:
            h = layer(h, edge_index, edge_attr, layout)
        return h


class _GPSLayer(GPSConv):
    """PyG's ``GPSConv`` (its modules, weights and computation, for the batch norms and the
    multi-head attention GPS builds) with the molecules padded by a :class:`PaddedLayout`
    instead of ``to_dense_batch``, so that an exported graph takes the padded size from its
    inputs' shapes."""

    def forward(  # type: ignore[override]
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, layout: PaddedLayout
    ) -> Tensor:
        local = self.conv(x, edge_index, edge_attr=edge_attr)
        local = self.norm1(F.dropout(local, p=self.dropout, training=self.training) + x)
        dense = layout.pad(x)
        attended, _ = self.attn(
            dense, dense, dense, key_padding_mask=~layout.mask, need_weights=False
        )
        attended = F.dropout(layout.unpad(attended), p=self.dropout, training=self.training)
        out = local + self.norm2(attended + x)
        return self.norm3(out + self.mlp(out))


@register_encoder
class Graphormer(Encoder):
    """A Graphormer-style Transformer (Ying et al. 2021): full attention over the atoms of each
    molecule, steered by graph structure instead of message passing.

    - Degree (centrality) encoding: a learned vector per atom degree (capped at ``max_degree``)
      is added to each atom's input.
    - Spatial encoding: every attention score gets a learned bias per head for the shortest-path
      distance between the two atoms: 0 (itself), 1 .. ``max_distance - 1``, one bucket for
      ``max_distance`` or more, and one for atoms in different fragments (salts, mixtures).
    - Bond encoding: bonded pairs also get a per-head bias projected from the bond embedding
      (Graphormer averages bond features along the whole shortest path; the direct bond is the
      cheap part of that).

    The bias is computed once per batch and shared by all blocks. For attention, molecules are
    padded to the largest in the batch; padded atoms are masked out as keys, so they never
    change a real atom's output (and as queries they see real atoms, so no row is all masked).
    Blocks are pre-LayerNorm, with ``F.scaled_dot_product_attention``.
    """

    def __init__(
        self,
        hidden_dim: int = 300,
        depth: int = 3,
        heads: int = 4,
        ffn_dim: int = 600,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        max_distance: int = 10,
        max_degree: int = 6,
        activation: str = "gelu",
    ) -> None:
        super().__init__(
            hidden_dim=hidden_dim,
            depth=depth,
            heads=heads,
            ffn_dim=ffn_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            max_distance=max_distance,
            max_degree=max_degree,
            activation=activation,
        )
        _check_heads(hidden_dim, heads)
        if max_distance < 2:
            raise DataError("max_distance must be at least 2")
        self.hidden_dim = self.out_dim = hidden_dim
        self.heads = heads
        self.max_distance = max_distance
        self.max_degree = max_degree
        self.degree_embedding = nn.Embedding(max_degree + 1, hidden_dim)
        self.distance_bias = nn.Embedding(max_distance + 2, heads)
        self.bond_bias = nn.Linear(hidden_dim, heads)
        self.blocks = nn.ModuleList(
            _TransformerBlock(hidden_dim, heads, ffn_dim, dropout, attention_dropout, activation)
            for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(hidden_dim)

    pads_molecules = True

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        padded_size: tuple[int, int] | None = None,
    ) -> Tensor:
        atom_degree = degree(edge_index[1], x.size(0), dtype=torch.long)
        h = x + self.degree_embedding(atom_degree.clamp(max=self.max_degree))
        layout = PaddedLayout.of(batch, padded_size)
        bias = self.attention_bias(edge_index, edge_attr, layout)
        for block in self.blocks:
            h = block(h, layout, bias)
        return self.final_norm(h)

    def attention_bias(self, edge_index: Tensor, edge_attr: Tensor, layout: PaddedLayout) -> Tensor:
        """``[B, heads, N, N]`` additive attention bias; ``-inf`` for padded keys."""
        buckets = shortest_path_buckets(edge_index, layout, self.max_distance)
        bonds = layout.pair_values(edge_index, self.bond_bias(edge_attr))
        bias = (self.distance_bias(buckets) + bonds).permute(0, 3, 1, 2)
        return bias.masked_fill(~layout.mask[:, None, None, :], float("-inf"))


@dataclass(frozen=True)
class PaddedLayout:
    """Molecules padded to ``max_atoms`` slots each, for attention over whole molecules.

    Atom ``i`` sits in slot ``local[i]`` of molecule ``batch[i]`` (atoms keep their order);
    ``mask`` ``[num_graphs, max_atoms]`` marks the real atoms. Padding and unpadding index by
    ``(batch, local)``: no boolean indexing, whose output size depends on the values, and no
    reshapes of padded tensors. With ``size`` given, nothing depends on the values of ``batch``
    either, so an exported graph stays valid for any molecules (the export passes the sizes
    from its inputs' shapes)."""

    num_graphs: int
    max_atoms: int
    batch: Tensor
    local: Tensor
    mask: Tensor

    @classmethod
    def of(cls, batch: Tensor, size: tuple[int, int] | None = None) -> PaddedLayout:
        """The layout of the atoms ``batch`` assigns to molecules ``0 .. num_graphs - 1``;
        ``size`` is ``(num_graphs, max_atoms)``, read from ``batch`` when not given."""
        if size is None:
            counts = torch.bincount(batch)
            num_graphs, max_atoms = counts.numel(), int(counts.max())
        else:
            num_graphs, max_atoms = size
            counts = torch.zeros(num_graphs, dtype=torch.long, device=batch.device)
            counts = counts.scatter_add(0, batch, torch.ones_like(batch))
        starts = counts.cumsum(0) - counts
        local = torch.arange(batch.size(0), device=batch.device) - starts[batch]
        slots = torch.arange(max_atoms, device=batch.device)
        return cls(num_graphs, max_atoms, batch, local, slots[None, :] < counts[:, None])

    def pad(self, x: Tensor) -> Tensor:
        """``[num_atoms, ...]`` -> ``[num_graphs, max_atoms, ...]``, zeros in padded slots."""
        dense = x.new_zeros((self.num_graphs, self.max_atoms, *x.shape[1:]))
        return dense.index_put((self.batch, self.local), x)

    def unpad(self, dense: Tensor) -> Tensor:
        """``[num_graphs, max_atoms, ...]`` -> the real atoms' rows ``[num_atoms, ...]``."""
        return dense[self.batch, self.local]

    def pair_values(self, edge_index: Tensor, values: Tensor) -> Tensor:
        """``[num_graphs, max_atoms, max_atoms, ...]`` holding ``values[e]`` at the atom pair of
        edge ``e`` (both atoms in one molecule, no repeated pairs) and zeros elsewhere."""
        n = self.max_atoms
        dense = values.new_zeros((self.num_graphs, n, n, *values.shape[1:]))
        source, target = edge_index
        return dense.index_put((self.batch[source], self.local[source], self.local[target]), values)


EXPORTED_SPAN = 2048  # exported graphs tell connected atoms apart up to this many bonds apart


def _is_exporting() -> bool:
    """Whether ``torch.export`` is tracing (``torch.compiler.is_exporting``, torch >= 2.6)."""
    probe = getattr(torch.compiler, "is_exporting", None)
    return bool(probe and probe())


def shortest_path_buckets(edge_index: Tensor, layout: PaddedLayout, max_distance: int) -> Tensor:
    """``[B, N, N]`` shortest-path distance between the atoms of each padded molecule, capped:
    ``0 .. max_distance`` (the last meaning ``max_distance`` or more) and ``max_distance + 1``
    for atoms that are not connected (other fragments, padding).

    Breadth-first search on the dense adjacency by boolean matrix products; whether pairs
    further apart are connected at all comes from squaring the reachability matrix (as often as
    the padded size needs; in an exported graph, whose size is unknown, as often as atoms
    :data:`EXPORTED_SPAN` bonds apart need).
    """
    num_atoms = layout.max_atoms
    device = edge_index.device
    with torch.autocast(device_type=device.type, enabled=False):
        ones = torch.ones(edge_index.size(1), device=device)
        adjacency = layout.pair_values(edge_index, ones)
        reached = torch.eye(num_atoms, device=device, dtype=torch.bool).expand_as(adjacency)
        buckets = torch.full_like(adjacency, max_distance + 1, dtype=torch.long)
        buckets.masked_fill_(reached, 0)
        for distance in range(1, max_distance):
            step = reached | (torch.bmm(reached.float(), adjacency) > 0)
            buckets.masked_fill_(step & ~reached, distance)
            reached = step
        connected, span = reached, max_distance - 1  # pairs within `span` bonds
        reach = EXPORTED_SPAN if _is_exporting() else num_atoms - 1
        squarings = 0
        while span << squarings < reach:
            squarings += 1
        for _ in range(squarings):
            connected = torch.bmm(connected.float(), connected.float()) > 0
        buckets.masked_fill_(connected & ~reached, max_distance)
    return buckets


class _TransformerBlock(nn.Module):
    """Pre-LayerNorm Transformer block whose attention takes an additive bias per head.

    Atoms stay unpadded ``[num_atoms, dim]`` for the projections and the feed-forward part;
    only queries, keys and values are padded per molecule for the attention itself.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        attention_dropout: float,
        activation: str,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, dim),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, layout: PaddedLayout, bias: Tensor) -> Tensor:
        num_graphs, num_atoms = layout.num_graphs, layout.max_atoms
        qkv = layout.pad(self.qkv(self.attention_norm(h)))
        q, k, v = qkv.view(num_graphs, num_atoms, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.to(q.dtype),
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        # real atoms, heads concatenated
        attended = layout.unpad(attended.transpose(1, 2)).flatten(1)
        h = h + self.dropout(self.attention_out(attended))
        return h + self.dropout(self.ffn(self.ffn_norm(h)))
