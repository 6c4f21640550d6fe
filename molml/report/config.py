"""The ``data`` options of a report: from config files (graph or baseline configs, a run's
``config.yaml``) and ``--data.<key> value`` overrides, as the data module reads them."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from molml.baselines.config import DataConfig
from molml.data.datamodule import MoleculeDataModule, MoleculeTable
from molml.data.splits import Split
from molml.errors import DataError

TABLE_KEYS = (
    "dataset",
    "path",
    "data_dir",
    "smiles_column",
    "target_columns",
    "task_type",
    "split_column",
)
KNOWN_KEYS = (frozenset(inspect.signature(MoleculeDataModule.__init__).parameters) - {"self"}) | {
    f.name for f in dataclasses.fields(DataConfig)
}


DATA_OPTIONS_HELP = (
    "Instead of --config, or over it, any data option of molml fit: --data.dataset NAME or "
    "--data.path FILE, --data.target_columns, --data.smiles_column, --data.task_type, "
    "--data.split, --data.split_sizes, --data.split_seed, --data.split_column, "
    "--data.split_file, --data.split_index, --data.train_fraction (molml fit --help lists them)."
)


def read_config(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a dict (DataError naming the file when it cannot be read)."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"config {path}: cannot read it ({exc})") from exc
    if not isinstance(config, dict):
        raise DataError(f"config {path}: expected a YAML mapping")
    return config


def data_options(
    configs: list[str | Path], overrides: list[str], *, require_data: bool = True
) -> dict[str, Any]:
    """The ``data`` section of ``configs`` (later files win) with ``--data.<key> value``
    overrides (values read as YAML); unknown keys are refused, and so (with ``require_data``)
    are options naming neither a dataset nor a path."""
    options: dict[str, Any] = {}
    for path in configs:
        section = read_config(path).get("data") or {}
        if not isinstance(section, dict):
            raise DataError(f"config {path}: 'data' is not a mapping")
        options.update(section)
    pending = list(overrides)
    while pending:
        arg = pending.pop(0)
        key, _, value = arg.partition("=")
        if not key.startswith("--data."):
            raise DataError(f"unknown option {key!r}; data options are given as --data.<key>")
        if not _:
            if not pending:
                raise DataError(f"option {key} needs a value")
            value = pending.pop(0)
        options[key.removeprefix("--data.")] = yaml.safe_load(value)
    unknown = sorted(set(options) - KNOWN_KEYS)
    if unknown:
        raise DataError(f"unknown data option(s) {unknown}; known: {sorted(KNOWN_KEYS)}")
    if require_data and not options.get("dataset") and not options.get("path"):
        raise DataError("no data given: use --config cfg.yaml or --data.path file.csv")
    return options


def read_table(options: dict[str, Any]) -> MoleculeTable:
    """The molecule table the options describe."""
    return MoleculeTable.read(**{key: options.get(key) for key in TABLE_KEYS})


def standardize_option(options: dict[str, Any]) -> bool:
    """Whether molecules are standardized: ``data.standardize`` (baselines) or the graph
    featurizer's ``standardize``."""
    featurizer = options.get("featurizer") or {}
    if isinstance(featurizer, dict):
        featurizer = featurizer.get("init_args", featurizer)
        if featurizer.get("standardize"):
            return True
    return bool(options.get("standardize"))


def configured_split(
    table: MoleculeTable,
    options: dict[str, Any],
    valid: np.ndarray,
    scaffolds: list[str],
) -> Split:
    """The configured split of the valid molecules, with ``train_fraction`` applied (raises
    DataError as the data module does: empty parts, one-class training labels, ...)."""
    return table.make_split(
        valid,
        scaffolds,
        method=options.get("split", "scaffold"),
        sizes=options.get("split_sizes", (0.8, 0.1, 0.1)),
        seed=options.get("split_seed", 0),
        split_file=options.get("split_file"),
        split_index=options.get("split_index", 0),
        train_fraction=options.get("train_fraction") or 1.0,
    )
