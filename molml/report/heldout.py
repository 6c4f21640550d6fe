"""The models of a run and the molecules of its split, as reports and calibration read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem

from molml.chem.parsing import parse_smiles
from molml.data.datamodule import MoleculeTable
from molml.data.splits import Split, split_keys, training_part_fingerprint
from molml.errors import CheckpointError, DataError, InvalidMoleculeError
from molml.predict import Predictor
from molml.report.config import configured_split, data_options, read_table, standardize_option


def run_models(run: Path) -> list[Path]:
    """The trained model of a run directory: its best checkpoint (``checkpoints/best*.ckpt``,
    newest first, else any checkpoint) or its fingerprint baseline (``model/``)."""
    checkpoints = sorted(
        (run / "checkpoints").glob("*.ckpt"),
        key=lambda p: (not p.name.startswith("best"), -p.stat().st_mtime),
    )
    if checkpoints:
        return [checkpoints[0]]
    if (run / "model").is_dir():
        return [run / "model"]
    raise CheckpointError(
        f"run directory {run} has no trained model (checkpoints/*.ckpt or a baseline model/)"
    )


#: options that change which molecules a run's split.json rows would point to
DATA_AND_SPLIT_KEYS = frozenset(
    {"dataset", "path", "split", "split_file", "split_column", "split_index", "split_seed"}
    | {"split_sizes", "smiles_column", "train_fraction"}
)


def resolve_run(
    run: str | Path | None,
    models: list[str],
    options: dict[str, Any] | None,
    warnings: list[str],
) -> tuple[list[Path], dict[str, Any]]:
    """The model paths (the run's own first) and the data options: the run's config with
    ``options`` over it, and the run's recorded split unless ``options`` name other data or
    split options (the recorded rows would point into another file); a run without
    ``split.json`` adds a warning."""
    paths = [Path(m) for m in models]
    if run is not None:
        run = Path(run)
        if not (run / "config.yaml").is_file():
            raise DataError(f"run directory {run} has no config.yaml")
        paths = run_models(run) + paths
        given = options or {}
        own = data_options([run / "config.yaml"], [])
        if given.get("path"):  # other data: a file instead of the run's dataset, or vice versa
            own = {k: v for k, v in own.items() if k not in ("dataset", "data_dir")}
        elif given.get("dataset"):
            own = {k: v for k, v in own.items() if k != "path"}
        options = {**own, **given}
        # with other data or split options, the split is made from them as in training
        own_split = not any(
            key in DATA_AND_SPLIT_KEYS and value != own.get(key) for key, value in given.items()
        )
        if own_split and (run / "split.json").is_file():
            # a run's split.json holds its one split (a CV fold run's config names its fold)
            split = {"split": "predefined", "split_file": str(run / "split.json"), "split_index": 0}
            # the file replaces whatever made the split, a split column included
            # and its training part is the one trained on, after train_fraction: not again
            options = {
                k: v for k, v in options.items() if k not in ("split_column", "train_fraction")
            } | split
        elif own_split:
            warnings.append(f"{run} has no split.json: the split is made again from its config.")
    if options is None:
        raise DataError("no data given: use --run RUN_DIR or --config CFG")
    if not paths:
        raise DataError("no model given: use --run RUN_DIR or --model MODEL")
    return paths, options


@dataclass
class SplitMolecules:
    """The parseable molecules of a table and their split.

    ``smiles``, ``targets``, ``mols`` and ``keys`` (identity, scaffold) are over the parseable
    rows only; ``split``'s indices point into them.
    """

    table: MoleculeTable
    smiles: np.ndarray
    targets: np.ndarray
    mols: list[Chem.Mol]
    keys: list[tuple[str, str]]
    split: Split


def split_molecules(options: dict[str, Any]) -> SplitMolecules:
    """Read the table the options describe, parse it (with the configured standardization)
    and make the configured split."""
    table = read_table(options)
    standardize = standardize_option(options)
    mols: list[Chem.Mol | None] = []
    for text in table.frame["smiles"]:
        try:
            mols.append(parse_smiles(text, standardize_mol=standardize))
        except InvalidMoleculeError:
            mols.append(None)
    valid = np.array([m is not None for m in mols])
    good = [m for m in mols if m is not None]
    keys = [split_keys(m) for m in good]
    split = configured_split(table, options, valid, [k[1] for k in keys])
    smiles = table.frame["smiles"].to_numpy()[valid]
    return SplitMolecules(table, smiles, table.targets[valid], good, keys, split)


def recorded_training_parts(predictor: Predictor) -> list[str]:
    """The training-part fingerprints (``train_sha256``) that ``predictor``'s single models
    recorded (an ensemble's or a calibrated model's members; models that recorded none are
    left out)."""
    found = []
    for member in predictor.members:
        described = member.metadata.get("training_data")
        recorded = described.get("train_sha256") if isinstance(described, dict) else None
        if isinstance(recorded, str):
            found.append(recorded)
    return found


def trained_elsewhere(predictors: list[Predictor], held: SplitMolecules) -> list[bool]:
    """For each predictor, whether one of its single models was trained on another training
    part than the split of ``held`` gives, so that its validation and test parts may hold
    molecules it was trained on."""
    trained_on = training_part_fingerprint(held.keys[i][0] for i in held.split.train)
    return [any(r != trained_on for r in recorded_training_parts(p)) for p in predictors]
