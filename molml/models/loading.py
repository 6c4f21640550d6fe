"""Load a molml checkpoint in code: ``molml.load_model(path)``.

The checkpoint is read with ``torch.load(weights_only=True)``: only tensors and plain data are
unpickled, never code. The model is rebuilt from the plain-data spec that
:meth:`MoleculeModel.spec` writes into every checkpoint, and only encoder classes that subclass
:class:`molml.models.encoders.Encoder` are accepted.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from molml import __version__
from molml.errors import CheckpointError
from molml.models.encoders import Encoder
from molml.models.module import CHECKPOINT_FORMAT, MoleculeModel

if TYPE_CHECKING:
    from molml.baselines import BaselineModel


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> MoleculeModel | BaselineModel:
    """Load a trained molml model from a checkpoint file, ready for ``predict`` / ``embed``.

    A fingerprint baseline (its saved directory or ``baseline.json``) loads as a
    :class:`~molml.baselines.BaselineModel`, which offers the same ``predict``.
    """
    path = Path(path)
    if path.is_dir() or path.suffix == ".json":
        from molml.baselines import load_baseline

        return load_baseline(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises assorted errors on non-checkpoints (IndexError...)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # EOFError: ""
        raise CheckpointError(
            f"{path} is not a molml checkpoint (it could not be read as a PyTorch checkpoint "
            f"with weights_only=True: {reason})"
        ) from exc
    if not isinstance(checkpoint, dict) or "molml" not in checkpoint:
        raise CheckpointError(f"{path} is a PyTorch file but not a molml checkpoint")
    spec = checkpoint["molml"]
    if not isinstance(spec, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: malformed 'molml' or 'state_dict' entry in the checkpoint")
    if spec.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by molml {spec.get('molml_version', '?')} in checkpoint format "
            f"{spec.get('format')}; this molml {__version__} reads format {CHECKPOINT_FORMAT}"
        )
    try:
        model = MoleculeModel(
            encoder=_build_encoder(spec["encoder"], path),
            tasks=spec["tasks"],
            featurizer=spec["featurizer"],
            **spec["hparams"],
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the stored model spec is incomplete: {exc!r}") from exc
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored model spec: {exc}") from exc
    return model.eval()


def _build_encoder(config: dict, path: Path) -> Encoder:
    module_name, _, class_name = config["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{path}: encoder class {config['class_path']} not found") from exc
    if not (isinstance(cls, type) and issubclass(cls, Encoder)):
        raise CheckpointError(f"{path}: {config['class_path']} is not a molml encoder")
    return cls(**config["init_args"])
