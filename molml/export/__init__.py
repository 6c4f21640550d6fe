"""Export trained graph models to ONNX (with molml metadata, run by onnxruntime through
``molml.load_model``) or to a ``torch.export`` program, parity-checked against PyTorch."""

from molml.export.exporter import FORMATS, ExportResult, PredictionGraph, export_model

__all__ = ["FORMATS", "ExportResult", "PredictionGraph", "export_model"]
