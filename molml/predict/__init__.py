"""Every kind of trained model behind one interface: ``load_model(path) -> Predictor``.

A :class:`Predictor` turns SMILES into a DataFrame of predictions (one row per input, in input
order, with a ``status`` column), whether it wraps a graph checkpoint, its ONNX export, a
fingerprint baseline, an ensemble of several or a calibrated model. Screening, and everything
built on trained models, takes one.
"""

from molml.predict.base import Predictor
from molml.predict.baseline import BaselinePredictor
from molml.predict.calibrated import CalibratedPredictor
from molml.predict.ensemble import EnsemblePredictor
from molml.predict.graph import GraphPredictor
from molml.predict.loading import load_model, load_pretrained
from molml.predict.onnx import OnnxPredictor

__all__ = [
    "BaselinePredictor",
    "CalibratedPredictor",
    "EnsemblePredictor",
    "GraphPredictor",
    "OnnxPredictor",
    "Predictor",
    "load_model",
    "load_pretrained",
]
