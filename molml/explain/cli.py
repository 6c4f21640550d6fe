"""``molml explain``: attributions of a trained model for the molecules of a file."""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from molml.data.readers import read_molecules
from molml.errors import DataError
from molml.explain.core import (
    TABLE_COLUMNS,
    MoleculeExplanation,
    check_method,
    default_method,
    target_column,
)
from molml.explain.options import parse_args
from molml.explain.run import (
    check_table_name,
    explain,
    prepare_output,
    score_units,
    write_explanations,
)
from molml.options import check_int
from molml.predict import load_model


def main(argv: Sequence[str]) -> None:
    """Entry point of ``molml explain``."""
    run_parsed(parse_args(argv))


def run_parsed(args: argparse.Namespace) -> None:
    """Run ``molml explain`` with arguments from :func:`molml.explain.options.parse_args`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_int(args.steps, "--steps", minimum=1)
    check_int(args.batch_size, "--batch-size", minimum=1)
    check_table_name(args.table)
    predictor = load_model(args.model)
    method = args.method or default_method(predictor)
    check_method(predictor, method)
    target_column(predictor, args.task)
    id_source = id_name = args.id_column
    if id_source in TABLE_COLUMNS:
        raise DataError(
            f"--id-column {id_source!r} is also a column of the attributions table "
            f"({TABLE_COLUMNS}); its ids cannot keep that name: rename the column in {args.input}"
        )
    frame = read_molecules(args.input, smiles_column=args.smiles_column, id_column=args.id_column)
    if id_source is None and Path(args.input).name.lower().removesuffix(".gz").endswith(".smi"):
        names = [c for c in frame.attrs["columns"] if c != frame.attrs["smiles_column"]]
        if names:  # a .smi file's name column, under its own name unless the table has it
            id_source = names[0]
            id_name = id_source if id_source not in TABLE_COLUMNS else "id"
    prepare_output(args.output, args.table)
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
        progress=args.progress,
    )
    summary = write_explanations(
        explanations,
        args.output,
        units=score_units(predictor, method),
        table=args.table,
        title=f"molml explain: {Path(args.input).name}",
        ids=frame[id_source].tolist() if id_source else None,
        id_column=id_name or "id",
    )
    print(json.dumps(summary, indent=2))
    if summary["molecules"] and not summary["explained"]:
        raise DataError(_nothing_explained(explanations, args.input, frame.attrs))


def _nothing_explained(
    explanations: list[MoleculeExplanation], source: str, attrs: dict[str, Any]
) -> str:
    """Why a run in which no molecule could be explained exits with an error (its table and
    page are written: every row says why)."""
    reasons = Counter(item.status for item in explanations)
    message = (
        f"none of the {len(explanations)} molecules of {source} could be explained (most "
        f"often: {reasons.most_common(1)[0][0]}; every row's reason is in the table)"
    )
    if "columns" in attrs:
        message += (
            f"; is the SMILES read from the right column? It was read from "
            f"{attrs.get('smiles_column')!r} of {attrs['columns']}: --smiles-column picks one"
        )
    return message
