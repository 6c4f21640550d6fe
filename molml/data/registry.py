"""Registry of benchmark datasets, described by YAML cards shipped as ``molml/datasets/*.yaml``.

A card names the file, its checksum, the SMILES and target columns, the task and the usual
metric. :func:`dataset_path` finds the file in a local data directory (``data_dir`` or the
``MOLML_DATA_DIR`` environment variable) or in a download cache, always checking its sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
from dataclasses import MISSING, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

from molml.errors import DataError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

CARDS_DIR: Traversable = resources.files("molml") / "datasets"
"""The dataset cards: package data, built from the checkout's top-level ``datasets/`` folder."""

DEFAULT_CACHE_DIR = Path("~/.cache/molml/datasets")
TASK_TYPES = ("regression", "classification", "multiclass")
DOWNLOAD_TIMEOUT_S = 60.0
_BLOCK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DatasetCard:
    """What molml knows about one benchmark dataset (loaded from ``datasets/<name>.yaml``)."""

    name: str
    description: str
    url: str
    sha256: str
    filename: str
    smiles_column: str
    target_columns: tuple[str, ...]
    task_type: str  # "regression" | "classification" | "multiclass"
    metric: str  # lowercase metric name, e.g. "rmse", "roc_auc"
    n_molecules: int
    citation: str
    license: str | None = None
    url_note: str | None = None  # how the file behind `url` relates to the checksummed layout
    units: str | None = None  # of the targets (regression), shown on plot axes


def list_datasets() -> list[str]:
    """Names of all datasets with a card, sorted."""
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in _cards_dir().iterdir()
        if entry.name.endswith(".yaml")
    )


def get_card(name: str) -> DatasetCard:
    """The card of dataset ``name``; :class:`DataError` listing the known names if unknown."""
    known = list_datasets()
    if name not in known:  # a name, never a path (e.g. "../datasets/esol")
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(known)}")
    return _load_card(_cards_dir() / f"{name}.yaml")


def dataset_path(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Local path of dataset ``name``'s file, checksum verified.

    With ``data_dir`` (else ``MOLML_DATA_DIR``) the file must be ``<dir>/<filename>`` or
    ``<dir>/<name>.csv``. Otherwise the cache (``cache_dir``, else ``MOLML_CACHE_DIR``, else
    ``~/.cache/molml/datasets``) is used, downloading the card's URL into it when ``download``.
    A checksum mismatch raises :class:`DataError` (a warning with ``MOLML_SKIP_CHECKSUM=1``).
    """
    card = get_card(name)
    directory = data_dir if data_dir is not None else os.environ.get("MOLML_DATA_DIR")
    if directory:
        return _from_data_dir(card, Path(directory).expanduser())
    cache = cache_dir or os.environ.get("MOLML_CACHE_DIR") or DEFAULT_CACHE_DIR
    target = Path(cache).expanduser() / card.filename
    if target.is_file():
        actual = sha256_of(target)
        if actual == card.sha256 or not download or _skip_checksum():
            _verify(target, card, actual=actual)
            return target
        # otherwise a stale or corrupt cache entry: download it again
    if not download:
        raise DataError(
            f"dataset {card.name!r} is not in the cache {target.parent} and download=False; "
            f"set MOLML_DATA_DIR to a directory holding {card.filename}"
        )
    _download(card, target)
    return target


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _cards_dir() -> Traversable:
    if not CARDS_DIR.is_dir():
        raise DataError(
            f"dataset cards directory not found: {CARDS_DIR} (molml is installed without its "
            f"package data; reinstall it from a wheel or its source checkout)"
        )
    return CARDS_DIR


def _load_card(path: Traversable) -> DatasetCard:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read dataset card: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: a dataset card must be a YAML mapping")
    known = {field.name: field for field in fields(DatasetCard)}
    unknown = sorted(set(data) - set(known))
    required = [n for n, f in known.items() if f.default is MISSING and n not in data]
    if unknown or required:
        raise DataError(f"{path}: unknown keys {unknown}, missing keys {required}")
    if not isinstance(data["target_columns"], list):
        raise DataError(f"{path}: target_columns must be a list of column names")
    card = DatasetCard(**{**data, "target_columns": tuple(data["target_columns"])})
    _check_card(card, path)
    return card


def _check_card(card: DatasetCard, path: Traversable) -> None:
    problems = []
    if f"{card.name}.yaml" != path.name:
        problems.append(f"name {card.name!r} differs from the file name")
    text: dict[str, Any] = {
        "description": card.description,
        "url": card.url,
        "filename": card.filename,
        "smiles_column": card.smiles_column,
        "metric": card.metric,
        "citation": card.citation,
    }
    problems += [f"{key} must be a non-empty string" for key, v in text.items() if not _text(v)]
    if not _SHA256.fullmatch(str(card.sha256)):
        problems.append("sha256 must be 64 lowercase hex digits")
    if not card.target_columns or not all(_text(c) for c in card.target_columns):
        problems.append("target_columns must be a non-empty list of strings")
    if card.task_type not in TASK_TYPES:
        problems.append(f"task_type must be one of {TASK_TYPES}")
    if card.units is not None and not (_text(card.units) and card.task_type == "regression"):
        problems.append("units, when given, must be a non-empty string on a regression card")
    if _text(card.metric) and card.metric != card.metric.lower():
        problems.append("metric must be lowercase")
    if not isinstance(card.n_molecules, int) or card.n_molecules < 1:
        problems.append("n_molecules must be a positive integer")
    if problems:
        raise DataError(f"{path}: invalid dataset card: {'; '.join(problems)}")


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _from_data_dir(card: DatasetCard, directory: Path) -> Path:
    if not directory.is_dir():
        raise DataError(f"data directory {directory} (data_dir / MOLML_DATA_DIR) does not exist")
    for candidate in dict.fromkeys([directory / card.filename, directory / f"{card.name}.csv"]):
        if candidate.is_file():
            _verify(candidate, card)
            return candidate
    raise DataError(
        f"dataset {card.name!r}: {card.filename} not found in data directory {directory} "
        f"(from data_dir / MOLML_DATA_DIR)"
    )


def _skip_checksum() -> bool:
    return os.environ.get("MOLML_SKIP_CHECKSUM", "").strip().lower() in ("1", "true", "yes")


def _verify(
    path: Path, card: DatasetCard, *, actual: str | None = None, source: str | None = None
) -> None:
    """Raise (or warn, with MOLML_SKIP_CHECKSUM=1) when ``path`` is not the card's file."""
    actual = actual or sha256_of(path)
    if actual == card.sha256:
        return
    message = (
        f"checksum mismatch for dataset {card.name!r} at {source or path}: "
        f"expected sha256 {card.sha256}, got {actual}"
    )
    if _skip_checksum():
        warnings.warn(f"{message} (ignored: MOLML_SKIP_CHECKSUM is set)", stacklevel=3)
        return
    raise DataError(f"{message}; set MOLML_SKIP_CHECKSUM=1 to use it anyway")


def _download(card: DatasetCard, target: Path) -> None:
    """Fetch ``card.url`` to a temporary file next to ``target``, check it, move it in place.

    A ``.gz`` URL for a file that is not named ``.gz`` is decompressed on the fly.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    gunzip = card.url.lower().endswith(".gz") and not card.filename.lower().endswith(".gz")
    descriptor, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{card.filename}.", suffix=".part"
    )
    partial = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            try:
                with urllib.request.urlopen(card.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    body: IO[bytes] = gzip.GzipFile(fileobj=response) if gunzip else response
                    shutil.copyfileobj(body, handle, _BLOCK)
            except (OSError, EOFError, ValueError, http.client.HTTPException) as exc:
                raise DataError(
                    f"could not download dataset {card.name!r} from {card.url}: {exc}. "
                    f"Without network access, set MOLML_DATA_DIR to a directory holding "
                    f"{card.filename} (or pass --data.data_dir DIR; data_dir= in Python)"
                ) from exc
        _verify(partial, card, source=f"{card.url} (downloading to {target})")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
