"""Readers: every format on real files written here, errors, chunked streaming."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from rdkit import Chem

from molml.data.readers import iter_molecule_chunks, list_columns, read_molecules
from molml.errors import DataError

SHARED = Path(os.environ["MOLML_DATA_DIR"])  # set by conftest: the configured data directory

CSV_TEXT = "id,smiles,y,label\n001,CCO,1.5,a\n002,,2.5,b\n003,c1ccccc1,,c\n004,CC(=O)O,4.0,d\n"


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def gzip_copy(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    with path.open("rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def write_sdf(path: Path) -> Path:
    """Four records; the second has a corrupted counts line RDKit cannot read."""
    records = []
    for number, smiles in enumerate(["CCO", "c1ccccc1", "CC(=O)O", "N"], start=1):
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("_Name", f"mol{number}")
        mol.SetProp("activity", str(number * 1.5))
        mol.SetProp("code", f"00{number}")
        records.append(Chem.MolToMolBlock(mol))
        records[-1] += f"\n>  <activity>\n{number * 1.5}\n\n>  <code>\n00{number}\n\n$$$$\n"
    block = records[1].split("\n")
    block[3] = "xx  corrupted counts line"
    records[1] = "\n".join(block)
    return write(path, "".join(records))


def test_csv_keeps_every_row_with_line_numbers(tmp_path: Path) -> None:
    df = read_molecules(write(tmp_path / "m.csv", CSV_TEXT), id_column="id")
    assert list(df.columns) == ["row", "smiles", "id", "y", "label"]
    assert df["row"].tolist() == [2, 3, 4, 5]
    assert df["smiles"].iloc[0] == "CCO"
    assert pd.isna(df["smiles"].iloc[1])  # empty cell stays a row
    assert df["id"].tolist() == ["001", "002", "003", "004"]  # ids read as text
    assert df["y"].iloc[1] == 2.5 and pd.isna(df["y"].iloc[2])
    assert all(isinstance(s, str) for s in df["smiles"].dropna())


@pytest.mark.parametrize("name", ["m.csv.gz", "m.tsv", "m.tab", "m.tsv.gz", "m.parquet"])
def test_other_tabular_formats_match_csv(tmp_path: Path, name: str) -> None:
    expected = read_molecules(write(tmp_path / "ref.csv", CSV_TEXT), id_column="id")
    path = tmp_path / name
    if name.endswith(".parquet"):
        pd.read_csv(tmp_path / "ref.csv", dtype={"id": str}).to_parquet(path)
        expected["row"] -= 1  # Parquet rows count from the first record, there is no header
    else:
        sep = "," if ".csv" in name else "\t"
        write(path, CSV_TEXT.replace(",", sep))
    df = read_molecules(path, id_column="id")
    pd.testing.assert_frame_equal(df, expected, check_dtype=False)


def test_csv_without_header_and_explicit_smiles_column(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "5.0,CCO\n6.0,CCN\n")
    df = read_molecules(path, has_header=False, smiles_column="column_2")
    assert list(df.columns) == ["row", "smiles", "column_1"]
    assert df["row"].tolist() == [1, 2]
    assert df["smiles"].tolist() == ["CCO", "CCN"]
    renamed = write(tmp_path / "r.csv", "Structure,y\nCCO,1\n")
    assert read_molecules(renamed, smiles_column="Structure")["smiles"].tolist() == ["CCO"]


def test_default_smiles_column_is_found_by_name_or_first(tmp_path: Path) -> None:
    by_name = read_molecules(write(tmp_path / "a.csv", "y,SMILES\n1,CCO\n"))
    assert by_name["smiles"].tolist() == ["CCO"] and list(by_name.columns) == ["row", "smiles", "y"]
    chembl = read_molecules(write(tmp_path / "d.csv", "chembl_id,canonical_smiles,y\nX,CCO,1\n"))
    assert chembl["smiles"].tolist() == ["CCO"] and list(chembl.columns) == [
        "row", "smiles", "chembl_id", "y"
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="first column 'mol'"):  # not a count of SMILES
        read_molecules(write(tmp_path / "e.csv", "mol,smiles_length\nCCO,3\n"))
    with pytest.warns(UserWarning, match="first column 'mol'"):
        first = read_molecules(write(tmp_path / "b.csv", "mol,y\nCCN,1\n"))
    assert first["smiles"].tolist() == ["CCN"] and list(first.columns) == ["row", "smiles", "y"]
    with pytest.warns(UserWarning, match="that header is itself a SMILES.*--no-header"):
        headless = read_molecules(write(tmp_path / "c.csv", "CCO,1\nCCN,2\n"))
    assert headless["smiles"].tolist() == ["CCN"]


def test_smi_without_header(tmp_path: Path) -> None:
    path = write(tmp_path / "lib.smi", "CCO mol1\nc1ccccc1\tmol2\n\nCC(=O)O\n")
    df = read_molecules(path)
    assert list(df.columns) == ["row", "smiles", "id"]
    assert df["row"].tolist() == [1, 2, 3, 4]
    assert df["smiles"].iloc[[0, 1, 3]].tolist() == ["CCO", "c1ccccc1", "CC(=O)O"]
    assert pd.isna(df["smiles"].iloc[2])  # blank line kept as a row
    assert df["id"].iloc[1] == "mol2" and pd.isna(df["id"].iloc[3])


@pytest.mark.parametrize("name", ["lib.smi", "lib.smiles", "lib.smi.gz"])
def test_smi_with_detected_header(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, "SMILES Name\nCCO ethanol\nCCN ethylamine\n")
    assert list_columns(path) == ["SMILES", "Name"]
    df = read_molecules(path, id_column="Name")
    assert list(df.columns) == ["row", "smiles", "Name"]
    assert df["row"].tolist() == [2, 3]
    assert df["Name"].tolist() == ["ethanol", "ethylamine"]


def test_smi_header_override(tmp_path: Path) -> None:
    path = write(tmp_path / "lib.smi", "CCO first\nCCN second\n")
    assert read_molecules(path, has_header=True)["smiles"].tolist() == ["CCN"]
    headed = write(tmp_path / "h.smi", "smiles\nCCO\n")
    assert read_molecules(headed, has_header=False)["smiles"].tolist() == ["smiles", "CCO"]


@pytest.mark.parametrize("gzipped", [False, True])
def test_sdf_keeps_unreadable_record(tmp_path: Path, gzipped: bool) -> None:
    path = write_sdf(tmp_path / "lib.sdf")
    if gzipped:
        path = gzip_copy(path)
    assert list_columns(path) == ["smiles", "_Name", "activity", "code"]
    df = read_molecules(path, id_column="_Name")
    assert list(df.columns) == ["row", "smiles", "_Name", "activity", "code"]
    assert df["row"].tolist() == [1, 2, 3, 4]
    assert df["smiles"].iloc[[0, 2, 3]].tolist() == ["CCO", "CC(=O)O", "N"]
    assert pd.isna(df["smiles"].iloc[1]) and pd.isna(df["code"].iloc[1])
    assert df["_Name"].iloc[3] == "mol4"
    assert df["code"].iloc[0] == "001"  # SD values are kept as read (text)


def test_sdf_written_by_rdkit(tmp_path: Path) -> None:
    path = tmp_path / "w.sdf"
    with Chem.SDWriter(str(path)) as writer:
        for number, smiles in enumerate(["C", "O=C=O"], start=1):
            mol = Chem.MolFromSmiles(smiles)
            mol.SetProp("value", str(number))
            writer.write(mol)
    df = read_molecules(path, columns=["value"])
    assert df.to_dict("list") == {"row": [1, 2], "smiles": ["C", "O=C=O"], "value": ["1", "2"]}


def test_columns_selection(tmp_path: Path) -> None:
    df = read_molecules(write(tmp_path / "m.csv", CSV_TEXT), columns=["label"])
    assert list(df.columns) == ["row", "smiles", "label"]
    assert df["label"].tolist() == ["a", "b", "c", "d"]


def test_missing_file() -> None:
    with pytest.raises(DataError, match="file not found: .*nope.csv"):
        read_molecules("/nonexistent/nope.csv")


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unsupported.*\.csv.*\.sdf\.gz"):
        read_molecules(write(tmp_path / "m.xlsx", "x"))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.csv", "", "empty file"),
        ("header.csv", "smiles,y\n", "no data rows"),
        ("header.smi", "smiles name\n", "no data rows"),
        ("empty.sdf", "\n", "no data rows"),
        ("empty.csv.gz", "", "empty file"),
    ],
)
def test_empty_inputs(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(DataError, match=message) as info:
        read_molecules(path)
    assert name in str(info.value)


def test_compressed_or_utf16_text_under_a_plain_name_says_what_it_is(tmp_path: Path) -> None:
    packed = tmp_path / "library.csv"
    packed.write_bytes(gzip.compress(b"smiles,y\nCCO,1\n"))
    with pytest.raises(DataError, match=r"library.csv: the file is gzip-compressed; name it "):
        read_molecules(packed)
    excel = tmp_path / "excel.csv"
    excel.write_bytes("smiles,y\nCCO,1\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"excel.csv: the file is UTF-16 text.*UTF-8"):
        read_molecules(excel)


def test_missing_column_lists_existing(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", CSV_TEXT)
    with pytest.raises(DataError) as info:
        read_molecules(path, columns=["y", "pIC50"])
    message = str(info.value)
    assert "pIC50" in message and "m.csv" in message
    assert "['id', 'smiles', 'y', 'label']" in message
    with pytest.raises(DataError, match="Structure"):
        read_molecules(path, smiles_column="Structure")
    with pytest.raises(DataError, match="cid"):
        iter_molecule_chunks(path, id_column="cid")  # raised before iterating


def test_missing_column_of_a_file_with_another_separator_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "semi.csv", "smiles;y\nCCO;1\n")
    with pytest.raises(DataError, match="separated by ';' rather than ','"):
        read_molecules(path, smiles_column="smiles", columns=["y"])


def test_duplicate_header_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dup.csv.*duplicate.*\['y'\]"):
        read_molecules(write(tmp_path / "dup.csv", "smiles,y,y\nCCO,1,2\n"))


def test_empty_header_cells_get_pandas_names(tmp_path: Path) -> None:
    """A CSV written with pandas' index (empty first header cell) or with a separator at the
    end of every line reads like any other."""
    frame = pd.DataFrame({"smiles": ["CCO", "CCC"], "y": [1.5, 2.5]})
    frame.to_csv(tmp_path / "indexed.csv")
    indexed = read_molecules(tmp_path / "indexed.csv")
    assert indexed.columns.tolist() == ["row", "smiles", "Unnamed: 0", "y"]
    assert indexed["y"].tolist() == [1.5, 2.5]
    assert read_molecules(tmp_path / "indexed.csv", columns=["y"])["y"].tolist() == [1.5, 2.5]
    trailing = write(tmp_path / "excel.csv", "smiles,y,\nCCO,1,\nCCC,2,\n")
    assert list_columns(trailing) == ["smiles", "y", "Unnamed: 2"]
    assert read_molecules(trailing, columns=["y"])["y"].tolist() == [1, 2]
    blank = write(tmp_path / "blank.csv", "smiles,y, \nCCO,1,a\n")  # pandas keeps " "
    assert read_molecules(blank)[" "].tolist() == ["a"]


def test_parquet_smiles_stored_as_binary_are_read_as_text(tmp_path: Path) -> None:
    """Spark and other Arrow writers may store strings as type binary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    smiles = pa.array([b"CCO", b"c1ccccc1O", None, b"\xff"], type=pa.binary())
    pq.write_table(pa.table({"smiles": smiles, "id": list("abcd")}), tmp_path / "bin.parquet")
    frame = read_molecules(tmp_path / "bin.parquet", id_column="id")
    assert frame["smiles"].tolist()[:2] == ["CCO", "c1ccccc1O"]
    assert pd.isna(frame["smiles"][2]) and frame["smiles"][3] == "\ufffd"  # read, then invalid


def test_parquet_with_a_pandas_index(tmp_path: Path) -> None:
    """An unnamed stored index is left out; a named one is a column like the others (read as
    text when it is the id column, as ids of every format are)."""
    frame = pd.DataFrame({"smiles": ["CCO", "CCC", "CCN"], "y": [1, 2, 3]}, index=[5, 7, 9])
    frame.to_parquet(tmp_path / "unnamed.parquet")
    unnamed = read_molecules(tmp_path / "unnamed.parquet")
    assert unnamed.columns.tolist() == ["row", "smiles", "y"]
    assert unnamed["row"].tolist() == [1, 2, 3] and unnamed["y"].tolist() == [1, 2, 3]
    frame.rename_axis("cid").to_parquet(tmp_path / "named.parquet")
    assert list_columns(tmp_path / "named.parquet") == ["smiles", "y", "cid"]
    named = read_molecules(tmp_path / "named.parquet", id_column="cid", columns=["y"])
    assert named["cid"].tolist() == ["5", "7", "9"]
    # 64-bit ids with a gap stay exact (pandas would hold them as floats)
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pa.array([1234567890123456789, None, 7], type=pa.int64())
    pq.write_table(pa.table({"smiles": ["C", "CC", "CCC"], "cid": ids}), tmp_path / "big.parquet")
    big = read_molecules(tmp_path / "big.parquet", id_column="cid")
    assert big["cid"][0] == "1234567890123456789" and big["cid"][2] == "7"
    assert pd.isna(big["cid"][1]) and named["smiles"].tolist() == [
        "CCO",
        "CCC",
        "CCN",
    ]
    # consecutive ids in a named RangeIndex are stored as metadata only, not as a column
    stepped = frame.reset_index(drop=True)
    stepped.index = pd.RangeIndex(1000, 1006, 2, name="cid")
    stepped.to_parquet(tmp_path / "range.parquet")
    assert list_columns(tmp_path / "range.parquet") == ["smiles", "y", "cid"]
    chunks = iter_molecule_chunks(tmp_path / "range.parquet", chunk_size=2, id_column="cid")
    assert [c["cid"].tolist() for c in chunks] == [["1000", "1002"], ["1004"]]
    assert read_molecules(tmp_path / "range.parquet", columns=["cid"])["cid"].tolist() == [
        1000,
        1002,
        1004,
    ]
    # a whole-table read leaves it out, as pandas does (it is no default target)
    assert "cid" not in read_molecules(tmp_path / "range.parquet").columns
    # metadata carried over from a longer table does not describe these rows: left out
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "range.parquet").slice(1)
    pq.write_table(table, tmp_path / "stale.parquet")
    assert list_columns(tmp_path / "stale.parquet") == ["smiles", "y"]


def test_malformed_csv_names_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="bad.csv"):
        read_molecules(write(tmp_path / "bad.csv", "smiles,y\nCCO,1\nCCN,1,2,3\n"))


def test_extra_fields_are_refused_when_reading_some_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "ragged.csv", "smiles,name\nCCO,ethanol\nCCN,ethyl,amine\n")
    with pytest.raises(DataError, match="ragged.csv: .*line 3 has 3 fields.* 2 columns"):
        list(iter_molecule_chunks(path, columns=[], id_column="name", chunk_size=1))
    with pytest.raises(DataError, match="ragged.csv: .*line 3 has 3 fields"):
        read_molecules(path, columns=[], id_column="name")
    trailing = write(tmp_path / "trailing.tsv", "smiles\tname\nCCO\tethanol\nCCN\tamine\t\n")
    assert read_molecules(trailing, columns=[], id_column="name")["name"].tolist() == [
        "ethanol", "amine"
    ]  # fmt: skip


def test_a_separator_ending_every_row_shifts_no_column(tmp_path: Path) -> None:
    """Spreadsheet exports that end every data row with a separator: each value stays under
    its own header (pandas would make the first column the index and shift the rest left)."""
    path = write(tmp_path / "trailing.csv", "smiles,logS,pIC50\nCCO,1.5,6.1,\nCCC,1.2,5.0,\n")
    for columns in (None, ["pIC50"]):
        frame = read_molecules(path, columns=columns)
        assert frame["smiles"].tolist() == ["CCO", "CCC"]
        assert frame["pIC50"].tolist() == [6.1, 5.0]
    assert read_molecules(path)["logS"].tolist() == [1.5, 1.2]


def test_columns_named_like_the_added_ones_are_kept_renamed(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "SMILES,smiles,row\nCCO,x,7\n")
    with pytest.warns(UserWarning, match=r"\['smiles', 'row'\] share a name"):
        frame = read_molecules(path, smiles_column="SMILES")
    assert frame.columns.tolist() == ["row", "smiles", "input_smiles", "input_row"]
    assert frame.iloc[0].tolist() == [2, "CCO", "x", 7]
    assert read_molecules(path, smiles_column="SMILES", columns=[])["smiles"].tolist() == ["CCO"]
    # asked for by name, they would read molml's own columns: refused
    with pytest.raises(DataError, match=r"\['row'\] share a name .* rename them in the file"):
        read_molecules(path, smiles_column="SMILES", columns=["row"])
    with pytest.raises(DataError, match=r"\['smiles'\] share a name"):
        read_molecules(path, smiles_column="SMILES", id_column="smiles")


@pytest.mark.parametrize("name", ["m.csv", "lib.smi", "lib.sdf", "m.parquet"])
def test_chunks_concatenate_to_full_read(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "lib.sdf":
        write_sdf(path)
    elif name == "lib.smi":
        write(path, "smiles id\n" + "".join(f"{'C' * i} m{i}\n" for i in range(1, 8)))
    else:
        write(tmp_path / "m.csv", CSV_TEXT + "".join(f"00{i},{'C' * i},{i},x\n" for i in range(5)))
        if name == "m.parquet":
            pd.read_csv(tmp_path / "m.csv").to_parquet(path)
    full = read_molecules(path)
    chunks = list(iter_molecule_chunks(path, chunk_size=2))
    assert all(len(chunk) <= 2 for chunk in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), full, check_dtype=False)


def test_chunks_on_real_dataset() -> None:
    path = SHARED / "tox21.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    full = read_molecules(path)
    chunks = list(iter_molecule_chunks(path, chunk_size=3000))
    assert [len(chunk) for chunk in chunks] == [3000, 3000, 1831]
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined, full, check_dtype=False)
    assert full["row"].iloc[-1] == 7832


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="chunk_size"):
        iter_molecule_chunks(write(tmp_path / "m.csv", CSV_TEXT), chunk_size=0)


def test_an_id_column_that_is_the_smiles_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lib.csv"
    path.write_text("ID,SMILES\nA,CCO\n")
    for smiles_column, id_column in ((None, "SMILES"), ("ID", "ID")):
        with pytest.raises(DataError, match=f"id column '{id_column}' is the column the SMILES"):
            read_molecules(path, smiles_column=smiles_column, id_column=id_column)


@pytest.mark.parametrize("gzipped", [False, True])
def test_an_sdf_record_rdkit_cannot_sanitize_keeps_its_title_tags_and_reason(
    tmp_path: Path, gzipped: bool
) -> None:
    from molml.chem.parsing import InvalidMoleculeError, parse_smiles

    blocks = []
    records = [("ok-1", "CCO", False), ("hypervalent-42", "CC(C)(C)C", True),
               ("ok-3", "c1ccccc1", False)]  # fmt: skip
    for title, smiles, extra_carbon in records:
        mol = Chem.RWMol(Chem.MolFromSmiles(smiles))
        if extra_carbon:  # a fifth bond on the central carbon
            mol.AddBond(1, mol.AddAtom(Chem.Atom(6)), Chem.BondType.SINGLE)
        mol.SetProp("_Name", title)
        cid = title.split("-")[1]
        blocks.append(Chem.MolToMolBlock(mol, kekulize=False) + f">  <CID>\n{cid}\n\n$$$$\n")
    path = write(tmp_path / "lib.sdf", "".join(blocks))
    if gzipped:
        path = gzip_copy(path)
    frame = read_molecules(path, id_column="CID")
    assert frame["CID"].tolist() == ["1", "42", "3"]
    assert frame["_Name"].tolist() == ["ok-1", "hypervalent-42", "ok-3"]
    with pytest.raises(InvalidMoleculeError, match="valence"):
        parse_smiles(frame["smiles"][1])
    assert frame["smiles"][2] == "c1ccccc1"


def test_an_sdf_record_cut_short_shifts_no_other_record(tmp_path: Path) -> None:
    """RDKit's supplier, given an atom block that ends at the $$$$ line, reads on into the next
    record; each record keeps its own number, SMILES and title all the same."""
    blocks = []
    for number, smiles in enumerate(["CCO", "CCCC", "CCN", "CC"], start=1):
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("_Name", f"t{number}")
        blocks.append(Chem.MolToMolBlock(mol) + f">  <CID>\n{number}\n\n$$$$\n")
    lines = blocks[1].splitlines(keepends=True)
    blocks[1] = "".join(lines[:6]) + "$$$$\n"  # the counts line promises 4 atoms, 2 follow
    path = write(tmp_path / "cut.sdf", "".join(blocks))
    frame = read_molecules(path, id_column="CID")
    assert frame["row"].tolist() == [1, 2, 3, 4]
    assert frame["CID"][[0, 2, 3]].tolist() == ["1", "3", "4"]
    assert frame["smiles"][[0, 2, 3]].tolist() == ["CCO", "CCN", "CC"]
    assert pd.isna(frame["smiles"][1]) and pd.isna(frame["CID"][1])


@pytest.mark.parametrize("chunk_size", [None, 700])
def test_an_unclosed_quote_names_its_line(tmp_path: Path, chunk_size: int | None) -> None:
    """pandas counts that error's rows from 0: the message named the line before."""
    lines = ["smiles,id"] + [f"C{'C' * (i % 5)}O,{i}" for i in range(3000)]
    lines[2500] = '"CCCl,x'  # line 2501 of the file
    path = tmp_path / "quote.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="quote opened on line 2501 is never closed"):
        if chunk_size is None:
            read_molecules(path)
        else:
            list(iter_molecule_chunks(path, chunk_size=chunk_size))


def test_parse_errors_name_lines_after_a_field_that_spans_lines(tmp_path: Path) -> None:
    """pandas counts records; a quoted line break before the bad record shifted the line."""
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text('smiles,name\nCCO,"a\nb"\nCCC,x\nCCN,"open\nCCCC,y\n')
    with pytest.raises(DataError, match="quote opened on line 5 is never closed"):
        read_molecules(unclosed)
    extra = tmp_path / "extra.csv"
    extra.write_text('smiles,name\nCCO,"a\nb"\nCCC,x,3\n')
    with pytest.raises(DataError, match="line 4 has 3 fields"):
        read_molecules(extra)


def test_a_file_without_one_valid_molecule_names_its_most_common_kind_of_failure(
    tmp_path: Path,
) -> None:
    """Grouped by kind (not the first of many one-off messages, each quoting its SMILES)."""
    import pandas as pd

    from molml.data.readers import check_some_valid

    path = write(tmp_path / "lib.csv", "smiles\na\nb\nC(C)(C)(C)(C)C\n")
    statuses = [
        "invalid SMILES syntax: 'a'",
        "invalid SMILES syntax: 'b'",
        "RDKit cannot sanitize SMILES 'C(C)(C)(C)(C)C': Explicit valence",
    ]
    frame = pd.DataFrame({"smiles": ["a", "b", "C(C)(C)(C)(C)C"], "status": statuses})
    with pytest.raises(DataError, match=r"most often: invalid SMILES syntax; every row"):
        check_some_valid(frame, path, tmp_path / "out.csv")
