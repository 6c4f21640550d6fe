"""Rebuild a trained :class:`MoleculeModel` from a checkpoint file, without running its code.

The checkpoint is read with ``torch.load(weights_only=True)``: only tensors and plain data are
unpickled. The model is rebuilt from the plain-data spec that :meth:`MoleculeModel.spec` writes
into every checkpoint. The encoder named there is looked up among registered encoder classes
(:func:`molml.models.encoders.register_encoder`); no module named by a file is ever imported.
The model is first built on PyTorch's ``meta`` device and compared with the stored weights, so
a spec asking for absurd sizes is refused before any memory is allocated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from molml.errors import CheckpointError
from molml.models.encoders import Encoder, registered_encoder, registered_encoders
from molml.models.files import read_checkpoint, refuse_url
from molml.models.module import MoleculeModel

__all__ = ["MAX_DEPTH", "load_checkpoint", "read_checkpoint", "refuse_url"]

MAX_DEPTH = 100  # message-passing or Transformer layers a checkpoint may ask for


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[MoleculeModel, dict[str, Any]]:
    """The model stored in a molml checkpoint, in eval mode on the device ``map_location``,
    and the checkpoint's spec.

    Raises :class:`CheckpointError` for anything that is not a loadable molml checkpoint.
    """
    checkpoint = read_checkpoint(path)  # on the CPU: the model is built there, then moved
    spec, state_dict = checkpoint["molml"], checkpoint["state_dict"]
    with torch.device("meta"):  # shapes only: nothing is allocated
        skeleton = _build_model(spec, path)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if expected != stored:
        differing = sorted(
            k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k)
        )
        raise CheckpointError(
            f"{path}: the stored weights do not fit the stored model spec "
            f"({len(differing)} tensors differ, e.g. {differing[:3]})"
        )
    model = _build_model(spec, path)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored model spec: {exc}") from exc
    return model.to(torch.device(map_location)).eval(), spec


def _build_model(spec: dict[str, Any], path: str | Path) -> MoleculeModel:
    try:
        return MoleculeModel(
            encoder=_build_encoder(spec["encoder"], path),
            tasks=spec["tasks"],
            featurizer=spec["featurizer"],
            **spec["hparams"],
        )
    except CheckpointError:
        raise
    except Exception as exc:  # any failure to rebuild from a (possibly crafted) spec
        raise CheckpointError(
            f"{path}: the stored model spec is incomplete or invalid: {exc!r}"
        ) from exc


def _build_encoder(config: Any, path: str | Path) -> Encoder:
    if not isinstance(config, dict) or not isinstance(config.get("class_path"), str):
        raise CheckpointError(f"{path}: the checkpoint names no encoder class")
    cls = registered_encoder(config["class_path"])
    if cls is None:
        raise CheckpointError(
            f"{path}: encoder {config['class_path']!r} is not a registered molml encoder "
            f"(registered: {', '.join(registered_encoders())}); register your own encoder "
            "class with molml.register_encoder(cls) before loading its checkpoints"
        )
    init_args = config.get("init_args", {})
    if not isinstance(init_args, dict):
        raise CheckpointError(f"{path}: malformed encoder arguments {init_args!r}")
    depth = init_args.get("depth", 1)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        # weight-shared layers (D-MPNN) would not show an absurd depth in the weights' shapes
        raise CheckpointError(f"{path}: encoder depth {depth!r} is outside 1..{MAX_DEPTH}")
    return cls(**init_args)
