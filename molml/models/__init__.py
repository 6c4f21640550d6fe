"""Encoders, readouts, heads and the Lightning module."""

from molml.models.encoders import DMPNN, GINE, Encoder
from molml.models.loading import load_model
from molml.models.module import MoleculeModel

__all__ = ["DMPNN", "GINE", "Encoder", "MoleculeModel", "load_model"]
