"""``molml serve``: load trained models and serve them over HTTP with uvicorn."""

from __future__ import annotations

import argparse
import errno
import socket
from collections.abc import Sequence
from pathlib import Path

from molml.baselines.model import SPEC_FILE
from molml.errors import CommandParser, DataError
from molml.options import check_int
from molml.predict import Predictor, load_model
from molml.predict.base import DEFAULT_BATCH_SIZE
from molml.serve.app import MODEL_NAME, create_app
from molml.serve.domain import DEFAULT_SIMILARITY_THRESHOLD, ReferenceSet


def model_name(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` -> (NAME, PATH); a bare path is named after its file or directory
    (``runs/a/checkpoints/logp.ckpt`` -> ``logp``, ``esol_intervals.json`` -> ``esol_intervals``;
    a baseline's ``model/baseline.json`` -> ``model``, a ``molml cv`` ``<name>/ensemble.json``
    -> ``<name>``)."""
    name, sep, path = spec.partition("=")
    if sep and MODEL_NAME.match(name) and not Path(spec).exists():
        return name, path
    path = Path(spec)
    generic = (SPEC_FILE, "ensemble.json")  # named after their directory
    return (path.parent.name if path.name in generic else path.stem), spec


def load_predictors(
    specs: Sequence[str], ensemble: bool, threads: int | None = None
) -> dict[str, Predictor]:
    """The models to serve by name; with ``ensemble``, one model averaging all of them.
    ``threads``: onnxruntime's threads for ONNX models (see :func:`molml.load_model`)."""
    named = [model_name(spec) for spec in specs]
    if ensemble:
        if len(named) < 2:
            raise DataError("--ensemble needs at least two --model")
        given = [spec for spec, (_, path) in zip(specs, named, strict=True) if path != spec]
        if given:
            raise DataError(
                f"--ensemble serves one model named 'ensemble'; --model {given[0]} names a "
                "member: give the members as plain paths"
            )
        return {"ensemble": load_model([path for _, path in named], threads=threads)}
    predictors: dict[str, Predictor] = {}
    for name, path in named:
        if name in predictors:
            raise DataError(f"two models are named {name!r}: name them with --model NAME=PATH")
        predictors[name] = load_model(path, threads=threads)
    return predictors


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``molml serve``."""
    parser = CommandParser(
        prog="molml serve",
        description="Serve trained molml models over HTTP: POST /predict, POST /explain, "
        "GET /health, /models, /metrics (Prometheus), /docs.",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="checkpoint, baseline directory (any path load_model reads); repeat to serve "
        "several side by side at /predict/NAME (default NAME: the file name without suffix)",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="serve the --model paths as one ensemble (mean and std per column) named 'ensemble'",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--max-molecules", type=int, default=1000, help="most molecules per request (413)"
    )
    parser.add_argument(
        "--max-smiles-length", type=int, default=1000, help="longest SMILES accepted (422)"
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=20000,
        help="most molecules waiting for one model: a request that would go beyond it is "
        "answered 503 with Retry-After, unless the model is idle (0: no limit)",
    )
    parser.add_argument(
        "--reference",
        help="training molecules (CSV/SMI/SDF/Parquet): report each molecule's similarity to "
        "them and count those far from the training set",
    )
    parser.add_argument("--reference-smiles-column", help="SMILES column of --reference")
    parser.add_argument(
        "--similarity-threshold",
        type=float,
        help="max Tanimoto similarity (ECFP4) below which a molecule is far from the training "
        f"set (default {DEFAULT_SIMILARITY_THRESHOLD})",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=256,
        help="most molecules of concurrent requests gathered into one model call "
        "(0: no gathering; default 256)",
    )
    parser.add_argument(
        "--max-explain-molecules",
        type=int,
        default=100,
        help="most molecules per POST /explain request (default 100)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="how long a request waits for others to share its model call (default 2)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"molecules per forward pass (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of the model, torch's and onnxruntime's (default 1: the event loop keeps "
        "a core)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn log level",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def main(argv: Sequence[str]) -> None:
    """Entry point of ``molml serve``."""
    args = build_parser().parse_args(list(argv))
    check_int(args.port, "--port", minimum=0)
    if args.port > 65535:
        raise DataError(f"--port must be at most 65535, got {args.port}")
    check_int(args.threads, "--threads", minimum=1)
    reference_options = [
        name
        for name, value in (
            ("--reference-smiles-column", args.reference_smiles_column),
            ("--similarity-threshold", args.similarity_threshold),
        )
        if value is not None
    ]
    if args.reference is None and reference_options:
        verb = "apply" if len(reference_options) > 1 else "applies"
        raise DataError(
            f"{' and '.join(reference_options)} {verb} to --reference, which is not given"
        )
    check_address(args.host, args.port)  # before the models load
    import torch
    import uvicorn

    torch.set_num_threads(args.threads)
    reference = None
    if args.reference is not None:
        threshold = args.similarity_threshold
        reference = ReferenceSet.from_file(
            args.reference,
            threshold=DEFAULT_SIMILARITY_THRESHOLD if threshold is None else threshold,
            smiles_column=args.reference_smiles_column,
        )
    app = create_app(
        load_predictors(args.model, args.ensemble, threads=args.threads),
        max_molecules=args.max_molecules,
        max_smiles_length=args.max_smiles_length,
        reference=reference,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_pending=args.max_pending,
        batch_size=args.batch_size,
        max_explain_molecules=args.max_explain_molecules,
    )
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.access_log,
        )
    except SystemExit as exc:  # uvicorn exits 3 (its startup failure) when it cannot bind
        if exc.code in (0, None):
            raise
        raise DataError(
            f"the server could not start on {args.host}:{args.port} (uvicorn logs the reason "
            "unless --log-level hides it; most often another server took the port meanwhile)"
        ) from None


def check_address(host: str, port: int) -> None:
    """Refuse a ``host`` and ``port`` this machine cannot listen on (a port in use, a host
    that is not one of its addresses), with the system's reason: each address the host stands
    for is bound once, as asyncio's server (which uvicorn runs) will bind them."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise DataError(f"--host {host}: {exc.strerror}") from None
    unavailable = None
    bound = False
    for family, kind, proto, _, address in addresses:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # a family this machine lacks (IPv6 off): asyncio skips it too
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
                bound = True
            except OSError as exc:
                # an address of a disabled family (localhost's ::1 without IPv6) is skipped
                # where another binds, as asyncio does since Python 3.13; a port in use is not
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise DataError(
                        f"the server cannot listen on {host}:{port}: {exc.strerror or exc}"
                    ) from None
                unavailable = exc
    if not bound and unavailable is not None:
        raise DataError(
            f"the server cannot listen on {host}:{port}: {unavailable.strerror or unavailable}"
        )
