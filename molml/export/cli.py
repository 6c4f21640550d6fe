"""``molml export``: a graph checkpoint to ONNX or to a ``torch.export`` program."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from molml.export.exporter import FORMATS, SAMPLE_SIZE, TOLERANCE, export_model


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``molml export``."""
    parser = argparse.ArgumentParser(
        prog="molml export",
        description=(
            "Export a graph checkpoint to ONNX (loadable with molml.load_model and molml screen, "
            "run by onnxruntime) or to a torch.export program (.pt2), after checking that it "
            "reproduces the PyTorch model's predictions."
        ),
    )
    parser.add_argument("--model", required=True, help="graph checkpoint (.ckpt)")
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


def main(argv: Sequence[str]) -> None:
    """Run ``molml export`` with ``argv`` (the arguments after ``export``)."""
    args = build_parser().parse_args(list(argv))
    result = export_model(
        args.model,
        args.output,
        format=args.format,
        sample=args.sample,
        check=args.check,
        tolerance=args.tolerance,
    )
    print(f"wrote {result.path} ({result.format})")
    print(f"parity on {result.molecules} molecules, max |{result.format} - PyTorch|:")
    for column, diff in result.max_abs_diff.items():
        print(f"  {column}: {diff:.3g}")
    print("parity " + ("ok" if result.passed else "EXCEEDS") + f" (tolerance {result.tolerance:g})")
