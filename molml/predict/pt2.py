"""Predictions of a graph model exported with ``molml export --format pt2``: a
``torch.export`` program, read with ``torch.export.load`` (its own serialization, not pickle),
with molml's metadata in the archive's extra file :data:`PT2_METADATA_FILE`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from molml.errors import CheckpointError
from molml.predict.onnx import METADATA_KEY, ExportedGraphPredictor, read_metadata

PT2_METADATA_FILE = "molml.json"


class Pt2Predictor(ExportedGraphPredictor):
    """A graph model exported as a ``torch.export`` program (``.pt2``), run on CPU. Pickled
    or copied, it loads its file again (the program's module cannot be pickled)."""

    kind = "pt2"

    def __init__(self, path: str | Path) -> None:
        self.source = Path(path)
        if not self.source.is_file():
            raise CheckpointError(f"torch.export program not found: {self.source}")
        extra = {PT2_METADATA_FILE: ""}
        try:
            program = torch.export.load(self.source, extra_files=extra)
        except Exception as exc:  # torch raises assorted errors on files that are not programs
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{self.source} is not a torch.export program: {reason}") from exc
        custom = {METADATA_KEY: extra[PT2_METADATA_FILE]} if extra[PT2_METADATA_FILE] else {}
        self._meta = read_metadata(self.source, custom)
        self._read_featurization()
        self.module = program.module()

    def __reduce__(self) -> tuple[type, tuple[Path]]:
        return type(self), (self.source,)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        names = self._meta["inputs"]
        with torch.no_grad():
            return self.module(**{k: torch.from_numpy(inputs[k]) for k in names}).numpy()
