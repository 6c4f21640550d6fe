"""Bad input through the public readers, parser, featurizer, DataModule and screen: never a
crash, never a silently wrong row, always a typed error or an invalid row with its reason."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem

from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.parsing import MAX_ATOMS, parse_smiles
from molml.data.datamodule import MoleculeDataModule
from molml.data.graphs import featurize_molecules
from molml.data.readers import count_records, iter_molecule_chunks, read_molecules
from molml.errors import DataError, InvalidMoleculeError
from molml.screen import screen_library

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


# ---------------------------------------------------------------------------- trailing text


@pytest.mark.parametrize("text", ["CCO junk", "C C", "CCØ", "CCé", "CCO\tx", "C\u00a0C"])
def test_smiles_with_trailing_text_or_non_ascii_is_invalid(text: str) -> None:
    with pytest.raises(InvalidMoleculeError, match="whitespace|non-ASCII"):
        parse_smiles(text)
    with pytest.raises(InvalidMoleculeError):
        MolGraphFeaturizer().featurize(text)


def test_surrounding_whitespace_is_stripped() -> None:
    assert Chem.MolToSmiles(parse_smiles("  CCO\t\n")) == "CCO"


def test_csv_cell_with_trailing_text_is_an_invalid_row(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("smiles,y\nCCO junk,1\nC C,2\nCCé,3\n CCO ,4\n", encoding="utf-8")
    frame = read_molecules(path)
    result = featurize_molecules(frame["smiles"].tolist(), MolGraphFeaturizer(), n_jobs=1)
    assert result.valid.tolist() == [False, False, False, True]
    assert all("SMILES" in result.errors[i] for i in range(3))


def test_smi_name_after_whitespace_is_split_off(tmp_path: Path) -> None:
    path = tmp_path / "lib.smi"
    path.write_text("CCO ethanol\nc1ccccc1\tbenzene ring\nCCé bad\n", encoding="utf-8")
    frame = read_molecules(path)
    assert frame["smiles"].tolist() == ["CCO", "c1ccccc1", "CCé"]
    assert frame["id"].tolist() == ["ethanol", "benzene ring", "bad"]
    result = featurize_molecules(frame["smiles"].tolist(), MolGraphFeaturizer(), n_jobs=1)
    assert result.valid.tolist() == [True, True, False]


def test_smi_line_starting_with_a_tab_has_no_smiles_and_keeps_its_name(tmp_path: Path) -> None:
    """A tab-separated line with an empty SMILES field: the name is not read as a SMILES
    ("NO" would parse as nitric oxide)."""
    path = tmp_path / "lib.smi"
    path.write_text("CCO\tethanol\n\tNO\n\tm3 second name\n", encoding="utf-8")
    frame = read_molecules(path)
    assert frame["smiles"].isna().tolist() == [False, True, True]
    assert frame["id"].tolist() == ["ethanol", "NO", "m3 second name"]
    result = featurize_molecules(frame["smiles"].tolist(), MolGraphFeaturizer(), n_jobs=1)
    assert result.valid.tolist() == [True, False, False]
    assert result.errors[1].startswith("missing SMILES")


# ---------------------------------------------------------------------------- truncated gzip


def truncated_gzip(path: Path, text: str) -> Path:
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("name", ["lib.csv.gz", "lib.smi.gz", "lib.sdf.gz"])
def test_truncated_gzip_is_a_data_error(tmp_path: Path, name: str) -> None:
    if name.startswith("lib.sdf"):
        block = Chem.MolToMolBlock(Chem.MolFromSmiles("c1ccccc1CCO")) + "$$$$\n"
        text = block * 3000
    else:
        text = "smiles,id\n" + "".join(f"CCO,{i}\n" for i in range(20000))
        text = text.replace(",", " ") if "smi" in name else text
    path = truncated_gzip(tmp_path / name, text)
    with pytest.raises(DataError, match=rf"{name}.*truncated or corrupt"):
        count_records(path)
    with pytest.raises(DataError, match=rf"{name}.*truncated or corrupt"):
        read_molecules(path)
    with pytest.raises(DataError, match=rf"{name}.*truncated or corrupt"):
        list(iter_molecule_chunks(path, chunk_size=100))


# ---------------------------------------------------------------------------- .smi header


def test_smi_invalid_name_like_first_record_is_a_data_row(tmp_path: Path) -> None:
    path = tmp_path / "lib.smi"
    path.write_text("C1CC mol1\nCCO mol2\n")
    frame = read_molecules(path)
    assert list(frame.columns) == ["row", "smiles", "id"]
    assert frame["row"].tolist() == [1, 2]
    assert frame["id"].tolist() == ["mol1", "mol2"]
    result = featurize_molecules(frame["smiles"].tolist(), MolGraphFeaturizer(), n_jobs=1)
    assert result.valid.tolist() == [False, True] and "C1CC" in result.errors[0]


@pytest.mark.parametrize("header", ["smiles name", "SMILES\tID", "canonical_smiles id"])
def test_smi_header_named_smiles_is_a_header(tmp_path: Path, header: str) -> None:
    path = tmp_path / "lib.smi"
    path.write_text(f"{header}\nCCO mol2\n")
    frame = read_molecules(path)
    assert frame["row"].tolist() == [2]
    assert list(frame.columns) == ["row", "smiles", header.split()[1]]


# ---------------------------------------------------------------------------- NA-like ids


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz"])
def test_na_like_ids_and_smiles_stay_text(tmp_path: Path, suffix: str) -> None:
    sep = "\t" if suffix == ".tsv" else ","
    rows = [("CCO", "NA", "1.5"), ("CC", "None", ""), ("C", "null", "NA"), ("CCC", "N/A", "4")]
    text = "\n".join(sep.join(r) for r in [("smiles", "id", "y"), *rows]) + "\n"
    path = tmp_path / f"m{suffix}"
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    frame = read_molecules(path, id_column="id")
    assert frame["id"].tolist() == ["NA", "None", "null", "N/A"]
    assert frame["y"].iloc[[0, 3]].tolist() == [1.5, 4.0]
    assert frame["y"].iloc[[1, 2]].isna().all()  # empty and NA targets are missing labels
    na_smiles = tmp_path / f"s{suffix.removesuffix('.gz')}"
    na_smiles.write_text(f"smiles{sep}y\nNA{sep}1\n{sep}2\n")
    assert read_molecules(na_smiles)["smiles"].tolist()[0] == "NA"


# ---------------------------------------------------------------------------- row numbers


def test_row_is_the_line_where_a_multiline_record_starts(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('smiles,note,y\nCCO,"two\nlines",1\nCC,plain,2\n\nC,"a\n\nb",3\nN,x,4\n')
    frame = read_molecules(path)
    assert frame["smiles"].tolist()[:2] == ["CCO", "CC"]
    assert frame["row"].tolist() == [2, 4, 5, 6, 9]
    chunks = list(iter_molecule_chunks(path, chunk_size=2))
    assert pd.concat(chunks)["row"].tolist() == [2, 4, 5, 6, 9]


# ---------------------------------------------------------------------------- SMILES column


def test_first_column_fallback_warns(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("structure,y\nCCO,1\nCCC,2\n")
    with pytest.warns(UserWarning, match=r"'structure'.*\['structure', 'y'\]"):
        frame = read_molecules(path)
    assert frame["smiles"].tolist() == ["CCO", "CCC"]


def test_training_data_without_any_molecule_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    names = [f"compound_{i}" for i in range(20)]
    pd.DataFrame({"name": names, "mol": ["CCO"] * 20, "y": np.arange(20.0)}).to_csv(
        path, index=False
    )
    with pytest.warns(UserWarning, match="'name'"):
        dm = MoleculeDataModule(path=str(path), target_columns=["y"], split="random", **FAST)
    with pytest.raises(DataError, match=r"names\.csv.*'name'.*\['name', 'mol', 'y'\]"):
        dm.setup("fit")


# ---------------------------------------------------------------------------- screen output


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "read_only"
    directory.mkdir()
    directory.chmod(0o555)
    immutable = False
    try:
        (directory / "probe").touch()
    except OSError:
        pass
    else:  # root ignores mode bits: make the directory immutable instead
        (directory / "probe").unlink()
        immutable = subprocess.run(["chattr", "+i", str(directory)], check=False).returncode == 0
        if not immutable:
            pytest.skip("cannot make a read-only directory here")
    yield directory
    if immutable:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    directory.chmod(0o755)


def test_screen_read_only_output_directory(tmp_path: Path, read_only_dir: Path) -> None:
    library = tmp_path / "lib.smi"
    library.write_text("CCO a\n")
    with pytest.raises(DataError, match=rf"{read_only_dir}.*not writable"):
        screen_library([tmp_path / "model.ckpt"], library, read_only_dir / "out.csv")


def test_screen_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    library = tmp_path / "lib.csv"
    library.write_text("smiles\nCCO\n")
    for output in (library, tmp_path / "." / "lib.csv"):
        with pytest.raises(DataError, match="is the input"):
            screen_library([tmp_path / "model.ckpt"], library, output, overwrite=True)
    assert library.read_text() == "smiles\nCCO\n"


@pytest.mark.parametrize(
    ("verb", "output"),
    [
        (["calibrate", "--model", "x.ckpt"], "taken/c.json"),
        (["export", "--model", "x.ckpt"], "taken/m.onnx"),
        (["screen", "--model", "x.ckpt", "--input", "lib.csv"], "taken/o.csv"),
        (["report", "data", "--data.path", "lib.csv"], "taken/report"),
        (["report", "eval", "--model", "x.ckpt", "--data.path", "lib.csv"], "taken/report"),
    ],
)
def test_an_output_under_a_file_is_refused_before_any_work(
    verb: list[str],
    output: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A file where the output's folder should be is named as such, before the model or the
    data is read (neither exists here)."""
    from molml.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file\n")
    with pytest.raises(SystemExit) as info:
        main([*verb, "--output", output])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "taken" in error
    assert "is a file, not a directory" in error or "Not a directory" in error
