"""The :class:`Predictor` interface shared by graph models, baselines and ensembles."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from molml.errors import NON_FINITE, CheckpointError, DataError, PredictorError
from molml.options import check_int

DEFAULT_BATCH_SIZE = 256
UNCERTAINTY_SUFFIXES = ("_std", "_lower", "_upper")


def manifest_entry(path: Path, key: str) -> Any:
    """The value under ``key`` of a molml JSON manifest (an ensemble or calibration file), or
    None if ``path`` is not a JSON file holding that key; unreadable JSON is a
    :class:`~molml.errors.CheckpointError` naming the file."""
    if path.suffix != ".json" or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from exc
    return manifest.get(key) if isinstance(manifest, dict) else None


def as_smiles_list(smiles: str | Iterable[Any]) -> list[Any]:
    """The molecules of a ``predict``/``embed`` call as a list.

    One string is one molecule; any other iterable (list, tuple, generator, pandas Series,
    numpy array) gives one molecule per item. RDKit molecules are featurized as given (and
    standardized when the model's featurizer standardizes); other items that are not strings
    are kept and reported as invalid rows, so the output still has one row per input.
    """
    if isinstance(smiles, str):
        return [without_surrogates(smiles)]
    wrong = DataError(f"expected a SMILES string or SMILES strings, got {type(smiles).__name__}")
    if smiles is None or isinstance(smiles, (bytes, bytearray, dict)):
        raise wrong
    if isinstance(smiles, pd.DataFrame):  # iterating it would give the column names
        raise DataError(
            "expected SMILES strings, got a DataFrame; pass its SMILES column, e.g. frame['smiles']"
        )
    if isinstance(smiles, (set, frozenset)):
        raise DataError("expected SMILES strings in an order, got a set; pass a list")
    try:
        items = list(smiles)
    except TypeError as exc:
        raise wrong from exc
    return [without_surrogates(item) if isinstance(item, str) else item for item in items]


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (which no UTF-8 output can hold, e.g. from a JSON
    ``"\\ud800"``) replaced by U+FFFD, so that the molecule is reported as invalid (not valid
    UTF-8) instead of failing the whole call when its row is written."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def checked_input(smiles: str | Iterable[Any], batch_size: int) -> list[Any]:
    """The molecules of a prediction call as a list (:func:`as_smiles_list`), after checking
    ``batch_size``: every ``predict_values`` starts here."""
    check_int(batch_size, "batch_size", minimum=1)
    return as_smiles_list(smiles)


class Predictor(ABC):
    """A trained model that predicts molecular properties from SMILES.

    Every predictor has ``tasks``, ``task_type``, ``prediction_columns()``, ``metadata``,
    ``predict(smiles)`` and (where the model has a learned representation) ``embed(smiles)``.
    ``predict`` never fails on one molecule: an invalid one gets NaN predictions and a
    ``status`` saying why; every other row says ``ok``.
    """

    kind: str = "model"

    @property
    @abstractmethod
    def tasks(self) -> list[str]:
        """Names of the predicted tasks."""

    @property
    @abstractmethod
    def task_type(self) -> str:
        """``regression``, ``classification`` (binary) or ``multiclass``."""

    @abstractmethod
    def prediction_columns(self) -> list[str]:
        """Names of the prediction columns of :meth:`predict`, in order."""

    def point_columns(self) -> list[str]:
        """The prediction columns that hold predicted values, without the uncertainty
        columns ``<column>_std`` (a standard deviation) and ``<column>_lower`` /
        ``<column>_upper`` (a calibrated interval)."""
        columns = self.prediction_columns()
        return [
            c
            for c in columns
            if not any(c.endswith(s) and c.removesuffix(s) in columns for s in UNCERTAINTY_SUFFIXES)
        ]

    @property
    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """What a user or a service needs to know about the model: kind, molml version,
        training data, test metrics (where recorded) and featurizer settings."""

    @property
    def members(self) -> list[Predictor]:
        """The single models this predictor averages (itself, unless an ensemble)."""
        return [self]

    def combine_members(
        self, member_values: Sequence[np.ndarray], status: np.ndarray
    ) -> np.ndarray:
        """This predictor's values from its members' ``[n, columns]`` values (in
        :attr:`members` order), NaN in the rows whose ``status`` is not ``ok``."""
        values = np.array(member_values[0], dtype=np.float64)
        values[status != "ok"] = np.nan
        return values

    @abstractmethod
    def predict_values(self, smiles: list[Any], batch_size: int) -> tuple[np.ndarray, list[str]]:
        """Predictions ``[n, len(prediction_columns())]`` (NaN rows for invalid molecules)
        and the status of each molecule."""

    def predict(
        self, smiles: str | Iterable[Any], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> pd.DataFrame:
        """Predict for SMILES; one row per input, in input order (a pandas Series keeps its
        index, so the result lines up with the frame it came from).

        Columns: ``smiles``, the prediction columns (original units for regression,
        probabilities for classification; ``<task>_class<k>`` for multiclass) and ``status``:
        ``ok`` or why the molecule failed (its predictions are NaN). A prediction that is not
        finite is never ``ok``.
        """
        index = smiles.index if isinstance(smiles, pd.Series) else None
        smiles = checked_input(smiles, batch_size)
        values, status = self.predict_values(smiles, batch_size)
        columns = self.prediction_columns()
        values = np.asarray(values, dtype=np.float64).reshape(len(smiles), len(columns))
        status = [
            NON_FINITE if s == "ok" and not np.isfinite(row).all() else s
            for s, row in zip(status, values, strict=True)
        ]
        frame = pd.DataFrame(values, columns=columns, index=index)
        frame.insert(0, "smiles", smiles)
        frame["status"] = status
        return frame

    def embed(
        self, smiles: str | Iterable[Any], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """Molecule representations ``[n, dim]`` (NaN rows for invalid SMILES)."""
        raise PredictorError(f"this {self.kind} predictor has no molecule embedding")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tasks={self.tasks!r}, task_type={self.task_type!r})"


class SingleModelPredictor(Predictor):
    """A predictor around one trained model object (a graph model or a baseline) that knows
    its tasks, task type, featurizer and prediction columns.

    Args:
        model: the trained model.
        source: the file or directory it was loaded from, if any.
    """

    def __init__(self, model: Any, source: str | Path | None = None) -> None:
        self.model = model
        self.source = Path(source) if source is not None else None

    @property
    def tasks(self) -> list[str]:
        return list(self.model.tasks)

    @property
    def task_type(self) -> str:
        return self.model.task_type

    @property
    def featurizer(self) -> Any:
        """The featurizer the model was trained with (graph featurizer or fingerprint)."""
        return self.model.featurizer

    def prediction_columns(self) -> list[str]:
        return self.model.prediction_columns()
