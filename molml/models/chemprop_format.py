"""Chemprop 2 checkpoints as pretrained molml D-MPNNs (``MoleculeModel(pretrained=...)``).

Two kinds of files are read: chemprop's model files (``chemprop train``'s ``best.pt`` and its
Lightning ``.ckpt`` files: ``hyper_parameters`` and a ``state_dict`` with ``message_passing.*``
keys) and bare message-passing files such as CheMeleon's ``chemeleon_mp.pt`` (``W_i.*`` keys;
chemprop pools those with ``mean``). The encoder is taken over; chemprop's batch norm and
predictor belong to the head, which is trained anew.

chemprop's ``BondMessagePassing`` on molml's :class:`~molml.models.encoders.DMPNN` (``x`` and
``e`` are raw atom and bond features, ``d_v`` the atom features' width):

================================  ============================================================
chemprop                          molml
================================  ============================================================
``W_i [x_u || e_uv]`` (no bias)   ``atom_embedding`` = ``W_i[:, :d_v]`` plus ``bond_embedding``
                                  = ``W_i[:, d_v:]``, both with bias 0
``W_h``                           ``encoder.W_h``
``W_o [x_v || m_v] + b``          ``encoder.W_o [A W_i[:, :d_v] x_v || m_v] + b``, ``A`` solving
                                  ``A W_i[:, :d_v] = W_o[:, :d_v]`` (exact when ``W_i``'s atom
                                  block has full column rank, so ``d_h >= d_v``)
depth, dropout, relu / elu        ``DMPNN(depth=..., dropout=..., activation=...)``
``mean`` / ``sum`` / ``norm``     readout ``mean`` / ``sum`` / ``norm`` (sum / 100; another
                                  ``norm`` constant is read as ``sum``, with a warning)
V2 atom and default bond features ``MolGraphFeaturizer(preset="chemprop")``
================================  ============================================================

Refused, with the reason: ``bias=True``, ``undirected=True``, extra atom descriptors (``W_d``),
other activations and aggregations, other atom feature modes or extra atom/bond features
(``d_v != 72`` or ``d_e != 14``), atom message passing, and ``d_h < d_v``.

chemprop's model files keep its classes (and Lightning's ``AttributeDict``) in
``hyper_parameters``, so ``torch.load(weights_only=True)`` refuses them. :func:`load_chemprop_file`
still loads them with ``weights_only=True``: each global the file names is allowlisted as an inert
stand-in that only records its name and data; nothing is imported and no code from the file runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from molml.chem.featurizer import MolGraphFeaturizer
from molml.errors import CheckpointError
from molml.models.encoders import DMPNN, class_path
from molml.models.pretrained import PretrainedEncoder
from molml.models.readout import NORM

log = logging.getLogger(__name__)

ATTRIBUTE_DICT = "lightning.fabric.utilities.data.AttributeDict"
READOUTS = {"MeanAggregation": "mean", "SumAggregation": "sum", "NormAggregation": "norm"}
ACTIVATIONS = ("relu", "elu")  # the same functions in chemprop and molml (ELU with alpha 1)
TOLERANCE = 1e-4  # largest error of the solved W_o block, relative to W_o's largest entry
WEIGHTS = ("W_i.weight", "W_h.weight", "W_o.weight", "W_o.bias")


class _StandIn:
    """What a global named in a chemprop file becomes: its name and the data passed to it."""

    name = ""
    args: tuple[Any, ...] = ()  # objects rebuilt without a call (modules) get none

    def __init__(self, *args: Any) -> None:
        self.args = args


def load_chemprop_file(path: Path) -> Any | None:
    """The contents of a chemprop file that names chemprop classes, loaded with
    ``weights_only=True`` and inert stand-ins for those classes; None for any other file."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip-format PyTorch file
        return None
    if not any(name.startswith("chemprop.") for name in names):
        return None
    stand_ins = [(dict if name == ATTRIBUTE_DICT else _stand_in(name), name) for name in names]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: this chemprop file could not be read: {exc}") from exc


def is_chemprop_checkpoint(checkpoint: Any) -> bool:
    """Whether a loaded file holds a chemprop model or bare bond message passing."""
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint:
        return False
    state = checkpoint.get("state_dict")
    return isinstance(state, dict) and bool(
        {"message_passing.W_i.weight", "W_i.weight"} & state.keys()
    )


def read_chemprop_encoder(path: str | Path, checkpoint: dict[str, Any]) -> PretrainedEncoder:
    """The molml D-MPNN equivalent of a chemprop file's bond message passing (see the module
    docstring); raises :class:`CheckpointError` naming what cannot be carried over."""
    hparams = checkpoint["hyper_parameters"]
    state = checkpoint["state_dict"]
    if "message_passing.W_i.weight" in state:
        mp_hparams, prefix = hparams.get("message_passing") or {}, "message_passing."
        readout = _readout(path, hparams.get("agg") or {})
    else:  # bare message passing (CheMeleon): chemprop pools it with the mean
        mp_hparams, prefix, readout = hparams, "", "mean"
    weights = {k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in WEIGHTS if k not in weights]
    if missing:
        names = ", ".join(prefix + k for k in missing)
        raise CheckpointError(f"{path}: the chemprop weights {names} are missing")
    kind = _name(mp_hparams.get("cls", "BondMessagePassing"))
    if kind != "bondmessagepassing":
        raise CheckpointError(f"{path}: chemprop {kind} is not bond message passing (D-MPNN)")
    extra = sorted(k for k in weights if k.startswith("W_d.") or k in ("W_i.bias", "W_h.bias"))
    if extra or mp_hparams.get("d_vd"):
        raise CheckpointError(
            f"{path}: chemprop message passing with extra atom descriptors (W_d) or bias=True "
            f"({', '.join(extra) or 'd_vd'}) has no molml equivalent"
        )
    if mp_hparams.get("undirected"):
        raise CheckpointError(f"{path}: chemprop's undirected message passing is not supported")
    activation = _name(mp_hparams.get("activation", "relu"))
    alpha = getattr(mp_hparams.get("activation"), "alpha", 1.0)  # an nn.ELU module's
    if activation not in ACTIVATIONS or alpha != 1.0:
        raise CheckpointError(
            f"{path}: chemprop activation {activation!r} is not supported (use {ACTIVATIONS})"
        )
    if "depth" not in mp_hparams:
        raise CheckpointError(f"{path}: the chemprop hyper_parameters do not give the depth")

    featurizer = MolGraphFeaturizer(preset="chemprop")
    W_i, W_h, W_o = weights["W_i.weight"], weights["W_h.weight"], weights["W_o.weight"]
    d_h = W_h.shape[0]
    d_v, d_e = W_o.shape[1] - d_h, W_i.shape[1] - (W_o.shape[1] - d_h)
    if (d_v, d_e) != (featurizer.atom_dim, featurizer.bond_dim):
        raise CheckpointError(
            f"{path}: chemprop atom/bond features of width {d_v}/{d_e}; molml reproduces "
            f"chemprop's default V2 atom and bond features ({featurizer.atom_dim}/"
            f"{featurizer.bond_dim}) without extra atom or bond features"
        )
    if d_h < d_v:
        raise CheckpointError(
            f"{path}: chemprop hidden size {d_h} is below the atom feature width {d_v}; molml's "
            "D-MPNN reads embedded atoms and cannot reproduce this W_o"
        )
    W_o_atoms = _solve_atom_block(path, W_i[:, :d_v], W_o[:, :d_v])
    zeros = torch.zeros(d_h)
    return PretrainedEncoder(
        source=str(path),
        encoder={
            "class_path": class_path(DMPNN),
            "init_args": {
                "hidden_dim": d_h,
                "depth": int(mp_hparams["depth"]),
                "dropout": float(mp_hparams.get("dropout", 0.0)),
                "activation": activation,
            },
        },
        featurizer=featurizer.to_config(),
        readout=readout,
        state_dict={
            "atom_embedding.weight": W_i[:, :d_v].clone(),
            "atom_embedding.bias": zeros.clone(),
            "bond_embedding.weight": W_i[:, d_v:].clone(),
            "bond_embedding.bias": zeros,
            "encoder.W_h.weight": W_h.clone(),
            "encoder.W_o.weight": torch.cat([W_o_atoms, W_o[:, d_v:]], dim=1),
            "encoder.W_o.bias": weights["W_o.bias"].clone(),
        },
        from_chemprop=True,
    )


def _stand_in(name: str) -> type[_StandIn]:
    return type(name.rpartition(".")[2], (_StandIn,), {"name": name})


def _name(value: Any) -> str:
    """Lower-case name of an activation or class as a chemprop file stores it: a string, an
    enum member or module (a stand-in instance), or a class (a stand-in class)."""
    if isinstance(value, type) and issubclass(value, _StandIn):
        value = value.name
    elif isinstance(value, _StandIn):
        value = value.args[0] if value.args else type(value).__name__
    return str(value).rpartition(".")[2].lower()


def _readout(path: str | Path, agg: dict[str, Any]) -> str:
    kind = _name(agg.get("cls", "MeanAggregation"))
    readout = {k.lower(): v for k, v in READOUTS.items()}.get(kind)
    if readout is None:
        raise CheckpointError(
            f"{path}: chemprop aggregation {kind!r} is not supported (mean, sum or norm)"
        )
    if readout == "norm" and float(agg.get("norm", NORM)) != NORM:
        log.warning(
            "%s: chemprop's norm aggregation divides by %s, molml's norm readout by %s; "
            "using the sum readout",
            path,
            agg["norm"],
            NORM,
        )
        return "sum"
    return readout


def _solve_atom_block(path: str | Path, W_i_atoms: Tensor, W_o_atoms: Tensor) -> Tensor:
    """``A`` with ``A @ W_i_atoms = W_o_atoms`` (least squares), checked to be exact."""
    A = (W_o_atoms.double() @ torch.linalg.pinv(W_i_atoms.double())).float()
    error = (A.double() @ W_i_atoms.double() - W_o_atoms.double()).abs().max().item()
    scale = max(W_o_atoms.abs().max().item(), 1e-12)
    if error > TOLERANCE * scale:
        raise CheckpointError(
            f"{path}: chemprop's W_i atom block is (nearly) rank-deficient, so its W_o cannot "
            f"be carried over onto embedded atoms (error {error:.2e})"
        )
    return A
