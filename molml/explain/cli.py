"""``molml explain``: attributions of a trained model for the molecules of a file."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from molml.data.readers import read_molecules
from molml.errors import EXIT_CODES_HELP
from molml.explain.baseline import BIT_MAPPINGS
from molml.explain.core import METHODS, default_method
from molml.explain.graph import PRECISIONS
from molml.explain.run import explain, score_units, write_explanations
from molml.options import check_int
from molml.predict import load_model


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``molml explain``."""
    parser = argparse.ArgumentParser(
        prog="molml explain",
        description=(
            "Per-atom and per-bond attributions of a trained model's predictions: a table, "
            "one drawing per molecule (SVG and PNG) and index.html."
        ),
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="checkpoint or baseline; repeat for an ensemble",
    )
    parser.add_argument("--input", required=True, help="molecules: .smi/.csv/.tsv/.sdf/.parquet")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--smiles-column", help="SMILES column (default: smiles, else first)")
    parser.add_argument("--task", help="prediction column to explain (default: the first)")
    parser.add_argument(
        "--method",
        choices=METHODS,
        help="default: integrated_gradients for graph models, shap for baselines",
    )
    parser.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps (50)")
    parser.add_argument("--batch-size", type=int, default=32, help="molecules per chunk (32)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="graph models: bf16-mixed is ~3x faster on CPUs with native bf16 (default 32)",
    )
    parser.add_argument(
        "--shap-mapping",
        choices=BIT_MAPPINGS,
        default="shared",
        help="baselines: Morgan bit values split over the environments that set them (shared, "
        "adds up to the SHAP total) or whole per environment (occurrence)",
    )
    parser.add_argument(
        "--table", default="attributions.csv", help="table file name: .csv or .parquet"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def main(argv: Sequence[str]) -> None:
    """Entry point of ``molml explain``."""
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_int(args.steps, "--steps", minimum=1)
    check_int(args.batch_size, "--batch-size", minimum=1)
    predictor = load_model(args.model)
    frame = read_molecules(args.input, smiles_column=args.smiles_column)
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
        progress=args.progress,
    )
    summary = write_explanations(
        explanations,
        args.output,
        units=score_units(predictor, method),
        table=args.table,
        title=f"molml explain: {Path(args.input).name}",
    )
    print(json.dumps(summary, indent=2))
