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
