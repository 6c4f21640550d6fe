"""Predictions of a graph model exported to ONNX (``molml export --format onnx``), on
onnxruntime.

The ONNX graph takes the featurized tensors of a batch of molecules (see
:data:`ONNX_INPUTS`) and returns predictions in the user's units. The file's
``metadata_props`` carry everything else a prediction needs (featurizer config, tasks, task
type, prediction columns) under the key :data:`METADATA_KEY`. Prediction here runs on numpy,
RDKit (molml's featurizer) and onnxruntime only; torch is never called.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.fingerprints import FingerprintFeaturizer, fingerprint_from_config
from molml.data.graphs import featurize_block
from molml.errors import CheckpointError
from molml.predict.base import Predictor, checked_input

METADATA_KEY = "molml"
"""The ``metadata_props`` key of the JSON document molml writes into exported ONNX files."""
METADATA_FORMAT = 1
ONNX_INPUTS = ("x", "edge_index", "edge_attr", "batch", "n_atoms")
"""Graph inputs: atom features ``[atoms, atom_dim]`` float32, ``edge_index`` ``[2, edges]``
int64 (indices into the batch's atoms), bond features ``[edges, bond_dim]`` float32,
``batch`` ``[atoms]`` int64 (each atom's molecule), ``n_atoms`` ``[molecules]`` int64; plus
``features`` ``[molecules, d]`` float32 (raw molecule-level features) when the model uses them
and ``atom_slots`` when its encoder pads molecules to the largest one."""
FEATURES_INPUT = "features"
ATOM_SLOTS_INPUT = "atom_slots"
"""``[atoms of the batch's largest molecule]`` int64 (``0, 1, ...``): its length is the padded
size of encoders that pad molecules (GPS, Graphormer), a size an exported graph reads from an
input's shape rather than from the values of ``batch``."""
REQUIRED_METADATA = ("format", "tasks", "task_type", "prediction_columns", "featurizer")


def batch_arrays(arrays: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Molecules ``start..stop-1`` of :func:`~molml.data.graphs.featurize_block`'s arrays as
    the inputs of an exported graph (edge indices shifted to the batch's atom numbering): all
    that any graph takes; each graph reads the ones it names (its metadata's ``inputs``)."""
    atom_ptr = np.concatenate([[0], np.cumsum(arrays["n_atoms"])])
    edge_ptr = np.concatenate([[0], np.cumsum(arrays["n_edges"])])
    a0, a1 = atom_ptr[start], atom_ptr[stop]
    e0, e1 = edge_ptr[start], edge_ptr[stop]
    n_atoms = arrays["n_atoms"][start:stop]
    offsets = np.repeat(atom_ptr[start:stop] - a0, arrays["n_edges"][start:stop])
    inputs = {
        "x": np.ascontiguousarray(arrays["x"][a0:a1], dtype=np.float32),
        "edge_index": np.ascontiguousarray(arrays["edge_index"][:, e0:e1] + offsets),
        "edge_attr": np.ascontiguousarray(arrays["edge_attr"][e0:e1], dtype=np.float32),
        "batch": np.repeat(np.arange(stop - start, dtype=np.int64), n_atoms),
        "n_atoms": np.ascontiguousarray(n_atoms, dtype=np.int64),
        ATOM_SLOTS_INPUT: np.arange(n_atoms.max(initial=0), dtype=np.int64),
    }
    if "features" in arrays:
        inputs[FEATURES_INPUT] = np.ascontiguousarray(
            arrays["features"][start:stop], dtype=np.float32
        )
    return inputs


def read_metadata(path: str | Path, custom: dict[str, str]) -> dict[str, Any]:
    """molml's metadata from an ONNX file's ``metadata_props`` (``custom``), checked."""
    if METADATA_KEY not in custom:
        raise CheckpointError(
            f"{path} is an ONNX model without molml metadata (no '{METADATA_KEY}' entry in its "
            f"metadata_props, which must hold {', '.join(REQUIRED_METADATA)}): export it with "
            "'molml export --format onnx'"
        )
    try:
        meta = json.loads(custom[METADATA_KEY])
    except ValueError as exc:
        raise CheckpointError(f"{path}: the '{METADATA_KEY}' metadata is not JSON") from exc
    missing = [key for key in REQUIRED_METADATA if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise CheckpointError(f"{path}: the molml metadata lacks {', '.join(missing)}")
    if meta["format"] != METADATA_FORMAT:
        raise CheckpointError(
            f"{path} has molml ONNX metadata format {meta['format']}; this molml reads "
            f"format {METADATA_FORMAT}"
        )
    return meta


class ExportedGraphPredictor(Predictor):
    """A graph model exported by ``molml export``: molml's RDKit featurization, then the
    exported graph (:meth:`run`) on each batch of featurized tensors."""

    kind = "exported"
    source: Path
    _meta: dict[str, Any]

    def _read_featurization(self) -> None:
        featurization = self._meta["featurizer"]
        self.featurizer = MolGraphFeaturizer.from_config(featurization["graph"])
        features = featurization.get("molecule_features")
        self.molecule_features: FingerprintFeaturizer | None = (
            fingerprint_from_config(features) if features else None
        )

    @property
    def tasks(self) -> list[str]:
        return list(self._meta["tasks"])

    @property
    def task_type(self) -> str:
        return self._meta["task_type"]

    def prediction_columns(self) -> list[str]:
        return list(self._meta["prediction_columns"])

    @property
    def metadata(self) -> dict[str, Any]:
        return {**self._meta, "kind": self.kind, "source": str(self.source)}

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The exported graph's output for one batch of :func:`batch_arrays` inputs."""
        raise NotImplementedError

    def predict_arrays(self, arrays: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
        """Predictions ``[molecules, columns]`` for :func:`featurize_block`'s arrays."""
        n = len(arrays["n_atoms"])
        out = np.empty((n, len(self.prediction_columns())), dtype=np.float64)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            out[start:stop] = self.run(batch_arrays(arrays, start, stop)).reshape(stop - start, -1)
        return out

    def predict_values(self, smiles: list[Any], batch_size: int) -> tuple[np.ndarray, list[str]]:
        smiles = checked_input(smiles, batch_size)
        arrays, errors, _, _ = featurize_block(
            self.featurizer, smiles, molecule_features=self.molecule_features
        )
        values = np.full((len(smiles), len(self.prediction_columns())), np.nan)
        values[arrays["positions"]] = self.predict_arrays(arrays, batch_size)
        return values, [errors.get(i, "ok") for i in range(len(smiles))]


class OnnxPredictor(ExportedGraphPredictor):
    """A graph model exported to ONNX, run by onnxruntime on molml's RDKit featurization.

    Args:
        path: the ``.onnx`` file written by ``molml export``.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, all cores).

    Pickled or copied, it opens its file again (an onnxruntime session cannot be pickled).
    """

    kind = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.source = Path(path)
        self.threads = threads
        if not self.source.is_file():
            raise CheckpointError(f"ONNX model not found: {self.source}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.source), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own error types on bad files
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{self.source} is not a loadable ONNX model: {reason}") from exc
        self._meta = read_metadata(self.source, self.session.get_modelmeta().custom_metadata_map)
        self._read_featurization()
        self._input_names = [i.name for i in self.session.get_inputs()]

    def __reduce__(self) -> tuple[type, tuple[Path, int | None]]:
        return type(self), (self.source, self.threads)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {name: inputs[name] for name in self._input_names})[0]
