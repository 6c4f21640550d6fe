"""molml: graph and molecular deep learning on PyTorch."""

from molml._version import __version__
from molml.models.encoders import register_encoder
from molml.models.pretrained import pretrained_names
from molml.predict import Predictor, load_model, load_pretrained

__all__ = [
    "Predictor",
    "__version__",
    "load_model",
    "load_pretrained",
    "pretrained_names",
    "register_encoder",
]
