"""molml: graph and molecular deep learning on PyTorch."""

from molml._version import __version__
from molml.models.encoders import register_encoder
from molml.predict import Predictor, load_model

__all__ = ["Predictor", "__version__", "load_model", "register_encoder"]
