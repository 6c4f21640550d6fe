"""Typed errors raised by molml. Each names the file, row or column it is about."""

from __future__ import annotations


class MolmlError(Exception):
    """Base class of all molml errors."""


class InvalidMoleculeError(MolmlError, ValueError):
    """A molecule could not be parsed, standardized or featurized."""


class DataError(MolmlError, ValueError):
    """Input data is missing, malformed or inconsistent (names the file/row/column)."""


class CheckpointError(MolmlError, ValueError):
    """A file is not a loadable molml checkpoint."""


class TrainingError(MolmlError, RuntimeError):
    """Training cannot go on (for example, the loss became NaN or infinite)."""


class PredictorError(MolmlError, ValueError):
    """A trained model was asked for something it cannot do (e.g. an embedding of a baseline
    ensemble)."""
