"""MoleculeDataModule on bad and good input: typed errors naming file/column/row, reports,
task-type inference, scaffold and predefined splits, target statistics.

The data is generated (RDKit's NCI molecules with Crippen logP), so these run anywhere; only the
registry test needs the MoleculeNet CSVs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require_dataset, write_task_csv
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from molml.data.datamodule import MoleculeDataModule
from molml.data.splits import Split
from molml.errors import DataError

FAST = {"cache_dir": None, "featurize_jobs": 1}


def make_dm(path: Path | str, **kwargs) -> MoleculeDataModule:
    return MoleculeDataModule(path=str(path), **{**FAST, **kwargs})


@pytest.fixture(scope="module")
def logp_frame(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """150 valid NCI molecules: ``smiles``, ``logp``."""
    path = tmp_path_factory.mktemp("generated") / "logp.csv"
    return pd.read_csv(write_task_csv(path, 150, invalid=False))


@pytest.fixture
def logp_csv(logp_frame: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "logp_small.csv"
    logp_frame.to_csv(path, index=False)
    return path


@pytest.fixture
def invalid_csv(logp_frame: pd.DataFrame, tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """NCI rows with invalid SMILES at known file lines (line 1 is the header)."""
    frame = logp_frame.copy()
    bad = {5: "C1CC", 17: "not_a_smiles", 40: "C(C)(C)(C)(C)C"}
    for position, smiles in bad.items():
        frame.loc[position, "smiles"] = smiles
    path = tmp_path / "with_invalid.csv"
    frame.to_csv(path, index=False)
    return path, {position + 2: smiles for position, smiles in bad.items()}


# ---------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="nope.csv"):
        make_dm(path)


def test_missing_target_column_lists_columns(logp_csv: Path) -> None:
    with pytest.raises(DataError) as info:
        make_dm(logp_csv, target_columns=["solubility"])
    message = str(info.value)
    assert "logp_small.csv" in message and "solubility" in message
    assert "logp" in message and "smiles" in message  # the columns the file has


def test_featurizer_configs_and_bad_featurizers_or_seeds(logp_csv: Path) -> None:
    """A featurizer config (as to_config() writes) is taken; a preset name or a string seed
    failed later with an AttributeError or numpy's TypeError."""
    from molml.chem.featurizer import MolGraphFeaturizer

    config = MolGraphFeaturizer(random_walk_steps=4).to_config()
    assert make_dm(logp_csv, featurizer=config).featurizer_config == config
    with pytest.raises(DataError, match="must be a MolGraphFeaturizer or its config"):
        make_dm(logp_csv, featurizer="chemprop")
    with pytest.raises(DataError, match="data.featurizer config .*presett"):
        make_dm(logp_csv, featurizer={"presett": "chemprop"})
    with pytest.raises(DataError, match="data.split_seed must be an integer"):
        make_dm(logp_csv, split_seed="1")


def test_missing_smiles_column(logp_csv: Path) -> None:
    with pytest.raises(DataError, match=r"logp_small\.csv.*SMILES_COL.*logp"):
        make_dm(logp_csv, smiles_column="SMILES_COL")


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv.*empty"):
        make_dm(empty)
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("smiles,y\n")
    with pytest.raises(DataError, match=r"header_only\.csv.*no data rows"):
        make_dm(header_only)


def test_no_target_columns(tmp_path: Path) -> None:
    path = tmp_path / "only_smiles.csv"
    path.write_text("smiles\nCCO\nCCC\n")
    with pytest.raises(DataError, match=r"only_smiles\.csv.*no target columns"):
        make_dm(path)


def test_all_nan_target_column(tmp_path: Path) -> None:
    path = tmp_path / "nan_target.csv"
    path.write_text("smiles,good,empty\nCCO,1.0,\nCCC,2.0,\nCCN,3.0,nan\n")
    with pytest.raises(DataError, match=r"nan_target\.csv.*'empty'.*no values"):
        make_dm(path)


def test_non_numeric_targets(tmp_path: Path) -> None:
    path = tmp_path / "text_target.csv"
    path.write_text("smiles,y\nCCO,1.0\nCCC,high\nCCN,3.0\nCCCl,low\n")
    with pytest.raises(DataError) as info:
        make_dm(path)
    message = str(info.value)
    assert "text_target.csv" in message and "'y'" in message
    assert "row 3 ('high')" in message and "row 5 ('low')" in message
    assert "2 non-numeric" in message


def test_classification_labels_other_than_0_1(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("smiles,active\nCCO,0\nCCC,1\nCCN,2\nCCCl,1\nCCBr,0.5\n")
    with pytest.raises(DataError) as info:
        make_dm(path, task_type="classification")
    message = str(info.value)
    assert "labels.csv" in message and "'active'" in message
    assert "[0.5, 2.0]" in message and "rows [4, 6]" in message
    # the same file is fine as a regression target
    assert make_dm(path, task_type="regression").task_type == "regression"


def test_unknown_task_type(logp_csv: Path) -> None:
    with pytest.raises(DataError, match="unknown task_type 'ranking'"):
        make_dm(logp_csv, task_type="ranking")


def test_task_type_inference(tmp_path: Path, logp_csv: Path) -> None:
    binary = tmp_path / "binary.csv"
    binary.write_text("smiles,a,b\nCCO,0,1\nCCC,1,\nCCN,,0\nCCCl,1,1\n")
    dm = make_dm(binary)
    assert dm.task_type == "classification" and dm.tasks == ["a", "b"]
    assert np.isnan(dm.targets[1, 1]) and np.isnan(dm.targets[2, 0])
    assert make_dm(logp_csv).task_type == "regression"


def test_registry_datasets_load_by_name() -> None:
    # the card names the columns and decides the task type
    require_dataset("esol")
    require_dataset("bbbp")
    esol = MoleculeDataModule(dataset="esol", **FAST)
    assert esol.tasks == ["logSolubility"] and esol.task_type == "regression"
    assert len(esol.table) == 1128
    assert MoleculeDataModule(dataset="bbbp", **FAST).task_type == "classification"


# ---------------------------------------------------------------------------- invalid molecules


def test_invalid_smiles_are_reported_with_rows(invalid_csv, caplog) -> None:
    path, bad_lines = invalid_csv
    dm = make_dm(path, split="random")
    with caplog.at_level(logging.WARNING, logger="molml"):
        dm.setup("fit")
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "with_invalid.csv" in warning and "3 of 150" in warning
    for line in bad_lines:
        assert f"row {line}:" in warning
    assert dm.report["invalid_molecules"] == 3
    assert dm.report["n_molecules"] == 147
    assert len(dm.graphs) == 147
    # the remaining molecules keep their own targets
    kept = np.delete(np.arange(150), [line - 2 for line in bad_lines])
    assert np.allclose(dm.graphs.y[:, 0].numpy(), dm.targets[kept, 0])
    batch = next(iter(dm.train_dataloader()))
    assert batch.y.shape == (min(64, len(dm.split.train)), 1) and bool(batch.y_mask.all())


def test_invalid_smiles_are_reported_once_per_run_not_per_process(
    invalid_csv, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under DDP every process reads the data: only the first one warns."""
    from lightning.pytorch.utilities import rank_zero_only

    path, _ = invalid_csv
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with caplog.at_level(logging.WARNING, logger="molml"):
        make_dm(path, split="random").setup("fit")
    assert not any("could not be featurized" in r.getMessage() for r in caplog.records)


def test_invalid_smiles_strict(invalid_csv) -> None:
    path, bad_lines = invalid_csv
    dm = make_dm(path, strict=True)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "with_invalid.csv" in message and "so the run stops (data.strict)" in message
    assert all(f"row {line}:" in message for line in bad_lines)


# ---------------------------------------------------------------------------- splits


def test_scaffold_split_shares_no_scaffold(property_csv: Path) -> None:
    dm = make_dm(property_csv, target_columns=["logp", "tpsa"], split="scaffold")
    dm.setup("fit")
    report = dm.report
    assert report["method"] == "scaffold"
    assert report["shared_scaffolds"]["total"] == 0
    assert sum(report["sizes"].values()) == len(dm.graphs) == len(dm.table) - 3 == 400
    assert report["sizes"]["test"] > 25 and report["sizes"]["val"] > 25
    # check independently with RDKit: no Murcko scaffold appears in two parts
    rows = dm.split_rows()
    scaffolds = [
        {
            MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.MolFromSmiles(dm.table["smiles"][i]))
            for i in part
        }
        for part in rows.parts()
    ]
    assert not (scaffolds[0] & scaffolds[1]) and not (scaffolds[0] & scaffolds[2])
    assert not (scaffolds[1] & scaffolds[2])


def test_predefined_split_file_round_trip(invalid_csv, tmp_path: Path) -> None:
    path, _ = invalid_csv
    first = make_dm(path, split="random", split_seed=3)
    first.setup("fit")
    split_file = tmp_path / "split.json"
    first.split_rows().to_json(split_file)
    record = json.loads(split_file.read_text())[0]
    assert sorted(record) == ["test", "train", "val"]
    assert not {5, 17, 40} & set(record["train"] + record["val"] + record["test"])  # invalid rows

    second = make_dm(path, split="predefined", split_file=str(split_file))
    second.setup("fit")
    for a, b in zip(first.split.parts(), second.split.parts(), strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(first.split_rows().parts(), second.split_rows().parts(), strict=True):
        assert np.array_equal(a, b)
    assert second.report["method"] == "predefined"

    # a split naming rows beyond the file is a DataError naming the split file
    Split(np.array([0, 1]), np.array([2]), np.array([500])).to_json(tmp_path / "far.json")
    third = make_dm(path, split="predefined", split_file=str(tmp_path / "far.json"))
    with pytest.raises(DataError, match=r"far\.json.*500"):
        third.setup("fit")


def test_target_statistics_ignore_nan(tmp_path: Path, logp_frame: pd.DataFrame) -> None:
    frame = logp_frame[["smiles", "logp"]].copy()
    frame["second"] = np.where(np.arange(len(frame)) % 3 == 0, np.nan, frame["logp"] * 2)
    path = tmp_path / "two_tasks.csv"
    frame.to_csv(path, index=False)
    dm = make_dm(path, split="random")
    dm.setup("fit")
    mean, std = dm.target_statistics()
    train = dm.targets[dm.split.train]
    assert np.isnan(train[:, 1]).any()
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std))
    assert np.allclose(mean, np.nanmean(train, axis=0), atol=1e-5)
    assert np.allclose(std, np.nanstd(train, axis=0), atol=1e-5)
    assert not np.allclose(mean[1], 2 * train[:, 0].mean(), atol=1e-3)  # NaN rows really left out


def test_split_column_is_honoured_exactly(tmp_path: Path) -> None:
    path = write_task_csv(tmp_path / "with_column.csv", 150)  # invalid SMILES at rows 40-42
    frame = pd.read_csv(path)
    rng = np.random.default_rng(0)
    frame["part"] = rng.choice(["train", "val", "test"], size=len(frame), p=[0.6, 0.2, 0.2])
    frame.to_csv(path, index=False)
    dm = make_dm(path, split="predefined", split_column="part")
    assert dm.tasks == ["logp"]  # the split column is not a target
    dm.setup("fit")
    valid = frame["smiles"].map(lambda s: Chem.MolFromSmiles(s) is not None).to_numpy()
    assert (~valid).sum() == 3
    for name, rows in dm.split_rows().named_parts().items():
        expected = np.flatnonzero((frame["part"] == name).to_numpy() & valid)
        assert np.array_equal(rows, expected), name
    assert dm.report["method"] == "predefined"
    assert dm.report["sizes"] == {
        name: int(((frame["part"] == name) & valid).sum()) for name in ("train", "val", "test")
    }


def test_a_missing_split_column_names_the_file_columns(tmp_path: Path) -> None:
    """With the targets left to default, a split column not in the file was a bare KeyError
    (or, with a text column beside, blamed that column as a non-numeric target)."""
    path = write_task_csv(tmp_path / "with_column.csv", 30)
    frame = pd.read_csv(path)
    frame["fold"] = "train"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"split column 'part' not found; .*'fold'"):
        make_dm(path, split="predefined", split_column="part")


def test_loader_batches_equal_pyg_collation_of_the_same_molecules(tmp_path: Path) -> None:
    """Batches are gathered from the store in one step; they must hold exactly what PyG's
    ``Batch.from_data_list`` makes of the same molecules (missing labels and molecule-level
    features included): the split's order for validation, a permutation of the training part
    for training."""
    import torch
    from torch_geometric.data import Batch

    frame = pd.read_csv(write_task_csv(tmp_path / "two.csv", 125, invalid=False))
    frame["second"] = np.where(np.arange(len(frame)) % 4 == 0, np.nan, frame["logp"] * 2)
    path = tmp_path / "two_tasks.csv"
    frame.to_csv(path, index=False)
    dm = make_dm(path, split="random", batch_size=16, molecule_features="maccs")
    dm.setup("fit")
    store_index = {int(row): i for i, row in enumerate(dm.graphs.rows)}

    def check(batches: list, order: list[int]) -> None:
        sizes = [min(16, len(order) - start) for start in range(0, len(order), 16)]
        assert [len(b.row) for b in batches] == sizes
        for k, batch in enumerate(batches):
            expected = Batch.from_data_list([dm.graphs[i] for i in order[16 * k : 16 * k + 16]])
            for key in ("x", "edge_index", "edge_attr", "batch", "ptr", "row", "y", "y_mask"):
                assert torch.equal(batch[key], expected[key]), key
            assert torch.equal(batch.features, expected.features)
            assert batch.num_graphs == expected.num_graphs

    train = list(dm.train_dataloader())
    seen = [store_index[int(row)] for batch in train for row in batch.row]
    assert sorted(seen) == sorted(dm.split.train) and seen != sorted(seen)  # shuffled
    check(train, seen)
    assert any((~b.y_mask).any() for b in train)  # missing labels really were in there
    check(list(dm.val_dataloader()), list(dm.split.val))


def test_an_evaluation_split_smaller_than_the_processes_is_refused_before_training(
    tmp_path: Path,
) -> None:
    """Under DDP each process takes its own molecules of the validation and test splits,
    none repeated; Lightning's sampler would fail with a bare AssertionError on a process
    left without one (the test split: only after training)."""
    import lightning as L

    dm = MoleculeDataModule(
        path=str(write_task_csv(tmp_path / "small.csv", 20, invalid=False)),
        split="random",
        split_sizes=(0.9, 0.05, 0.05),
        cache_dir=None,
        featurize_jobs=1,
    )
    dm.trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", logger=False, default_root_dir=tmp_path
    )
    with pytest.raises(DataError, match="the validation split has 1 valid molecule.*2 processes"):
        dm.setup("fit")
