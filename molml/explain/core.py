"""What an explanation of one molecule is, and the table all explanations make together."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from rdkit import Chem

from molml.errors import DataError, PredictorError
from molml.explain.options import BASELINE_METHODS, GRAPH_METHODS, METHODS
from molml.predict import Predictor

TOP_FEATURES = 20  # features without atoms listed per molecule in the table and bar plot
TABLE_COLUMNS = [
    "molecule",
    "smiles",
    "mapped_smiles",
    "status",
    "task",
    "method",
    "prediction",
    "explained_value",
    "baseline",
    "baseline_value",
    "completeness_gap",
    "unmapped_score",
    "kind",
    "index",
    "label",
    "score",
    "score_with_bonds",
    "score_std",
]


def shown_smiles(item: Any) -> str:
    """How an input molecule is shown: a SMILES as given, an RDKit molecule's SMILES in its own
    atom order (as its scores are), ``""`` for an item that is no molecule (an empty cell is
    no 'nan' or 'None' SMILES)."""
    if isinstance(item, str):
        return item
    if isinstance(item, Chem.Mol):
        try:
            return Chem.MolToSmiles(item, canonical=False)
        except Exception:  # an unsanitizable molecule: its row says why, it has no SMILES
            return ""
    return ""


@dataclass
class MoleculeExplanation:
    """Attributions of one molecule's prediction for one task.

    ``atom_scores`` ``[n_atoms]`` and ``bond_scores`` ``[n_bonds]`` follow RDKit's atom and bond
    order of ``mol`` (bond scores are NaN where a method scores atoms only). ``prediction`` is in
    the model's units (target units, or a probability); ``explained_value`` is the quantity the
    scores explain (target units for regression, the logit for classification). For an ensemble
    the scores are the members' mean and ``atom_std`` / ``bond_std`` their spread.
    ``baseline`` and ``baseline_value`` (Integrated Gradients): where its path starts
    (``carbon`` or ``zeros``) and the explained quantity there, ``f(baseline)``: the scores add
    up to ``explained_value - baseline_value``. ``completeness_gap``: sum of all attributions
    minus ``f(x) - f(baseline)``. ``unmapped_score`` (SHAP): the part of the SHAP total carried by
    features that map to no atom. ``feature_scores``: per-feature SHAP values of features that
    cannot be mapped to atoms (descriptors, MACCS keys), every non-zero one, largest first (the
    table and the bar plot show the :data:`TOP_FEATURES` largest). A baseline's explanation
    (an ensemble's when its members share one featurizer) also keeps every feature's SHAP
    value and input value (``shap_values``, ``feature_values``) and the feature names
    (``feature_names``, one list shared by all the molecules of a run), for the data set's
    SHAP summary. :attr:`atom_totals` gives each atom
    its own score plus half of each of its bonds' scores; :attr:`mapped_smiles` names the
    scored molecule's atoms by index.
    """

    smiles: str
    status: str
    task: str
    method: str
    mol: Chem.Mol | None = None
    prediction: float = math.nan
    explained_value: float = math.nan
    atom_scores: np.ndarray | None = None
    bond_scores: np.ndarray | None = None
    atom_std: np.ndarray | None = None
    bond_std: np.ndarray | None = None
    baseline: str | None = None
    baseline_value: float = math.nan
    completeness_gap: float = math.nan
    unmapped_score: float = math.nan
    feature_scores: dict[str, float] = field(default_factory=dict)
    shap_values: np.ndarray | None = None
    feature_values: np.ndarray | None = None
    feature_names: list[str] | None = None

    @property
    def ok(self) -> bool:
        """Whether the molecule was explained."""
        return self.status == "ok"

    @property
    def mapped_smiles(self) -> str | None:
        """The scored molecule (after the model's standardization or added hydrogens) as
        SMILES whose atom map numbers are the atom indices plus one: the key to ``index``."""
        if self.mol is None:
            return None
        mapped = Chem.Mol(self.mol)
        for atom in mapped.GetAtoms():
            atom.SetAtomMapNum(atom.GetIdx() + 1)
        return Chem.MolToSmiles(mapped)

    @property
    def atom_totals(self) -> np.ndarray | None:
        """Each atom's score plus half the score of each of its bonds (all credit on atoms:
        they add up to the atom and bond scores together); the atom ranking to read when bonds
        carry much of the credit, as with Integrated Gradients' carbon baseline."""
        if self.atom_scores is None or self.mol is None:
            return None
        totals = np.asarray(self.atom_scores, dtype=np.float64).copy()
        if self.bond_scores is None:
            return totals
        for bond, value in zip(self.mol.GetBonds(), self.bond_scores, strict=True):
            if np.isfinite(value):
                totals[bond.GetBeginAtomIdx()] += value / 2
                totals[bond.GetEndAtomIdx()] += value / 2
        return totals


def target_column(predictor: Predictor, task: str | None) -> str:
    """The prediction column to explain: ``task`` (a task or, for multiclass, a
    ``<task>_class<k>`` column) or the first column; unknown names list the choices."""
    columns = predictor.point_columns()
    if task is None:
        return columns[0]
    if task not in columns:
        if task in predictor.tasks:  # a multiclass task: one column per class
            raise DataError(
                f"task {task!r} is explained one class at a time: give one of "
                f"{[c for c in columns if c.startswith(f'{task}_class')]}"
            )
        raise DataError(f"unknown task {task!r}; this model predicts {columns}")
    for member in predictor.members:  # a multiclass task with fewer classes than the model's
        model = getattr(member, "model", None)
        classes = getattr(getattr(model, "hparams", None), "task_classes", None)
        for name, count in zip(predictor.tasks, classes or [], strict=False):
            if task in {f"{name}_class{k}" for k in range(count, model.num_classes)}:
                raise DataError(
                    f"{task!r} is a class that task {name!r} does not have (its probability is "
                    f"always 0): give one of {[f'{name}_class{k}' for k in range(count)]}"
                )
    return task


def check_method(predictor: Predictor, method: str) -> None:
    """Raise :class:`PredictorError` unless every member of ``predictor`` supports ``method``."""
    if method not in METHODS:
        raise DataError(f"unknown method {method!r}; choose from {list(METHODS)}")
    for member in predictor.members:  # a model no method applies to is named first
        if not supported_methods(member):
            raise PredictorError(
                f"{member.kind} models cannot be explained (no attribution method applies to "
                "an exported file); explain the checkpoint or baseline it was exported from"
            )
    kinds = sorted({member.kind for member in predictor.members})
    if len(kinds) > 1:
        raise PredictorError(
            f"this ensemble mixes {' and '.join(kinds)} models, which share no attribution "
            "method; explain each kind on its own"
        )
    for member in predictor.members:
        supported = supported_methods(member)
        if method not in supported:
            raise PredictorError(
                f"method {method!r} does not apply to {member.kind} models; they support "
                f"{list(supported)}"
            )


def default_method(predictor: Predictor) -> str:
    """``shap`` when every member is a baseline, else ``integrated_gradients``."""
    baselines = all(member.kind == "baseline" for member in predictor.members)
    return "shap" if baselines else "integrated_gradients"


def supported_methods(predictor: Predictor) -> tuple[str, ...]:
    """The attribution methods for one (non-ensemble) model."""
    if predictor.kind == "graph":
        return GRAPH_METHODS
    if predictor.kind == "baseline":
        return BASELINE_METHODS
    return ()


def explanations_frame(explanations: list[MoleculeExplanation]) -> pd.DataFrame:
    """One table of all explanations: a row per atom (``kind`` = ``atom``) and per bond
    (``bond``) with its ``score`` (and ``score_std`` for ensembles; for atoms also
    ``score_with_bonds``, see :attr:`MoleculeExplanation.atom_totals`), a row per unmappable
    feature (``feature``), and one row without scores for a molecule that failed."""
    rows = []
    for number, item in enumerate(explanations):
        head = {
            "molecule": number,
            "smiles": item.smiles,
            "mapped_smiles": item.mapped_smiles if item.ok else None,
            "status": item.status,
            "task": item.task,
            "method": item.method,
            "prediction": item.prediction,
            "explained_value": item.explained_value,
            "baseline": item.baseline,
            "baseline_value": item.baseline_value,
            "completeness_gap": item.completeness_gap,
            "unmapped_score": item.unmapped_score,
        }
        if not item.ok or item.mol is None or item.atom_scores is None:
            rows.append({**head, "kind": None, "index": -1, "label": None})
            continue
        totals = item.atom_totals
        for atom in item.mol.GetAtoms():
            i = atom.GetIdx()
            rows.append(
                {
                    **head,
                    "kind": "atom",
                    "index": i,
                    "label": f"{atom.GetSymbol()}{i}",
                    "score": item.atom_scores[i],
                    "score_with_bonds": totals[i],
                    "score_std": _at(item.atom_std, i),
                }
            )
        for bond in item.mol.GetBonds():
            k = bond.GetIdx()
            a, b = bond.GetBeginAtom(), bond.GetEndAtom()
            rows.append(
                {
                    **head,
                    "kind": "bond",
                    "index": k,
                    "label": f"{a.GetSymbol()}{a.GetIdx()}-{b.GetSymbol()}{b.GetIdx()}",
                    "score": _at(item.bond_scores, k),
                    "score_std": _at(item.bond_std, k),
                }
            )
        for position, (name, value) in enumerate(top_features(item)):
            rows.append(
                {**head, "kind": "feature", "index": position, "label": name, "score": value}
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def top_features(item: MoleculeExplanation) -> list[tuple[str, float]]:
    """The :data:`TOP_FEATURES` features without atoms with the largest absolute scores
    (``feature_scores`` is kept largest first)."""
    return list(item.feature_scores.items())[:TOP_FEATURES]


def _at(values: np.ndarray | None, i: int) -> float:
    return math.nan if values is None else float(values[i])
