"""Read molecule tables (CSV/TSV, Parquet, SMILES files, SDF; optionally gzipped) into pandas.

Every reader returns a DataFrame with a ``row`` column (1-based position in the input: the
line on which the data row starts for text formats, also when a quoted CSV field spans several
lines; the record number for SDF and Parquet) and a ``smiles`` column (``str``; missing, blank
or unreadable entries are NaN). Rows are never dropped, so later errors can always name the
offending row of the file. The SMILES and id columns are read as text exactly as written (an id
``NA`` stays ``"NA"``); in other columns empty cells and pandas' usual NA strings are missing.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molml.errors import DataError

_KINDS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".smi": "smi",
    ".smiles": "smi",
    ".sdf": "sdf",
    ".mol": "sdf",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    *_KINDS,
    *(f"{suffix}.gz" for suffix in _KINDS if suffix != ".parquet"),
)
"""File name endings understood by the readers (``.gz`` works on all but Parquet)."""

SDF_TITLE = "_Name"  # the column of an SD file's record titles
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
# pandas' default missing-value strings, kept for every column except the SMILES and id columns
_NA_STRINGS = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
    *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)

Chunks = Iterator[pd.DataFrame]
# the csv module refuses fields over 128 KiB by default; a long field (a huge SMILES, a
# notes column) must become a row with a reason, not stop the read
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
_ROW = "__molml_row__"  # the readers' record numbers, apart from any column of the file
_PARQUET_INDEX = re.compile(r"__index_level_\d+__")  # pandas' unnamed index, stored by to_parquet


@dataclass(frozen=True)
class _Reader:
    chunks: Callable[[], Chunks]
    smiles_column: str  # the column the SMILES are read from
    columns: list[str]  # every column of the file


@dataclass(frozen=True)
class _Source:
    path: Path
    kind: str  # csv | tsv | parquet | smi | sdf
    gzipped: bool

    @property
    def sep(self) -> str:
        return "\t" if self.kind == "tsv" else ","


def read_molecules(
    path: str | Path,
    *,
    smiles_column: str | None = None,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
    has_header: bool | None = None,
) -> pd.DataFrame:
    """Read a whole molecule file into a DataFrame with ``row`` and ``smiles`` columns.

    ``smiles_column`` names the SMILES column (default: ``smiles`` in any case, else the first
    whose name ends in it, such as ``canonical_smiles``, else the first column, with a
    warning; for SDF the SMILES RDKit writes for each record, or the named SD tag).
    ``columns`` restricts the other columns kept (default: all); ``id_column`` is kept too, as
    text in every format (it may not be the SMILES column).
    ``has_header`` applies to CSV/TSV (default True; without a header the columns are
    ``column_1``, ``column_2``, ...) and SMILES files (default: line 1 is a header when its first
    token contains ``smiles`` in any case, e.g. ``SMILES Name`` or ``canonical_smiles id``).
    ``frame.attrs`` records the ``smiles_column`` read and the file's ``columns``.
    Raises :class:`DataError` naming the file for missing/empty/unsupported/truncated files,
    missing or duplicate columns and unparsable content.
    """
    reader = _open_reader(path, smiles_column, columns, id_column, has_header, chunk_size=None)
    frames = list(reader.chunks())
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame.attrs.update(smiles_column=reader.smiles_column, columns=reader.columns)
    return frame


def read_molecules_to_predict(
    path: str | Path, smiles_column: str | None, chosen: str | None = None
) -> pd.DataFrame:
    """:func:`read_molecules` for a file to predict with a model trained on ``smiles_column``:
    the ``chosen`` column if given (a missing one names the file's columns), else the training
    column when the file has it, else the usual choice (``smiles`` or the first)."""
    if chosen is not None:
        return read_molecules(path, smiles_column=chosen)
    named = smiles_column if smiles_column in list_columns(path) else None
    return read_molecules(path, smiles_column=named)


def nothing_valid_message(
    path: str | Path,
    rows: int,
    reason: str,
    written: str | Path,
    chooser: str,
    has_header: bool | None = None,
) -> str:
    """Why a file in which no molecule was valid is an error (its rows were written to
    ``written``): most often the SMILES were read from the wrong column, so for a SMILES
    ``reason`` the message names the file's columns and the option (``chooser``) that picks one."""
    message = (
        f"none of the {rows} molecules of {path} was valid (most often: {reason}; every row's "
        f"reason is in {written})"
    )
    if "SMILES" in reason:
        message += (
            "; is the SMILES read from the right column? The file has columns "
            f"{list_columns(path, has_header=has_header)}: {chooser} picks one"
        )
    return message


def failure_kind(status: str) -> str:
    """A row's failure status grouped by kind: without the quoted SMILES and RDKit's details."""
    return re.sub(r"\s*'[^']*'", "", status).split(":", 1)[0]


def check_some_valid(frame: pd.DataFrame, path: str | Path, written: str | Path) -> None:
    """Raise :class:`DataError` when no row of a predicted file (``status`` column) was a valid
    molecule (see :func:`nothing_valid_message`)."""
    if frame.empty or (frame["status"] == "ok").any():
        return
    reason = frame["status"].map(failure_kind).mode().iloc[0]
    raise DataError(
        nothing_valid_message(path, len(frame), reason, written, "data.predict_smiles_column")
    )


def iter_molecule_chunks(
    path: str | Path,
    *,
    chunk_size: int = 10000,
    smiles_column: str | None = None,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
    has_header: bool | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream a molecule file as DataFrames of at most ``chunk_size`` rows (bounded memory).

    Same arguments and columns as :func:`read_molecules`; concatenating the chunks gives the
    same rows. File and column problems are raised by this call; a file without data rows
    raises when iterated.
    """
    if chunk_size < 1:
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return _open_reader(path, smiles_column, columns, id_column, has_header, chunk_size).chunks()


def _separator_hint(source: _Source, available: list[str]) -> str:
    """A hint when a CSV/TSV header holds another separator (a ';'-separated .csv is read as
    one column), else ""."""
    other = next((sep for sep in (";", "\t", ",", "|") if any(sep in c for c in available)), None)
    if other is None or other == source.sep or source.kind not in ("csv", "tsv"):
        return ""
    return (
        f" (its header holds {other!r}: is the file separated by {other!r} rather than "
        f"{source.sep!r}? The separator follows the suffix: .csv comma, .tsv tab)"
    )


def separator_hint(path: str | Path, columns: list[str]) -> str:
    """:func:`_separator_hint` for a file by its path (for messages about its columns)."""
    return _separator_hint(_source(path), columns)


def list_columns(path: str | Path, *, has_header: bool | None = None) -> list[str]:
    """Column names that :func:`read_molecules` can select from ``path``.

    For SDF these are ``smiles`` (written by RDKit; it shadows an SD tag of that name),
    ``_Name`` (the record title) and every SD tag in the file; for a SMILES file without a
    header line, ``smiles`` and ``id``.
    """
    return _columns(_source(path), has_header)


def count_records(path: str | Path, *, has_header: bool | None = None) -> int:
    """Number of data rows in ``path`` from a quick scan (lines, Parquet footer, SDF ``$$$$``).

    Meant for progress bars: a CSV field spanning several lines is counted once per line.
    Raises :class:`DataError` for a truncated or corrupt gzip file.
    """
    source = _source(path)
    if source.kind == "parquet":
        return _parquet_file(source).metadata.num_rows
    if source.kind == "sdf":
        return _sdf_scan(source)[1]
    smi = source.kind == "smi"
    header = _smi_layout(source, has_header)[1] if smi else has_header is not False
    opener = gzip.open if source.gzipped else open
    lines = 0
    last = b"\n"
    try:
        with opener(source.path, "rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
    except (OSError, *_GZIP_ERRORS) as exc:
        raise _read_error(source, exc) from exc
    lines += last != b"\n"  # a last line without a newline
    return max(0, lines - header)


# --------------------------------------------------------------------------------------------
# Column bookkeeping shared by all formats


def _open_reader(
    path: str | Path,
    smiles_column: str | None,
    columns: Sequence[str] | None,
    id_column: str | None,
    has_header: bool | None,
    chunk_size: int | None,
) -> _Reader:
    """Validate the file and the requested columns, then return the reader."""
    source = _source(path)
    available = _columns(source, has_header)
    duplicates = sorted({name for name in available if available.count(name) > 1})
    if duplicates:
        raise DataError(f"{source.path}: duplicate column name(s) in header: {duplicates}")
    if smiles_column is None:
        named = _named_smiles_column(available)
        smiles_from = named or available[0]
        if named is None and source.kind != "smi":  # .smi: the first column by format
            headless = (
                has_header is None and source.kind in ("csv", "tsv") and _is_smiles(smiles_from)
            )
            warnings.warn(
                f"{source.path}: no column name ends in 'smiles'; reading SMILES "
                f"from the first column {smiles_from!r} (the file has columns {available}); "
                + (
                    "that header is itself a SMILES: if the file has no header line, its first "
                    "molecule is lost; say so (has_header=False, molml screen --no-header)"
                    if headless
                    else "pass smiles_column to choose another"
                )
                + _separator_hint(source, available),
                stacklevel=3,
            )
    else:
        smiles_from = smiles_column
    if id_column is not None and id_column == smiles_from:
        raise DataError(
            f"{source.path}: id column {id_column!r} is the column the SMILES are read from; "
            "the output has them as 'smiles' already: choose another id column or none"
        )
    wanted = [smiles_from, *([id_column] if id_column else []), *(columns or [])]
    missing = [name for name in dict.fromkeys(wanted) if name not in available]
    if missing:
        raise DataError(
            f"{source.path}: column(s) {missing} not found; the file has columns {available}"
            + _separator_hint(source, available)
        )
    generated = "smiles" if source.kind == "sdf" else None  # RDKit's SMILES, never an extra
    if columns is None:  # every column, but a Parquet RangeIndex only when it is the ids
        ranges = _parquet_range_indexes(_parquet_file(source)) if source.kind == "parquet" else {}
        candidates = [c for c in available if c not in ranges or c == id_column]
    else:
        candidates = wanted
    keep = list(dict.fromkeys(c for c in candidates if c not in (smiles_from, generated)))
    requested = [c for c in (id_column, *(columns or [])) if c in ("row", "smiles")]
    if requested:
        raise DataError(
            f"{source.path}: column(s) {requested} share a name with the 'row'/'smiles' columns "
            "molml adds; rename them in the file to read them as targets, ids or split"
        )
    renamed = {c: f"input_{c}" for c in keep if c in ("row", "smiles")}
    if renamed:
        warnings.warn(
            f"{source.path}: column(s) {list(renamed)} share a name with the 'row'/'smiles' "
            f"columns molml adds; kept as {list(renamed.values())}",
            stacklevel=3,
        )
    read = {
        "csv": _csv_chunks,
        "tsv": _csv_chunks,
        "parquet": _parquet_chunks,
        "smi": _smi_chunks,
        "sdf": _sdf_chunks,
    }[source.kind]
    usecols = None if columns is None else [smiles_from, *keep]

    def chunks() -> Chunks:
        total = 0
        raw_chunks = read(source, has_header, chunk_size, usecols, smiles_from, id_column)
        for raw in raw_chunks:
            if raw.empty:
                continue
            total += len(raw)
            yield _finish(raw, smiles_from, keep, renamed)
        if total == 0:
            raise DataError(f"{source.path}: no data rows")

    return _Reader(chunks, smiles_from, available)


def default_smiles_column(path: str | Path) -> str | None:
    """The column :func:`read_molecules` reads SMILES from when none is named, from the file's
    header alone; None for SD files, whose SMILES come from their records."""
    if file_kind(path) == "sdf":
        return None
    columns = list_columns(path)
    return _named_smiles_column(columns) or (columns[0] if columns else None)


def _named_smiles_column(available: list[str]) -> str | None:
    """The column named ``smiles`` in any case, else the first whose name ends in it
    (``canonical_smiles``, ``Canonical SMILES``, ``Drug SMILES``; not ``smiles_length``), else
    None."""
    lowered = [name.strip().lower() for name in available]
    if "smiles" in lowered:
        return available[lowered.index("smiles")]
    ending = (name for name, low in zip(available, lowered, strict=True) if low.endswith("smiles"))
    return next(ending, None)


def _finish(
    raw: pd.DataFrame, smiles_from: str, keep: list[str], renamed: dict[str, str]
) -> pd.DataFrame:
    raw = raw.reset_index(drop=True)
    out = raw.loc[:, keep].rename(columns=renamed)
    out.insert(0, "smiles", raw[smiles_from].map(_clean_smiles))
    out.insert(0, "row", raw[_ROW])
    return out


def _clean_smiles(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bytes):  # a Parquet column of Arrow type binary (Spark writes them)
        value = value.decode("utf-8", errors="replace")
    text = str(value).strip()
    return text or None


def file_kind(path: str | Path) -> str | None:
    """The format a file's name gives (``csv``, ``tsv``, ``parquet``, ``smi``, ``sdf``; a
    ``.gz`` ending looked through), or None for a name the readers do not know."""
    return _KINDS.get(Path(Path(path).name.lower().removesuffix(".gz")).suffix)


def _source(path: str | Path) -> _Source:
    path = Path(path)
    gzipped = path.name.lower().endswith(".gz")
    kind = file_kind(path)
    if kind is None or (gzipped and kind == "parquet"):
        raise DataError(
            f"{path}: unsupported file type; supported endings: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise DataError(f"file not found: {path}{where}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    if kind != "parquet":
        with path.open("rb") as handle:
            head = handle.read(2)
        if head == b"\x1f\x8b" and not gzipped:
            raise DataError(f"{path}: the file is gzip-compressed; name it {path.name}.gz")
        if head in (b"\xff\xfe", b"\xfe\xff"):
            raise DataError(
                f"{path}: the file is UTF-16 text (Excel's 'Unicode Text'); save it as UTF-8 "
                "(Excel: 'CSV UTF-8')"
            )
    return _Source(path, kind, gzipped)


def _columns(source: _Source, has_header: bool | None) -> list[str]:
    if source.kind in ("csv", "tsv"):
        return _csv_columns(source, has_header)
    if source.kind == "parquet":
        parquet = _parquet_file(source)
        stored = [n for n in parquet.schema_arrow.names if not _PARQUET_INDEX.fullmatch(n)]
        return [*stored, *_parquet_range_indexes(parquet)]
    if source.kind == "smi":
        return _smi_layout(source, has_header)[0]
    return ["smiles", SDF_TITLE, *_sdf_scan(source)[0]]


@contextmanager
def _open_text(source: _Source) -> Iterator[IO[str]]:
    opener = gzip.open if source.gzipped else open
    try:
        # a byte that is not UTF-8 becomes U+FFFD: its row is an invalid molecule with that
        # reason, and the rest of the file is read (a screen or a fit is not stopped by it)
        with opener(
            source.path, "rt", encoding="utf-8-sig", errors="replace", newline=""
        ) as handle:
            yield handle
    except (OSError, UnicodeDecodeError, *_GZIP_ERRORS) as exc:
        raise _read_error(source, exc) from exc


def _read_error(source: _Source, exc: Exception, what: str = "cannot read file") -> DataError:
    """The DataError for an exception raised while reading ``source``."""
    if source.gzipped and isinstance(exc, _GZIP_ERRORS):
        return DataError(f"{source.path}: gzip file is truncated or corrupt ({exc})")
    return DataError(f"{source.path}: {what}: {exc}")


# --------------------------------------------------------------------------------------------
# CSV / TSV


def _csv_columns(source: _Source, has_header: bool | None) -> list[str]:
    with _open_text(source) as handle:
        first = next(csv.reader(handle, delimiter=source.sep), None)
    if not first:
        raise DataError(f"{source.path}: empty file (no header line)")
    if has_header is False:
        return [f"column_{i}" for i in range(1, len(first) + 1)]
    # an empty header cell (pandas' index column, a trailing separator) gets pandas' own name
    return [name if name else f"Unnamed: {i}" for i, name in enumerate(first)]


def _csv_chunks(
    source: _Source,
    has_header: bool | None,
    chunk_size: int | None,
    usecols: list[str] | None,
    smiles_from: str,
    id_column: str | None,
) -> Chunks:
    header = has_header is not False
    text = [name for name in (smiles_from, id_column) if name]
    names = _csv_columns(source, has_header)
    options: dict[str, Any] = {
        "sep": source.sep,
        "header": 0 if header else None,
        "usecols": usecols,
        "dtype": dict.fromkeys(text, str),
        "keep_default_na": False,  # text columns keep "NA", "None", "null" ...
        "na_values": {name: [""] if name in text else _NA_STRINGS for name in names},
        "skip_blank_lines": False,  # a blank line is a row, as in every other format
        # rows that all end in a separator (an empty extra field) must not make the first
        # column pandas' index and shift the others left
        "index_col": False,
        "encoding": "utf-8-sig",
        "encoding_errors": "replace",  # as in _open_text
        "compression": "gzip" if source.gzipped else None,
    }
    if not header:
        options["names"] = names
    try:
        starts = _record_lines(source, header, len(names))
        if chunk_size is None:
            frames: Iterator[pd.DataFrame] = iter([pd.read_csv(source.path, **options)])
        else:
            frames = pd.read_csv(source.path, chunksize=chunk_size, **options)
        for frame in frames:
            frame.insert(0, _ROW, list(islice(starts, len(frame))))
            yield frame
    except pd.errors.ParserError as exc:
        raise _parser_error(source, header, len(names), exc) from exc
    except (UnicodeDecodeError, OSError, *_GZIP_ERRORS) as exc:
        raise _read_error(source, exc, "cannot parse file") from exc


def _parser_error(
    source: _Source, header: bool, n_columns: int, exc: pd.errors.ParserError
) -> DataError:
    """pandas' parse error with the file's line instead of its record count (records and
    lines differ once a quoted field holds a line break)."""
    text = str(exc)
    unclosed = re.search(r"EOF inside string starting at row (\d+)", text)  # from 0, header too
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)  # from 1
    if unclosed is None and fields is None:
        return _read_error(source, exc, "cannot parse file")
    record = int(unclosed.group(1)) if unclosed else int(fields.group(2)) - 1
    try:
        line = next(islice(_record_lines(source, header, n_columns), record - int(header), None))
    except (DataError, StopIteration) as own:  # a record with too many fields says so itself
        return own if isinstance(own, DataError) else _read_error(source, exc, "cannot parse file")
    if unclosed:
        return DataError(
            f"{source.path}: cannot parse file: the quote opened on line {line} is never closed"
        )
    return DataError(
        f"{source.path}: cannot parse file: line {line} has {fields.group(3)} fields, the file "
        f"has {fields.group(1)} columns (an unquoted separator inside a field?)"
    )


def _is_smiles(text: str) -> bool:
    """Whether ``text`` (a column name) parses as a molecule."""
    with BlockLogs():
        return bool(text.strip()) and Chem.MolFromSmiles(text.strip()) is not None


def _record_lines(source: _Source, header: bool, n_columns: int) -> Iterator[int]:
    """The line on which each data record of a CSV/TSV file starts (quoted fields may hold
    line breaks, so records and lines differ). A record with more non-empty fields than the file
    has columns is refused (pandas would drop them when reading some columns only)."""
    with _open_text(source) as handle:
        reader = csv.reader(handle, delimiter=source.sep)
        if header:
            next(reader, None)
        while True:
            start = reader.line_num + 1
            record = next(reader, None)
            if record is None:
                return
            if len(record) > n_columns and any(field.strip() for field in record[n_columns:]):
                raise DataError(
                    f"{source.path}: cannot parse file: line {start} has {len(record)} fields, "
                    f"the file has {n_columns} columns (an unquoted separator inside a field?)"
                )
            yield start


# --------------------------------------------------------------------------------------------
# Parquet


def _parquet_file(source: _Source) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(source.path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{source.path}: cannot read Parquet file: {exc}") from exc


def _parquet_chunks(
    source: _Source,
    has_header: bool | None,
    chunk_size: int | None,
    usecols: list[str] | None,
    smiles_from: str,
    id_column: str | None,
) -> Chunks:
    parquet = _parquet_file(source)
    ranges = _parquet_range_indexes(parquet)
    # read only when asked for (as a column or the ids): pandas itself keeps them out of the
    # columns, so a whole-table read (default targets) leaves them out too
    wanted = [c for c in usecols or [] if c in ranges]
    if id_column in ranges and id_column not in wanted:
        wanted.append(id_column)
    if usecols is not None:
        usecols = [c for c in usecols if c not in ranges]
    try:
        if chunk_size is None:
            tables: Iterator[Any] = iter([parquet.read(columns=usecols)])
        else:
            batches = parquet.iter_batches(batch_size=chunk_size, columns=usecols)
            tables = (pa.Table.from_batches([batch]) for batch in batches)
        first_row = 1
        for table in tables:
            for name in wanted:  # the values of a named RangeIndex at these rows
                start, step = ranges[name]
                offset = start + step * (first_row - 1)
                values = pa.array(range(offset, offset + step * table.num_rows, step))
                table = table.append_column(name, values)
            if id_column:  # ids are text, as in every other format (exact for 64-bit ints)
                table = _ids_as_text(table, id_column)
            # a stored pandas index stays a column (a named one is data, e.g. compound ids);
            # an unnamed one is dropped, as the column list leaves it out
            frame = table.to_pandas(ignore_metadata=True)
            frame = frame.drop(columns=[c for c in frame.columns if _PARQUET_INDEX.fullmatch(c)])
            frame.insert(0, _ROW, range(first_row, first_row + len(frame)))
            first_row += len(frame)
            yield frame
    except (OSError, ValueError) as exc:  # pyarrow errors derive from these
        raise DataError(f"{source.path}: cannot read Parquet file: {exc}") from exc


def _parquet_range_indexes(parquet: pq.ParquetFile) -> dict[str, tuple[int, int]]:
    """Named pandas RangeIndexes that ``to_parquet`` kept as metadata only (no column):
    name -> (start, step). They are data (e.g. consecutive compound ids), read as a column
    when asked for. A range whose length is not the row count (metadata carried over from
    another table) is left out, as pandas leaves it."""
    metadata = parquet.schema_arrow.metadata or {}
    try:
        indexes = json.loads(metadata.get(b"pandas", b"{}")).get("index_columns", [])
    except ValueError:
        return {}
    rows = parquet.metadata.num_rows
    return {
        str(index["name"]): (int(index["start"]), int(index["step"]))
        for index in indexes
        if isinstance(index, dict)
        and index.get("kind") == "range"
        and index.get("name")
        and len(range(int(index["start"]), int(index["stop"]), int(index["step"]))) == rows
    }


def _ids_as_text(table: pa.Table, id_column: str) -> pa.Table:
    index = table.schema.get_field_index(id_column)
    return table.set_column(index, id_column, pc.cast(table.column(index), pa.string()))


# --------------------------------------------------------------------------------------------
# SMILES files: "SMILES [id]" per line, whitespace separated, optional header line


def _smi_layout(source: _Source, has_header: bool | None) -> tuple[list[str], bool]:
    """Column names and whether line 1 is a header.

    Line 1 is taken as a header when its first token contains ``smiles`` in any case (``SMILES
    Name``, ``canonical_smiles id``): no SMILES contains those letters in a row. Any other first
    line is data, even an invalid SMILES that looks like a word: a missed header costs one
    invalid row, a lost first record would go unnoticed.
    """
    with _open_text(source) as handle:
        first = handle.readline().split()
    if has_header is None:
        has_header = bool(first and "smiles" in first[0].lower())
    if not has_header:
        return ["smiles", "id"], False
    if not first:
        raise DataError(f"{source.path}: header line is empty")
    return (first if len(first) > 1 else [*first, "id"]), True


def _smi_chunks(
    source: _Source,
    has_header: bool | None,
    chunk_size: int | None,
    usecols: list[str] | None,
    smiles_from: str,
    id_column: str | None,
) -> Chunks:
    names, header = _smi_layout(source, has_header)
    with _open_text(source) as handle:
        lines = enumerate(handle, start=1)
        if header:
            next(lines)
        while block := list(islice(lines, chunk_size)):
            records = []
            for number, line in block:
                fields = line.strip().split(maxsplit=len(names) - 1)
                if line.startswith("\t") and fields:  # an empty SMILES field, then the name
                    fields = [None, *line.strip().split(maxsplit=len(names) - 2)]
                records.append([number, *fields, *[None] * (len(names) - len(fields))])
            yield pd.DataFrame(records, columns=[_ROW, *names], dtype=object)


# --------------------------------------------------------------------------------------------
# SDF / MOL


def _sdf_scan(source: _Source) -> tuple[list[str], int]:
    """SD tag names (in order of first appearance) and number of records, from a text scan.

    Whitespace after the last ``$$$$`` is not a record (RDKit would report it as one).
    """
    tags: dict[str, None] = {}
    records = 0
    in_data = expect_header = pending = False
    with _open_text(source) as handle:
        for raw in handle:
            line = raw.rstrip("\r\n")
            if line.startswith("$$$$"):
                records += 1
                in_data = expect_header = pending = False
                continue
            pending = pending or bool(line.strip())
            if line.startswith("M  END"):
                in_data = expect_header = True
            elif in_data and expect_header and line.startswith(">"):
                match = re.search(r"<([^>]*)>", line)
                if match and match.group(1) != "smiles":  # shadowed by the generated column
                    tags.setdefault(match.group(1))
                expect_header = False
            elif in_data and not line.strip():
                expect_header = True
    return list(tags), records + pending


def _sdf_chunks(
    source: _Source,
    has_header: bool | None,
    chunk_size: int | None,
    usecols: list[str] | None,
    smiles_from: str,
    id_column: str | None,
) -> Chunks:
    names = ["smiles", SDF_TITLE, *_sdf_scan(source)[0]]
    with _open_text(source) as handle, BlockLogs():  # read errors become DataErrors there
        records = enumerate(_sdf_record_texts(handle), start=1)
        while block := list(islice(records, chunk_size)):
            rows = [_sdf_record(number, text) for number, text in block]
            yield pd.DataFrame.from_records(rows, columns=[_ROW, *names])


def _sdf_record_texts(handle: IO[str]) -> Iterator[str]:
    """Each record's text: up to and including a line starting with ``$$$$``, as
    :func:`_sdf_scan` counts them (text after the last one is a record unless blank). Records
    are split here rather than by RDKit's supplier, which after a record cut short can run
    into the next one and shift every number after it."""
    lines: list[str] = []
    for line in handle:
        lines.append(line)
        if line.startswith("$$$$"):
            yield "".join(lines)
            lines = []
    if any(line.strip() for line in lines):
        yield "".join(lines)


def _parse_sd_record(text: str, sanitize: bool) -> Chem.Mol | None:
    supplier = Chem.SDMolSupplier()
    supplier.SetData(text, sanitize=sanitize, removeHs=sanitize)
    try:
        return next(iter(supplier), None)
    except RuntimeError:  # RDKit raises for some malformed blocks instead of giving None
        return None


def _sdf_record(number: int, text: str) -> dict[str, Any]:
    """One record's row: its SMILES, title and SD tags. A record RDKit cannot sanitize is read
    again without sanitizing, so that its title and tags are kept and its SMILES fails later
    with the real reason (a valence, a ring that does not kekulize); an unreadable one keeps
    only its number."""
    mol = _parse_sd_record(text, sanitize=True)
    if mol is None:
        mol = _parse_sd_record(text, sanitize=False)
    if mol is None:
        return {_ROW: number}
    try:
        smiles = Chem.MolToSmiles(mol)
    except RuntimeError:
        smiles = None
    record: dict[str, Any] = {name: mol.GetProp(name) for name in mol.GetPropNames()}
    title = mol.GetProp(SDF_TITLE) if mol.HasProp(SDF_TITLE) else ""
    record[SDF_TITLE] = title or None  # an untitled record: a missing id, as a nameless line
    record.update({_ROW: number, "smiles": smiles})
    return record
