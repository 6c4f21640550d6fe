"""Arguments of ``molml explain`` and the names they choose from, kept apart from the
explanation code so that ``--help`` and usage errors answer before torch is imported."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from molml.errors import EXIT_CODES_HELP, CommandParser

GRAPH_METHODS = ("integrated_gradients", "saliency", "input_x_gradient", "occlusion")
BASELINE_METHODS = ("shap",)
METHODS = (*GRAPH_METHODS, *BASELINE_METHODS)
IG_STEPS = 50
"""Integrated Gradients' interpolation steps unless told otherwise."""
PRECISIONS = ("32", "bf16-mixed")
"""Precisions of graph-model attributions."""
BIT_MAPPINGS = ("shared", "occurrence")
"""How a Morgan bit's SHAP value is spread over the atom environments that set it."""
IG_BASELINES = ("carbon", "zeros")
"""Where Integrated Gradients' path starts: the same graph with every atom an aliphatic CH2
carbon and every bond a single C-C bond (``carbon``), or with all-zero features (``zeros``)."""
EXPLAINED = ("logit", "probability")
"""What a classifier's graph-model attributions explain: the logit (additive, unbounded) or the
predicted probability (the scores add up to a change of probability)."""
ATTRIBUTION_INPUTS = ("atoms_and_bonds", "atoms")
"""What graph models' gradient methods attribute to: atom and bond features together, or atom
features only (bond features kept as they are, as PyG's CaptumExplainer with node attributes)."""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``molml explain``."""
    parser = CommandParser(
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
    parser.add_argument(
        "--smiles-column",
        help="SMILES column (default: smiles, else one whose name ends in smiles, else the first)",
    )
    parser.add_argument(
        "--id-column",
        help="identifier column copied to the table and shown on the page (default: a SMILES "
        "file's names, an SD file's titles as _Name)",
    )
    parser.add_argument("--task", help="prediction column to explain (default: the first)")
    parser.add_argument(
        "--method",
        choices=METHODS,
        help="default: integrated_gradients for graph models, shap for baselines",
    )
    parser.add_argument(
        "--steps", type=int, help=f"Integrated Gradients interpolation steps ({IG_STEPS})"
    )
    parser.add_argument(
        "--batch-size", type=int, help="molecules per chunk (default 32 on the CPU, 256 on a GPU)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="where graph models run: cpu, cuda, cuda:1, ... (default auto: the first GPU if "
        "there is one, else the CPU)",
    )
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
        "--baseline",
        choices=IG_BASELINES,
        help="graph models, Integrated Gradients: start from every atom a chain CH2 carbon and "
        "every bond a single bond (carbon; the default for classifiers) or from all-zero "
        "features (zeros; the default for regression)",
    )
    parser.add_argument(
        "--explained",
        choices=EXPLAINED,
        default="logit",
        help="classifiers (graph models): explain the logit (default) or the probability",
    )
    parser.add_argument(
        "--inputs",
        choices=ATTRIBUTION_INPUTS,
        default="atoms_and_bonds",
        help="graph models, gradient methods: attribute to atom and bond features together "
        "(default) or to atom features only, bonds kept (no bond scores)",
    )
    parser.add_argument(
        "--table", default="attributions.csv", help="table file name: .csv or .parquet"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=-1,
        help="processes that draw the molecules (default -1: one per CPU core)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``molml explain``'s arguments from ``argv`` (exits on ``--help`` or a usage error)."""
    return build_parser().parse_args(list(argv))
