"""``molml export``: a graph checkpoint to ONNX or to a ``torch.export`` program."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from molml.export.exporter import export_model
from molml.export.options import parse_args


def main(argv: Sequence[str]) -> None:
    """Run ``molml export`` with ``argv`` (the arguments after ``export``)."""
    run_parsed(parse_args(argv))


def run_parsed(args: argparse.Namespace) -> None:
    """Run ``molml export`` with arguments from :func:`molml.export.options.parse_args`."""
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
