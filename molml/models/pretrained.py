"""Pretrained encoders: the weights shipped with molml, molml checkpoints and chemprop-format
checkpoints, as a starting point for fine-tuning (``MoleculeModel(pretrained=...)``).

A pretrained source gives the encoder's class and arguments, the featurizer it was trained
with, the readout, and the weights of the parts a fine-tuned model takes over: the atom and bond
embeddings, the encoder and the readout. The task head is always trained anew.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from molml.errors import CheckpointError
from molml.models.encoders import class_path
from molml.models.files import check_checkpoint, load_failure, refuse_url

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED: dict[str, str] = {
    # name -> file in WEIGHTS_DIR; how each was made is in its checkpoint's training_data
    "zinc-dmpnn": "zinc_dmpnn.ckpt",
    "zinc-dmpnn-chemprop": "zinc_dmpnn_chemprop.ckpt",
    "zinc-dmpnn-chemprop-600": "zinc_dmpnn_chemprop_600.ckpt",
}
POOLING_READOUTS = frozenset({"sum", "mean", "max", "norm"})  # readouts without weights
TRANSFERRED = ("atom_embedding.", "bond_embedding.", "encoder.", "readout.")
# encoder arguments that may differ between pretraining and fine-tuning
FREE_ENCODER_ARGS = frozenset({"dropout"})


@dataclass
class PretrainedEncoder:
    """What a fine-tuned model takes over from a pretrained one."""

    source: str  # the name or path it came from
    encoder: dict[str, Any]  # {"class_path": ..., "init_args": {...}}
    featurizer: dict[str, Any]
    readout: str
    state_dict: dict[str, Tensor]  # keys start with one of TRANSFERRED
    from_chemprop: bool = False  # a chemprop 2 model file (encodes as chemprop does)


def pretrained_names() -> list[str]:
    """Names of the pretrained encoders shipped with molml."""
    return sorted(SHIPPED)


def pretrained_path(source: str) -> Path:
    """The file behind a shipped name, or ``source`` itself as a path."""
    refuse_url(source)
    if source in SHIPPED:
        path = WEIGHTS_DIR / SHIPPED[source]
        if not path.is_file():
            raise CheckpointError(f"the weights of pretrained {source!r} are missing ({path})")
        return path
    path = Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"pretrained {source!r} is neither a shipped pretrained encoder "
            f"(available: {', '.join(pretrained_names())}) nor an existing checkpoint file"
        )
    return path


def read_pretrained(source: str) -> PretrainedEncoder:
    """The encoder behind a shipped name or a molml / chemprop-format checkpoint file."""
    # chemprop_format builds on this module's PretrainedEncoder
    from molml.models.chemprop_format import (
        is_chemprop_checkpoint,
        load_chemprop_file,
        read_chemprop_encoder,
    )

    path = pretrained_path(source)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a chemprop model file, or not a PyTorch file at all
        raw = load_chemprop_file(path)
        if raw is None:
            hint = (
                "; an ensemble or calibration file holds several models: pass one member's "
                "checkpoint"
                if path.suffix == ".json"
                else ""
            )
            raise CheckpointError(
                f"pretrained {source!r}: {path} is neither a molml nor a chemprop checkpoint "
                f"({load_failure(exc)}){hint}"
            ) from exc
    if isinstance(raw, dict) and "molml" in raw:
        checkpoint = check_checkpoint(path, raw)
        spec = checkpoint["molml"]
        return PretrainedEncoder(
            source=source,
            encoder=spec["encoder"],
            featurizer=spec["featurizer"],
            readout=spec["hparams"].get("readout", "mean"),
            state_dict={
                k: v for k, v in checkpoint["state_dict"].items() if k.startswith(TRANSFERRED)
            },
        )
    if is_chemprop_checkpoint(raw):
        try:
            return read_chemprop_encoder(source, raw)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a file shaped like one, with other contents
            raise CheckpointError(
                f"{path} looks like a chemprop checkpoint but cannot be read as one "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    raise CheckpointError(f"{path} is neither a molml checkpoint nor a chemprop checkpoint")


def apply_pretrained(model: nn.Module, pretrained: PretrainedEncoder) -> None:
    """Copy the pretrained embeddings, encoder and readout into ``model`` (a
    :class:`~molml.models.module.MoleculeModel`), after checking that they fit: the same
    featurizer, encoder class and arguments (dropout aside) and readout, each difference named."""
    source = pretrained.source
    theirs, ours = pretrained.featurizer, model.featurizer.to_config()
    their_preset, our_preset = theirs.get("preset", "molml"), ours.get("preset", "molml")
    if their_preset != our_preset:  # the elements and feature widths follow from the preset
        raise CheckpointError(
            f"pretrained {source!r} reads the {their_preset!r} featurizer preset, this model's "
            f"data the {our_preset!r} preset; set --data.featurizer.init_args.preset "
            f"{their_preset} (or use a config that does)"
        )
    differences = _config_differences(theirs, ours)
    if differences:
        raise CheckpointError(
            f"pretrained {source!r} was trained with another featurizer than this model's data "
            f"({'; '.join(differences)}); set the data's featurizer to match (data.featurizer)"
        )
    mine = {"class_path": class_path(type(model.encoder)), "init_args": dict(model.encoder.config)}
    if pretrained.encoder.get("class_path") != mine["class_path"]:
        raise CheckpointError(
            f"pretrained {source!r} has a {pretrained.encoder.get('class_path')} encoder, this "
            f"model a {mine['class_path']}; set model.encoder.class_path to match"
        )
    theirs = {
        k: v for k, v in pretrained.encoder["init_args"].items() if k not in FREE_ENCODER_ARGS
    }
    ours = {k: v for k, v in mine["init_args"].items() if k not in FREE_ENCODER_ARGS}
    differences = _config_differences(theirs, ours)
    if differences:
        raise CheckpointError(
            f"pretrained {source!r} has other encoder arguments than this model "
            f"({'; '.join(differences)}); set model.encoder.init_args to match"
        )
    readout = model.hparams.readout
    if pretrained.readout != readout and not {pretrained.readout, readout} <= POOLING_READOUTS:
        raise CheckpointError(
            f"pretrained {source!r} uses readout {pretrained.readout!r}, this model {readout!r}; "
            f"set model.readout: {pretrained.readout}"
        )
    if pretrained.readout != readout:  # no weights involved: allowed
        # a chemprop file is meant to encode molecules as chemprop did: say so loudly
        (log.warning if pretrained.from_chemprop else log.info)(
            "pretrained %r was trained with readout %r; this model pools with %r "
            "(model.readout: %s pools as it did)",
            source,
            pretrained.readout,
            readout,
            pretrained.readout,
        )
    own = {k: v for k, v in model.state_dict().items() if k.startswith(TRANSFERRED)}
    shapes = {k: tuple(v.shape) for k, v in pretrained.state_dict.items()}
    if shapes != {k: tuple(v.shape) for k, v in own.items()}:
        raise CheckpointError(f"pretrained {source!r}: its weights do not fit this model's encoder")
    model.load_state_dict(pretrained.state_dict, strict=False)


def _config_differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    theirs, ours = json.loads(json.dumps(theirs)), json.loads(json.dumps(ours))  # tuples, lists
    return [
        f"{key}: pretrained {theirs.get(key)!r}, here {ours.get(key)!r}"
        for key in sorted(theirs.keys() | ours.keys())
        if theirs.get(key) != ours.get(key)
    ]
