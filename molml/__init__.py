"""molml: graph and molecular deep learning on PyTorch.

The names below are imported on first use, so ``import molml`` (and the ``molml`` command's
help) does not pay for torch, PyTorch Geometric and Lightning until they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from molml._lazy import lazy_attributes
from molml._version import __version__
from molml.errors import CheckpointError, DataError, MolmlError, PredictorError

if TYPE_CHECKING:
    from molml.models.encoders import register_encoder
    from molml.models.pretrained import pretrained_names
    from molml.predict import Predictor, load_model, load_pretrained

_LAZY = {
    "Predictor": "molml.predict",
    "load_model": "molml.predict",
    "load_pretrained": "molml.predict",
    "pretrained_names": "molml.models.pretrained",
    "register_encoder": "molml.models.encoders",
}

__all__ = [
    "CheckpointError",
    "DataError",
    "MolmlError",
    "Predictor",
    "PredictorError",
    "__version__",
    "load_model",
    "load_pretrained",
    "pretrained_names",
    "register_encoder",
]


__getattr__ = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
