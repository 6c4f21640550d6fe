"""``molml explain``: attributions of a trained model for the molecules of a file."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from molml.data.readers import SDF_TITLE, file_kind, read_molecules
from molml.errors import DataError
from molml.explain.core import TABLE_COLUMNS, MoleculeExplanation
from molml.explain.options import parse_args
from molml.explain.run import (
    check_input_kept,
    check_settings,
    check_table_name,
    explain,
    prepare_output,
    score_units,
    write_explanations,
)
from molml.options import check_int, check_jobs
from molml.predict import GraphPredictor, load_model
from molml.predict.loading import check_device

log = logging.getLogger(__name__)


def main(argv: Sequence[str]) -> None:
    """Entry point of ``molml explain``."""
    run_parsed(parse_args(argv))


def run_parsed(args: argparse.Namespace) -> None:
    """Run ``molml explain`` with arguments from :func:`molml.explain.options.parse_args`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.steps is not None:
        check_int(args.steps, "--steps", minimum=1)
    if args.batch_size is not None:
        check_int(args.batch_size, "--batch-size", minimum=1)
    check_jobs(args.jobs, "--jobs")
    check_table_name(args.table)
    check_input_kept(args.input, args.output, args.table)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device, "--device")
    predictor = load_model(args.model, map_location=device)
    if any(isinstance(member, GraphPredictor) for member in predictor.members):
        log.info("graph models run on %s", device)
    method, _, _ = check_settings(
        predictor,
        args.method,
        args.task,
        steps=args.steps,
        precision=args.precision,
        shap_mapping=args.shap_mapping,
        inputs=args.inputs,
        baseline=args.baseline,
        explained=args.explained,
    )
    frame = read_molecules(args.input, smiles_column=args.smiles_column, id_column=args.id_column)
    id_source = args.id_column
    if id_source is None and file_kind(args.input) == "smi":
        names = [c for c in frame.attrs["columns"] if c != frame.attrs["smiles_column"]]
        id_source = names[0] if names else None  # a SMILES file's name column
    elif id_source is None and file_kind(args.input) == "sdf" and SDF_TITLE in frame:
        id_source = SDF_TITLE  # the records' titles
    id_name = id_source
    if id_source in TABLE_COLUMNS:
        id_name = "id"
        log.info("ids of column %r are written as 'id': the table has one of that name", id_source)
    output = Path(args.output)
    made = [folder for folder in (output / "molecules", output) if not folder.exists()]
    prepare_output(output, args.table)
    try:
        explanations = explain(
            predictor,
            frame["smiles"].tolist(),
            method=method,
            task=args.task,
            steps=args.steps,
            batch_size=args.batch_size,
            precision=args.precision,
            shap_mapping=args.shap_mapping,
            inputs=args.inputs,
            baseline=args.baseline,
            explained=args.explained,
            progress=args.progress,
        )
    except BaseException:
        for folder in made:  # the folders this run made stay only with something in them
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    summary = write_explanations(
        explanations,
        args.output,
        units=score_units(predictor, method, args.explained),
        table=args.table,
        title=f"molml explain: {Path(args.input).name}",
        ids=frame[id_source].tolist() if id_source else None,
        id_column=id_name or "id",
        progress=args.progress,
        jobs=args.jobs,
    )
    print(json.dumps(summary, indent=2))
    if summary["molecules"] and not summary["explained"]:
        raise DataError(_nothing_explained(explanations, args.input, frame.attrs))


def _nothing_explained(
    explanations: list[MoleculeExplanation], source: str, attrs: dict[str, Any]
) -> str:
    """Why a run in which no molecule could be explained exits with an error (its table and
    page are written: every row says why)."""
    message = (
        f"none of the {len(explanations)} molecules of {source} could be explained (e.g. "
        f"{explanations[0].status}; every row's reason is in the table)"
    )
    columns = attrs.get("columns", [])
    unparsed = all(item.mol is None for item in explanations)
    if unparsed and len(columns) > 1 and attrs.get("smiles_column") in columns:
        message += (
            f"; is the SMILES read from the right column? It was read from "
            f"{attrs['smiles_column']!r} of {columns}: --smiles-column picks one"
        )
    return message
