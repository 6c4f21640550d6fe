"""Train/validation/test splits: random, scaffold, label-stratified and predefined.

All splitters return a :class:`Split` of row indices into the dataset they were given. Label
arrays ``y`` have shape ``(n, n_tasks)`` with NaN for a missing label. Stratification works on
per-task label categories: positive/negative for ``classification``, quantile bins for
``regression`` and the classes themselves for ``multiclass``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from molml.chem.parsing import parse_smiles
from molml.errors import DataError, InvalidMoleculeError

SPLIT_NAMES = ("train", "val", "test")
METHODS = ("random", "scaffold", "scaffold_stratified", "stratified", "predefined")
TASK_TYPES = ("regression", "classification", "multiclass")
N_REGRESSION_BINS = 5

_PREDEFINED_VALUES = {
    "train": 0,
    "val": 1,
    "valid": 1,
    "validation": 1,
    "test": 2,
    "0": 0,
    "1": 1,
    "2": 2,
    "0.0": 0,
    "1.0": 1,
    "2.0": 2,
}


@dataclass
class Split:
    """Row indices (int64) of the train, validation and test parts of one dataset."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def __post_init__(self) -> None:
        self.train = np.asarray(self.train, dtype=np.int64)
        self.val = np.asarray(self.val, dtype=np.int64)
        self.test = np.asarray(self.test, dtype=np.int64)

    def parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The index arrays in ``SPLIT_NAMES`` order."""
        return self.train, self.val, self.test

    def named_parts(self) -> dict[str, np.ndarray]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def to_json(self, path: str | os.PathLike) -> None:
        """Write chemprop-2's splits-file format: a list holding one train/val/test dict."""
        record = {name: part.tolist() for name, part in self.named_parts().items()}
        with open(path, "w", encoding="utf-8") as fh:
            json.dump([record], fh)

    @classmethod
    def from_json(cls, path: str | os.PathLike, index: int = 0) -> Split:
        """Read entry ``index`` of a chemprop-style splits file (a list of dicts, or one dict).

        Index lists may hold integers or chemprop's range strings such as ``"0-9,12"``.
        """
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError as exc:
            raise DataError(f"split file {path}: not found") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"split file {path}: cannot read JSON ({exc})") from exc
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not data:
            raise DataError(f"split file {path}: expected a non-empty list of train/val/test dicts")
        if not -len(data) <= index < len(data):
            raise DataError(f"split file {path}: has {len(data)} split(s), no index {index}")
        record = data[index]
        if not isinstance(record, dict):
            raise DataError(f"split file {path}: entry {index} is not a dict")
        missing = [name for name in SPLIT_NAMES if name not in record]
        if missing:
            raise DataError(f"split file {path}: entry {index} lacks key(s) {missing}")
        parts = [
            _parse_indices(record[name], f"split file {path}, '{name}'") for name in SPLIT_NAMES
        ]
        split = cls(*parts)
        split._check_disjoint(f"split file {path}")
        return split

    def validate(self, n: int) -> None:
        """Check that all indices lie in ``[0, n)`` and that no row is used twice."""
        for name, part in self.named_parts().items():
            if part.ndim != 1:
                raise DataError(f"split '{name}' must be a 1-D index array")
            bad = part[(part < 0) | (part >= n)]
            if bad.size:
                raise DataError(
                    f"split '{name}' has {bad.size} index(es) outside [0, {n}), e.g. {int(bad[0])}"
                )
        self._check_disjoint("split")

    def _check_disjoint(self, where: str) -> None:
        for name, part in self.named_parts().items():
            values, counts = np.unique(part, return_counts=True)
            if (counts > 1).any():
                raise DataError(f"{where}: index {int(values[counts > 1][0])} repeated in '{name}'")
        for a in range(3):
            for b in range(a + 1, 3):
                common = np.intersect1d(self.parts()[a], self.parts()[b])
                if common.size:
                    raise DataError(
                        f"{where}: {common.size} index(es) in both '{SPLIT_NAMES[a]}' and "
                        f"'{SPLIT_NAMES[b]}', e.g. {int(common[0])}"
                    )


def _parse_indices(value: object, where: str) -> np.ndarray:
    """Index list from JSON: a list of non-negative ints or a range string like ``"0-4,7"``."""
    if isinstance(value, str):
        out: list[int] = []
        for chunk in filter(None, (c.strip() for c in value.split(","))):
            lo, sep, hi = chunk.partition("-")
            hi = hi if sep else lo
            if not (lo.strip().isdigit() and hi.strip().isdigit() and int(lo) <= int(hi)):
                raise DataError(f"{where}: bad index range {chunk!r}")
            out.extend(range(int(lo), int(hi) + 1))
        return np.asarray(out, dtype=np.int64)
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list of indices, got {type(value).__name__}")
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise DataError(f"{where}: indices must be non-negative integers, got {bad[:5]!r}")
    return np.asarray(value, dtype=np.int64)


def _plain(mol: Chem.Mol) -> Chem.Mol:
    """``mol`` without atom map numbers, isotope labels and explicit hydrogen atoms (a copy
    when it has any): the molecule as splits and duplicate checks compare it."""
    if any(atom.GetAtomMapNum() or atom.GetIsotope() for atom in mol.GetAtoms()):
        mol = Chem.Mol(mol)
        for atom in mol.GetAtoms():
            atom.SetAtomMapNum(0)
            atom.SetIsotope(0)
    if mol.GetNumAtoms() != mol.GetNumHeavyAtoms():
        mol = Chem.RemoveHs(mol, sanitize=False)
        Chem.FastFindRings(mol)  # as parse_smiles finds them; the scaffold needs ring info
    return mol


def murcko_scaffold(smiles_or_mol: str | Chem.Mol) -> str:
    """Bemis-Murcko scaffold SMILES without chirality, atom map numbers or isotope labels;
    ``""`` for acyclic molecules.

    Raises :class:`InvalidMoleculeError` for an unparsable SMILES.
    """
    mol = smiles_or_mol if isinstance(smiles_or_mol, Chem.Mol) else parse_smiles(smiles_or_mol)
    mol = _plain(mol)
    components = len(Chem.GetMolFrags(mol))
    if mol.GetNumBonds() == mol.GetNumAtoms() - components:  # a forest: no ring, no scaffold
        return ""  # (RDKit's fragmenter takes seconds to say so for a long chain)
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def training_part_fingerprint(canonical_smiles: Iterable[str]) -> str:
    """SHA-256 of a training part's sorted canonical SMILES (:func:`split_keys`' first key),
    which checkpoints record: the same data and split give the same fingerprint."""
    return hashlib.sha256("\n".join(sorted(map(str, canonical_smiles))).encode()).hexdigest()


def split_keys(mol: Chem.Mol) -> tuple[str, str]:
    """Canonical SMILES and Bemis-Murcko scaffold by which splits group one row's molecule.

    Graph models and baselines both key their splits with this, on the row's molecule as
    :func:`~molml.chem.parsing.parse_smiles` gives it: standardized when the data is
    (``standardize_mol=True``, the graph featurizer's ``standardize``), so a salt or mixture
    falls in the same scaffold group for both. Explicit hydrogens (a featurizer's
    ``add_hydrogens``) are ignored, and so are atom map numbers and isotope labels: a
    molecule written with them (``[CH3:1]CO``, ``[2H]OC``) is the same molecule as without
    them, so copies of it stay in one part of a split and count as duplicates. An acyclic
    molecule has the scaffold ``""``; a scaffold RDKit cannot fragment falls back to the
    canonical SMILES.
    """
    mol = _plain(mol)
    canonical = Chem.MolToSmiles(mol)
    try:
        return canonical, murcko_scaffold(mol)
    except Exception:  # odd valences can break the scaffold fragmenter; keep the molecule
        return canonical, canonical


def _parse_all(smiles: Sequence[str]) -> list[Chem.Mol]:
    """Parse every SMILES, raising :class:`DataError` that names the first bad row."""
    mols = []
    for row, smi in enumerate(smiles):
        try:
            mols.append(parse_smiles(smi))
        except InvalidMoleculeError as exc:
            raise DataError(f"row {row}: {exc}") from exc
    return mols


def _scaffolds_from_smiles(smiles: Sequence[str]) -> list[str]:
    return [murcko_scaffold(mol) for mol in _parse_all(smiles)]


def _factorize(values: Sequence, what: str) -> tuple[np.ndarray, int]:
    """Integer group id per row (first-appearance order) and the number of groups."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    missing = np.flatnonzero(codes < 0)
    if missing.size:
        raise DataError(f"{what} missing at row(s) {missing[:10].tolist()}")
    return codes.astype(np.int64), len(uniques)


def _check_sizes(sizes: Sequence[float]) -> np.ndarray:
    arr = np.asarray(sizes, dtype=float)
    if arr.shape != (3,) or not np.isfinite(arr).all():
        raise DataError(
            f"split_sizes must be three finite fractions (train, val, test), got {sizes!r}"
        )
    if (arr < 0).any() or arr[0] <= 0 or abs(arr.sum() - 1.0) > 1e-6:
        raise DataError(f"split_sizes must be >= 0 with train > 0 and sum to 1, got {sizes!r}")
    return arr


def _target_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``n``, proportional to ``fractions`` (largest remainder)."""
    raw = fractions / fractions.sum() * n
    counts = np.floor(raw + 1e-9).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


def _as_labels(y: np.ndarray | Sequence, n: int, task_type: str) -> np.ndarray:
    if task_type not in TASK_TYPES:
        raise DataError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
    arr = np.asarray(y, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise DataError(f"y must have shape (n={n}, n_tasks), got {np.shape(y)}")
    if task_type == "classification":
        labelled = arr[~np.isnan(arr)]
        if not np.isin(labelled, (0.0, 1.0)).all():
            raise DataError("classification labels must be 0, 1 or missing (NaN)")
    return arr


def _label_codes(y: np.ndarray, task_type: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-task category code of each row (-1 = missing) and each task's category values.

    Categories are 0/1 for classification, the classes for multiclass, and quantile bins for
    regression (the returned values are then the inner bin edges).
    """
    codes = np.full(y.shape, -1, dtype=np.int64)
    categories = []
    for t in range(y.shape[1]):
        col = y[:, t]
        known = ~np.isnan(col)
        if task_type == "classification":
            cats = np.array([0.0, 1.0])
            codes[known, t] = col[known].astype(np.int64)
        elif task_type == "multiclass":
            cats = np.unique(col[known])
            codes[known, t] = np.searchsorted(cats, col[known])
        else:
            qs = np.linspace(0, 1, N_REGRESSION_BINS + 1)[1:-1]
            cats = np.quantile(col[known], qs) if known.any() else np.zeros(len(qs))
            codes[known, t] = np.searchsorted(cats, col[known], side="right")
        categories.append(cats)
    return codes, categories


def _n_categories(task_type: str, categories: list[np.ndarray]) -> list[int]:
    return [len(c) + 1 if task_type == "regression" else len(c) for c in categories]


def _label_counts(
    groups: np.ndarray, n_groups: int, codes: np.ndarray, n_cats: list[int]
) -> np.ndarray:
    """``(n_groups, sum(n_cats))`` count of each task's label category within each group.

    Rows with a negative group id or a missing label are skipped.
    """
    blocks = []
    for t, k in enumerate(n_cats):
        keep = (codes[:, t] >= 0) & (groups >= 0)
        flat = groups[keep] * k + codes[keep, t]
        blocks.append(np.bincount(flat, minlength=n_groups * k).reshape(n_groups, k))
    if not blocks:
        return np.zeros((n_groups, 0))
    return np.concatenate(blocks, axis=1).astype(float)


def _assign_groups(
    profile: np.ndarray, group_sizes: np.ndarray, targets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Greedy stratified assignment of whole groups to splits; returns each group's split.

    ``profile[g]`` holds group ``g``'s label-category counts. Groups are taken largest first
    (ties in random order). Each split's final counts are projected as its current counts plus
    its remaining room filled at the average rate of the still unassigned groups; a group goes
    to the split (among those it fits in) where it most lowers the chi-square-like distance of
    that projection from the split's share of the whole set. Equal costs (e.g. no labels)
    favour the emptiest split. A group that fits nowhere goes to the split with the most room,
    so sizes end within one group of ``targets``.
    """
    counts = profile.astype(float)
    pool = counts.sum(axis=0)
    pool_size = int(group_sizes.sum())
    want = (targets / targets.sum())[:, None] * pool[None, :]
    weight = 1.0 / np.maximum(want, 1.0)
    have = np.zeros_like(want)
    filled = np.zeros(len(targets), dtype=np.int64)
    perm = rng.permutation(len(group_sizes))
    order = perm[np.argsort(-group_sizes[perm], kind="stable")]
    out = np.empty(len(group_sizes), dtype=np.int64)
    for g in order:
        c, k = counts[g], int(group_sizes[g])
        pool -= c
        pool_size -= k
        room = targets - filled
        fits = room >= k
        if fits.any():
            rate = pool / pool_size if pool_size > 0 else np.zeros_like(pool)
            change = c - k * rate
            excess = have + room[:, None] * rate - want
            cost = np.where(fits, ((2.0 * excess + change) * change * weight).sum(axis=1), np.inf)
            s = int(np.lexsort((-room / np.maximum(targets, 1), cost))[0])
        else:
            s = int(np.argmax(room))
        have[s] += c
        filled[s] += k
        out[g] = s
    return out


def _balanced_scaffold_assignment(
    group_sizes: np.ndarray, targets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Chemprop's balanced scaffold split: big groups first, then small ones, each shuffled."""
    halves = targets[1:][targets[1:] > 0] / 2
    big = group_sizes > halves.min() if halves.size else np.zeros(len(group_sizes), bool)
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(big)), rng.permutation(np.flatnonzero(~big))]
    )
    out = np.empty(len(group_sizes), dtype=np.int64)
    filled = np.zeros(3, dtype=np.int64)
    for g in order:
        k = group_sizes[g]
        fits = np.flatnonzero(filled + k <= targets)
        s = int(fits[0]) if fits.size else int(np.argmax(targets - filled))
        filled[s] += k
        out[g] = s
    return out


def _split_from_membership(membership: np.ndarray) -> Split:
    return Split(*(np.flatnonzero(membership == s) for s in range(3)))


def _resolve_n(n: int | None, **sources: Sequence | np.ndarray | None) -> int | None:
    lengths = {name: len(v) for name, v in sources.items() if v is not None}
    if n is not None:
        lengths["n"] = int(n)
    if len(set(lengths.values())) > 1:
        raise DataError(f"inconsistent number of rows: {lengths}")
    return next(iter(lengths.values()), None)


def _membership(column: Sequence) -> pd.Series:
    """Each split-column value's part (0/1/2), NaN where it names none."""
    text = pd.Series(list(column), dtype=object).astype(str).str.strip().str.lower()
    return text.map(_PREDEFINED_VALUES)


def unknown_split_values(column: Sequence) -> np.ndarray:
    """Positions of the values of a split column that name no part (train/val/valid/validation/
    test or 0/1/2, any case)."""
    return np.flatnonzero(_membership(column).isna().to_numpy())


def _predefined_from_column(column: Sequence) -> Split:
    values = list(column)
    membership = _membership(values)
    unknown = np.flatnonzero(membership.isna().to_numpy())
    if unknown.size:
        shown = ", ".join(f"row {r}: {values[r]!r}" for r in unknown[:10])
        more = f" (and {unknown.size - 10} more)" if unknown.size > 10 else ""
        raise DataError(
            f"split column has {unknown.size} unknown value(s); expected train/val/valid/"
            f"validation/test or 0/1/2. Rows are 0-based: {shown}{more}"
        )
    return _split_from_membership(membership.to_numpy(dtype=np.int64))


def make_split(
    method: str,
    *,
    smiles: Sequence[str] | None = None,
    y: np.ndarray | None = None,
    task_type: str = "regression",
    sizes: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    scaffolds: Sequence[str] | None = None,
    split_column_values: Sequence | None = None,
    split_file: str | None = None,
    n: int | None = None,
) -> Split:
    """Split ``n`` rows into train/val/test with one of :data:`METHODS`.

    ``random`` permutes rows; ``scaffold`` is chemprop's balanced Bemis-Murcko split;
    ``scaffold_stratified`` assigns whole scaffold groups so each part's label distribution
    follows the whole set's; ``stratified`` does the same with single molecules; ``predefined``
    reads ``split_column_values`` (train/val/test or 0/1/2) or a JSON ``split_file``.
    Scaffolds are computed from ``smiles`` unless given. Same seed, same split.
    """
    if method not in METHODS:
        raise DataError(f"unknown split method {method!r}; choose one of {METHODS}")
    n = _resolve_n(
        n, smiles=smiles, y=y, scaffolds=scaffolds, split_column_values=split_column_values
    )
    if method == "predefined":
        if (split_column_values is None) == (split_file is None):
            raise DataError(
                "a predefined split needs exactly one of data.split_column (a column of split "
                "names) or data.split_file (a split file)"
            )
        if split_column_values is not None:
            split = _predefined_from_column(split_column_values)
        else:
            split = Split.from_json(split_file)
        if n is not None:
            split.validate(n)
        return split
    if n is None:
        raise DataError(f"{method} split needs smiles, y, scaffolds or n to know the row count")
    targets = _target_counts(n, _check_sizes(sizes))
    rng = np.random.default_rng(seed)
    if method == "random":
        membership = np.empty(n, dtype=np.int64)
        membership[rng.permutation(n)] = np.repeat(np.arange(3), targets)
        return _split_from_membership(membership)

    if method in ("scaffold", "scaffold_stratified"):
        if scaffolds is None:
            if smiles is None:
                raise DataError(f"{method} split needs smiles or precomputed scaffolds")
            scaffolds = _scaffolds_from_smiles(smiles)
        groups, n_groups = _factorize(scaffolds, "scaffold")
    else:
        groups, n_groups = np.arange(n), n
    group_sizes = np.bincount(groups, minlength=n_groups)
    if method == "scaffold":
        return _split_from_membership(
            _balanced_scaffold_assignment(group_sizes, targets, rng)[groups]
        )
    if y is None:
        raise DataError(f"{method} split needs labels y")
    labels = _as_labels(y, n, task_type)
    codes, categories = _label_codes(labels, task_type)
    profile = _label_counts(groups, n_groups, codes, _n_categories(task_type, categories))
    return _split_from_membership(_assign_groups(profile, group_sizes, targets, rng)[groups])


def kfold_splits(
    *,
    smiles: Sequence[str] | None = None,
    scaffolds: Sequence[str] | None = None,
    y: np.ndarray | None = None,
    task_type: str = "regression",
    n_folds: int = 5,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> list[Split]:
    """Scaffold-grouped k-fold: fold ``i`` tests on one fold of scaffold groups.

    Folds are balanced in size (and, when ``y`` is given, label-stratified). Each fold's
    validation set (``val_fraction`` of all rows) is drawn by whole groups from the other
    folds. Every molecule is in exactly one test fold; no scaffold straddles two parts.
    """
    if scaffolds is None:
        if smiles is None:
            raise DataError("kfold_splits needs smiles or precomputed scaffolds")
        scaffolds = _scaffolds_from_smiles(smiles)
    n = _resolve_n(None, smiles=smiles, scaffolds=scaffolds, y=y)
    groups, n_groups = _factorize(scaffolds, "scaffold")
    if not 2 <= n_folds <= n_groups:
        raise DataError(f"n_folds must be in [2, {n_groups}] (number of scaffolds), got {n_folds}")
    if not 0 <= val_fraction < 1 - 1 / n_folds:
        raise DataError(f"val_fraction must be in [0, {1 - 1 / n_folds:.3f}), got {val_fraction}")
    if y is None:
        profile = np.zeros((n_groups, 0))
    else:
        codes, categories = _label_codes(_as_labels(y, n, task_type), task_type)
        profile = _label_counts(groups, n_groups, codes, _n_categories(task_type, categories))
    group_sizes = np.bincount(groups, minlength=n_groups)
    rng = np.random.default_rng(seed)
    fold_of_group = _assign_groups(profile, group_sizes, _target_counts(n, np.ones(n_folds)), rng)
    n_val = int(round(val_fraction * n))
    splits = []
    for fold in range(n_folds):
        rest = np.flatnonzero(fold_of_group != fold)
        n_rest = int(group_sizes[rest].sum())
        targets = np.array([max(n_rest - n_val, 0), min(n_val, n_rest)])
        part_of_group = np.full(n_groups, 2, dtype=np.int64)
        part_of_group[rest] = _assign_groups(profile[rest], group_sizes[rest], targets, rng)
        splits.append(_split_from_membership(part_of_group[groups]))
    return splits


def _presence(ids: np.ndarray, n_ids: int, membership: np.ndarray) -> dict[str, int]:
    """How many ids occur in more than one split, overall and per pair of splits."""
    seen = np.zeros((n_ids, 3), dtype=bool)
    assigned = membership >= 0
    seen[ids[assigned], membership[assigned]] = True
    out = {"total": int((seen.sum(axis=1) > 1).sum())}
    for a, b in ((0, 1), (0, 2), (1, 2)):
        out[f"{SPLIT_NAMES[a]}-{SPLIT_NAMES[b]}"] = int((seen[:, a] & seen[:, b]).sum())
    return out


def _num(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _task_stats(col: np.ndarray, task_type: str, categories: np.ndarray) -> dict:
    known = col[~np.isnan(col)]
    if task_type == "regression":
        if not known.size:
            return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
        return {
            "count": int(known.size),
            "mean": _num(known.mean()),
            "std": _num(known.std()),
            "min": _num(known.min()),
            "max": _num(known.max()),
        }
    if task_type == "classification":
        n_pos = int((known == 1).sum())
        rate = n_pos / known.size if known.size else None
        return {"n_labelled": int(known.size), "n_positive": n_pos, "positive_rate": rate}
    counts = np.bincount(np.searchsorted(categories, known), minlength=len(categories))
    names = [str(int(c)) if float(c).is_integer() else str(c) for c in categories]
    return {"n_labelled": int(known.size), "counts": dict(zip(names, counts.tolist(), strict=True))}


def _distribution_distance(
    counts: np.ndarray, whole: np.ndarray, n_cats: list[int]
) -> float | None:
    """Mean over labelled tasks of the mean absolute difference of category fractions."""
    per_task = []
    start = 0
    for k in n_cats:
        part, ref = counts[start : start + k], whole[start : start + k]
        start += k
        if part.sum() > 0 and ref.sum() > 0:
            per_task.append(np.abs(part / part.sum() - ref / ref.sum()).mean())
    return float(np.mean(per_task)) if per_task else None


def split_report(
    split: Split,
    *,
    smiles: Sequence[str],
    y: np.ndarray | None,
    task_names: Sequence[str],
    task_type: str,
    scaffolds: Sequence[str] | None = None,
    canonical_smiles: Sequence[str] | None = None,
) -> dict:
    """JSON-serialisable summary of a split: sizes, label statistics, leakage and balance.

    ``label_distribution_distance`` compares each part with the whole set: the absolute
    positive-rate difference (classification), the mean absolute difference of quintile-bin
    fractions (regression) or of class fractions (multiclass), averaged over tasks.
    ``shared_scaffolds`` counts the acyclic ``""`` scaffold like any other.
    """
    n = len(smiles)
    split.validate(n)
    membership = np.full(n, -1, dtype=np.int64)
    for s, part in enumerate(split.parts()):
        membership[part] = s
    sizes = [len(part) for part in split.parts()]
    report: dict = {
        "n_molecules": n,
        "n_unassigned": int((membership < 0).sum()),
        "sizes": dict(zip(SPLIT_NAMES, sizes, strict=True)),
        "fractions": {
            name: size / n if n else 0.0 for name, size in zip(SPLIT_NAMES, sizes, strict=True)
        },
        "task_type": task_type,
    }
    if y is not None:
        labels = _as_labels(y, n, task_type)
        if len(task_names) != labels.shape[1]:
            raise DataError(f"{len(task_names)} task names for {labels.shape[1]} label columns")
        codes, categories = _label_codes(labels, task_type)
        rows = {"all": np.arange(n), **split.named_parts()}
        report["labels"] = {
            name: {
                task: _task_stats(labels[idx, t], task_type, categories[t])
                for t, task in enumerate(task_names)
            }
            for name, idx in rows.items()
        }
        n_cats = _n_categories(task_type, categories)
        per_split = _label_counts(membership, 3, codes, n_cats)
        whole = _label_counts(np.zeros(n, dtype=np.int64), 1, codes, n_cats)[0]
        report["label_distribution_distance"] = {
            name: _distribution_distance(per_split[s], whole, n_cats)
            for s, name in enumerate(SPLIT_NAMES)
        }

    keys = (
        [split_keys(mol) for mol in _parse_all(smiles)]
        if scaffolds is None or canonical_smiles is None
        else []
    )
    if scaffolds is None:
        scaffolds = [scaffold for _, scaffold in keys]
    if len(scaffolds) != n:
        raise DataError(f"{len(scaffolds)} scaffolds for {n} molecules")
    scaffold_ids, n_scaffolds = _factorize(scaffolds, "scaffold")
    report["n_scaffolds"] = {
        name: int(np.unique(scaffold_ids[part]).size) for name, part in split.named_parts().items()
    }
    report["shared_scaffolds"] = _presence(scaffold_ids, n_scaffolds, membership)
    acyclic = np.asarray(scaffolds, dtype=object) == ""
    report["acyclic_molecules"] = {
        name: int(acyclic[part].sum()) for name, part in split.named_parts().items()
    }

    if canonical_smiles is None:
        canonical_smiles = [canonical for canonical, _ in keys]
    if len(canonical_smiles) != n:
        raise DataError(f"{len(canonical_smiles)} canonical SMILES for {n} molecules")
    mol_ids, n_unique = _factorize(canonical_smiles, "canonical SMILES")
    report["duplicate_molecules_across_splits"] = _presence(mol_ids, n_unique, membership)
    return report
