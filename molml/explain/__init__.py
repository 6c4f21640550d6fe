"""Explain predictions atom by atom: Captum attributions for graph models, SHAP for fingerprint
baselines, the mean and spread over ensemble members; drawn with RDKit.

``molml.explain.explain(predictor, smiles, method=..., task=...)`` returns one
:class:`MoleculeExplanation` per molecule; :func:`explanations_frame` makes them one table and
:func:`write_explanations` writes the table, drawings and an HTML page (``molml explain``).
The names are imported on first use, so ``molml explain --help`` reads
:mod:`molml.explain.options` alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from molml._lazy import lazy_attributes
from molml.explain.options import METHODS

if TYPE_CHECKING:
    from molml.explain.core import MoleculeExplanation, explanations_frame
    from molml.explain.run import explain, score_units, write_explanations

_LAZY = {
    "MoleculeExplanation": "molml.explain.core",
    "explanations_frame": "molml.explain.core",
    "explain": "molml.explain.run",
    "score_units": "molml.explain.run",
    "write_explanations": "molml.explain.run",
}

__all__ = [
    "METHODS",
    "MoleculeExplanation",
    "explain",
    "explanations_frame",
    "score_units",
    "write_explanations",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
