"""Encoders, readouts, heads and the Lightning module."""

from molml.models.encoders import (
    DMPNN,
    GINE,
    GPS,
    PNA,
    AttentiveFP,
    Encoder,
    GATv2,
    Graphormer,
    register_encoder,
)
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
    "register_encoder",
]
