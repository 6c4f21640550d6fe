"""Explain predictions atom by atom: Captum attributions for graph models, SHAP for fingerprint
baselines, the mean and spread over ensemble members; drawn with RDKit.

``molml.explain.explain(predictor, smiles, method=..., task=...)`` returns one
:class:`MoleculeExplanation` per molecule; :func:`explanations_frame` makes them one table and
:func:`write_explanations` writes the table, drawings and an HTML page (``molml explain``).
"""

from molml.explain.core import METHODS, MoleculeExplanation, explanations_frame
from molml.explain.run import explain, score_units, write_explanations

__all__ = [
    "METHODS",
    "MoleculeExplanation",
    "explain",
    "explanations_frame",
    "score_units",
    "write_explanations",
]
