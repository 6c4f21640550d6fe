"""Screening results on disk: one Parquet part per chunk, then one merged output.

While a screen runs, each chunk's rows are written to ``<output>.parts/part-<chunk>.parquet``
(atomically: a temporary file renamed into place), whichever rank computed them. A rerun of
the same command finds the finished parts and computes only the rest; the parts are then
merged in chunk order, which is input order, and the parts directory is removed.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import lightning as L
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from lightning.pytorch.callbacks import BasePredictionWriter
from tqdm.auto import tqdm

from molml.data.readers import failure_kind
from molml.errors import DataError
from molml.options import output_file_folder
from molml.screen.options import OUTPUT_SUFFIXES

_PART_GLOB = "part-*.parquet"


def check_output_path(output: str | Path, input_path: str | Path) -> Path:
    """Validate the output file name and its directory before any work is done.

    The directory must exist and be writable, and the output must not be the input file.
    """
    output = Path(output)
    if not output.name.lower().endswith(OUTPUT_SUFFIXES):
        raise DataError(f"{output}: output must end with one of {', '.join(OUTPUT_SUFFIXES)}")
    output_file_folder(output)
    if output.is_dir():
        raise DataError(f"{output} is a folder; the output is a file: choose another path")
    if output.exists() and Path(input_path).exists() and output.samefile(input_path):
        raise DataError(f"{output} is the input file; choose another output path")
    return output


class OutputLock:
    """An exclusive lock on ``<output>.lock`` for as long as one screen writes ``output``.

    A second screen of the same output fails at once with a :class:`DataError` instead of
    racing the first one for its parts and its merge. The lock is a POSIX record lock
    (``lockf``): it belongs to the screening process alone (not to the featurization workers it
    forks), and the operating system drops it when that process ends, so a killed screen never
    leaves a stale lock behind.
    """

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".lock")
        self._handle: IO[str] | None = None

    def __enter__(self) -> OutputLock:
        while True:
            handle = open(self.path, "a")  # noqa: SIM115 - held until __exit__
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                handle.close()
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                raise DataError(
                    f"another molml screen is writing {self.path.with_suffix('')} right now "
                    f"(it holds {self.path}); wait for it or choose another --output"
                ) from None
            # the holder before us may have removed the file between our open and our lock
            if self.path.exists() and os.path.samestat(os.fstat(handle.fileno()), self.path.stat()):
                self._handle = handle
                return self
            handle.close()

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self.path.unlink(missing_ok=True)
            self._handle.close()
            self._handle = None


class PartsDirectory:
    """The ``<output>.parts`` directory of a running or interrupted screen.

    ``manifest.json`` records what the parts were computed from; a rerun must match it.
    """

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".parts")
        self.manifest_path = self.path / "manifest.json"

    def part(self, index: int) -> Path:
        """Result file of chunk ``index``."""
        return self.path / f"part-{index:07d}.parquet"

    def is_done(self, index: int) -> bool:
        """Whether chunk ``index`` has its result on disk."""
        return self.part(index).exists()

    def done(self) -> list[Path]:
        """Finished part files in chunk (input) order."""
        return sorted(self.path.glob(_PART_GLOB))

    def rows_done(self) -> int:
        """Input rows already screened (from the Parquet footers)."""
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.done())

    def start(self, manifest: dict[str, Any], *, overwrite: bool = False) -> int:
        """Create the directory, or check that existing parts come from the same command: a
        folder without finished parts, or with ``overwrite`` the parts of a different command,
        is started afresh; the parts of the same command are resumed.

        Returns the number of chunks already done.
        """
        if self.manifest_path.exists():
            try:
                previous = json.loads(self.manifest_path.read_text())
            except (OSError, ValueError):  # unreadable: it matches no command
                previous = {"manifest": "unreadable"}
            changed = sorted(
                k for k in manifest.keys() | previous.keys() if manifest.get(k) != previous.get(k)
            )
            if changed and (overwrite or not self.done()):  # start this screen afresh
                self.remove()
            elif changed:
                raise DataError(
                    f"{self.path} holds partial results of a different screen (it differs in: "
                    f"{', '.join(changed)}); rerun with --overwrite to start over"
                )
            else:
                for stale in self.path.glob("*.tmp*"):  # a write cut short by a kill
                    stale.unlink()
                return len(self.done())
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic_text(self.manifest_path, json.dumps(manifest, indent=2))
        return 0

    def write(self, index: int, frame: pd.DataFrame, schema: pa.Schema) -> None:
        """Write chunk ``index``'s rows atomically."""
        target = self.part(index)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), tmp)
        os.replace(tmp, target)

    def remove(self) -> None:
        """Delete the directory (after a successful merge, or when nothing can be resumed)."""
        shutil.rmtree(self.path, ignore_errors=True)


def output_schema(id_column: str | None, prediction_columns: list[str]) -> pa.Schema:
    """Column types of the output: row, id, smiles, predictions (float64), status."""
    if id_column in ("row", "smiles", "status", *prediction_columns):
        raise DataError(
            f"the library's id column {id_column!r} has the name of an output column (row, "
            f"smiles, status or one of the model's prediction columns {prediction_columns}); "
            "pass another id column (or none)"
        )
    fields = [pa.field("row", pa.int64())]
    if id_column:
        fields.append(pa.field(id_column, pa.string()))
    fields.append(pa.field("smiles", pa.string()))
    fields += [pa.field(c, pa.float64()) for c in prediction_columns]
    fields.append(pa.field("status", pa.string()))
    return pa.schema(fields)


class ChunkWriter(BasePredictionWriter):
    """Writes each predicted chunk to its part file and shows molecules per second."""

    def __init__(
        self, parts: PartsDirectory, schema: pa.Schema, total: int | None, progress: bool = True
    ) -> None:
        super().__init__(write_interval="batch")
        self.parts = parts
        self.schema = schema
        self.total = total
        self.progress = progress
        self.bar: tqdm | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.progress:
            label = "screening" if trainer.world_size == 1 else "screening (rank 0)"
            self.bar = tqdm(total=self.total, desc=label, unit="mol", smoothing=0.1)
            self.bar.update(self.parts.rows_done())

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: pd.DataFrame,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self.parts.write(batch.index, prediction, self.schema)
        if self.bar is not None:
            self.bar.update(len(prediction) * trainer.world_size)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()


def merge_parts(
    parts: PartsDirectory,
    output: Path,
    *,
    top_k: int | None = None,
    top_k_by: str | None = None,
    lowest: bool = False,
) -> dict[str, Any]:
    """Merge the parts into ``output`` in input order (or keep the best ``top_k`` rows).

    With ``top_k``, failed rows go to ``<output>.failed.csv`` so none is lost. Returns counts:
    rows, ok, failed and the failure reasons.
    """
    files = parts.done()
    counts: Counter[str] = Counter()
    best: pd.DataFrame | None = None
    n_rows = 0
    tmp = output.with_name(output.name + ".tmp")
    failed_path = output.with_name(output.name + ".failed.csv")
    with _table_writer(tmp, parts.part(0) if not files else files[0]) as write:
        for i, file in enumerate(files):
            frame = pd.read_parquet(file)
            n_rows += len(frame)
            failed = frame["status"] != "ok"
            counts.update(failure_kind(s) for s in frame.loc[failed, "status"])
            if top_k is None:
                write(frame)
                continue
            frame.loc[failed].to_csv(
                failed_path, mode="w" if i == 0 else "a", header=i == 0, index=False
            )
            candidates = frame.loc[~failed] if best is None else pd.concat([best, frame[~failed]])
            best = _select(candidates, top_k, top_k_by, lowest)
        if top_k is not None and best is not None:
            write(best.reset_index(drop=True))
    os.replace(tmp, output)
    n_failed = sum(counts.values())
    return {
        "rows": n_rows,
        "ok": n_rows - n_failed,
        "failed": n_failed,
        "failure_reasons": dict(counts.most_common()),
        **({"failed_rows": str(failed_path)} if top_k is not None else {}),
    }


def _select(frame: pd.DataFrame, k: int, column: str | None, lowest: bool) -> pd.DataFrame:
    if lowest:
        return frame.nsmallest(k, column, keep="first")
    return frame.nlargest(k, column, keep="first")


@contextmanager
def _table_writer(path: Path, schema_source: Path) -> Iterator[Any]:
    """A function appending DataFrames to ``path`` (format from the name)."""
    name = path.name.lower().removesuffix(".tmp")
    if name.endswith(".parquet"):
        schema = pq.read_schema(schema_source)
        with pq.ParquetWriter(path, schema) as writer:
            yield lambda frame: writer.write_table(
                pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            )
        return
    sep = "\t" if name.removesuffix(".gz").endswith(".tsv") else ","
    handle: IO[str]
    with (
        gzip.open(path, "wt", newline="") if name.endswith(".gz") else open(path, "w", newline="")
    ) as handle:
        header = [True]

        def write(frame: pd.DataFrame) -> None:
            frame.to_csv(handle, sep=sep, header=header[0], index=False)
            header[0] = False

        yield write


def _write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
