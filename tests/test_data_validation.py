"""The training data path refuses what it cannot train on honestly: predefined split files with
invalid or missing rows, empty split parts, one-class training labels, non-finite targets and
split options that would be ignored; and graph models and baselines split salts and mixtures
alike when molecules are standardized. Every check runs for graph models and baselines alike."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rdkit
from rdkit import Chem
from rdkit.Chem import Crippen

from molml.baselines import (
    BaselineConfig,
    DataConfig,
    EstimatorConfig,
    FeaturesConfig,
    fit_baseline,
)
from molml.baselines.data import load_fingerprint_data
from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.fingerprints import make_fingerprint
from molml.chem.parsing import parse_smiles
from molml.cli import main
from molml.data.datamodule import MoleculeDataModule
from molml.data.splits import Split, murcko_scaffold
from molml.errors import DataError

NCI = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
FAST = {"cache_dir": None, "featurize_jobs": 1}
TOSYLATE = "Cc1ccc(cc1)S(=O)(=O)O"


def make_dm(path: Path | str, **kwargs) -> MoleculeDataModule:
    return MoleculeDataModule(path=str(path), **{**FAST, **kwargs})


def baseline_config(path: Path, **data) -> BaselineConfig:
    return BaselineConfig(
        data=DataConfig(path=str(path), **data),
        features=FeaturesConfig(name="ecfp4", params={"n_bits": 256}, n_jobs=1),
        estimator=EstimatorConfig(params={"n_estimators": 5, "n_jobs": 1}),
        tracking_uri=None,
    )


def nci_smiles(n: int, min_heavy_atoms: int = 0) -> list[str]:
    """The first ``n`` NCI molecules (shipped with RDKit) that parse, as canonical SMILES."""
    out = []
    for line in NCI.read_text().splitlines():
        mol = Chem.MolFromSmiles(line.split()[0])
        if mol is not None and mol.GetNumHeavyAtoms() >= min_heavy_atoms:
            out.append(Chem.MolToSmiles(mol))
        if len(out) == n:
            break
    return out


def logp_csv(path: Path, smiles: list[str]) -> Path:
    """A CSV of ``smiles`` with Crippen logP (computed on the parsable ones) as target ``y``."""
    targets = []
    for smi in smiles:
        mol = Chem.MolFromSmiles(smi)
        targets.append(Crippen.MolLogP(mol) if mol is not None else 0.0)
    pd.DataFrame({"smiles": smiles, "y": targets}).to_csv(path, index=False)
    return path


def warnings_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ---------------------------------------------------------------------------- split files


def test_split_file_rows_that_are_invalid_molecules_are_dropped(tmp_path, caplog) -> None:
    smiles = nci_smiles(18) + ["C1CC", "not_a_smiles"]  # the last two rows are invalid
    path = logp_csv(tmp_path / "trailing_invalid.csv", smiles)
    split_file = tmp_path / "split.json"
    Split(train=range(12), val=[12, 13, 18], test=[14, 15, 16, 17, 19]).to_json(split_file)

    dm = make_dm(path, split="predefined", split_file=str(split_file))
    with caplog.at_level(logging.WARNING, logger="molml"):
        dm.setup("fit")
    rows = dm.split_rows()
    assert rows.train.tolist() == list(range(12))
    assert rows.val.tolist() == [12, 13] and rows.test.tolist() == [14, 15, 16, 17]
    assert dm.report["split_file_invalid_rows"] == {"train": 0, "val": 1, "test": 1}
    assert "split.json: 2 rows are invalid molecules" in warnings_text(caplog)

    # the same file drives a baseline to the same rows and the same report
    data = fit_baseline(baseline_config(path, split="predefined", split_file=str(split_file))).data
    for ours, theirs in zip(data.split_rows().parts(), rows.parts(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert data.report == dm.report


def test_split_file_index_beyond_the_rows_names_index_and_row_count(tmp_path) -> None:
    path = logp_csv(tmp_path / "twenty.csv", nci_smiles(18) + ["C1CC", "not_a_smiles"])
    split_file = tmp_path / "far.json"
    Split(train=range(12), val=[12, 13], test=[14, 20]).to_json(split_file)
    with pytest.raises(DataError, match=r"far\.json: 'test' index 20 is beyond the 20 rows"):
        make_dm(path, split="predefined", split_file=str(split_file)).setup("fit")


def test_split_file_covering_few_rows_warns_and_counts_the_rest(tmp_path, caplog) -> None:
    path = logp_csv(tmp_path / "sixty.csv", nci_smiles(60))
    split_file = tmp_path / "five.json"
    Split(train=[0, 1, 2], val=[3], test=[4]).to_json(split_file)
    dm = make_dm(path, split="predefined", split_file=str(split_file))
    with caplog.at_level(logging.WARNING, logger="molml"):
        dm.setup("fit")
    assert dm.report["n_unassigned"] == 55
    warning = warnings_text(caplog)
    assert "five.json" in warning and "55 of 60 valid molecules are in no part" in warning


@pytest.mark.parametrize("option", ["split_file", "split_column"])
def test_split_file_or_column_needs_the_predefined_split(tmp_path, option: str) -> None:
    smiles = nci_smiles(20)
    frame = pd.DataFrame({"smiles": smiles, "y": np.arange(20.0), "fold": ["train"] * 20})
    path = tmp_path / "with_fold.csv"
    frame.to_csv(path, index=False)
    split_file = tmp_path / "split.json"
    Split(train=range(16), val=[16, 17], test=[18, 19]).to_json(split_file)
    given = {"split_file": str(split_file)} if option == "split_file" else {"split_column": "fold"}
    target = {"target_columns": ["y"]}
    with pytest.raises(DataError, match=rf"{option} .* split is 'random'.*predefined"):
        make_dm(path, split="random", **target, **given).setup("fit")
    with pytest.raises(DataError, match=rf"{option} .* split is 'random'.*predefined"):
        fit_baseline(baseline_config(path, split="random", **target, **given))


def test_a_split_index_without_a_split_file_is_refused(tmp_path) -> None:
    """It picks an entry of a split file; without one it used to be ignored."""
    frame = pd.DataFrame({"smiles": nci_smiles(20), "y": np.arange(20.0)})
    path = tmp_path / "plain.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="split_index 1 picks an entry of a split_file"):
        make_dm(path, target_columns=["y"], split_index=1).setup("fit")
    with pytest.raises(DataError, match="split_index 1 picks an entry of a split_file"):
        fit_baseline(baseline_config(path, target_columns=["y"], split_index=1))


# ---------------------------------------------------------------------------- empty parts


def test_empty_split_part_names_the_part_and_the_valid_rows(tmp_path) -> None:
    path = logp_csv(tmp_path / "three.csv", ["CCO", "c1ccccc1O", "CCN", "C1CC"])
    with pytest.raises(DataError, match=r"three\.csv: the val part .* is empty.*3 valid"):
        make_dm(path, split="random").setup("fit")
    with pytest.raises(DataError, match=r"three\.csv: the val part .* is empty.*3 valid"):
        fit_baseline(baseline_config(path, split="random"))

    split_file = tmp_path / "no_test.json"
    Split(train=[0, 1], val=[2], test=[3]).to_json(split_file)  # row 3 is invalid
    with pytest.raises(DataError, match=r"the test part .* is empty.*3 valid"):
        make_dm(path, split="predefined", split_file=str(split_file)).setup("fit")


def test_molml_fit_on_too_few_molecules_fails(tmp_path, monkeypatch, capsys) -> None:
    path = logp_csv(tmp_path / "three.csv", ["CCO", "c1ccccc1O", "CCN"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["molml"])
    args = ["fit", "--data.path", str(path), "--data.split", "random", "--data.cache_dir", "null"]
    args += ["--data.featurize_jobs", "1", "--trainer.max_epochs", "1", "--trainer.logger", "false"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2  # bad input
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1  # one line, no traceback
    assert re.search(
        r"^molml fit: error: .*three\.csv: the val part .* is empty.*3 valid", errors[0]
    )
    assert not list(tmp_path.rglob("*.ckpt"))


# ---------------------------------------------------------------------------- labels


def classification_csv(path: Path, labels: dict[str, list[float]]) -> Path:
    smiles = nci_smiles(len(next(iter(labels.values()))))
    pd.DataFrame({"smiles": smiles, **labels}).to_csv(path, index=False)
    return path


def test_one_class_in_training_labels_is_refused(tmp_path) -> None:
    nan = float("nan")
    # rows 0-11 train, 12-15 val, 16-19 test; task 'b' is all 1 in train
    a = [0, 1] * 6 + [0, 1, 0, 1] + [1, 0, 1, 0]
    b = [1] * 10 + [nan, nan] + [0, 1, 0, 1] + [0, 1, 1, 0]
    path = classification_csv(tmp_path / "binary.csv", {"a": a, "b": b})
    split_file = tmp_path / "split.json"
    Split(train=range(12), val=range(12, 16), test=range(16, 20)).to_json(split_file)
    options = {"split": "predefined", "split_file": str(split_file)}
    message = r"binary\.csv: classification task 'b' has only class 1 in the train split"
    with pytest.raises(DataError, match=message):
        make_dm(path, **options).setup("fit")
    with pytest.raises(DataError, match=message):
        fit_baseline(baseline_config(path, **options))


@pytest.mark.parametrize(
    ("labels", "hint"),
    [([0, 1, 2] * 4, "task_type: multiclass"), ([0, 1, 0.5] * 4, "task_type: regression")],
)
def test_labels_that_are_not_binary_suggest_the_task_type(tmp_path, labels, hint) -> None:
    path = classification_csv(tmp_path / "three.csv", {"y": labels})
    with pytest.raises(DataError, match=f"values other than 0 or 1.*{hint}"):
        make_dm(path, task_type="classification").setup("fit")


def test_multiclass_labels_without_a_class_are_refused(tmp_path) -> None:
    path = classification_csv(tmp_path / "one_based.csv", {"y": [1, 2, 3] * 4})
    with pytest.raises(DataError, match=r"class\(es\) \[0\] have no rows; the labels look 1-based"):
        make_dm(path, task_type="multiclass")


def test_a_multiclass_class_missing_from_training_is_warned_about(tmp_path, caplog) -> None:
    # rows 0-11 train (classes 0 and 1 only), 12-15 val, 16-19 test (class 2 only there)
    path = classification_csv(tmp_path / "late.csv", {"y": [0, 1] * 6 + [0, 1, 0, 1] + [2] * 4})
    split_file = tmp_path / "split.json"
    Split(train=range(12), val=range(12, 16), test=range(16, 20)).to_json(split_file)
    options = {"split": "predefined", "split_file": str(split_file), "task_type": "multiclass"}
    with caplog.at_level(logging.WARNING, logger="molml"):
        make_dm(path, **options).setup("fit")
    assert "class(es) [2] in the data but not in the train split" in warnings_text(caplog)


def test_a_class_labelling_only_invalid_molecules_is_refused(tmp_path) -> None:
    smiles = [*nci_smiles(12), "C1CC"]  # the last one does not parse
    path = tmp_path / "phantom.csv"
    pd.DataFrame({"smiles": smiles, "y": [0, 1, 2] * 4 + [3]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"class\(es\) \[3\] label only invalid molecules"):
        make_dm(path, task_type="multiclass").setup("fit")


def test_molecules_in_two_parts_of_a_split_are_a_warning(tmp_path, caplog) -> None:
    smiles = nci_smiles(20)
    path = tmp_path / "dups.csv"
    pd.DataFrame({"smiles": smiles * 2, "y": range(40)}).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="molml"):
        make_dm(path, split="random").setup("fit")
    (message,) = [r.getMessage() for r in caplog.records if "more than one part" in r.getMessage()]
    assert message.startswith(f"{path}: ") and "split_report.json" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="molml"):
        make_dm(path, split="scaffold").setup("fit")  # duplicates share a scaffold: no leak
    assert not [r for r in caplog.records if "more than one part" in r.getMessage()]


def test_one_class_only_outside_training_is_accepted(tmp_path) -> None:
    nan = float("nan")
    # both tasks see both classes in train; 'b' has one class (and gaps) in val and test
    a = [0, 1] * 6 + [0, 1, 0, 1] + [1, 0, 1, 0]
    b = [0, 1] * 5 + [nan, 1] + [1, 1, nan, 1] + [0, 0, 0, nan]
    path = classification_csv(tmp_path / "binary.csv", {"a": a, "b": b})
    split_file = tmp_path / "split.json"
    Split(train=range(12), val=range(12, 16), test=range(16, 20)).to_json(split_file)
    dm = make_dm(path, split="predefined", split_file=str(split_file))
    dm.setup("fit")
    assert len(dm.split.train) == 12
    # but a validation part where no task has both classes gives no ROC-AUC to train on
    only_b = classification_csv(tmp_path / "only_b.csv", {"b": b})
    with pytest.raises(DataError, match="no task has both classes in the val split"):
        make_dm(only_b, split="predefined", split_file=str(split_file)).setup("fit")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("inf", "inf"), ("-inf", "-inf"), ("1e300", r"1e\+300"), ("-2e20", r"-2e\+20")],
)
def test_non_finite_targets_are_refused(tmp_path, value: str, shown: str) -> None:
    smiles = nci_smiles(12)
    lines = ["smiles,y,z"] + [f"{s},{i}.5,{i}" for i, s in enumerate(smiles)]
    lines[4] = f"{smiles[3]},{value},3"  # file row 5
    lines[9] = f"{smiles[8]},-2.5,{value}"  # file row 10
    path = tmp_path / "huge.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"huge\.csv: target column 'y' .* row 5 \({shown}\)"):
        make_dm(path)
    with pytest.raises(DataError, match=rf"huge\.csv: target column 'z' .* row 10 \({shown}\)"):
        make_dm(path, target_columns=["z"])
    with pytest.raises(DataError, match=r"target column 'y' .* too large to train on"):
        fit_baseline(baseline_config(path))


# ---------------------------------------------------------------------------- standardize


def salts_and_mixtures_csv(path: Path) -> Path:
    """NCI molecules where every third one is a tosylate salt (the counterion has a ring, so
    its scaffold changes when standardization keeps the largest fragment) and every fifth one a
    hydrochloride."""
    smiles = nci_smiles(120, min_heavy_atoms=16)
    for i in range(0, len(smiles), 3):
        smiles[i] = f"{smiles[i]}.{TOSYLATE}"
    for i in range(1, len(smiles), 5):
        smiles[i] = f"{smiles[i]}.Cl"
    return logp_csv(path, smiles)


@pytest.mark.parametrize("split", ["scaffold", "scaffold_stratified"])
def test_salts_and_mixtures_split_alike_when_standardized(tmp_path, split: str) -> None:
    path = salts_and_mixtures_csv(tmp_path / "salts.csv")
    smiles = pd.read_csv(path)["smiles"].tolist()
    changed = [
        murcko_scaffold(parse_smiles(s)) != murcko_scaffold(parse_smiles(s, standardize_mol=True))
        for s in smiles
    ]
    assert sum(changed) >= 30  # the data really tells the two molecules apart

    standardized = MolGraphFeaturizer(standardize=True)
    graph = make_dm(path, split=split, split_seed=2, featurizer=standardized)
    graph.setup("fit")
    config = DataConfig(path=str(path), split=split, split_seed=2, standardize=True)
    baseline = load_fingerprint_data(config, make_fingerprint("ecfp4", n_bits=256), n_jobs=1)
    for ours, theirs in zip(baseline.split_rows().parts(), graph.split_rows().parts(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert baseline.report == graph.report
    # the parts share no scaffold of the standardized molecules
    assert graph.report["shared_scaffolds"]["total"] == 0
    parts = [
        {murcko_scaffold(parse_smiles(smiles[i], standardize_mol=True)) for i in part}
        for part in graph.split_rows().parts()
    ]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])

    # explicit hydrogens in the graph do not change how rows are grouped
    with_h = make_dm(
        path,
        split=split,
        split_seed=2,
        featurizer=MolGraphFeaturizer(standardize=True, add_hydrogens=True),
    )
    with_h.setup("fit")
    for ours, theirs in zip(with_h.split_rows().parts(), graph.split_rows().parts(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert with_h.report == graph.report


def test_split_report_json_records_dropped_split_file_rows(tmp_path) -> None:
    path = logp_csv(tmp_path / "rows.csv", nci_smiles(18) + ["C1CC", "not_a_smiles"])
    split_file = tmp_path / "split.json"
    Split(train=range(12), val=[12, 13, 18], test=[14, 15, 16, 17, 19]).to_json(split_file)
    config = baseline_config(path, split="predefined", split_file=str(split_file))
    data = fit_baseline(config).data
    data.write_split_files(tmp_path / "run")
    report = json.loads((tmp_path / "run" / "split_report.json").read_text())
    assert report["split_file_invalid_rows"] == {"train": 0, "val": 1, "test": 1}
    assert report["invalid_molecules"] == 2 and report["n_unassigned"] == 0


def test_an_unnamed_index_column_is_not_taken_as_a_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``DataFrame.to_csv`` writes the index as a column with an empty name: without
    ``target_columns`` it is left out of the targets, with a warning, instead of learned."""
    smiles = nci_smiles(12)
    frame = pd.DataFrame({"smiles": smiles, "y": np.arange(12) / 2})
    frame.to_csv(tmp_path / "indexed.csv")
    with caplog.at_level(logging.WARNING):
        dm = make_dm(tmp_path / "indexed.csv", target_columns=None)
    assert dm.tasks == ["y"]
    assert "['Unnamed: 0'] are not taken as targets" in caplog.text
    named = make_dm(tmp_path / "indexed.csv", target_columns=["Unnamed: 0", "y"])
    assert named.tasks == ["Unnamed: 0", "y"]


def test_an_identifier_column_is_not_taken_as_a_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A compound number beside the SMILES would be learned as a second regression task whose
    scale swamps the real one: left out, with a warning, when no target is named; a single
    target may be named without a list."""
    smiles = nci_smiles(12)
    frame = pd.DataFrame(
        {"compound_id": np.arange(1001, 1013), "smiles": smiles, "logS": np.arange(12) / 2}
    )
    frame.to_csv(tmp_path / "ids.csv", index=False)
    with caplog.at_level(logging.INFO):
        dm = make_dm(tmp_path / "ids.csv", target_columns=None)
    assert dm.tasks == ["logS"]
    assert "['compound_id'] are not taken as targets (named like an identifier" in caplog.text
    assert "targets ['logS']" in caplog.text
    assert make_dm(tmp_path / "ids.csv", target_columns="logS").tasks == ["logS"]
    # a SMILES file's second field is the molecule's name, not a target
    lines = [f"{smi} mol{i} {i / 2}" for i, smi in enumerate(smiles)]
    (tmp_path / "named.smi").write_text("\n".join(["SMILES Name logS", *lines]) + "\n")
    assert make_dm(tmp_path / "named.smi", target_columns=None).tasks == ["logS"]
    lines = [f"{smi} {i / 2}" for i, smi in enumerate(smiles)]  # no name: a property there
    (tmp_path / "values.smi").write_text("\n".join(["smiles logS", *lines]) + "\n")
    assert make_dm(tmp_path / "values.smi", target_columns=None).tasks == ["logS"]
    # a compound without its number is still an identifier column
    gap = frame.astype({"compound_id": "Int64"})
    gap.loc[3, "compound_id"] = pd.NA
    gap.to_csv(tmp_path / "gap.csv", index=False)
    assert make_dm(tmp_path / "gap.csv", target_columns=None).tasks == ["logS"]
    # a column of that name holding measured values (repeats) stays a target, and so does an
    # integer property named like a count ("wiener_index")
    frame["compound_id"] = np.arange(12) % 5
    frame["wiener_index"] = np.arange(100, 112)
    frame.to_csv(tmp_path / "measured.csv", index=False)
    assert make_dm(tmp_path / "measured.csv", target_columns=None).tasks == [
        "compound_id", "logS", "wiener_index"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["logS", "logS_std"], "'logS' and 'logS_std' clash"),
        (["p", "p_class1"], "'p' and 'p_class1' clash"),
        (["status"], "'status' clashes"),
    ],
)
def test_task_names_that_prediction_columns_would_shadow_are_refused(
    tmp_path: Path, columns: list[str], message: str
) -> None:
    smiles = nci_smiles(12)
    frame = pd.DataFrame({"smiles": smiles, **{c: np.arange(12) % 2 for c in columns}})
    frame.to_csv(tmp_path / "tasks.csv", index=False)
    with pytest.raises(DataError, match=message):
        make_dm(tmp_path / "tasks.csv", target_columns=columns)
    # a name with such a suffix is fine when its stem is no task
    frame.rename(columns={columns[0]: "other"}).to_csv(tmp_path / "ok.csv", index=False)
    if columns != ["status"]:
        assert make_dm(tmp_path / "ok.csv", target_columns=["other", columns[1]]).tasks


def test_a_task_named_twice_is_refused(tmp_path: Path) -> None:
    """Two tasks of one name would overwrite each other's metrics and crash a screen."""
    frame = pd.DataFrame({"smiles": nci_smiles(12), "y": np.arange(12.0)})
    frame.to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(DataError, match=r"target column\(s\) \['y'\] given more than once"):
        make_dm(tmp_path / "twice.csv", target_columns=["y", "y"])


def test_a_file_to_predict_is_read_from_the_training_smiles_column(tmp_path: Path) -> None:
    """Trained on a 'Drug SMILES' column that is not first: a library with the same layout is
    read from that column, not from its first (an id column), for graph models and baselines."""
    smiles = nci_smiles(12)
    frame = pd.DataFrame(
        {"Compound ID": [f"CPD-{i}" for i in range(12)], "Drug SMILES": smiles, "y": range(12)}
    )
    frame.to_csv(tmp_path / "own.csv", index=False)
    frame.iloc[[5, 3]].to_csv(tmp_path / "library.csv", index=False)
    dm = make_dm(
        tmp_path / "own.csv",
        smiles_column="Drug SMILES",
        target_columns=["y"],
        predict_path=str(tmp_path / "library.csv"),
    )
    dm.setup("predict")
    assert dm.predict_frame["smiles"].tolist() == [smiles[5], smiles[3]]
    assert (dm.predict_frame["status"] == "ok").all()
    from molml.data.readers import read_molecules_to_predict

    other = pd.DataFrame({"smiles": smiles[:2], "name": ["a", "b"]})
    other.to_csv(tmp_path / "plain.csv", index=False)  # no such column: the usual choice
    assert (
        read_molecules_to_predict(tmp_path / "plain.csv", "Drug SMILES")["smiles"].tolist()
        == (smiles[:2])
    )
    # a library whose SMILES sit in another column than the training file's is read from the
    # column the user names; a missing one names the columns the file has
    renamed = frame.rename(columns={"Drug SMILES": "parent_smiles"})
    renamed.insert(1, "smiles", "C")  # a decoy column that the usual choice would take
    renamed.iloc[[7]].to_csv(tmp_path / "renamed.csv", index=False)
    dm = make_dm(
        tmp_path / "own.csv",
        smiles_column="Drug SMILES",
        target_columns=["y"],
        predict_path=str(tmp_path / "renamed.csv"),
        predict_smiles_column="parent_smiles",
    )
    dm.setup("predict")
    assert dm.predict_frame["smiles"].tolist() == [smiles[7]]
    with pytest.raises(DataError, match="parent_smiles"):
        read_molecules_to_predict(tmp_path / "renamed.csv", "Drug SMILES", "nope")
    with pytest.raises(DataError, match="give both"):  # not silently ignored
        make_dm(tmp_path / "own.csv", smiles_column="Drug SMILES", target_columns=["y"],
                predict_smiles_column="parent_smiles")  # fmt: skip


def test_integer_class_codes_taken_as_regression_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    smiles = nci_smiles(12)
    pd.DataFrame({"smiles": smiles, "cls": np.arange(12) % 3}).to_csv(
        tmp_path / "cls.csv", index=False
    )
    with caplog.at_level(logging.WARNING):
        dm = make_dm(tmp_path / "cls.csv")
    assert dm.task_type == "regression"
    assert "'cls' has only the integer values [0, 1, 2] and is trained as regression" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_dm(tmp_path / "cls.csv", task_type="regression")  # said so: no warning
    assert "trained as regression" not in caplog.text


def test_targets_that_float32_rounds_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    smiles = nci_smiles(12)
    pd.DataFrame({"smiles": smiles, "k": 1e8 + np.linspace(-2, 2, 12)}).to_csv(
        tmp_path / "offset.csv", index=False
    )
    with caplog.at_level(logging.WARNING):
        make_dm(tmp_path / "offset.csv")
    assert "task 'k': its values (mean 1e+08" in caplog.text and "float32" in caplog.text
    caplog.clear()
    pd.DataFrame({"smiles": smiles, "k": 1e-9 * np.linspace(-2, 2, 12)}).to_csv(
        tmp_path / "small.csv", index=False
    )
    with caplog.at_level(logging.WARNING):
        make_dm(tmp_path / "small.csv")
    assert "float32" not in caplog.text


def test_an_unknown_split_column_value_is_named_by_its_file_row(tmp_path: Path) -> None:
    """Rows before it with invalid SMILES do not shift the row named (file line 6 here)."""
    smiles = nci_smiles(20)
    frame = pd.DataFrame(
        {"smiles": smiles, "y": np.arange(20.0), "set": ["train"] * 14 + ["val"] * 3 + ["test"] * 3}
    )
    frame.loc[1, "smiles"] = "C1CC"  # invalid, file line 3
    frame.loc[4, "set"] = "training"  # file line 6
    frame.to_csv(tmp_path / "sets.csv", index=False)
    dm = make_dm(
        tmp_path / "sets.csv", target_columns=["y"], split="predefined", split_column="set"
    )
    with pytest.raises(DataError, match=r"split column 'set' has 1 value.*row 6 \('training'\)"):
        dm.setup("fit")
    # an invalid molecule's split value is not needed, so not checked
    frame.loc[4, "set"] = "train"
    frame.loc[1, "set"] = None
    frame.to_csv(tmp_path / "sets.csv", index=False)
    dm = make_dm(
        tmp_path / "sets.csv", target_columns=["y"], split="predefined", split_column="set"
    )
    dm.setup("fit")
    assert len(dm.split.train) == 13
    # an empty cell is named as empty, not as 'nan'
    frame.loc[7, "set"] = None
    frame.to_csv(tmp_path / "sets.csv", index=False)
    dm = make_dm(
        tmp_path / "sets.csv", target_columns=["y"], split="predefined", split_column="set"
    )
    with pytest.raises(DataError, match=r"1 value.*row 9 \(empty\)$"):
        dm.setup("fit")


def test_a_dataset_and_a_path_together_say_how_to_train_on_the_file(tmp_path) -> None:
    from molml.data.datamodule import MoleculeTable

    with pytest.raises(DataError, match="not both: .* add --data.dataset null"):
        MoleculeTable.read("esol", str(tmp_path / "mine.csv"))
    with pytest.raises(DataError, match="give data.dataset .* or data.path"):
        MoleculeTable.read(None, None)


def test_a_file_without_targets_lists_its_own_columns(tmp_path) -> None:
    """A semicolon-separated .csv reads as one column: the message shows it as the file has it."""
    path = tmp_path / "semicolons.csv"
    path.write_text("smiles;y\nCCO;1\nCCC;2\n")
    with pytest.raises(DataError, match=r"the file has columns \['smiles;y'\]"):
        make_dm(path)
