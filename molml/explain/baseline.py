"""SHAP attributions of fingerprint baselines, mapped back to atoms where the fingerprint allows.

SHAP's ``TreeExplainer`` explains each task model on the raw scale: the value for regression,
the logit for XGBoost classifiers. XGBoost boosters use path-dependent TreeSHAP (the tree covers
stored in the model). A random forest is stored as node arrays without training covers, so it is
explained with interventional TreeSHAP against a background set: by default the first 100
molecules of RDKit's NCI sample (a random forest classifier is explained on its probability).

Morgan/ECFP/FCFP bits are mapped to atoms through RDKit's bit info, in one of two ways:

- ``shared`` (default): the SHAP value of each on-bit is split equally over the environments
  that set it, and each environment's share equally over its atoms (centre and the atoms within
  its radius). The atom scores of a molecule sum to the SHAP total of its on-bits.
- ``occurrence``: every environment that sets a bit carries the bit's whole value, split over
  its atoms. A fragment that occurs k times (six aromatic CH of a benzene set one bit) is not
  diluted k-fold against a fragment that occurs once, which ranks the atoms of the true
  substructures markedly better (``scripts/bench_explain.py``); the scores no longer add up to
  the SHAP total.

Off-bits and features of other fingerprints (descriptors, MACCS keys, atom pairs) cannot be
placed on atoms: their sum is the ``unmapped_score`` and their values are listed per feature
(``feature_scores``). Bonds get no score.

Every molecule also keeps its whole SHAP row for the data set's summary
(:func:`molml.explain.drawing.shap_summary`). There, a Morgan bit is named with the fragment
that set it in the first explained molecule where it is on (``ecfp4_1234: [C](=[O])[NH2]``; other
molecules may set the same bit with another fragment, a hash collision).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import shap
from rdkit import Chem, RDConfig
from tqdm.auto import tqdm

from molml.baselines.data import featurize
from molml.baselines.estimators import ForestTaskModel, XGBoostTaskModel
from molml.chem.fingerprints import ConcatFingerprint, FingerprintFeaturizer, MorganFingerprint
from molml.chem.parsing import parse_smiles
from molml.explain.core import MoleculeExplanation, shown_smiles
from molml.predict import BaselinePredictor

BACKGROUND_SIZE = 100
NCI_SAMPLE = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def explain_baseline(
    predictor: BaselinePredictor,
    smiles: list[Any],
    column: str,
    *,
    batch_size: int = 256,
    background: list[str] | None = None,
    mapping: str = "shared",
    progress: bool = True,
) -> list[MoleculeExplanation]:
    """SHAP attributions of ``column`` for each molecule (see the module docstring)."""
    model = predictor.model
    task_model = model.task_models[model.tasks.index(column)]
    explainer = _explainer(task_model, model.featurizer, background)
    explanations = []
    fragments: dict[int, str] = {}  # Morgan column -> the fragment that first set it
    bar = tqdm(total=len(smiles), desc="explaining (shap)", unit="mol", disable=not progress)
    for start in range(0, len(smiles), batch_size):
        chunk = smiles[start : start + batch_size]
        X, valid, errors = featurize(model.featurizer, chunk)
        values = np.zeros((0, X.shape[1]))
        if valid.any():
            values = np.asarray(explainer.shap_values(X[valid]), dtype=np.float64)
            predictions = task_model.predict(X[valid])
        rows = iter(range(int(valid.sum())))
        for position, smi in enumerate(chunk):
            item = MoleculeExplanation(
                smiles=shown_smiles(smi),
                status=errors.get(position, "ok"),
                task=column,
                method="shap",
            )
            if valid[position]:
                row = next(rows)
                mol = smi if isinstance(smi, Chem.Mol) else parse_smiles(smi)  # as featurized
                _fill(item, mol, model.featurizer, X[valid][row], values[row], mapping, fragments)
                item.prediction = float(predictions[row])
                item.explained_value = float(_expected(explainer) + values[row].sum())
                item.shap_values = values[row].astype(np.float32)
                item.feature_values = X[valid][row].astype(np.float32)
            explanations.append(item)
        bar.update(len(chunk))
    bar.close()
    names = list(model.featurizer.feature_names)
    for column, fragment in fragments.items():
        names[column] = f"{names[column]}: {fragment}"
    for item in explanations:
        item.feature_names = names
    return explanations


def _expected(explainer: shap.TreeExplainer) -> float:
    return float(np.ravel(explainer.expected_value)[0])


def _explainer(
    task_model: Any, featurizer: FingerprintFeaturizer, background: list[str] | None
) -> shap.TreeExplainer:
    if isinstance(task_model, XGBoostTaskModel):
        return shap.TreeExplainer(task_model.booster)
    if not isinstance(task_model, ForestTaskModel):
        raise TypeError(f"no SHAP explainer for {type(task_model).__name__}")
    if background is None:
        background = [
            line.split()[0] for line in NCI_SAMPLE.read_text().splitlines()[:BACKGROUND_SIZE]
        ]
    X, valid = featurizer.transform(background)
    return shap.TreeExplainer(
        _forest_trees(task_model), data=X[valid], feature_perturbation="interventional"
    )


def _forest_trees(forest: ForestTaskModel) -> dict[str, Any]:
    """A :class:`ForestTaskModel` in SHAP's dictionary tree format (each tree's leaves scaled
    by 1/trees, so the ensemble output is the forest's mean)."""
    n_trees = len(forest.roots)
    ends = [*forest.roots[1:], len(forest.feature)]
    trees = []
    for root, end in zip(forest.roots, ends, strict=True):
        nodes = np.arange(root, end)
        leaf = (forest.left[nodes] == nodes) & (forest.right[nodes] == nodes)
        left = np.where(leaf, -1, forest.left[nodes] - root)
        right = np.where(leaf, -1, forest.right[nodes] - root)
        trees.append(
            {
                "children_left": left,
                "children_right": right,
                "children_default": np.where(forest.missing_left[nodes], left, right),
                "features": np.where(leaf, -2, forest.feature[nodes]),
                "thresholds": np.where(leaf, 0.0, _float32_below(forest.threshold[nodes])),
                "values": (forest.value[nodes] / n_trees)[:, None],
                "node_sample_weight": np.ones(len(nodes)),
            }
        )
    return {"trees": trees}


def _float32_below(thresholds: np.ndarray) -> np.ndarray:
    """Each threshold as the largest float32 not above it. SHAP's tree code keeps thresholds
    as float32; the forest compares float32 features with float64 thresholds, so a feature
    equal to a threshold rounded up (a descriptor within float32 rounding of a split) went the
    other way in SHAP and failed its additivity check. For float32 ``x``, ``x <= t`` and
    ``x <= float32_below(t)`` agree."""
    rounded = thresholds.astype(np.float32)
    return np.where(rounded > thresholds, np.nextafter(rounded, np.float32(-np.inf)), rounded)


def _fill(
    item: MoleculeExplanation,
    mol: Chem.Mol,
    featurizer: FingerprintFeaturizer,
    x: np.ndarray,
    values: np.ndarray,
    mapping: str,
    fragments: dict[int, str],
) -> None:
    """Atom scores, unmapped score and feature scores of one molecule from its SHAP values;
    adds the fragment of each Morgan column seen on for the first time to ``fragments``."""
    item.mol = mol
    atoms = np.zeros(mol.GetNumAtoms())
    mapped = np.zeros(len(values), dtype=bool)
    offset = 0
    for part in featurizer.parts if isinstance(featurizer, ConcatFingerprint) else [featurizer]:
        if isinstance(part, MorganFingerprint):
            for bit, environments in part.bit_environments(mol).items():
                if x[offset + bit] == 0:
                    continue
                share = values[offset + bit]
                if mapping == "shared":
                    share /= len(environments)
                for centre, radius in environments:
                    members = environment_atoms(mol, centre, radius)
                    atoms[members] += share / len(members)
                if offset + bit not in fragments:
                    fragments[offset + bit] = environment_smiles(mol, *environments[0])
                mapped[offset + bit] = True
        offset += part.dim
    item.atom_scores = atoms
    item.bond_scores = np.full(mol.GetNumBonds(), math.nan)
    item.unmapped_score = float(values[~mapped].sum())
    names = np.asarray(featurizer.feature_names)
    unmappable = np.flatnonzero(~mapped & ~_is_morgan_column(featurizer))
    top = unmappable[np.argsort(-np.abs(values[unmappable]))]
    item.feature_scores = {str(names[i]): float(values[i]) for i in top if values[i] != 0}


def _is_morgan_column(featurizer: FingerprintFeaturizer) -> np.ndarray:
    parts = featurizer.parts if isinstance(featurizer, ConcatFingerprint) else [featurizer]
    return np.concatenate([np.full(p.dim, isinstance(p, MorganFingerprint)) for p in parts])


def environment_atoms(mol: Chem.Mol, centre: int, radius: int) -> list[int]:
    """Atoms of the Morgan environment of ``radius`` around ``centre``."""
    if radius == 0:
        return [centre]
    atoms = {centre}
    for bond in Chem.FindAtomEnvironmentOfRadiusN(mol, radius, centre):
        b = mol.GetBondWithIdx(bond)
        atoms.update((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
    return sorted(atoms)


def environment_smiles(mol: Chem.Mol, centre: int, radius: int) -> str:
    """The Morgan environment of ``radius`` around ``centre`` as a SMILES fragment written
    from the centre atom, hydrogen counts explicit (``[cH]`` and ``[c]`` are different bits)."""
    if radius == 0:
        return Chem.MolFragmentToSmiles(
            mol, atomsToUse=[centre], canonical=False, allHsExplicit=True
        )
    return Chem.MolFragmentToSmiles(
        mol,
        atomsToUse=environment_atoms(mol, centre, radius),
        bondsToUse=list(Chem.FindAtomEnvironmentOfRadiusN(mol, radius, centre)),
        rootedAtAtom=centre,
        canonical=False,
        allHsExplicit=True,
    )
