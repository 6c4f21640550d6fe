"""Reading molml checkpoint files: local paths only, tensors and plain data only."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from molml._version import __version__
from molml.errors import CheckpointError

CHECKPOINT_FORMAT = 1
WEIGHTS_DIGEST = "weights_sha256"  # key of the molml spec that records the weights' digest


def weights_digest(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict: each entry's name, dtype, shape and bytes, in name order. A
    checkpoint records it when saved (:data:`WEIGHTS_DIGEST`) and is checked against it when
    read, so changed or damaged weights are refused instead of predicting silently."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}|{value!r}|".encode())
            continue
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def refuse_url(path: str | Path) -> None:
    """Model files are read from local paths only: a URL is refused, never fetched."""
    if "://" in str(path):
        raise CheckpointError(f"{path}: only local model files are read, not URLs")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary of a molml checkpoint file (tensors and plain data only, on
    the CPU)."""
    refuse_url(path)
    path = Path(path)
    if path.is_dir() and (path / "baseline.json").is_file():  # baselines.model.SPEC_FILE
        raise CheckpointError(
            f"{path} is a fingerprint baseline, not a graph checkpoint: run it with 'molml "
            "baseline test|predict --model', 'molml screen --model' or molml.load_model"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises assorted errors on non-checkpoints (IndexError...)
        raise CheckpointError(
            f"{path} is not a molml checkpoint (it could not be read as a PyTorch checkpoint "
            f"with weights_only=True: {load_failure(exc)})"
        ) from exc
    return check_checkpoint(path, checkpoint)


def load_failure(exc: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one line (without torch's advice
    to unpickle the file, which molml never does)."""
    text = str(exc)
    if "Unsupported global" in text:  # a pickled Python object, which is never unpickled
        return "it holds Python objects besides tensors and plain data"
    first = (text.strip().splitlines() or [type(exc).__name__])[0]  # EOFError: ""
    if "Weights only load failed" in first:  # the rest is torch's advice to unpickle
        return "it is not a PyTorch file, or a damaged one"
    return f"it is not a PyTorch file, or a damaged one ({first})"


def check_checkpoint(path: str | Path, checkpoint: Any) -> dict[str, Any]:
    """``checkpoint``, as read from ``path``, if it is a molml checkpoint of this format."""
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
    recorded = spec.get(WEIGHTS_DIGEST)  # checkpoints written before molml recorded it have none
    if recorded is not None and recorded != weights_digest(checkpoint["state_dict"]):
        raise CheckpointError(
            f"{path}: its weights are not the ones it recorded when it was saved (the file was "
            "changed or damaged since); use an intact copy"
        )
    return checkpoint
