"""``molml.load_model``: any saved molml model (or several, as an ensemble) as a Predictor."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from molml.baselines.model import SPEC_FILE, load_baseline
from molml.errors import CheckpointError, DataError, PredictorError
from molml.models.checkpoint import load_checkpoint, refuse_url
from molml.models.pretrained import pretrained_path
from molml.options import check_int
from molml.predict.base import Predictor, manifest_entry
from molml.predict.baseline import BaselinePredictor
from molml.predict.calibrated import CalibratedPredictor, read_calibration_file
from molml.predict.ensemble import EnsemblePredictor
from molml.predict.graph import GraphPredictor

ENSEMBLE_KEY = "ensemble"


def ensemble_members(path: Path) -> list[Path] | None:
    """The member paths of an ensemble manifest, or None if ``path`` is not one."""
    members = None if path.name == SPEC_FILE else manifest_entry(path, ENSEMBLE_KEY)
    if members is None:
        return None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise CheckpointError(f"{path}: {ENSEMBLE_KEY!r} must be a list of model paths")
    return [path.parent / member for member in members]


def load_model(
    path: str | Path | Sequence[str | Path],
    map_location: str | torch.device = "cpu",
    mc_dropout: int = 0,
    threads: int | None = None,
) -> Predictor:
    """Load a trained molml model, ready for ``predict`` / ``embed``.

    ``path`` is a graph checkpoint (``.ckpt``), a graph model exported to ONNX (``.onnx``, run
    on onnxruntime: :class:`~molml.predict.onnx.OnnxPredictor`) or as a ``torch.export``
    program (``.pt2``: :class:`~molml.predict.pt2.Pt2Predictor`), a fingerprint baseline (its
    saved directory or its ``baseline.json``), or a list of such paths, which loads as an
    :class:`EnsemblePredictor` (mean and spread of the members), as does an ensemble manifest:
    a JSON file ``{"ensemble": [paths relative to the file]}`` (``molml cv`` writes one), or a
    calibration file written by ``molml calibrate``, which loads as a
    :class:`~molml.predict.calibrated.CalibratedPredictor` (conformal intervals or calibrated
    probabilities). ``mc_dropout > 0`` gives graph checkpoints Monte Carlo dropout with that
    many passes (see :class:`GraphPredictor`). ``threads`` sets onnxruntime's threads for ONNX
    files (default: onnxruntime's choice, every core); torch models take
    ``torch.set_num_threads``.
    Checkpoints are read without unpickling code and their encoder must be a registered class
    (see :func:`molml.register_encoder`); anything else raises
    :class:`molml.errors.CheckpointError`.
    """
    check_device(map_location)
    if threads is not None:
        check_int(threads, "threads", minimum=1)
    return _load(path, map_location, mc_dropout, frozenset(), threads)


def check_device(device: str | torch.device, name: str = "map_location") -> None:
    """A device models can be put on, the CPU or an accelerator this machine has; otherwise a
    :class:`DataError` naming the option ``name`` and the device types there are."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DataError(f"{name} {device!r} is not a device: {exc}") from exc
    if parsed.type == "cpu":
        return
    if parsed.type == "meta":
        raise DataError(f"{name} {device!r}: models cannot run on the meta device")
    count = _device_count(parsed.type)
    if not count:
        here = ["cpu"] + [kind for kind in ("cuda", "xpu", "mps") if _device_count(kind)]
        raise DataError(
            f"{name} {device!r}: no {parsed.type} device is available here "
            f"(device types here: {', '.join(here)})"
        )
    if parsed.index is not None and parsed.index >= count:
        raise DataError(
            f"{name} {device!r}: this machine has {count} {parsed.type} device(s), numbered from 0"
        )


def _device_count(kind: str) -> int:
    """Devices of type ``kind`` (``cuda``, ``xpu``, ``mps``) this machine has."""
    if kind == "mps":
        return int(torch.backends.mps.is_available())
    module = getattr(torch, kind, None)
    available = getattr(module, "is_available", None)
    return module.device_count() if available is not None and available() else 0


def _load(
    path: str | Path | Sequence[str | Path],
    map_location: str | torch.device,
    mc_dropout: int,
    opened: frozenset[Path],
    threads: int | None = None,
) -> Predictor:
    """:func:`load_model`; ``opened`` holds the manifests and calibration files being read,
    so a file that refers back to itself is refused instead of recursing forever."""
    if not isinstance(path, (str, Path)):
        if isinstance(path, (bytes, bytearray)) or not isinstance(path, Iterable):
            raise DataError(f"expected a model path or a list of paths, got {path!r}")
        paths = list(path)
        if not paths:
            raise DataError("no model path given (an empty list)")
        if len(paths) == 1:
            return _load(paths[0], map_location, mc_dropout, opened, threads)
        return EnsemblePredictor(
            [_load(p, map_location, mc_dropout, opened, threads) for p in paths]
        )
    refuse_url(path)
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model not found: {path} (working directory {Path.cwd()})")
    members = ensemble_members(path)
    calibrated = read_calibration_file(path) if members is None else None
    if members is not None or calibrated is not None:
        if path.resolve() in opened:
            raise CheckpointError(f"{path} refers back to itself (directly or through others)")
        opened = opened | {path.resolve()}
    if members is not None:
        return _load(members, map_location, mc_dropout, opened, threads)
    if calibrated is not None:
        models, passes, calibrations, fitted_on = calibrated
        if mc_dropout and mc_dropout != passes:
            raise PredictorError(
                f"{path} was calibrated with mc_dropout={passes}; load it without mc_dropout"
            )
        base = _load(models, map_location, passes, opened, threads)
        return CalibratedPredictor(base, calibrations, fitted_on, source=path)
    if mc_dropout and path.suffix != ".ckpt":
        raise PredictorError(f"MC dropout needs a graph checkpoint (.ckpt), not {path}")
    if path.is_dir() or path.name == SPEC_FILE or path.suffix == ".json":
        return BaselinePredictor(load_baseline(path), source=path)
    if path.suffix == ".onnx":  # onnxruntime is imported only for ONNX files
        from molml.predict.onnx import OnnxPredictor

        return OnnxPredictor(path, threads=threads)
    if path.suffix == ".pt2":
        from molml.predict.pt2 import Pt2Predictor

        return Pt2Predictor(path)
    model, spec = load_checkpoint(path, map_location)
    return GraphPredictor(model, spec, source=path, mc_dropout=mc_dropout)


def load_pretrained(name: str, map_location: str | torch.device = "cpu") -> Predictor:
    """A pretrained encoder shipped with molml (``zinc-dmpnn``; see
    :func:`molml.models.pretrained.pretrained_names`) or a pretraining checkpoint, as a
    Predictor: ``embed`` gives its molecule embeddings, ``predict`` the descriptors it learned
    (log-scaled ones, named ``<name>_slog``, as ``sign(x) log(1 + |x|)``). Fine-tune it with
    ``MoleculeModel(pretrained=name)`` or ``molml fit ... --model.pretrained NAME``."""
    return load_model(pretrained_path(name), map_location)
