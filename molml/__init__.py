"""molml: graph and molecular deep learning on PyTorch."""

__version__ = "0.1.0"

from molml.models import load_model  # noqa: E402

__all__ = ["__version__", "load_model"]
