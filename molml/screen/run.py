"""``molml screen``: score a compound library with one or more trained models.

The library is streamed in chunks (memory does not grow with its size), featurized in
DataLoader worker processes, and scored through ``Trainer.predict``, so devices, precision and
multi-process / multi-node DDP come from Lightning. Every input row gets exactly one output row
with its record number, identifier, SMILES, predictions and a ``status`` (``ok`` or the reason).
An interrupted screen rerun with the same command resumes from its finished chunks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities import rank_zero_only

from molml._version import __version__
from molml.data.readers import (
    SDF_TITLE,
    count_records,
    file_kind,
    iter_molecule_chunks,
    list_columns,
    nothing_valid_message,
)
from molml.errors import DataError
from molml.models.precision import (
    REDUCED_PRECISIONS,
    check_precision,
    default_inference_precision,
)
from molml.models.sigterm import forward_sigterm_without_broadcast
from molml.options import check_int
from molml.predict import load_model
from molml.screen.chunks import ScreenDataModule
from molml.screen.module import ScreeningModule
from molml.screen.options import parse_args
from molml.screen.output import (
    ChunkWriter,
    OutputLock,
    PartsDirectory,
    check_output_path,
    merge_parts,
    output_schema,
)

log = logging.getLogger("molml")


def screen_library(
    models: str | Path | Sequence[str | Path],
    input_path: str | Path,
    output_path: str | Path,
    *,
    smiles_column: str | None = None,
    id_column: str | None = None,
    has_header: bool | None = None,
    chunk_size: int = 2000,
    batch_size: int | None = None,
    num_workers: int | None = None,
    top_k: int | None = None,
    top_k_by: str | None = None,
    lowest: bool = False,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    mc_dropout: int = 0,
) -> dict[str, Any] | None:
    """Screen ``input_path`` with ``models`` (one model file, or several for an ensemble) and
    write ``output_path``.

    Returns a summary (rows, ok, failed, failure reasons, seconds, molecules per second) on
    global rank 0, also written next to the output as ``<output>.summary.json``; other ranks
    return ``None``. ``models`` may be a calibration file (``molml calibrate``: interval or
    calibrated-probability columns); ``mc_dropout > 0`` adds ``<task>_std`` columns from that
    many Monte Carlo dropout passes of each graph model. ``precision`` defaults to
    ``bf16-mixed`` where the device computes bf16 natively, else ``32-true``
    (:func:`~molml.models.precision.default_inference_precision`); calibrated probabilities
    default to ``32-true``: an isotonic map's steps turn bf16's small shifts into large ones.
    """
    started = time.perf_counter()
    models = [models] if isinstance(models, str | Path) else list(models)
    for name, value, minimum in (
        ("chunk_size", chunk_size, 1),
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
        ("top_k", top_k, 1),
        ("num_nodes", num_nodes, 1),
        ("mc_dropout", mc_dropout, 0),
    ):
        check_int(value, name, minimum=minimum, allow_none=name not in ("chunk_size", "num_nodes"))
    if top_k is None and (top_k_by is not None or lowest):
        raise DataError("--top-k-by and --lowest choose what --top-k keeps: give --top-k N too")
    output = check_output_path(output_path, input_path)
    input_path = Path(input_path)
    kind = file_kind(input_path)
    if id_column is None and kind == "smi":  # a SMILES file's names, an SDF's titles
        columns = list_columns(input_path, has_header=has_header)
        names = [c for c in columns if c != (smiles_column or columns[0])]
        id_column = names[0] if names else None
    elif id_column is None and kind == "sdf":
        id_column = SDF_TITLE
    reader_options = {
        "smiles_column": smiles_column,
        "id_column": id_column,
        "has_header": has_header,
    }
    check_precision(precision, "--precision")  # before the models load
    # file and column problems surface here, before any work is done
    iter_molecule_chunks(input_path, columns=[], **reader_options)
    module = ScreeningModule(load_model(models, mc_dropout=mc_dropout))
    if len(module.graph_models) == 0:  # ONNX and baseline models compute in fp32 whatever asked
        if precision not in (None, "32-true", "32"):
            log.info("--precision %s has no effect on ONNX and baseline models", precision)
        precision = "32-true"
    calibrated = module.predictor.kind == "calibrated"
    if precision is None and calibrated and module.predictor.task_type != "regression":
        # a calibration map is a step function: bf16's small shifts would cross its steps
        log.info("calibrated probabilities are screened in fp32 (--precision 32-true)")
        precision = "32-true"
    precision = precision or default_inference_precision(accelerator)
    if top_k is not None:
        top_k_by = top_k_by or module.output_columns[0]
        if top_k_by not in module.output_columns:
            raise DataError(
                f"--top-k-by {top_k_by!r} is not an output column; choose from "
                f"{module.output_columns}"
            )

    run_options = {
        "chunk_size": chunk_size,
        "reader": reader_options,
        "mc_dropout": mc_dropout,
        # the default depends on the hardware: a resumed screen must not mix precisions
        "precision": precision,
    }
    parts = PartsDirectory(output)
    setup_rank = rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"
    with OutputLock(output) if setup_rank else nullcontext():
        if setup_rank and output.exists() and not parts.path.exists() and not overwrite:
            raise DataError(f"{output} already exists; pass --overwrite to replace it")
        world = _world_size(devices, num_nodes)
        workers = num_workers if num_workers is not None else _default_workers(world)
        schema = output_schema(id_column, module.output_columns)
        writer = ChunkWriter(
            parts, schema, count_records(input_path, has_header=has_header), progress=progress
        )
        datamodule = ScreenDataModule(
            workers,
            path=str(input_path),
            featurizers=module.featurizers,
            chunk_size=chunk_size,
            reader_options=reader_options,
            is_done=parts.is_done,
        )
        forward_sigterm_without_broadcast()
        try:
            trainer = L.Trainer(
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                strategy=strategy,
                precision=precision,
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[writer],
            )
        except (ValueError, MisconfigurationException) as exc:  # accelerator, precision ...
            raise DataError(f"cannot run the screen as asked: {exc}") from exc
        module.batch_size = batch_size or _default_batch_size(trainer)
        if any(getattr(m, "mc_dropout", 0) for m in module.members):  # a calibration file's too
            run_options["batch_size"] = module.batch_size  # masks are drawn per batch
        # only now, with the input counted and the Trainer made, is the parts folder started
        resumed = (
            parts.start(_manifest(input_path, models, module, run_options), overwrite=overwrite)
            if setup_rank
            else 0
        )
        rows_before = parts.rows_done() if setup_rank else 0
        if resumed:
            log.info("resuming: %d chunks of %s already screened", resumed, input_path)
        # chunks are not index-addressable; nothing is lost
        with warnings.catch_warnings(), _model_threads(trainer, workers, world):
            warnings.filterwarnings("ignore", "Couldn't infer the batch indices")
            try:
                trainer.predict(module, datamodule=datamodule, return_predictions=False)
            except BaseException as exc:
                if setup_rank and not parts.done():  # nothing to resume from: leave no trace
                    parts.remove()
                elif setup_rank and isinstance(exc, KeyboardInterrupt | SystemExit):
                    log.warning(
                        "interrupted: %d chunks are kept in %s; rerun the same command to resume",
                        len(parts.done()),
                        parts.path,
                    )
                raise
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return None
        counts = merge_parts(parts, output, top_k=top_k, top_k_by=top_k_by, lowest=lowest)
        parts.remove()
        seconds = time.perf_counter() - started
        summary = {
            "input": str(input_path),
            "output": str(output),
            "models": [str(p) for p in models],
            **counts,
            "resumed_chunks": resumed,
            "screened_this_run": counts["rows"] - rows_before,
            "precision": str(trainer.precision),
            "seconds": round(seconds, 2),
            "molecules_per_second": round((counts["rows"] - rows_before) / seconds, 1),
        }
        Path(f"{output}.summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def _manifest(
    input_path: Path, models: Sequence[str | Path], module: ScreeningModule, options: dict
) -> dict[str, Any]:
    """What a resumed screen must share with the one that wrote the parts: molml, the input's
    content, every model file's content and the options that shape the output."""
    return {
        "molml_version": __version__,
        "input": str(input_path.resolve()),
        "input_size": input_path.stat().st_size,
        # the content, not the time stamp: an edit that keeps size and mtime still counts
        "input_sha256": _file_digest(input_path),
        "models": [_file_digest(Path(p)) for p in models],
        # the files an ensemble manifest or a calibration file points to
        "member_files": [_file_digest(p) for p in _member_sources(module, models)],
        **options,
    }


def _member_sources(module: ScreeningModule, models: Sequence[str | Path]) -> list[Path]:
    """Model files the predictor was loaded from besides the ones named on the command line."""
    given = {Path(p).resolve() for p in models}
    sources = {Path(m.source).resolve() for m in module.members if getattr(m, "source", None)}
    return sorted(sources - given)


def _file_digest(path: Path) -> str:
    """sha256 of a file (input, checkpoint), or of every file of a model directory."""
    digest = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else "").encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _world_size(devices: int | str, num_nodes: int) -> int:
    per_node = int(devices) if str(devices).isdigit() else 1
    return max(1, per_node) * num_nodes


def _cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def _default_workers(world_size: int) -> int:
    """Featurization processes per rank: the cores this rank can use.

    Workers block once their prefetched chunks are queued, so on a CPU they share the cores
    with the model's threads; measured best on 2 cores (``scripts/bench_screen.py``).
    """
    return max(1, _cores() // world_size)


@contextmanager
def _model_threads(trainer: L.Trainer, workers: int, world_size: int) -> Iterator[None]:
    """On a CPU in reduced precision, the model runs on the cores the featurization workers
    leave (at least one thread), then torch's thread count is restored.

    bf16 makes the model cheaper than featurizing, and model threads that wait for cores busy
    with featurization cost more than they compute: on 2 cores with 2 workers, 4,537 mol/s
    with one model thread against 3,160 with two. In fp32 the model is the slower part and
    keeps torch's threads (2,255 mol/s with two, 2,020 with one).
    """
    reduced = str(trainer.precision) in REDUCED_PRECISIONS
    if not (isinstance(trainer.accelerator, CPUAccelerator) and reduced and workers > 0):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, _cores() // world_size - workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _default_batch_size(trainer: L.Trainer) -> int:
    """Small batches keep a CPU's caches warm; GPUs want large ones."""
    return 128 if isinstance(trainer.accelerator, CPUAccelerator) else 1024


def main(argv: Sequence[str]) -> None:
    """Entry point of ``molml screen``."""
    run_parsed(parse_args(argv))


def run_parsed(args: argparse.Namespace) -> None:
    """Run ``molml screen`` with arguments from :func:`molml.screen.options.parse_args`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    devices: int | str = int(args.devices) if args.devices.isdigit() else args.devices
    summary = _run(args, devices)  # errors: one line and an exit code (molml.errors)
    if summary is not None:
        print(json.dumps(summary, indent=2))
        if summary["rows"] and not summary["ok"]:
            raise DataError(_nothing_valid(summary, args.has_header))


def _nothing_valid(summary: dict[str, Any], has_header: bool | None) -> str:
    """Why a screen in which no molecule was valid exits with an error (its rows are written)."""
    message = nothing_valid_message(
        summary["input"],
        summary["rows"],
        next(iter(summary["failure_reasons"])),
        summary.get("failed_rows", summary["output"]),
        "--smiles-column",
        has_header,
    )
    return message + "; rerun with --overwrite to replace the output"


def _run(args: argparse.Namespace, devices: int | str) -> dict[str, Any] | None:
    return screen_library(
        args.model,
        args.input,
        args.output,
        smiles_column=args.smiles_column,
        id_column=args.id_column,
        has_header=args.has_header,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        top_k=args.top_k,
        top_k_by=args.top_k_by,
        lowest=args.lowest,
        accelerator=args.accelerator,
        devices=devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        precision=args.precision,
        overwrite=args.overwrite,
        mc_dropout=args.mc_dropout,
        progress=args.progress,
    )
