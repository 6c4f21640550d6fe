"""SMILES parsing and optional standardization with RDKit."""

from __future__ import annotations

from functools import lru_cache

from rdkit import Chem, RDLogger
from rdkit.Chem.MolStandardize import rdMolStandardize

from molml.errors import InvalidMoleculeError

RDLogger.DisableLog("rdApp.*")


@lru_cache(maxsize=1)
def _standardizers() -> tuple:
    return (
        rdMolStandardize.LargestFragmentChooser(preferOrganic=True),
        rdMolStandardize.Uncharger(),
        rdMolStandardize.Normalizer(),
    )


def standardize(mol: Chem.Mol) -> Chem.Mol:
    """Keep the largest (organic) fragment, neutralize charges where possible, normalize groups."""
    largest, uncharger, normalizer = _standardizers()
    try:
        mol = largest.choose(mol)
        mol = normalizer.normalize(mol)
        return uncharger.uncharge(mol)
    except Exception as exc:  # RDKit raises assorted C++ exceptions
        raise InvalidMoleculeError(f"standardization failed: {exc}") from exc


def parse_smiles(smiles: object, *, standardize_mol: bool = False) -> Chem.Mol:
    """Parse one SMILES into a sanitized RDKit molecule.

    Raises :class:`InvalidMoleculeError` with a short reason for empty, non-string or
    unparsable input (RDKit's own diagnostics are silenced).
    """
    if not isinstance(smiles, str):
        raise InvalidMoleculeError(f"not a SMILES string: {smiles!r}")
    text = smiles.strip()
    if not text:
        raise InvalidMoleculeError("empty SMILES")
    mol = Chem.MolFromSmiles(text)
    if mol is None:
        raise InvalidMoleculeError(f"RDKit cannot parse SMILES {text!r}")
    if mol.GetNumAtoms() == 0:
        raise InvalidMoleculeError(f"SMILES {text!r} has no atoms")
    if standardize_mol:
        mol = standardize(mol)
    return mol
