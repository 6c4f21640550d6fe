"""Bad input through the public readers, parser, featurizer, DataModule and screen: never a
crash, never a silently wrong row, always a typed error or an invalid row with its reason."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from rdkit import Chem

from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.parsing import MAX_ATOMS, parse_smiles

FAST = {"cache_dir": None, "featurize_jobs": 1}


def run_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, so that a crash shows as a return code."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------- very long SMILES


def test_very_long_smiles_is_an_invalid_molecule_not_a_crash() -> None:
    result = run_python(
        """
        from molml.chem.featurizer import MolGraphFeaturizer
        from molml.chem.parsing import MAX_ATOMS, parse_smiles
        from molml.data.graphs import featurize_molecules
        from molml.errors import InvalidMoleculeError

        chain = "C" * 30000
        ringed = "C1CC1" + "C" * 30000 + "c1ccccc1"
        for smiles in (chain, ringed):
            for parse in (parse_smiles, MolGraphFeaturizer().featurize):
                try:
                    parse(smiles)
                except InvalidMoleculeError as exc:
                    print(str(exc).replace(" ", "_"))
        result = featurize_molecules(["CCO", chain, ringed], MolGraphFeaturizer(), n_jobs=1,
                                     progress=False)
        print(result.valid.tolist(), sorted(result.errors))
        """
    )
    assert result.returncode == 0, f"crashed with {result.returncode}: {result.stderr[-2000:]}"
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert all("has_30000_atoms,_more_than_molml's_limit" in line for line in lines[:2])
    assert all("has_30009_atoms" in line for line in lines[2:4])
    assert lines[4] == "[True, False, False] [1, 2]"


def test_largest_accepted_molecule_same_as_rdkit() -> None:
    smiles = "C1CC1" + "CC(=O)N" * ((MAX_ATOMS - 8) // 4) + "c1ccc[nH]1"
    ours = parse_smiles(smiles)
    assert MAX_ATOMS - 4 < ours.GetNumAtoms() <= MAX_ATOMS
    assert Chem.MolToSmiles(ours) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    assert ours.GetRingInfo().NumRings() == 2
    _, x, edge_index, _ = MolGraphFeaturizer(add_hydrogens=True).featurize(smiles)
    assert x.shape[0] > ours.GetNumAtoms() and edge_index.shape[1] == 2 * (x.shape[0] + 1)
