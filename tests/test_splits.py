"""Tests of molml.data.splits: their mechanics on RDKit's NCI molecules (runs anywhere), and
their quality on real MoleculeNet sets (bbbp, esol, tox21), which skip when those are absent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import logp_classes, nci_smiles, require_dataset
from rdkit import Chem
from rdkit.Chem import Crippen, rdMolDescriptors

from molml.chem.parsing import parse_smiles
from molml.data.splits import (
    Split,
    kfold_splits,
    make_split,
    murcko_scaffold,
    split_keys,
    split_report,
)
from molml.errors import DataError, InvalidMoleculeError

SIZES = (0.8, 0.1, 0.1)
SEEDS = (0, 1, 2)
MOLECULENET = {"bbbp": "classification", "esol": "regression", "tox21": "classification"}
N_GENERATED = 1000


@dataclass
class Dataset:
    name: str
    smiles: list[str]
    y: np.ndarray
    task_names: list[str]
    task_type: str
    scaffolds: list[str]
    canonical: list[str]


def _load(name: str, task_type: str) -> Dataset:
    """Read a MoleculeNet CSV, drop SMILES RDKit cannot parse, compute scaffolds once."""
    frame = pd.read_csv(require_dataset(name))
    tasks = [c for c in frame.columns if c != "smiles"]
    mols = [Chem.MolFromSmiles(s) for s in frame["smiles"]]
    keep = [i for i, mol in enumerate(mols) if mol is not None]
    return Dataset(
        name=name,
        smiles=frame["smiles"].iloc[keep].tolist(),
        y=frame[tasks].iloc[keep].to_numpy(dtype=float),
        task_names=tasks,
        task_type=task_type,
        scaffolds=[murcko_scaffold(mols[i]) for i in keep],
        canonical=[Chem.MolToSmiles(mols[i]) for i in keep],
    )


def _generated(name: str) -> Dataset:
    """1000 NCI molecules: ``nci_logp`` (Crippen logP, regression) or ``nci_binary`` (two binary
    tasks: logP > 3, and TPSA > 60 with every 7th label missing)."""
    smiles = nci_smiles(N_GENERATED)
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    logp = np.array([Crippen.MolLogP(m) for m in mols])
    if name == "nci_logp":
        y, tasks, task_type = logp[:, None], ["logp"], "regression"
    else:
        polar = (np.array([rdMolDescriptors.CalcTPSA(m) for m in mols]) > 60).astype(float)
        polar[::7] = np.nan
        y = np.stack([(logp > 3).astype(float), polar], axis=1)
        tasks, task_type = ["lipophilic", "polar"], "classification"
    return Dataset(
        name=name,
        smiles=smiles,
        y=y,
        task_names=tasks,
        task_type=task_type,
        scaffolds=[murcko_scaffold(m) for m in mols],
        canonical=[Chem.MolToSmiles(m) for m in mols],
    )


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    """``datasets[name]``: a generated set (``nci_logp``, ``nci_binary``), or a MoleculeNet one,
    loaded on first use; a missing MoleculeNet file skips the test."""

    class Cache(dict):
        def __missing__(self, name: str) -> Dataset:
            self[name] = (
                _generated(name) if name.startswith("nci") else _load(name, MOLECULENET[name])
            )
            return self[name]

    return Cache()


def _split(ds: Dataset, method: str, seed: int = 0, sizes: tuple[float, ...] = SIZES) -> Split:
    return make_split(
        method,
        smiles=ds.smiles,
        y=ds.y,
        task_type=ds.task_type,
        scaffolds=ds.scaffolds,
        sizes=sizes,
        seed=seed,
    )


def _report(ds: Dataset, split: Split) -> dict:
    return split_report(
        split,
        smiles=ds.smiles,
        y=ds.y,
        task_names=ds.task_names,
        task_type=ds.task_type,
        scaffolds=ds.scaffolds,
        canonical_smiles=ds.canonical,
    )


def _assert_partition(split: Split, n: int) -> None:
    every = np.concatenate(split.parts())
    assert np.array_equal(np.sort(every), np.arange(n))
    assert all(part.dtype == np.int64 for part in split.parts())


# --- scaffolds -------------------------------------------------------------------------------


def test_murcko_scaffold() -> None:
    assert murcko_scaffold("OCCc1ccccc1") == "c1ccccc1"
    assert murcko_scaffold("CCO") == ""
    assert murcko_scaffold(Chem.MolFromSmiles("C[C@H](N)c1ccncc1")) == "c1ccncc1"
    assert murcko_scaffold("C[C@@H]1CC[C@H](C)N1C1CC1") == murcko_scaffold("CC1CCC(C)N1C1CC1")
    for bad in ("C1CC", None):
        with pytest.raises(InvalidMoleculeError):
            murcko_scaffold(bad)


def test_atom_maps_and_isotope_labels_do_not_make_another_molecule() -> None:
    """The featurizer ignores atom map numbers, so a molecule written with them (or with
    isotope labels, deuterium included) is keyed as the molecule itself: a scaffold split keeps
    its copies in one part, and the split report counts them as duplicates."""
    assert split_keys(parse_smiles("[CH3:1][CH2:2][OH:3]")) == split_keys(parse_smiles("CCO"))
    assert split_keys(parse_smiles("[2H]c1c([2H])cc(cc1)[13CH3]")) == ("Cc1ccccc1", "c1ccccc1")
    assert murcko_scaffold("C[c:3]1ccccc1") == "c1ccccc1"
    plain = nci_smiles(80)
    mapped = []
    for smi in plain:
        mol = Chem.MolFromSmiles(smi)
        for atom in mol.GetAtoms():
            atom.SetAtomMapNum(atom.GetIdx() + 1)
        mapped.append(Chem.MolToSmiles(mol))
    smiles = plain + mapped
    split = make_split("scaffold", smiles=smiles, seed=0)
    part_of = np.empty(len(smiles), dtype=int)
    for k, part in enumerate(split.parts()):
        part_of[part] = k
    np.testing.assert_array_equal(part_of[:80], part_of[80:])
    report = split_report(split, smiles=smiles, y=None, task_names=[], task_type="regression")
    assert report["shared_scaffolds"]["total"] == 0
    assert report["duplicate_molecules_across_splits"]["total"] == 0
    assert sum(report["n_scaffolds"].values()) < 80  # the copies share their scaffolds


@pytest.mark.parametrize("name", ["nci_logp", "nci_binary", "bbbp", "esol", "tox21"])
@pytest.mark.parametrize("method", ["scaffold", "scaffold_stratified"])
def test_scaffold_splits_share_no_scaffold(datasets, name: str, method: str) -> None:
    ds = datasets[name]
    n = len(ds.smiles)
    split = _split(ds, method, seed=1)
    _assert_partition(split, n)
    scaffolds = np.asarray(ds.scaffolds, dtype=object)
    sets = [set(scaffolds[part]) for part in split.parts()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    report = _report(ds, split)
    assert report["shared_scaffolds"] == {
        "total": 0,
        "train-val": 0,
        "train-test": 0,
        "val-test": 0,
    }
    # sizes end within one scaffold group (of that part) of the requested counts
    group_size = pd.Series(ds.scaffolds).value_counts()
    for part, fraction in zip(split.parts(), SIZES, strict=True):
        largest = group_size[list(set(scaffolds[part]))].max()
        assert abs(len(part) - fraction * n) <= largest


@pytest.mark.parametrize("method", ["random", "scaffold", "scaffold_stratified", "stratified"])
def test_seed_reproducible(datasets, method: str) -> None:
    ds = datasets["nci_binary"]
    first, again, other = (_split(ds, method, seed=s) for s in (3, 3, 4))
    for a, b in zip(first.parts(), again.parts(), strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(first.test, other.test)


def test_scaffold_split_without_precomputed_scaffolds(datasets) -> None:
    ds = datasets["nci_logp"]
    from_smiles = make_split("scaffold", smiles=ds.smiles, seed=5)
    precomputed = make_split("scaffold", scaffolds=ds.scaffolds, seed=5)
    assert np.array_equal(from_smiles.test, precomputed.test)


def _mean_distance(ds: Dataset, method: str) -> float:
    values = []
    for seed in SEEDS:
        distance = _report(ds, _split(ds, method, seed=seed))["label_distribution_distance"]
        values += [distance["val"], distance["test"]]
    return float(np.mean(values))


@pytest.mark.parametrize("name", ["bbbp", "esol", "tox21"])
def test_scaffold_stratified_matches_labels_better(datasets, name: str) -> None:
    ds = datasets[name]
    plain = _mean_distance(ds, "scaffold")
    stratified = _mean_distance(ds, "scaffold_stratified")
    assert stratified < 0.5 * plain, (plain, stratified)


def test_scaffold_stratified_positive_rates(datasets) -> None:
    ds = datasets["bbbp"]
    report = _report(ds, _split(ds, "scaffold_stratified"))
    whole = report["labels"]["all"]["p_np"]["positive_rate"]
    for name in ("train", "val", "test"):
        assert report["labels"][name]["p_np"]["positive_rate"] == pytest.approx(whole, abs=0.01)


def test_stratified_random(datasets) -> None:
    ds = datasets["tox21"]
    n = len(ds.smiles)
    split = _split(ds, "stratified", seed=7)
    _assert_partition(split, n)
    assert all(abs(len(p) - f * n) < 1 for p, f in zip(split.parts(), SIZES, strict=True))
    labels = _report(ds, split)["labels"]
    for task in ds.task_names:  # positive rates among labelled molecules (missing ignored)
        whole = labels["all"][task]["positive_rate"]
        for name in ("train", "val", "test"):
            assert labels[name][task]["positive_rate"] == pytest.approx(whole, abs=0.015)
    assert _mean_distance(ds, "stratified") < 0.5 * _mean_distance(ds, "random")


def test_stratified_multiclass(datasets) -> None:
    ds = datasets["nci_logp"]
    classes = logp_classes(ds.y[:, 0])[:, None]
    split = make_split("stratified", y=classes, task_type="multiclass", seed=0)
    whole = np.bincount(classes[:, 0].astype(int))
    for part, fraction in zip(split.parts(), SIZES, strict=True):
        counts = np.bincount(classes[part, 0].astype(int), minlength=3)
        assert np.all(np.abs(counts - fraction * whole) <= 2)
    report = split_report(
        split,
        smiles=ds.smiles,
        y=classes,
        task_names=["bin"],
        task_type="multiclass",
        scaffolds=ds.scaffolds,
        canonical_smiles=ds.canonical,
    )
    assert report["labels"]["all"]["bin"]["counts"] == {str(c): int(k) for c, k in enumerate(whole)}


# --- predefined ------------------------------------------------------------------------------


def test_predefined_from_column() -> None:
    values = ["train", "Valid", " TEST ", 0, 1, 2, "validation", "val", 0.0, "2"]
    split = make_split("predefined", split_column_values=values)
    assert split.train.tolist() == [0, 3, 8]
    assert split.val.tolist() == [1, 4, 6, 7]
    assert split.test.tolist() == [2, 5, 9]


def test_predefined_bad_values() -> None:
    column = pd.Series(["train", "foo", "test", 3, None], index=[10, 11, 12, 13, 14])
    with pytest.raises(DataError, match=r"row 1: 'foo'.*row 3: 3") as info:
        make_split("predefined", split_column_values=column)
    assert "row 4: None" in str(info.value)
    assert "3 unknown" in str(info.value)


def test_json_round_trip(tmp_path: Path, datasets) -> None:
    ds = datasets["nci_binary"]
    split = _split(ds, "scaffold", seed=2)
    path = tmp_path / "splits.json"
    split.to_json(path)
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == 1
    assert sorted(data[0]) == ["test", "train", "val"]
    assert data[0]["test"] == split.test.tolist()
    for loaded in (
        Split.from_json(path),
        make_split("predefined", split_file=str(path), smiles=ds.smiles),
    ):
        for a, b in zip(split.parts(), loaded.parts(), strict=True):
            assert np.array_equal(a, b) and b.dtype == np.int64


def test_from_json_variants_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "many.json"
    path.write_text(
        json.dumps(
            [
                {"train": [0, 1], "val": [2], "test": [3]},
                {"train": "0-2,5", "val": [3], "test": [4]},
            ]
        )
    )
    assert Split.from_json(path, index=1).train.tolist() == [0, 1, 2, 5]
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"train": [1], "val": [], "test": [0]}))
    assert Split.from_json(single).test.tolist() == [0]

    bad = tmp_path / "bad.json"
    for content in (
        {"train": [0, 1], "val": [1], "test": [2]},  # overlap
        {"train": [0, 1.5], "val": [], "test": []},  # not an int
        {"train": [0, -1], "val": [], "test": []},  # negative
        {"train": [0], "val": []},  # missing key
        [],
    ):
        bad.write_text(json.dumps(content))
        with pytest.raises(DataError, match="bad.json"):
            Split.from_json(bad)
    bad.write_text(json.dumps({"train": "3-1", "val": [], "test": []}))
    with pytest.raises(DataError, match="bad index range"):
        Split.from_json(bad)
    with pytest.raises(DataError, match="no index 2"):
        Split.from_json(path, index=2)
    with pytest.raises(DataError, match="not found"):
        Split.from_json(tmp_path / "absent.json")
    bad.write_text("[{")
    with pytest.raises(DataError, match="bad.json"):
        Split.from_json(bad)


def test_predefined_file_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    Split(train=[0, 1], val=[2], test=[7]).to_json(path)
    with pytest.raises(DataError, match="outside"):
        make_split("predefined", split_file=str(path), n=5)


# --- k-fold ----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_labels", [False, True])
def test_kfold_covers_each_molecule_once(datasets, with_labels: bool) -> None:
    ds = datasets["nci_binary"]
    n = len(ds.smiles)
    folds = kfold_splits(
        scaffolds=ds.scaffolds,
        y=ds.y if with_labels else None,
        task_type=ds.task_type,
        n_folds=5,
        seed=0,
        val_fraction=0.1,
    )
    assert len(folds) == 5
    tests = np.concatenate([fold.test for fold in folds])
    assert np.array_equal(np.sort(tests), np.arange(n))
    scaffolds = np.asarray(ds.scaffolds, dtype=object)
    fold_of_scaffold: dict[str, int] = {}
    for i, fold in enumerate(folds):
        _assert_partition(fold, n)
        assert abs(len(fold.test) - n / 5) <= 50 and abs(len(fold.val) - 0.1 * n) <= 50
        sets = [set(scaffolds[part]) for part in fold.parts()]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        for scaffold in sets[2]:
            assert fold_of_scaffold.setdefault(scaffold, i) == i


def test_kfold_with_labels_matches_the_positive_rate_on_bbbp(datasets) -> None:
    # a quality check on a real benchmark: NCI's large acyclic group cannot be balanced so
    ds = datasets["bbbp"]
    folds = kfold_splits(
        scaffolds=ds.scaffolds, y=ds.y, task_type=ds.task_type, n_folds=5, seed=0, val_fraction=0.1
    )
    whole = np.nanmean(ds.y)
    assert all(abs(np.nanmean(ds.y[f.test]) - whole) < 0.01 for f in folds)


# --- report ----------------------------------------------------------------------------------


def test_report_counts_duplicates(datasets) -> None:
    ds = datasets["nci_logp"]
    rng = np.random.default_rng(0)
    base = ds.smiles[:300]
    copies = rng.choice(300, size=60, replace=False)
    # the same molecules, written differently so only canonicalisation can match them
    extra = [Chem.MolToSmiles(Chem.MolFromSmiles(base[i]), doRandom=True) for i in copies]
    smiles = base + extra
    y = np.concatenate([ds.y[:300], ds.y[copies]])
    split = make_split("random", smiles=smiles, seed=0)
    canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles]
    where: dict[str, set[int]] = {}
    for s, part in enumerate(split.parts()):
        for i in part:
            where.setdefault(canonical[i], set()).add(s)
    expected = sum(len(v) > 1 for v in where.values())
    assert expected > 0
    report = split_report(split, smiles=smiles, y=y, task_names=["logp"], task_type="regression")
    duplicates = report["duplicate_molecules_across_splits"]
    assert duplicates["total"] == expected
    pairs = sum(duplicates[k] for k in ("train-val", "train-test", "val-test"))
    assert pairs >= expected
    assert report["shared_scaffolds"]["total"] > 0


def test_report_contents(datasets) -> None:
    ds = datasets["nci_logp"]
    split = _split(ds, "scaffold", seed=0)
    report = _report(ds, split)
    json.dumps(report, allow_nan=False)
    n = len(ds.smiles)
    assert report["sizes"] == {name: len(p) for name, p in split.named_parts().items()}
    assert sum(report["fractions"].values()) == pytest.approx(1.0)
    stats = report["labels"]["test"]["logp"]
    values = ds.y[split.test, 0]
    assert stats["count"] == len(values)
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["std"] == pytest.approx(values.std())
    assert stats["min"] == pytest.approx(values.min())
    assert stats["max"] == pytest.approx(values.max())
    assert set(report["label_distribution_distance"]) == {"train", "val", "test"}
    # the acyclic ("") scaffold group stays in one part of a scaffold split
    acyclic = report["acyclic_molecules"]
    assert sum(acyclic.values()) == sum(s == "" for s in ds.scaffolds)
    assert sorted(acyclic.values())[:2] == [0, 0]
    assert report["n_molecules"] == n and report["n_unassigned"] == 0

    binary = datasets["nci_binary"]  # its "polar" task misses every 7th label
    binary_report = _report(binary, _split(binary, "random"))
    task = binary_report["labels"]["all"]["polar"]
    labelled = ~np.isnan(binary.y[:, -1])
    assert task["n_labelled"] == labelled.sum() < len(binary.smiles)
    assert task["n_positive"] == int(np.nansum(binary.y[:, -1]))
    assert task["positive_rate"] == pytest.approx(task["n_positive"] / task["n_labelled"])


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes", [(0.8, 0.1), (0.8, 0.3, 0.1), (0.9, -0.1, 0.2), (0.0, 0.5, 0.5), (np.nan, 0.5, 0.5)]
)
def test_bad_sizes(sizes: tuple[float, ...]) -> None:
    with pytest.raises(DataError, match="sizes"):
        make_split("random", n=100, sizes=sizes)


def test_zero_val_or_test_allowed(datasets) -> None:
    ds = datasets["nci_binary"]
    for sizes in ((0.9, 0.0, 0.1), (0.9, 0.1, 0.0)):
        for method in ("random", "scaffold", "scaffold_stratified"):
            split = _split(ds, method, sizes=sizes)
            empty = split.val if sizes[1] == 0 else split.test
            assert empty.size == 0
            _assert_partition(split, len(ds.smiles))


def test_split_validate_errors() -> None:
    with pytest.raises(DataError, match="both 'train' and 'test'"):
        Split(train=[0, 1, 2], val=[3], test=[2]).validate(5)
    with pytest.raises(DataError, match="repeated"):
        Split(train=[0, 0], val=[], test=[]).validate(5)
    with pytest.raises(DataError, match="outside"):
        Split(train=[0, 5], val=[], test=[]).validate(5)
    Split(train=[0, 1], val=[2], test=[4]).validate(5)


def test_other_errors() -> None:
    with pytest.raises(DataError, match="unknown split method"):
        make_split("butina", n=10)
    with pytest.raises(DataError, match="row 1"):
        make_split("scaffold", smiles=["CCO", "C1CC", "c1ccccc1"])
    with pytest.raises(DataError, match="needs labels"):
        make_split("stratified", smiles=["CCO", "CCN"])
    with pytest.raises(DataError, match="inconsistent"):
        make_split("random", smiles=["CCO", "CCN"], y=np.zeros((3, 1)))
    with pytest.raises(DataError, match="exactly one"):
        make_split("predefined", n=3)
    with pytest.raises(DataError, match="0, 1"):
        make_split("stratified", y=np.array([0.0, 2.0, 1.0]), task_type="classification")


def test_scaffold_of_a_forest_is_empty_without_the_fragmenter() -> None:
    """Acyclic molecules (long chains took RDKit's fragmenter seconds) and salts of them have
    no scaffold; a ring anywhere keeps the fragmenter's answer."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    assert murcko_scaffold("C" * 1500) == ""
    assert murcko_scaffold("CC(=O)[O-].[Na+]") == ""
    for smiles in ("CCc1ccccc1", "CCO.c1ccncc1", "C1CC1CCC", "[H]C([H])([H])c1ccccc1"):
        mol = Chem.MolFromSmiles(smiles, sanitize=True)
        expected = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
        assert murcko_scaffold(mol) == expected != ""
