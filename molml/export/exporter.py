"""Export a trained graph model to ONNX or to a ``torch.export`` program, checked for parity.

Both formats trace :class:`PredictionGraph` with ``torch.export`` and dynamic numbers of
molecules, atoms and bonds. The traced graph takes the featurized tensors of a batch
(:data:`~molml.predict.onnx.ONNX_INPUTS`) and returns predictions in the user's units (target
scaling, sigmoid or softmax inside). Before anything is written, the export is run on a sample
of molecules and compared with the PyTorch model; the largest difference per column is
reported and stored in the file.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Sequence
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem
from rdkit.rdBase import BlockLogs
from torch import Tensor, nn

from molml.data.graphs import GraphStore, featurize_block
from molml.errors import CheckpointError, DataError, ExportError
from molml.export.options import FORMATS, SAMPLE_SIZE, TOLERANCE
from molml.models.module import MoleculeModel
from molml.options import output_file_folder
from molml.predict import BaselinePredictor, GraphPredictor, Predictor, load_model
from molml.predict.onnx import (
    ATOM_SLOTS_INPUT,
    FEATURES_INPUT,
    METADATA_FORMAT,
    METADATA_KEY,
    ONNX_INPUTS,
    batch_arrays,
)
from molml.predict.pt2 import PT2_METADATA_FILE

PARITY_BATCH_SIZE = 64
NCI_SAMPLE = Path(__import__("rdkit").__file__).parent / "Data" / "NCI" / "first_5K.smi"
EDGE_CASES = ("C", "[Na+].[Cl-]")  # one atom; a batch without bonds
TRACE_SMILES = ("CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1")  # more than one of everything


class PredictionGraph(nn.Module):
    """The part of a :class:`MoleculeModel` that an export holds: featurized tensors in,
    predictions ``[molecules, columns]`` in the user's units out. The number of molecules is
    ``n_atoms.size(0)``, a size rather than a Python int, so it stays dynamic when traced; for
    an encoder that pads molecules, the padded size is likewise ``atom_slots.size(0)``."""

    def __init__(self, model: MoleculeModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        n_atoms: Tensor,
        features: Tensor | None = None,
        atom_slots: Tensor | None = None,
    ) -> Tensor:
        num_molecules = n_atoms.size(0)
        max_atoms = None if atom_slots is None else atom_slots.size(0)
        out = self.model.forward_tensors(
            x, edge_index, edge_attr, batch, num_molecules, features, max_atoms
        )
        return self.model.to_prediction(out).reshape(num_molecules, -1)


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how closely it reproduces the PyTorch model."""

    path: Path
    format: str
    max_abs_diff: dict[str, float]
    molecules: int
    passed: bool
    tolerance: float


def graph_predictor(path: str | Path) -> GraphPredictor:
    """The graph checkpoint at ``path``; other kinds of model are refused with the reason."""
    predictor: Predictor = load_model(path)
    if isinstance(predictor, BaselinePredictor):
        raise CheckpointError(
            f"{path} is a fingerprint baseline ({predictor.model.estimator}); molml exports graph "
            "models only. XGBoost and random forests convert to ONNX only through onnxmltools "
            "or skl2onnx, which molml does not use. Deploy the baseline directory itself: its "
            "XGBoost JSON / forest .npz files load without pickle (molml.load_model, molml screen)"
        )
    if not isinstance(predictor, GraphPredictor):
        what = "an ensemble" if predictor.kind == "ensemble" else f"a {predictor.kind} model"
        raise CheckpointError(
            f"{path} is {what}, not a graph checkpoint; export each graph checkpoint on its own"
        )
    return predictor


def read_sample(path: str | Path | None) -> tuple[list[str], str]:
    """SMILES of the parity sample and a description of it: the file's molecules, or the first
    :data:`SAMPLE_SIZE` molecules of RDKit's NCI set; :data:`EDGE_CASES` always come first."""
    if path is None:
        with NCI_SAMPLE.open() as handle:
            smiles = [line.split()[0] for _, line in zip(range(SAMPLE_SIZE), handle, strict=False)]
        description = f"first {SAMPLE_SIZE} molecules of RDKit's NCI first_5K.smi"
    else:
        from molml.data.readers import read_molecules

        frame = read_molecules(path)
        smiles = frame["smiles"].tolist()
        with BlockLogs():
            parsed = sum(Chem.MolFromSmiles(s) is not None for s in smiles if isinstance(s, str))
        if parsed == 0:
            column, columns = frame.attrs["smiles_column"], frame.attrs["columns"]
            hint = (
                ""
                if len(columns) == 1 or column == "smiles"
                else "; name the SMILES column 'smiles'"
            )
            raise DataError(
                f"--sample {path}: none of its {len(smiles)} rows is a molecule (SMILES read from "
                f"column {column!r} of {columns}{hint})"
            )
        description = str(path)
    return [*EDGE_CASES, *smiles], description


def trace(predictor: GraphPredictor) -> torch.export.ExportedProgram:
    """``torch.export`` of the predictor's :class:`PredictionGraph`, with dynamic numbers of
    molecules, atoms and bonds; an encoder it cannot trace raises :class:`ExportError`."""
    model = predictor.model.cpu().eval()
    arrays = _featurize(predictor, list(TRACE_SMILES))
    inputs = _tensors(batch_arrays(arrays, 0, len(TRACE_SMILES)), input_names(predictor))
    # every size is dynamic: molecules, atoms and bonds (edge_index's second axis)
    shapes = {name: {1 if name == "edge_index" else 0: torch.export.Dim.DYNAMIC} for name in inputs}
    try:
        # torch prints the partial graph of a failed trace to stderr; the error says where
        with torch.no_grad(), redirect_stderr(io.StringIO()):
            return torch.export.export(PredictionGraph(model), (), inputs, dynamic_shapes=shapes)
    except Exception as exc:  # torch.export raises many error types; name where it failed
        raise ExportError(_untraceable(predictor, exc)) from exc


def input_names(predictor: GraphPredictor) -> list[str]:
    """The inputs of the predictor's exported graph, in order (see :data:`ONNX_INPUTS`)."""
    model = predictor.model
    names = list(ONNX_INPUTS)
    if model.molecule_features is not None:
        names.append(FEATURES_INPUT)
    if model.encoder.pads_molecules:
        names.append(ATOM_SLOTS_INPUT)
    return names


def _untraceable(predictor: GraphPredictor, exc: Exception) -> str:
    encoder = predictor.metadata["encoder"]
    text = str(exc)
    calls = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
    where = ""
    if calls:
        file, line, function = calls[-1]
        short = "/".join(Path(file).parts[-3:])
        where = f" in {function} ({short}:{line})"
    if "data-dependent" in text:
        reason = "it computes a tensor size from the input values (molecules padded to the "
        reason += "largest one in the batch), which a traced graph cannot hold"
    else:
        reason = (text.strip().splitlines() or [type(exc).__name__])[0]
    return (
        f"{encoder} cannot be exported: torch.export fails{where}: {reason}. Both formats "
        "(onnx, pt2) are built with torch.export; use the checkpoint itself "
        "(molml.load_model, molml screen) for this encoder"
    )


def _featurize(predictor: GraphPredictor, smiles: list[str]) -> dict[str, np.ndarray]:
    model = predictor.model
    arrays, _, _, _ = featurize_block(
        model.featurizer, smiles, molecule_features=model.molecule_features
    )
    return arrays


def _tensors(inputs: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, Tensor]:
    """The inputs an exported graph takes (``names``), as tensors."""
    return {name: torch.from_numpy(inputs[name]) for name in names}


def parity_slices(n: int) -> list[tuple[int, int]]:
    """Batches of the parity sample: each edge case alone (a one-atom batch, a bond-less
    batch), then the whole sample in batches of :data:`PARITY_BATCH_SIZE`."""
    singles = [(i, i + 1) for i in range(min(len(EDGE_CASES), n))]
    return singles + [(s, min(s + PARITY_BATCH_SIZE, n)) for s in range(0, n, PARITY_BATCH_SIZE)]


def max_abs_diff(columns: Sequence[str], got: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """Largest ``|got - expected|`` per column; a value finite on one side only counts as inf."""
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    both_nan = np.isnan(got) & np.isnan(expected)
    diff = np.where(both_nan, 0.0, np.nan_to_num(diff, nan=np.inf))
    return {column: float(diff[:, i].max(initial=0.0)) for i, column in enumerate(columns)}


def _onnx_runner(program: Any) -> tuple[Any, Any]:
    """The ONNX model of a ``torch.onnx`` program and a function running it on onnxruntime;
    a graph onnxruntime would compute nondeterministically raises :class:`ExportError`."""
    import onnxruntime as ort

    proto = program.model_proto
    racy = [
        node.name
        for node in proto.graph.node
        if node.op_type == "ScatterND"
        and any(a.name == "reduction" and a.s not in (b"", b"none") for a in node.attribute)
    ]
    if racy:  # onnxruntime's multithreaded ScatterND kernel races on repeated indices
        raise ExportError(
            f"the ONNX graph has {len(racy)} ScatterND node(s) with a reduction ({racy[0]}, ...), "
            "which onnxruntime computes nondeterministically on several threads; sum with "
            "Tensor.scatter_add_ (ScatterElements) instead of index_add_ in the encoder"
        )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {name: inputs[name] for name in names})[0]

    return proto, run


def export_model(
    model: str | Path,
    output: str | Path | None = None,
    *,
    format: str = "onnx",
    sample: str | Path | None = None,
    check: bool = True,
    tolerance: float = TOLERANCE,
) -> ExportResult:
    """Export the graph checkpoint ``model`` to ``output`` (default: beside it, ``.onnx`` or
    ``.pt2``) as ONNX (with molml metadata, loadable by ``molml.load_model``) or as a
    ``torch.export`` program saved with ``torch.export.save``.

    The export is compared with the PyTorch model on ``sample`` (a molecule file; default: the
    first 200 molecules of RDKit's NCI set, plus a one-atom molecule and a salt without bonds).
    If any column differs by more than ``tolerance``, :class:`ExportError` is raised and nothing
    is written, unless ``check`` is False: then the file is written with a warning.
    """
    if format not in FORMATS:
        raise DataError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if not (isinstance(tolerance, float | int) and tolerance >= 0):
        raise DataError(f"tolerance must be a number >= 0, got {tolerance!r}")
    output = Path(output) if output is not None else Path(model).with_suffix(f".{format}")
    output_file_folder(output)
    if output.suffix != f".{format}":
        # molml.load_model and molml screen tell the file's kind by its suffix
        raise DataError(f"--output {output}: a {format} file must end in .{format}")
    if output.is_dir():
        raise DataError(f"--output {output} is a folder; give the file to write")
    predictor = graph_predictor(model)
    if output.exists() and output.samefile(model):
        raise DataError(f"--output {output} is the checkpoint being exported; choose another path")
    smiles, description = read_sample(sample)
    arrays = _featurize(predictor, smiles)
    if len(arrays["n_atoms"]) == 0:
        raise DataError(f"no molecule of the parity sample {description} could be featurized")
    program = trace(predictor)
    if format == "onnx":
        onnx_program = torch.onnx.export(program, dynamo=True, verbose=False)
        proto, run = _onnx_runner(onnx_program)
    else:
        module, names = program.module(), input_names(predictor)

        def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                return module(**_tensors(inputs, names)).numpy()

    columns = predictor.prediction_columns()
    n = len(arrays["n_atoms"])
    reference = predictor.predict_store(GraphStore.from_arrays([arrays]), PARITY_BATCH_SIZE)
    slices = parity_slices(n)
    got = [run(batch_arrays(arrays, s, e)).reshape(e - s, -1) for s, e in slices]
    expected = [reference[s:e] for s, e in slices]
    diffs = max_abs_diff(columns, np.concatenate(got), np.concatenate(expected))
    passed = all(d <= tolerance for d in diffs.values())
    if not passed:
        worst = max(diffs, key=diffs.__getitem__)
        message = (
            f"the {format} export differs from the PyTorch model by up to {diffs[worst]:.3g} in "
            f"column {worst!r} (tolerance {tolerance:g}) on {n} molecules of {description}"
        )
        if check:
            raise ExportError(message + "; nothing was written (--no-check writes it anyway)")
        print(f"WARNING: {message}; written anyway (--no-check)", file=sys.stderr)
    metadata = _metadata(predictor, format, diffs, n, description, passed, tolerance, check)
    partial = output.with_name(f".{os.getpid()}.{output.name}")  # keeps its suffix
    try:
        if format == "onnx":
            _save_onnx(proto, metadata, partial)
        else:
            extra = {PT2_METADATA_FILE: json.dumps(metadata)}
            torch.export.save(program, partial, extra_files=extra)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(output, format, diffs, n, passed, tolerance)


def _metadata(
    predictor: GraphPredictor,
    format: str,
    diffs: dict[str, float],
    molecules: int,
    description: str,
    passed: bool,
    tolerance: float,
    check: bool,
) -> dict[str, Any]:
    """What a prediction from the exported file needs, and how it was checked."""
    model = predictor.model
    info = predictor.metadata
    statistics = None
    if model.molecule_features is not None:
        statistics = {"mean": model.feature_mean.tolist(), "std": model.feature_std.tolist()}
    return {
        "format": METADATA_FORMAT,
        "export_format": format,
        "molml_version": info["molml_version"],
        "trained_with_molml": info["trained_with_molml"],
        "exported_from": Path(info["source"]).name if info["source"] else None,
        "encoder": info["encoder"],
        "encoder_args": info["encoder_args"],
        "readout": model.hparams.readout,
        "tasks": predictor.tasks,
        "task_type": predictor.task_type,
        "prediction_columns": predictor.prediction_columns(),
        "featurizer": predictor.featurization,
        "molecule_feature_statistics": statistics,
        "target_scaling": {"mean": model.target_mean.tolist(), "std": model.target_std.tolist()},
        "training_data": info["training_data"],
        "test_metrics": info["test_metrics"],
        "inputs": input_names(predictor),
        "parity": {
            "max_abs_diff": diffs,
            "molecules": molecules,
            "sample": description,
            "tolerance": tolerance,
            "passed": passed,
            "enforced": check,
        },
    }


def _save_onnx(proto: Any, metadata: dict[str, Any], path: Path) -> None:
    import onnx

    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))
