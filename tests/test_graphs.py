"""featurize_molecules and GraphStore on RDKit's NCI molecules: parallel == serial, invalid
input, cache, save/load."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import nci_smiles
from rdkit import Chem

import molml.data.graphs as graphs_module
from molml.chem.featurizer import MolGraphFeaturizer
from molml.data.graphs import FeaturizedMolecules, GraphStore, featurize_molecules
from molml.errors import DataError

BAD = {3: "C1CC", 7: None, 11: "", 12: "not a smiles", 20: "C(C)(C)(C)(C)C", 25: float("nan")}


@pytest.fixture(scope="module")
def library_smiles() -> list[str]:
    return nci_smiles(240)


@pytest.fixture(scope="module")
def mixed_smiles(library_smiles: list[str]) -> list:
    """NCI molecules with invalid entries (bad SMILES, None, empty, NaN) at known positions."""
    smiles: list = list(library_smiles[:60])
    for position, bad in BAD.items():
        smiles[position] = bad
    return smiles


def assert_same_store(a: GraphStore, b: GraphStore) -> None:
    for name in ("x", "edge_index", "edge_attr", "atom_ptr", "edge_ptr", "rows"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    if a.y is None or b.y is None:
        assert a.y is None and b.y is None
    else:
        assert torch.equal(torch.nan_to_num(a.y, nan=-999.0), torch.nan_to_num(b.y, nan=-999.0))


def assert_same_result(a: FeaturizedMolecules, b: FeaturizedMolecules) -> None:
    assert_same_store(a.graphs, b.graphs)
    assert np.array_equal(a.valid, b.valid)
    assert a.errors == b.errors
    assert a.scaffolds == b.scaffolds
    assert a.canonical_smiles == b.canonical_smiles


def test_parallel_equals_serial(library_smiles: list[str]) -> None:
    feat = MolGraphFeaturizer()
    serial = featurize_molecules(library_smiles, feat, n_jobs=1, chunk_size=50, progress=False)
    parallel = featurize_molecules(library_smiles, feat, n_jobs=2, chunk_size=50, progress=False)
    assert len(serial.graphs) == len(library_smiles) and serial.valid.all()
    assert_same_result(serial, parallel)
    # the contiguous store slices back into the same graphs as featurizing one by one
    for i in (0, 1, 97, len(library_smiles) - 1):
        one = feat(library_smiles[i])
        got = parallel.graphs[i]
        assert torch.equal(got.x, one.x)
        assert torch.equal(got.edge_index, one.edge_index)
        assert torch.equal(got.edge_attr, one.edge_attr)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_invalid_inputs_are_reported_and_nothing_else_is_lost(mixed_smiles: list, n_jobs) -> None:
    feat = MolGraphFeaturizer()
    result = featurize_molecules(mixed_smiles, feat, n_jobs=n_jobs, chunk_size=8, progress=False)
    assert set(result.errors) == set(BAD)
    assert all(isinstance(reason, str) and reason for reason in result.errors.values())
    assert "C1CC" in result.errors[3]
    good = [i for i in range(len(mixed_smiles)) if i not in BAD]
    assert result.valid.tolist() == [i not in BAD for i in range(len(mixed_smiles))]
    assert len(result.graphs) == len(good)
    assert result.graphs.rows.tolist() == good  # input positions, in input order
    assert len(result.scaffolds) == len(result.canonical_smiles) == len(good)
    for k, position in enumerate(good):
        expected = feat(mixed_smiles[position])
        assert torch.equal(result.graphs[k].x, expected.x)
        assert torch.equal(result.graphs[k].edge_index, expected.edge_index)
        assert result.canonical_smiles[k] == Chem.MolToSmiles(
            Chem.MolFromSmiles(mixed_smiles[position])
        )


def test_all_invalid_gives_an_empty_store() -> None:
    result = featurize_molecules(["C1CC", None, ""], MolGraphFeaturizer(), progress=False, n_jobs=1)
    assert len(result.graphs) == 0
    assert set(result.errors) == {0, 1, 2}
    assert result.graphs.x.shape == (0, MolGraphFeaturizer().atom_dim)
    assert not result.valid.any()


def test_cache_is_written_and_reused(mixed_smiles: list, tmp_path, monkeypatch) -> None:
    feat = MolGraphFeaturizer()
    first = featurize_molecules(
        mixed_smiles, feat, n_jobs=1, progress=False, cache_dir=tmp_path / "cache"
    )
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len([f for f in files if f.endswith(".pt")]) == 1
    assert len([f for f in files if f.endswith(".json")]) == 1
    assert not [f for f in files if f.endswith(".tmp")]

    def no_recompute(*args, **kwargs):
        raise AssertionError("featurized again instead of loading the cache")

    monkeypatch.setattr(graphs_module, "_featurize_chunk", no_recompute)
    second = featurize_molecules(
        mixed_smiles, feat, n_jobs=1, progress=False, cache_dir=tmp_path / "cache"
    )
    assert_same_result(first, second)
    assert second.errors == first.errors and set(second.errors) == set(BAD)

    # another featurizer config or other SMILES must not hit that cache entry
    with pytest.raises(AssertionError, match="featurized again"):
        featurize_molecules(
            mixed_smiles,
            MolGraphFeaturizer(add_hydrogens=True),
            n_jobs=1,
            progress=False,
            cache_dir=tmp_path / "cache",
        )
    with pytest.raises(AssertionError, match="featurized again"):
        featurize_molecules(
            mixed_smiles[:-1], feat, n_jobs=1, progress=False, cache_dir=tmp_path / "cache"
        )


def test_a_damaged_cache_entry_is_featurized_again_and_an_unwritable_cache_refused(
    mixed_smiles: list, tmp_path, caplog
) -> None:
    feat = MolGraphFeaturizer()
    cache = tmp_path / "cache"
    first = featurize_molecules(mixed_smiles, feat, n_jobs=1, progress=False, cache_dir=cache)
    (entry,) = cache.glob("*.pt")
    for damage in (lambda: entry.write_bytes(entry.read_bytes()[:1000]),
                   lambda: entry.with_suffix(".json").write_text("")):  # fmt: skip
        damage()
        with caplog.at_level(logging.WARNING, logger="molml"):
            again = featurize_molecules(
                mixed_smiles, feat, n_jobs=1, progress=False, cache_dir=cache
            )
        assert_same_result(first, again)  # and the entry is written anew
        assert "cannot be read" in caplog.text and str(entry) in caplog.text
        caplog.clear()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match="data.cache_dir .*a_file: cannot write"):
        featurize_molecules(mixed_smiles, feat, n_jobs=1, cache_dir=tmp_path / "a_file")


def test_graph_store_save_load_round_trip(library_smiles: list[str], tmp_path) -> None:
    smiles = library_smiles[:40]
    result = featurize_molecules(smiles, MolGraphFeaturizer(), n_jobs=1, progress=False)
    y = np.arange(80, dtype=float).reshape(40, 2)
    y[3, 1] = np.nan
    store = result.graphs.with_targets(y)
    path = tmp_path / "store.pt"
    store.save(path)

    raw = torch.load(path, weights_only=True)  # plain tensors only, no pickled code
    assert set(raw) >= {"format", "x_rows", "x_index", "edge_index", "atom_ptr", "edge_ptr"}

    loaded = GraphStore.load(path)
    assert_same_store(store, loaded)
    item = loaded[3]
    assert item.y.tolist() == [[6.0, 0.0]]
    assert item.y_mask.tolist() == [[True, False]]
    assert item.row.tolist() == [3]


def test_graph_store_rejects_other_format(tmp_path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"format": 0, "x": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="old cache format"):
        GraphStore.load(path)


def test_saved_store_is_exact_and_compact(tmp_path) -> None:
    from conftest import nci_smiles

    from molml.chem.fingerprints import RDKitDescriptors

    featurizer = MolGraphFeaturizer(random_walk_steps=4)  # continuous columns too
    result = featurize_molecules(
        nci_smiles(300), featurizer, n_jobs=1, progress=False, molecule_features=RDKitDescriptors()
    )
    store = result.graphs.with_targets(np.arange(2 * len(result.graphs)).reshape(-1, 2))
    store.save(tmp_path / "store.pt")
    loaded = GraphStore.load(tmp_path / "store.pt")
    graph = ("x", "edge_index", "edge_attr", "atom_ptr", "edge_ptr", "rows", "y", "features")
    for name in graph:
        saved, read = getattr(store, name), getattr(loaded, name)
        assert saved.dtype == read.dtype and saved.shape == read.shape, name
        assert torch.equal(torch.nan_to_num(saved, nan=-1.0), torch.nan_to_num(read, nan=-1.0))
    dense = tmp_path / "dense.pt"
    torch.save({k: getattr(store, k) for k in graph}, dense)
    assert (tmp_path / "store.pt").stat().st_size < 0.5 * dense.stat().st_size
