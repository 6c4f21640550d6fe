"""Export trained graph models to ONNX (with molml metadata, run by onnxruntime through
``molml.load_model``) or to a ``torch.export`` program, parity-checked against PyTorch. The
names are imported on first use, so ``molml export --help`` reads :mod:`molml.export.options`
alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from molml._lazy import lazy_attributes
from molml.export.options import FORMATS

if TYPE_CHECKING:
    from molml.export.exporter import ExportResult, PredictionGraph, export_model

__all__ = ["FORMATS", "ExportResult", "PredictionGraph", "export_model"]


_EXPORTER_NAMES = ("ExportResult", "PredictionGraph", "export_model")
__getattr__ = lazy_attributes(__name__, dict.fromkeys(_EXPORTER_NAMES, "molml.export.exporter"))
