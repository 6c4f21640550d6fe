"""MolGraphFeaturizer and SMILES parsing on real RDKit molecules (no mocks)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require_dataset
from rdkit import Chem

from molml.chem.featurizer import DEFAULT_ELEMENTS, MolGraphFeaturizer
from molml.chem.parsing import parse_smiles
from molml.errors import InvalidMoleculeError

# Column layout of the default atom features (see the featurizer's module docstring).
N_ELEM = len(DEFAULT_ELEMENTS) + 1  # 61
ELEMENT = slice(0, N_ELEM)
DEGREE = slice(N_ELEM, N_ELEM + 8)
CHARGE = slice(N_ELEM + 8, N_ELEM + 16)
CHIRAL = slice(N_ELEM + 16, N_ELEM + 20)
N_HS = slice(N_ELEM + 20, N_ELEM + 26)
MASS = N_ELEM + 36  # last column
BOND_STEREO = slice(7, 14)
STEREO_E, STEREO_Z = 7 + 3, 7 + 2

# Real metal complexes and odd valences from hiv.csv that RDKit parses.
HIV_METALS = [
    "CCC1=[O+][Cu-3]2([O+]=C(CC)C1)[O+]=C(CC)CC(CC)=[O+]2",
    "N[Pt-2]1(N)OC(=O)C2(CCC2)C(=O)O1",
    "O=C1[OH+][Pt-2]2(NC3CCCCC3N2)[OH+]C1=O",
    "C1CN[Co-4]23(N1)(NCCN2)NCCN3",
    "CC[Sn](Cl)(CC)CC",
]
# hiv.csv / tox21.csv rows RDKit cannot sanitize, plus syntax errors and non-strings.
INVALID = [
    "O=C1O[Al]23(OC1=O)(OC(=O)C(=O)O2)OC(=O)C(=O)O3",
    "Cc1ccc([B-2]2(c3ccc(C)cc3)=NCCO2)cc1",
    "CC(=O)O[AlH3](O)O",
    "C(C)(C)(C)(C)C",  # pentavalent carbon
    "c1cccc1",  # cannot kekulize
    "C1CC",  # unclosed ring
    "not a smiles",
    "[Xx]",
    "",
    "   ",
    None,
    123,
    float("nan"),
]

SHARED_DATASETS = ["bbbp", "tox21", "clintox", "hiv", "bace", "lipo", "sider", "freesolv"]


@pytest.fixture(scope="module")
def feat() -> MolGraphFeaturizer:
    return MolGraphFeaturizer()


def assert_same_graph(a, b) -> None:
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.edge_attr, b.edge_attr)


def element_of(row: torch.Tensor) -> int:
    """Atomic number encoded in an atom row's element one-hot (-1 for "other")."""
    (index,) = torch.nonzero(row[ELEMENT]).flatten().tolist()
    return DEFAULT_ELEMENTS[index] if index < len(DEFAULT_ELEMENTS) else -1


def one_hot_index(row: torch.Tensor, block: slice) -> int:
    (index,) = torch.nonzero(row[block]).flatten().tolist()
    return index


# ---------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("smiles", ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C#N"])
def test_dims_match_atom_and_bond_dim(feat: MolGraphFeaturizer, smiles: str) -> None:
    data = feat(smiles)
    mol = Chem.MolFromSmiles(smiles)
    assert feat.atom_dim == 98 and feat.bond_dim == 14
    assert data.x.shape == (mol.GetNumAtoms(), feat.atom_dim)
    assert data.edge_attr.shape == (2 * mol.GetNumBonds(), feat.bond_dim)
    assert data.edge_index.shape == (2, 2 * mol.GetNumBonds())
    assert data.x.dtype == torch.float32 and data.edge_index.dtype == torch.int64
    # every atom row has exactly one element, degree, charge, chirality and H-count slot
    for block in (ELEMENT, DEGREE, CHARGE, CHIRAL, N_HS):
        assert torch.all(data.x[:, block].sum(dim=1) == 1)


def test_custom_element_list_changes_atom_dim() -> None:
    feat = MolGraphFeaturizer(elements=(6, 7, 8))
    data = feat("CCN")
    assert feat.atom_dim == 3 + 1 + 37
    assert data.x.shape == (3, feat.atom_dim)
    # sulfur is not listed -> the "other" element slot
    assert feat("CS").x[1, 3] == 1.0


@pytest.mark.parametrize("smiles, z", [("C", 6), ("[Na+]", 11), ("[Cl-]", 17), ("O", 8)])
def test_single_atom_has_no_edges(feat: MolGraphFeaturizer, smiles: str, z: int) -> None:
    data = feat(smiles)
    assert data.x.shape == (1, feat.atom_dim)
    assert data.edge_index.shape == (2, 0)
    assert data.edge_attr.shape == (0, feat.bond_dim)
    assert element_of(data.x[0]) == z


def test_disconnected_ions(feat: MolGraphFeaturizer) -> None:
    data = feat("[Na+].[Cl-]")
    assert data.x.shape[0] == 2 and data.edge_index.shape == (2, 0)
    assert [element_of(r) for r in data.x] == [11, 17]
    charges = [one_hot_index(r, CHARGE) - 3 for r in data.x]  # slots are -3..+3
    assert charges == [1, -1]


def test_salt_keeps_all_fragments_without_standardize(feat: MolGraphFeaturizer) -> None:
    data = feat("CC(=O)[O-].[Na+]")
    assert data.x.shape[0] == 5
    assert data.edge_index.shape == (2, 6)  # 3 bonds, the sodium is isolated
    assert 4 not in data.edge_index.flatten().tolist()
    assert element_of(data.x[4]) == 11
    assert one_hot_index(data.x[4], DEGREE) == 0
    assert one_hot_index(data.x[3], CHARGE) - 3 == -1


def test_standardize_keeps_largest_fragment_and_neutralizes() -> None:
    feat = MolGraphFeaturizer(standardize=True)
    data = feat("CC(=O)[O-].[Na+]")
    assert data.x.shape[0] == 4
    assert 11 not in [element_of(r) for r in data.x]
    assert_same_graph(data, MolGraphFeaturizer()("CC(=O)O"))
    # the larger organic fragment wins over a bigger count of inorganic atoms too
    big = feat("[Na+].[Na+].[O-]C(=O)c1ccccc1C(=O)[O-]")
    assert [element_of(r) for r in big.x].count(11) == 0
    assert big.x.shape[0] == 12
    # an RDKit molecule is standardized as its SMILES is (it kept the sodium)
    assert_same_graph(feat(Chem.MolFromSmiles("CC(=O)[O-].[Na+]")), data)


def test_dummy_atom_uses_element_slot_zero(feat: MolGraphFeaturizer) -> None:
    data = feat("*C(=O)O")
    assert data.x.shape[0] == 4
    assert data.x[0, 0] == 1.0 and data.x[0, ELEMENT].sum() == 1.0
    assert torch.all(data.x[1:, 0] == 0)
    assert data.x[0, MASS] == 0.0  # the dummy atom has no mass
    # clintox's first row starts with a dummy atom, too
    assert feat("*C(=O)[C@H](CCCCNC(=O)OCCOC)NC(=O)OCCOC").x[0, 0] == 1.0


@pytest.mark.parametrize("smiles", HIV_METALS)
def test_metal_complexes_from_hiv(feat: MolGraphFeaturizer, smiles: str) -> None:
    mol = Chem.MolFromSmiles(smiles)
    assert mol is not None
    data = feat(smiles)
    assert data.x.shape == (mol.GetNumAtoms(), feat.atom_dim)
    metals = [a for a in mol.GetAtoms() if a.GetSymbol() in ("Cu", "Pt", "Co", "Sn")]
    for atom in metals:
        row = data.x[atom.GetIdx()]
        assert element_of(row) == atom.GetAtomicNum()
        charge = atom.GetFormalCharge()
        expected = charge + 3 if -3 <= charge <= 3 else 7  # 7 = "other" charge slot
        assert one_hot_index(row, CHARGE) == expected
        degree = atom.GetTotalDegree()
        assert one_hot_index(row, DEGREE) == (degree if degree <= 6 else 7)


@pytest.mark.parametrize("bad", INVALID, ids=repr)
def test_invalid_input_raises_invalid_molecule_error(feat: MolGraphFeaturizer, bad) -> None:
    with pytest.raises(InvalidMoleculeError):
        feat(bad)
    with pytest.raises(InvalidMoleculeError):
        parse_smiles(bad)
    with pytest.raises(InvalidMoleculeError):
        MolGraphFeaturizer(standardize=True, add_hydrogens=True)(bad)


def test_empty_mol_raises(feat: MolGraphFeaturizer) -> None:
    with pytest.raises(InvalidMoleculeError, match="no atoms"):
        feat(Chem.Mol())


def test_invalid_error_message_names_the_smiles() -> None:
    with pytest.raises(InvalidMoleculeError, match="C1CC"):
        parse_smiles("C1CC")


# ---------------------------------------------------------------------------- hydrogens


def test_explicit_hydrogens_are_folded_in(feat: MolGraphFeaturizer) -> None:
    assert_same_graph(feat("[H]C([H])([H])O"), feat("CO"))
    # an isotopic hydrogen stays an atom, through the string and the Mol path alike
    assert_same_graph(feat("[2H]C"), feat(Chem.MolFromSmiles("[2H]C")))
    assert feat("[2H]C").x.shape[0] == 2


def test_add_hydrogens_makes_them_atoms() -> None:
    feat = MolGraphFeaturizer(add_hydrogens=True)
    data = feat("CO")
    assert data.x.shape[0] == 6
    assert [element_of(r) for r in data.x].count(1) == 4
    assert data.edge_index.shape == (2, 10)
    # explicit [H] input gives the same all-atom graph
    assert_same_graph(feat("[H]C([H])([H])O"), data)
    # with explicit H atoms, no heavy atom reports implicit hydrogens
    assert torch.all(data.x[:2, N_HS][:, 0] == 1)  # 0 hydrogens slot
    plain = MolGraphFeaturizer()("CO")
    assert one_hot_index(plain.x[0], N_HS) == 3


# ---------------------------------------------------------------------------- isotopes + stereo


def test_isotope_changes_only_the_mass_column(feat: MolGraphFeaturizer) -> None:
    c13, c12 = feat("[13CH4]").x, feat("C").x
    assert c13[0, MASS] != c12[0, MASS]
    assert c13[0, MASS].item() == pytest.approx(13.00335 / 100, abs=1e-5)
    assert c12[0, MASS].item() == pytest.approx(12.011 / 100, abs=1e-4)
    others = torch.ones(feat.atom_dim, dtype=torch.bool)
    others[MASS] = False
    assert torch.equal(c13[0, others], c12[0, others])


def test_chirality_columns(feat: MolGraphFeaturizer) -> None:
    r, s, plain = feat("F[C@H](Cl)Br"), feat("F[C@@H](Cl)Br"), feat("FC(Cl)Br")
    assert not torch.equal(r.x[:, CHIRAL], s.x[:, CHIRAL])
    assert one_hot_index(plain.x[1], CHIRAL) == 0  # unspecified
    assert {one_hot_index(r.x[1], CHIRAL), one_hot_index(s.x[1], CHIRAL)} == {1, 2}
    rest = torch.ones(feat.atom_dim, dtype=torch.bool)
    rest[CHIRAL] = False
    for graph in (r, s):
        assert torch.equal(graph.x[:, rest], plain.x[:, rest])
        assert torch.equal(graph.edge_index, plain.edge_index)
        assert torch.equal(graph.edge_attr, plain.edge_attr)
    # the string fast path agrees with RDKit's own molecule
    assert_same_graph(r, feat(Chem.MolFromSmiles("F[C@H](Cl)Br")))


def test_double_bond_stereo_columns(feat: MolGraphFeaturizer) -> None:
    e, z, plain = feat("C/C=C/C"), feat("C/C=C\\C"), feat("CC=CC")
    double = 2  # bonds: C-C, C=C, C-C -> edges 2 and 3 are the double bond
    assert e.edge_attr[double, 1] == 1.0  # double bond type
    assert not torch.equal(e.edge_attr[:, BOND_STEREO], z.edge_attr[:, BOND_STEREO])
    assert e.edge_attr[double, STEREO_E] == 1.0 and e.edge_attr[double + 1, STEREO_E] == 1.0
    assert z.edge_attr[double, STEREO_Z] == 1.0
    assert plain.edge_attr[double, 7] == 1.0  # STEREONONE
    rest = [c for c in range(14) if not 7 <= c < 14]
    assert torch.equal(e.edge_attr[:, rest], plain.edge_attr[:, rest])
    assert torch.equal(e.x, plain.x) and torch.equal(z.x, plain.x)
    assert_same_graph(z, feat(Chem.MolFromSmiles("C/C=C\\C")))


# ---------------------------------------------------------------------------- edge pairing


@pytest.mark.parametrize(
    "smiles",
    [
        "CCO",
        "c1ccccc1C(=O)O",
        "C1CC2CCC1C2",
        "CC(=O)[O-].[Na+]",
        "N[Pt-2]1(N)OC(=O)C2(CCC2)C(=O)O1",
    ],
)
def test_edges_come_in_reverse_pairs(feat: MolGraphFeaturizer, smiles: str) -> None:
    data = feat(smiles)
    ei, ea = data.edge_index, data.edge_attr
    assert ei.shape[1] % 2 == 0
    assert torch.equal(ei[:, 0::2], ei[:, 1::2].flip(0))
    assert torch.equal(ea[0::2], ea[1::2])
    # reverse of edge e is e ^ 1, as the D-MPNN assumes
    reverse = torch.arange(ei.shape[1]) ^ 1
    assert torch.equal(ei[0, reverse], ei[1]) and torch.equal(ei[1, reverse], ei[0])
    # each RDKit bond appears exactly once as a forward edge
    mol = Chem.MolFromSmiles(smiles)
    bonds = {(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()}
    assert set(map(tuple, ei[:, 0::2].T.tolist())) == bonds


# ---------------------------------------------------------------------------- fast parsing == RDKit


def _dataset_sample(name: str, n: int) -> list[str]:
    frame = pd.read_csv(require_dataset(name))
    smiles = frame.iloc[:, 0].dropna().astype(str)
    if n >= len(smiles):
        return smiles.tolist()
    picked = set(smiles.sample(n, random_state=0))
    # stereo and explicit-H SMILES exercise the non-default parsing paths
    special = smiles[smiles.str.contains(r"[@/\\]|\[\d*H[^a-z]", regex=True)]
    picked |= set(special.head(60))
    return sorted(picked)


def _check_fast_path(smiles_list: list[str]) -> int:
    feat = MolGraphFeaturizer()
    checked = 0
    for smiles in smiles_list:
        ref = Chem.MolFromSmiles(smiles)
        if ref is None:
            with pytest.raises(InvalidMoleculeError):
                parse_smiles(smiles)
            continue
        mol = parse_smiles(smiles)
        assert Chem.MolToSmiles(mol) == Chem.MolToSmiles(ref), smiles
        fast, full = feat(smiles), feat(ref)
        assert torch.equal(fast.x, full.x), smiles
        assert torch.equal(fast.edge_index, full.edge_index), smiles
        assert torch.equal(fast.edge_attr, full.edge_attr), smiles
        checked += 1
    return checked


def test_fast_parsing_matches_rdkit_on_all_of_esol() -> None:
    smiles = _dataset_sample("esol", 10**9)
    assert len(smiles) > 1000
    assert _check_fast_path(smiles) == len(smiles)


@pytest.mark.parametrize("name", SHARED_DATASETS)
def test_fast_parsing_matches_rdkit_on_dataset_sample(name: str) -> None:
    smiles = _dataset_sample(name, 300)
    assert _check_fast_path(smiles) > 0.9 * len(smiles)


# ---------------------------------------------------------------------------- config + pickling


def test_config_round_trip_and_json() -> None:
    feat = MolGraphFeaturizer(elements=(1, 6, 7, 8, 9), add_hydrogens=True, standardize=True)
    config = feat.to_config()
    assert json.loads(json.dumps(config)) == config
    again = MolGraphFeaturizer.from_config(config)
    assert again.to_config() == config
    assert again.atom_dim == feat.atom_dim
    assert_same_graph(again("CC(=O)[O-].[Na+]"), feat("CC(=O)[O-].[Na+]"))
    default = MolGraphFeaturizer.from_config({})
    assert default.to_config() == MolGraphFeaturizer().to_config()


def test_chemprop_preset_config() -> None:
    assert "preset" not in MolGraphFeaturizer().to_config()  # older configs stay equal
    feat = MolGraphFeaturizer(preset="chemprop")
    assert (feat.atom_dim, feat.bond_dim) == (72, 14)
    config = feat.to_config()
    assert config["preset"] == "chemprop" and config["elements"] == [*range(1, 37), 53]
    again = MolGraphFeaturizer.from_config(json.loads(json.dumps(config)))
    assert again.to_config() == config
    assert_same_graph(again("C[C@H](N)C(=O)O"), feat("C[C@H](N)C(=O)O"))
    with pytest.raises(ValueError, match="unknown featurizer preset"):
        MolGraphFeaturizer(preset="chemprop1")


def test_pickling_after_use_keeps_behaviour() -> None:
    feat = MolGraphFeaturizer(add_hydrogens=False)
    before = [feat(s) for s in ("CCO", "c1ccccc1", "F[C@H](Cl)Br")]  # fills the row caches
    clone = pickle.loads(pickle.dumps(feat))
    assert clone.to_config() == feat.to_config()
    assert repr(clone) == repr(feat)
    for smiles, graph in zip(("CCO", "c1ccccc1", "F[C@H](Cl)Br"), before, strict=True):
        assert_same_graph(clone(smiles), graph)


def test_targets_become_y_and_mask(feat: MolGraphFeaturizer) -> None:
    data = feat("CCO", y=[1.5, float("nan"), 0.0])
    assert data.y.shape == (1, 3) and data.y_mask.shape == (1, 3)
    assert data.y_mask.tolist() == [[True, False, True]]
    assert not torch.isnan(data.y).any()
    assert np.allclose(data.y.numpy(), [[1.5, 0.0, 0.0]])


# ---------------------------------------------------------------------------- block = reference
def reference_graph(smiles: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The default features written out atom by atom from the module docstring's table, with
    RDKit's standard parser: slow and obvious, a check on the table-driven block path."""
    from molml.chem.featurizer import (
        BOND_STEREO as STEREOS,
    )
    from molml.chem.featurizer import (
        BOND_TYPES,
        CIP_LABELS,
        DEGREES,
        FORMAL_CHARGES,
        H_COUNTS,
        HYBRIDIZATIONS,
    )

    def one_hot(value: object, choices: tuple) -> list[float]:
        return [float(value == c) for c in choices] + [float(value not in choices)]

    mol = Chem.MolFromSmiles(smiles)
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    table = Chem.GetPeriodicTable()
    atoms = []
    for a in mol.GetAtoms():
        z, isotope = a.GetAtomicNum(), a.GetIsotope()
        mass = table.GetMassForIsotope(z, isotope) if isotope else table.GetAtomicWeight(z)
        cip = a.GetProp("_CIPCode") if a.HasProp("_CIPCode") else ""
        atoms.append(
            one_hot(z, DEFAULT_ELEMENTS)
            + one_hot(a.GetTotalDegree(), DEGREES)
            + one_hot(a.GetFormalCharge(), FORMAL_CHARGES)
            + one_hot(cip, CIP_LABELS)
            + one_hot(a.GetTotalNumHs(), H_COUNTS)
            + one_hot(a.GetHybridization(), HYBRIDIZATIONS)
            + [float(a.GetIsAromatic()), float(a.IsInRing()), mass / 100.0]
        )
    edges, bonds = [], []
    for b in mol.GetBonds():
        u, v = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        row = (
            one_hot(b.GetBondType(), BOND_TYPES)
            + [float(b.GetIsConjugated()), float(b.IsInRing())]
            + one_hot(b.GetStereo(), STEREOS)
        )
        edges += [(u, v), (v, u)]
        bonds += [row, row]
    return (
        np.array(atoms, dtype=np.float32),
        np.array(edges, dtype=np.int64).reshape(-1, 2).T,
        np.array(bonds, dtype=np.float32).reshape(-1, 14),
    )


def test_block_featurization_equals_the_reference_on_thousands_of_molecules() -> None:
    from conftest import nci_smiles

    from molml.data.graphs import featurize_block, featurize_molecules

    smiles = nci_smiles(3000) + HIV_METALS + ["C", "[Na+].[Cl-]", "F/C=C/F", "C[C@H](N)O"]
    smiles += ["[13CH3]C(=O)O", "[2H]OC", "C[13C@H](N)C(=O)O", "[18F]c1ccccc1", "[NH3+]CC([O-])=O"]
    smiles += ["[NH3]->[Pt](Cl)(Cl)<-[NH3]", "C$C", "[Cu+2]<-NCC"]
    arrays, errors, _, _ = featurize_block(MolGraphFeaturizer(), [*smiles, "C1CC"])
    assert list(errors) == [len(smiles)]
    # worker processes send table rows, gathered in the parent: the same arrays
    pooled = featurize_molecules(
        [*smiles, "C1CC"], MolGraphFeaturizer(), n_jobs=2, chunk_size=500, progress=False
    )
    assert list(pooled.errors) == [len(smiles)]
    assert torch.equal(pooled.graphs.x, torch.from_numpy(arrays["x"]))
    assert torch.equal(pooled.graphs.edge_index, torch.from_numpy(arrays["edge_index"]))
    assert torch.equal(pooled.graphs.edge_attr, torch.from_numpy(arrays["edge_attr"]))
    # the store keeps each distinct feature row once, merged over the workers' tables
    table = pooled.graphs.atom_table
    assert len(torch.unique(table, dim=0)) == len(table) < len(pooled.graphs.atom_rows) / 10
    atom_starts = np.concatenate([[0], np.cumsum(arrays["n_atoms"])])
    edge_starts = np.concatenate([[0], np.cumsum(arrays["n_edges"])])
    for i, text in enumerate(smiles):
        x, edge_index, edge_attr = reference_graph(text)
        atoms = slice(atom_starts[i], atom_starts[i + 1])
        edges = slice(edge_starts[i], edge_starts[i + 1])
        assert np.array_equal(arrays["x"][atoms], x), text
        assert np.array_equal(arrays["edge_index"][:, edges], edge_index), text
        assert np.array_equal(arrays["edge_attr"][edges], edge_attr), text


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, pd.NA], ids=repr)
def test_a_missing_cell_is_a_missing_smiles(missing: object) -> None:
    with pytest.raises(InvalidMoleculeError, match=r"^missing SMILES \(empty cell"):
        parse_smiles(missing)


@pytest.mark.parametrize("blank", ["", "  "], ids=repr)
def test_a_blank_string_is_an_empty_smiles(blank: str) -> None:
    with pytest.raises(InvalidMoleculeError, match="^empty SMILES$"):
        parse_smiles(blank)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"random_walk_steps": 100_000}, "random_walk_steps must be 0 to 64"),
        ({"elements": [6, 6, 7]}, "elements must be distinct atomic numbers"),
        ({"elements": [-1, 6]}, "elements must be distinct atomic numbers"),
        ({"elements": [6, 200]}, "elements must be distinct atomic numbers"),
        ({"elements": []}, "elements must be distinct atomic numbers"),
    ],
)
def test_featurizer_options_that_cannot_be_meant_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MolGraphFeaturizer(**options)


@pytest.mark.parametrize(
    "smiles",
    ["CC(C)c1ccc(O)cc1", "C" * 400, "c1ccc(cc1)" * 40 + "C", "[Na+].[O-]C(=O)" + "C" * 200],
)
def test_random_walk_encoding_is_the_diagonal_of_the_walk_powers(smiles: str) -> None:
    """Checked against powers of ``D^-1 A`` by hand; molecules above the sparse threshold
    (a long chain, a polyphenyl, a salt with a lone ion) take sparse products and must give
    the same numbers (a lone atom walks nowhere: zeros)."""
    from molml.chem.featurizer import random_walk_encoding

    mol = Chem.MolFromSmiles(smiles)
    adjacency = Chem.GetAdjacencyMatrix(mol).astype(float)
    degree = adjacency.sum(axis=1, keepdims=True)
    walk = np.divide(adjacency, degree, out=np.zeros_like(adjacency), where=degree > 0)
    expected = [np.diagonal(np.linalg.matrix_power(walk, k)) for k in range(1, 7)]
    np.testing.assert_allclose(random_walk_encoding(mol, 6), np.stack(expected, 1), atol=1e-6)
