"""Encoders, readouts, heads and the Lightning module."""

from molml.models.encoders import DMPNN, GINE, GPS, PNA, AttentiveFP, Encoder, GATv2, Graphormer
from molml.models.loading import load_model
from molml.models.module import MoleculeModel

__all__ = [
    "DMPNN",
    "GINE",
    "GPS",
    "PNA",
    "AttentiveFP",
    "Encoder",
    "GATv2",
    "Graphormer",
    "MoleculeModel",
    "load_model",
]
