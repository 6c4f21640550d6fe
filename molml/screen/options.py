"""Arguments of ``molml screen``, kept apart from the screening code so that ``--help`` and
usage errors answer before torch and Lightning are imported."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from molml.errors import CommandParser

OUTPUT_SUFFIXES = (".parquet", ".csv", ".tsv", ".csv.gz", ".tsv.gz")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``molml screen``."""
    parser = CommandParser(
        prog="molml screen",
        description="Score a compound library with trained molml models (streamed, resumable).",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="checkpoint, baseline or calibration file; repeat for an ensemble (mean and std)",
    )
    parser.add_argument(
        "--mc-dropout",
        type=int,
        default=0,
        help="Monte Carlo dropout passes per model (graph checkpoints trained with dropout "
        "only): adds <task>_std columns (default 0)",
    )
    parser.add_argument(
        "--input", required=True, help="library: .smi/.csv/.tsv/.sdf (optionally .gz) or .parquet"
    )
    parser.add_argument("--output", required=True, help=f"one of {', '.join(OUTPUT_SUFFIXES)}")
    parser.add_argument(
        "--smiles-column",
        help="SMILES column (default: smiles, else one whose name ends in smiles, else the first)",
    )
    parser.add_argument(
        "--id-column",
        help="identifier column copied to the output as text (default: a .smi file's names, "
        'an SDF\'s titles; "" for none)',
    )
    header = parser.add_mutually_exclusive_group()
    header.add_argument(
        "--header",
        dest="has_header",
        action="store_true",
        default=None,
        help="the first line is a header (CSV default; detected for .smi)",
    )
    header.add_argument("--no-header", dest="has_header", action="store_false")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=2000,
        help="rows per unit of work and of resuming (default 2000)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="molecules per forward pass (default 128 on CPU, 1024 on GPU)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        help="featurization processes per device (default: cores per device)",
    )
    parser.add_argument("--top-k", type=int, help="keep only the best N molecules")
    parser.add_argument("--top-k-by", help="column ranking --top-k (default: first task)")
    parser.add_argument("--lowest", action="store_true", help="--top-k keeps the lowest values")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning)")
    parser.add_argument("--devices", default="1", help="devices per node (Lightning)")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="e.g. ddp (Lightning)")
    parser.add_argument(
        "--precision",
        help="32-true, bf16-mixed, 16-mixed (Lightning); default bf16-mixed where the device "
        "computes bf16 natively (CUDA GPUs, CPUs with AVX512-BF16 or AMX), else 32-true",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the output; partial results of another screen are discarded (this "
        "command's own are resumed)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``molml screen``'s arguments from ``argv`` (exits on ``--help`` or a usage error)."""
    return build_parser().parse_args(list(argv))
