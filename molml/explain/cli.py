"""``molml explain``: attributions of a trained model for the molecules of a file."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from molml.data.readers import read_molecules
from molml.explain.core import default_method
from molml.explain.options import parse_args
from molml.explain.run import explain, prepare_output, score_units, write_explanations
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
    prepare_output(args.output, args.table)
    predictor = load_model(args.model)
    frame = read_molecules(args.input, smiles_column=args.smiles_column, id_column=args.id_column)
    id_column = args.id_column
    if id_column is None and Path(args.input).name.lower().removesuffix(".gz").endswith(".smi"):
        names = [c for c in frame.attrs["columns"] if c != frame.attrs["smiles_column"]]
        id_column = names[0] if names else None
    method = args.method or default_method(predictor)
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
        ids=frame[id_column].tolist() if id_column else None,
        id_column=id_column or "id",
    )
    print(json.dumps(summary, indent=2))
