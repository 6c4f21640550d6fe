"""Arguments of ``molml export`` and their defaults, kept apart from the export code so that
``--help`` and usage errors answer before torch is imported."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from molml.errors import CommandParser

FORMATS = ("onnx", "pt2")
TOLERANCE = 1e-4  # fp32 parity goal: max |export - PyTorch| per prediction column
SAMPLE_SIZE = 200  # molecules of the parity check by default


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``molml export``."""
    parser = CommandParser(
        prog="molml export",
        description=(
            "Export a graph checkpoint to ONNX (loadable with molml.load_model and molml screen, "
            "run by onnxruntime) or to a torch.export program (.pt2), after checking that it "
            "reproduces the PyTorch model's predictions."
        ),
    )
    parser.add_argument(
        "--model", required=True, action="append", help="graph checkpoint (.ckpt); one only"
    )
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="default: onnx")
    parser.add_argument("--output", help="output file (default: the checkpoint's name + format)")
    parser.add_argument(
        "--sample",
        help=f"molecules for the parity check (default: the first {SAMPLE_SIZE} of RDKit's NCI "
        "set); a one-atom molecule and a salt without bonds are always added",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help=f"largest allowed |export - PyTorch| per column (default: {TOLERANCE:g})",
    )
    parser.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="write the export even if it exceeds the tolerance (with a warning)",
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``molml export``'s arguments from ``argv`` (exits on ``--help`` or a usage error)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if len(args.model) > 1:  # screen, explain and serve take several as an ensemble
        parser.error(
            f"--model given {len(args.model)} times: export writes one checkpoint to one file; "
            "export each on its own (screen, explain and serve take several --model as an "
            "ensemble)"
        )
    args.model = args.model[0]
    return args
