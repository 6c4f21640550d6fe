"""Atom and bond featurizers that turn molecules into PyTorch Geometric graphs.

Default atom features (98 columns, in this order):

==================  ==========================================================  =====
feature             values (one-hot; "other" catches anything not listed)        width
==================  ==========================================================  =====
element             dummy ``*`` (Z=0), H..Xe (Z=1..54), Pt, Au, Hg, Pb, Bi, other  61
total degree        0..6, other                                                    8
formal charge       -3..+3, other                                                  8
chirality (CIP)     none, R, S, other                                              4
total H count       0..4, other                                                    6
hybridization       S, SP, SP2, SP2D, SP3, SP3D, SP3D2, other/unspecified          8
aromatic            0/1                                                            1
in ring             0/1                                                            1
mass / 100          isotope mass when an isotope is given, else average mass       1
RWSE (optional)     return probability of a k-step random walk, k = 1..K           K
==================  ==========================================================  =====

The random-walk structural encoding (RWSE, Dwivedi et al. 2022) is off by default
(``random_walk_steps=0``). With ``random_walk_steps=K`` the last ``K`` columns of ``x`` hold,
for each atom, the diagonal of ``P^1 .. P^K`` where ``P = D^-1 A`` is the random-walk matrix of
the molecular graph: the probability that a random walk from the atom is back at it after
``k`` steps. It describes the rings and branching around each atom without depending on the
atom order, which is what graph Transformers (GPS) lack. An atom without bonds gets zeros.

Default bond features (14 columns): bond type (single, double, triple, aromatic, other),
conjugated, in ring, stereo (none, any, Z, E, cis, trans, other).

``preset="chemprop"`` reproduces chemprop 2's default featurization
(``SimpleMoleculeMolGraphFeaturizer`` with the ``V2`` multi-hot atom featurizer), so chemprop
checkpoints can be fine-tuned (:mod:`molml.models.chemprop_format`). Atom features (72 columns):

==================  ==========================================================  =====
feature             values (one-hot; "other" catches anything not listed)        width
==================  ==========================================================  =====
element             H..Kr (Z=1..36), I, other                                     38
total degree        0..5, other                                                    7
formal charge       -1, -2, +1, +2, 0, other (in this order)                       6
chiral tag          RDKit ChiralType 0..3 (unspecified, CW, CCW, other), other     5
total H count       0..4, other                                                    6
hybridization       S, SP, SP2, SP2D, SP3, SP3D, SP3D2, other/unspecified          8
aromatic            0/1                                                            1
mass / 100          as in the default features                                     1
==================  ==========================================================  =====

Its bond features (14 columns): no-bond flag (always 0), bond type (single, double, triple,
aromatic; other bonds have none set), conjugated, in ring, stereo (as in the default features).

Each bond becomes two directed edges stored next to each other (edge ``2k`` is ``u->v`` and
edge ``2k+1`` is ``v->u``), so the reverse of edge ``e`` is ``e ^ 1`` in any batch; the D-MPNN
relies on this. Molecules with one atom (``C``, ``[Na+]``) get an empty edge list.

Speed: RDKit is asked for each atom's raw properties once, as one tuple; the one-hot row for
each distinct tuple is built once per process and then looked up, so the per-atom Python work is
a handful of RDKit calls and a dict lookup. A block of molecules is gathered from the tables in
one numpy call (:meth:`MolGraphFeaturizer.row_ids`, :meth:`MolGraphFeaturizer.gather`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.data import Data

from molml.chem.parsing import parse_smiles, standardize
from molml.errors import InvalidMoleculeError

DEFAULT_ELEMENTS: tuple[int, ...] = (*range(0, 55), 78, 79, 80, 82, 83)
DEGREES = tuple(range(7))
FORMAL_CHARGES = tuple(range(-3, 4))
CIP_LABELS = ("", "R", "S")  # CIP label of a stereocentre ("": none or unassigned)
H_COUNTS = tuple(range(5))
HYBRIDIZATIONS = (
    Chem.HybridizationType.S,
    Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2,
    Chem.HybridizationType.SP2D,
    Chem.HybridizationType.SP3,
    Chem.HybridizationType.SP3D,
    Chem.HybridizationType.SP3D2,
)
BOND_TYPES = (
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
)
BOND_STEREO = (
    Chem.BondStereo.STEREONONE,
    Chem.BondStereo.STEREOANY,
    Chem.BondStereo.STEREOZ,
    Chem.BondStereo.STEREOE,
    Chem.BondStereo.STEREOCIS,
    Chem.BondStereo.STEREOTRANS,
)
# BondType of a bond order from Bond.GetBondTypeAsDouble, for the orders a SMILES without
# dative bonds can give (1.5 is aromatic: RDKit's SMILES parser never writes ONEANDAHALF)
BOND_TYPE_OF_ORDER = {
    1.0: BOND_TYPES[0],
    2.0: BOND_TYPES[1],
    3.0: BOND_TYPES[2],
    1.5: BOND_TYPES[3],
}
PRESETS = ("molml", "chemprop")
CHEMPROP_ELEMENTS: tuple[int, ...] = (*range(1, 37), 53)
CHEMPROP_DEGREES = tuple(range(6))
CHEMPROP_FORMAL_CHARGES = (-1, -2, 1, 2, 0)
CHEMPROP_CHIRAL_TAGS = tuple(range(4))  # int(Chem.ChiralType): unspecified, CW, CCW, other
_PERIODIC_TABLE = Chem.GetPeriodicTable()
_ISOTOPE = re.compile(r"\[\d")  # an isotope is written as a mass right after "[": [13C]


def _one_hot(value: Any, choices: Sequence[Any]) -> list[float]:
    """One-hot over ``choices`` plus a trailing "other" slot."""
    row = [0.0] * (len(choices) + 1)
    try:
        row[choices.index(value)] = 1.0
    except ValueError:
        row[-1] = 1.0
    return row


MAX_RANDOM_WALK_STEPS = 64  # GPS's random-walk encodings use 16; each step is a matrix product
MAX_ATOMIC_NUMBER = 118


class MolGraphFeaturizer:
    """Turn a SMILES string or RDKit molecule into a ``torch_geometric.data.Data`` graph.

    Args:
        elements: atomic numbers that get their own one-hot slot (0 is the dummy atom ``*``);
            default: the preset's list.
        add_hydrogens: make hydrogens explicit atoms of the graph.
        standardize: keep the largest fragment, neutralize and normalize (RDKit MolStandardize)
            before featurizing. Off by default so salts and mixtures stay as given.
        random_walk_steps: append this many random-walk structural encoding columns to ``x``
            (see the module docstring); 0 (default) appends none.
        preset: ``molml`` (default) or ``chemprop``: the atom and bond feature layout (see the
            module docstring).
    """

    def __init__(
        self,
        elements: Sequence[int] | None = None,
        add_hydrogens: bool = False,
        standardize: bool = False,
        random_walk_steps: int = 0,
        preset: str = "molml",
    ) -> None:
        if not 0 <= random_walk_steps <= MAX_RANDOM_WALK_STEPS:
            raise ValueError(
                f"random_walk_steps must be 0 to {MAX_RANDOM_WALK_STEPS}, got {random_walk_steps}"
            )
        if preset not in PRESETS:
            raise ValueError(f"unknown featurizer preset {preset!r}; choose from {PRESETS}")
        self.preset = preset
        if elements is None:
            elements = CHEMPROP_ELEMENTS if preset == "chemprop" else DEFAULT_ELEMENTS
        self.elements = tuple(int(z) for z in elements)
        odd = [z for z in self.elements if not 0 <= z <= MAX_ATOMIC_NUMBER]
        if odd or not self.elements or len(set(self.elements)) < len(self.elements):
            raise ValueError(
                "elements must be distinct atomic numbers from 0 (the dummy atom *) to "
                f"{MAX_ATOMIC_NUMBER}, got {list(self.elements)}"
            )
        self.add_hydrogens = add_hydrogens
        self.standardize = standardize
        self.random_walk_steps = int(random_walk_steps)
        self._atom_rows: dict[tuple, int] = {}
        self._bond_rows: dict[tuple, int] = {}
        self._atom_table = np.zeros((64, self.atom_dim - self.random_walk_steps), np.float32)
        self._bond_table = np.zeros((16, self.bond_dim), dtype=np.float32)

    @property
    def atom_dim(self) -> int:
        """Width of the atom feature matrix ``x``."""
        if self.preset == "chemprop":
            return len(self.elements) + 1 + 7 + 6 + 5 + 6 + 8 + 2 + self.random_walk_steps
        return len(self.elements) + 1 + 8 + 8 + 4 + 6 + 8 + 3 + self.random_walk_steps

    @property
    def bond_dim(self) -> int:
        """Width of the edge feature matrix ``edge_attr``."""
        return 14

    @property
    def element_classes(self) -> int:
        """Element classes of an atom: one per listed element plus "other". Both presets put
        their one-hot in the first ``element_classes`` columns of ``x``."""
        return len(self.elements) + 1

    def to_config(self) -> dict[str, Any]:
        """A JSON-able description from which :meth:`from_config` rebuilds this featurizer."""
        config: dict[str, Any] = {
            "class": "MolGraphFeaturizer",
            "elements": list(self.elements),
            "add_hydrogens": self.add_hydrogens,
            "standardize": self.standardize,
            "random_walk_steps": self.random_walk_steps,
        }
        if self.preset != "molml":  # so configs written before presets existed stay equal
            config["preset"] = self.preset
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MolGraphFeaturizer:
        """Rebuild a featurizer from :meth:`to_config` output."""
        params = {k: v for k, v in config.items() if k != "class"}
        return cls(**params)

    def __repr__(self) -> str:
        return (
            f"MolGraphFeaturizer(atom_dim={self.atom_dim}, bond_dim={self.bond_dim}, "
            f"add_hydrogens={self.add_hydrogens}, standardize={self.standardize}, "
            f"random_walk_steps={self.random_walk_steps}, preset={self.preset!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.to_config()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**{k: v for k, v in state.items() if k != "class"})

    def mol(self, smiles_or_mol: str | Chem.Mol) -> Chem.Mol:
        """Parse (and optionally standardize / add hydrogens) one input molecule."""
        if isinstance(smiles_or_mol, Chem.Mol):
            mol = smiles_or_mol
            if mol.GetNumAtoms() == 0:
                raise InvalidMoleculeError("molecule has no atoms")
            if self.standardize:  # as its SMILES would be: a salt's counter-ion goes
                mol = standardize(mol)
        else:
            mol = parse_smiles(smiles_or_mol, standardize_mol=self.standardize)
        if self.add_hydrogens:
            mol = Chem.AddHs(mol)
        return mol

    def row_ids(
        self,
        mol: Chem.Mol,
        *,
        has_chirality: bool = True,
        has_bond_stereo: bool = True,
        has_isotopes: bool = True,
        has_dative_bonds: bool = True,
    ) -> tuple[list[int], list[int], list[int]]:
        """A parsed molecule as rows of the featurizer's tables: the atom table row of each
        atom, the bond table row of each bond, and the bond ends ``[begin0, end0, begin1,
        ...]``; :meth:`gather` turns rows into feature arrays, for one molecule or many.

        ``has_chirality=False`` / ``has_bond_stereo=False`` / ``has_isotopes=False`` /
        ``has_dative_bonds=False`` promise that no atom is a specified stereocentre / no bond
        has a stereo label / no atom has an isotope / no bond is dative (true for SMILES
        without ``@`` / ``/`` and ``\\`` / ``[`` followed by a digit / ``->`` and ``<-``),
        which saves RDKit work per atom and bond.

        Stereocentres are described by their CIP label (R/S), which, unlike RDKit's CW/CCW
        chiral tag, does not depend on the order in which the atoms were written; the chemprop
        preset uses the chiral tag, as chemprop does.
        """
        chemprop = self.preset == "chemprop"
        if has_chirality and not chemprop:
            Chem.AssignStereochemistry(mol, cleanIt=True)  # no-op when parsing already did it
        # GetAtomWithIdx over a range: RDKit's GetAtoms() iterator costs three Python calls
        # per atom
        atoms = map(mol.GetAtomWithIdx, range(mol.GetNumAtoms()))
        atom_keys = [
            (
                a.GetAtomicNum(),
                a.GetTotalDegree(),
                a.GetFormalCharge(),
                int(a.GetChiralTag())
                if chemprop
                else a.GetProp("_CIPCode")
                if has_chirality and a.HasProp("_CIPCode")
                else "",
                a.GetTotalNumHs(),
                a.GetHybridization(),
                a.GetIsAromatic(),
                a.IsInRing(),
                a.GetIsotope() if has_isotopes else 0,
            )
            for a in atoms
        ]
        known = self._atom_rows.get
        atom_ids = [known(k) for k in atom_keys]
        if None in atom_ids:
            atom_ids = list(map(self._atom_row, atom_keys))
        bonds = list(map(mol.GetBondWithIdx, range(mol.GetNumBonds())))
        stereo_none = BOND_STEREO[0]
        # the bond order as a float is a plain number for RDKit to hand over, the BondType
        # enum a Python object per call; the two only disagree for dative bonds (order 1.0)
        bond_type = Chem.Bond.GetBondType if has_dative_bonds else Chem.Bond.GetBondTypeAsDouble
        bond_keys = [
            (
                bond_type(b),
                b.GetIsConjugated(),
                b.IsInRing(),
                b.GetStereo() if has_bond_stereo else stereo_none,
            )
            for b in bonds
        ]
        known = self._bond_rows.get
        bond_ids = [known(k) for k in bond_keys]
        if None in bond_ids:
            bond_ids = list(map(self._bond_row, bond_keys))
        ends = [i for b in bonds for i in (b.GetBeginAtomIdx(), b.GetEndAtomIdx())]
        return atom_ids, bond_ids, ends

    def gather(
        self, atom_ids: Sequence[int], bond_ids: Sequence[int], ends: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows from :meth:`row_ids` (of one molecule, or of several concatenated with their
        ``ends`` shifted to the molecule's first atom) as ``(x, edge_index, edge_attr)``
        without random-walk columns. Each bond becomes the edges ``u->v`` and ``v->u``."""
        return gather_rows(self.tables(), atom_ids, bond_ids, ends)

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """The atom and bond feature rows seen so far (a view; rows are only ever added), which
        :func:`gather_rows` indexes with :meth:`row_ids` output."""
        return self._atom_table[: len(self._atom_rows)], self._bond_table[: len(self._bond_rows)]

    def arrays(
        self,
        mol: Chem.Mol,
        *,
        has_chirality: bool = True,
        has_bond_stereo: bool = True,
        has_isotopes: bool = True,
        has_dative_bonds: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features of a parsed molecule as numpy arrays ``(x, edge_index, edge_attr)`` (see
        :meth:`row_ids` for the flags)."""
        ids = self.row_ids(
            mol,
            has_chirality=has_chirality,
            has_bond_stereo=has_bond_stereo,
            has_isotopes=has_isotopes,
            has_dative_bonds=has_dative_bonds,
        )
        x, edge_index, edge_attr = self.gather(*ids)
        if self.random_walk_steps:
            x = np.hstack([x, random_walk_encoding(mol, self.random_walk_steps)])
        return x, edge_index, edge_attr

    def parse(self, smiles_or_mol: str | Chem.Mol) -> tuple[Chem.Mol, dict[str, bool]]:
        """:meth:`mol`, and the :meth:`row_ids` flags that the SMILES text allows."""
        mol = self.mol(smiles_or_mol)
        if isinstance(smiles_or_mol, str) and not self.add_hydrogens and not self.standardize:
            flags = {
                "has_chirality": "@" in smiles_or_mol,
                "has_bond_stereo": "/" in smiles_or_mol or "\\" in smiles_or_mol,
                "has_isotopes": _ISOTOPE.search(smiles_or_mol) is not None,
                "has_dative_bonds": "->" in smiles_or_mol or "<-" in smiles_or_mol,
            }
            return mol, flags
        return mol, {}

    def featurize(
        self, smiles_or_mol: str | Chem.Mol
    ) -> tuple[Chem.Mol, np.ndarray, np.ndarray, np.ndarray]:
        """Parse and featurize one molecule: ``(mol, x, edge_index, edge_attr)``."""
        mol, flags = self.parse(smiles_or_mol)
        return (mol, *self.arrays(mol, **flags))

    def __call__(self, smiles_or_mol: str | Chem.Mol, y: Sequence[float] | None = None) -> Data:
        """Featurize one molecule. Raises :class:`InvalidMoleculeError` for bad input."""
        _, x, edge_index, edge_attr = self.featurize(smiles_or_mol)
        data = Data(
            x=torch.from_numpy(x),
            edge_index=torch.from_numpy(edge_index),
            edge_attr=torch.from_numpy(edge_attr),
        )
        if y is not None:
            target = torch.as_tensor(y, dtype=torch.float32).reshape(1, -1)
            data.y = torch.nan_to_num(target, nan=0.0)
            data.y_mask = ~torch.isnan(target)
        return data

    def _atom_row(self, key: tuple) -> int:
        if key in self._atom_rows:
            return self._atom_rows[key]
        z, degree, charge, chiral, n_h, hybrid, aromatic, in_ring, isotope = key
        if isotope:
            mass = _PERIODIC_TABLE.GetMassForIsotope(z, isotope)
        else:
            mass = _PERIODIC_TABLE.GetAtomicWeight(z)
        if self.preset == "chemprop":
            features = [
                *_one_hot(z, self.elements),
                *_one_hot(degree, CHEMPROP_DEGREES),
                *_one_hot(charge, CHEMPROP_FORMAL_CHARGES),
                *_one_hot(chiral, CHEMPROP_CHIRAL_TAGS),
                *_one_hot(n_h, H_COUNTS),
                *_one_hot(hybrid, HYBRIDIZATIONS),
                float(aromatic),
                0.01 * mass,
            ]
        else:
            features = [
                *_one_hot(z, self.elements),
                *_one_hot(degree, DEGREES),
                *_one_hot(charge, FORMAL_CHARGES),
                *_one_hot(chiral, CIP_LABELS),
                *_one_hot(n_h, H_COUNTS),
                *_one_hot(hybrid, HYBRIDIZATIONS),
                float(aromatic),
                float(in_ring),
                mass / 100.0,
            ]
        self._atom_table = _append_row(self._atom_table, len(self._atom_rows), features)
        self._atom_rows[key] = len(self._atom_rows)
        return self._atom_rows[key]

    def _bond_row(self, key: tuple) -> int:
        if key in self._bond_rows:
            return self._bond_rows[key]
        bond_type, conjugated, in_ring, stereo = key
        bond_type = BOND_TYPE_OF_ORDER.get(bond_type, bond_type)
        bond_types = _one_hot(bond_type, BOND_TYPES)
        if self.preset == "chemprop":  # a leading no-bond flag, and no "other" bond type
            bond_types = [0.0, *bond_types[:-1]]
        features = [
            *bond_types,
            float(conjugated),
            float(in_ring),
            *_one_hot(stereo, BOND_STEREO),
        ]
        self._bond_table = _append_row(self._bond_table, len(self._bond_rows), features)
        self._bond_rows[key] = len(self._bond_rows)
        return self._bond_rows[key]


def gather_rows(
    tables: tuple[np.ndarray, np.ndarray],
    atom_ids: Sequence[int] | np.ndarray,
    bond_ids: Sequence[int] | np.ndarray,
    ends: Sequence[int] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, edge_index, edge_attr)`` from the rows of :meth:`MolGraphFeaturizer.row_ids` and the
    featurizer's :meth:`~MolGraphFeaturizer.tables`."""
    atom_table, bond_table = tables
    edge_index = directed_edges(ends)
    x = atom_table[np.asarray(atom_ids, dtype=np.int64)]
    edge_attr = bond_table[np.repeat(np.asarray(bond_ids, dtype=np.int64), 2)]
    return x, edge_index, edge_attr


def directed_edges(ends: Sequence[int] | np.ndarray) -> np.ndarray:
    """``edge_index`` ``[2, 2 * bonds]`` from bond ends ``[begin0, end0, begin1, ...]``: bond
    ``k`` becomes edge ``2k`` (``u->v``) and edge ``2k+1`` (``v->u``)."""
    pairs = np.asarray(ends, dtype=np.int64).reshape(-1, 2).T
    edge_index = np.empty((2, 2 * pairs.shape[1]), dtype=np.int64)
    edge_index[:, 0::2] = pairs
    edge_index[:, 1::2] = pairs[::-1]
    return edge_index


SPARSE_WALK_ATOMS = 128  # above this many atoms, random-walk powers are sparse products


def random_walk_encoding(mol: Chem.Mol, steps: int) -> np.ndarray:
    """``[num_atoms, steps]``: column ``k-1`` is the diagonal of ``P^k``, ``P = D^-1 A``.

    Large molecules take sparse products built from the bond list (``P^k`` only reaches
    atoms ``k`` bonds away; no dense ``n x n`` matrix is made): a 2,000-atom chain takes
    milliseconds instead of seconds of dense ones."""
    n = mol.GetNumAtoms()
    encoding = np.empty((n, steps), dtype=np.float32)
    if n > SPARSE_WALK_ATOMS:
        from scipy import sparse

        ends = np.array(
            [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()], dtype=np.int64
        ).reshape(-1, 2)
        rows, cols = np.concatenate([ends[:, 0], ends[:, 1]]), np.concatenate(ends[:, ::-1].T)
        adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
        walk = sparse.diags(inverse) @ adjacency
    else:
        adjacency = Chem.GetAdjacencyMatrix(mol).astype(np.float64)
        degree = adjacency.sum(axis=1, keepdims=True)
        walk = np.divide(adjacency, degree, out=np.zeros_like(adjacency), where=degree > 0)
    power = walk
    for k in range(steps):
        encoding[:, k] = power.diagonal()
        power = power @ walk
    return encoding


def _append_row(table: np.ndarray, index: int, row: list[float]) -> np.ndarray:
    if index >= len(table):
        table = np.concatenate([table, np.zeros_like(table)])
    table[index] = row
    return table
