"""The molml LightningDataModule: table -> validated targets -> cached graphs -> split -> loaders.

Reading and validating the table happens at construction (so task names and the task type are
known before the model is built); featurization and splitting happen in ``prepare_data`` /
``setup``, cached on disk and shared by all ranks. :class:`MoleculeTable` holds the reading,
validation, splitting and reporting steps on their own, so that other models (the fingerprint
baselines) use exactly the same data and splits.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, WeightedRandomSampler

from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.fingerprints import make_fingerprint
from molml.data.graphs import (
    FeaturizedMolecules,
    GraphBatches,
    GraphStore,
    as_batch,
    featurize_molecules,
)
from molml.data.readers import (
    file_kind,
    list_columns,
    read_molecules,
    read_molecules_to_predict,
    separator_hint,
)
from molml.data.registry import dataset_path, get_card
from molml.data.splits import (
    Split,
    make_split,
    split_report,
    training_part_fingerprint,
    unknown_split_values,
)
from molml.errors import DataError
from molml.options import check_int, check_jobs, plain_data
from molml.tasks import TASK_TYPES, classes_per_task, target_scaling

log = logging.getLogger("molml")


@dataclass
class MoleculeTable:
    """A molecule table with validated targets, and the steps that split and report on it.

    ``frame`` has the reader's ``row`` (line number) and ``smiles`` columns plus the target
    columns; ``targets`` is float ``[n, n_tasks]`` with NaN for a missing label. Splits are made
    over the valid molecules only (``valid``: bool ``[n]``, from whatever featurization the model
    uses), so their indices count valid molecules in input order. ``split_notes`` holds what
    :meth:`make_split` found worth reporting (rows of a split file that are invalid molecules,
    the training molecules ``train_fraction`` set aside).
    """

    source: Path
    frame: pd.DataFrame
    tasks: list[str]
    targets: np.ndarray
    task_type: str
    split_values: list | None = None
    split_column: str | None = None
    split_notes: dict[str, Any] = field(default_factory=dict)
    target_units: str | None = None  # a registry card's, for its own target columns

    @classmethod
    def read(
        cls,
        dataset: str | None = None,
        path: str | None = None,
        *,
        data_dir: str | None = None,
        smiles_column: str | None = None,
        target_columns: list[str] | str | None = None,
        task_type: str | None = None,
        split_column: str | None = None,
    ) -> MoleculeTable:
        """Read a registry dataset or a file and validate its targets (arguments as in
        :class:`MoleculeDataModule`)."""
        if dataset is not None and path is not None:
            raise DataError(
                f"give one of data.dataset (a registry name, here {dataset!r}) or data.path (a "
                f"file, here {path!r}), not both: with a config that names a dataset, add "
                "--data.dataset null to train on your file"
            )
        if dataset is None and path is None:
            raise DataError("give data.dataset (a registry name) or data.path (a file)")
        source, smiles_column, target_columns, card_task, units = _resolve_source(
            dataset, path, data_dir, smiles_column, target_columns
        )
        extra = [split_column] if split_column else []
        columns = None if target_columns is None else [*target_columns, *extra]
        frame = read_molecules(source, smiles_column=smiles_column, columns=columns)
        if split_column and split_column not in frame.columns:  # every column was read
            raise DataError(
                f"{source}: split column {split_column!r} not found; the file has columns "
                f"{list_columns(source)}"
            )
        if target_columns is None:
            target_columns = default_target_columns(frame, source, extra)
        if not target_columns:
            columns = list_columns(source)
            raise DataError(
                f"{source}: no target columns besides the SMILES column (the file has columns "
                f"{columns}; name targets in target_columns){separator_hint(source, columns)}"
            )
        tasks = list(target_columns)
        _check_task_names(tasks, source)
        targets = _numeric_targets(frame, tasks, source)
        if not (task_type or card_task):
            _warn_if_classes_look_continuous(targets, tasks, source)
        task_type = task_type or card_task or _infer_task_type(targets)
        _check_labels(targets, tasks, task_type, frame, source)
        split_values = frame[split_column].tolist() if split_column else None
        return cls(
            source,
            frame,
            tasks,
            targets,
            task_type,
            split_values,
            split_column,
            target_units=units if task_type == "regression" else None,
        )

    def report_invalid(self, errors: dict[int, str], what: str, *, strict: bool) -> None:
        """Log the invalid molecules (input position -> reason) with their row numbers, or
        raise :class:`DataError` with ``strict`` or when no molecule at all is valid."""
        if not errors:
            return
        rows = self.frame["row"]
        if len(errors) == len(self.frame):
            first = min(errors)
            raise DataError(
                f"{self.source}: no row of SMILES column {self.frame.attrs.get('smiles_column')!r} "
                f"is a valid molecule (row {rows.iloc[first]}: {errors[first]}); the file has "
                f"columns {self.frame.attrs.get('columns')}; choose one with smiles_column"
            )
        lines = [f"row {rows.iloc[pos]}: {reason}" for pos, reason in sorted(errors.items())]
        verdict = "so the run stops (data.strict)" if strict else "and are left out"
        message = (
            f"{self.source}: {len(lines)} of {len(self.frame)} molecules in the {what} could not "
            f"be featurized {verdict}:\n  " + "\n  ".join(lines[:20])
        )
        if len(lines) > 20:
            message += f"\n  ... and {len(lines) - 20} more (see invalid_rows.csv in the run dir)"
        if strict:
            raise DataError(message)
        if rank_zero_only.rank == 0:  # once, not once per training process
            log.warning(message)

    def make_split(
        self,
        valid: np.ndarray,
        scaffolds: Sequence[str] | None,
        *,
        method: str,
        sizes: Sequence[float],
        seed: int,
        split_file: str | None = None,
        split_index: int = 0,
        train_fraction: float = 1.0,
    ) -> Split:
        """Split the valid molecules (``scaffolds``: one per valid molecule, or None); with
        ``train_fraction`` below 1, keep a seeded part of the training molecules
        (:func:`subsample_train`).

        Raises :class:`DataError` for a split file or column given without the ``predefined``
        split, a ``split_index`` without a split file, split-file indices beyond the table, an
        empty train, val or test part, and a binary task with one class among its training
        labels (after ``train_fraction``). Rows
        of a split file that are invalid molecules are left out (logged, and counted in
        :meth:`split_report`), and valid molecules in no part are logged.
        """
        self._check_split_options(method, split_file)
        if split_index and not split_file:
            raise DataError(
                f"split_index {split_index} picks an entry of a split_file, which is not "
                "given; set split: predefined and split_file, or leave split_index out"
            )
        self.split_notes = {}
        if split_file:
            split, dropped = _split_file_to_valid(split_file, split_index, valid, self.source)
            self.split_notes["split_file_invalid_rows"] = dropped
        else:
            values = self.split_values
            if values is not None and method == "predefined":
                self._check_split_column(values, valid)
            split = make_split(
                method,
                smiles=self.frame["smiles"].to_numpy()[valid].tolist(),
                y=self.targets[valid],
                task_type=self.task_type,
                sizes=tuple(sizes),
                seed=seed,
                scaffolds=scaffolds,
                split_column_values=None if values is None else list(np.asarray(values)[valid]),
                n=int(valid.sum()),
            )
        split.validate(int(valid.sum()))
        if split_file:
            how = f"split file {split_file}"
        elif method == "predefined":
            how = f"split column {self.split_column!r}"
        else:
            how = f"{method} split with sizes {tuple(sizes)}"
        set_aside = 0  # training molecules train_fraction leaves out, on purpose
        if train_fraction < 1:
            full = len(split.train)
            split = subsample_train(split, train_fraction, seed)
            set_aside = full - len(split.train)
            self.split_notes["train_fraction"] = train_fraction
            self.split_notes["n_set_aside_by_train_fraction"] = set_aside
            log.info(
                "%s: train_fraction %s keeps %d of %d training molecules",
                self.source,
                train_fraction,
                len(split.train),
                full,
            )
            how += f", train_fraction {train_fraction}"
        self._check_split(split, valid, how, set_aside)
        return split

    def _check_split_options(self, method: str, split_file: str | None) -> None:
        given = [
            f"{name} {value!r}"
            for name, value in (("split_file", split_file), ("split_column", self.split_column))
            if value
        ]
        if given and method != "predefined":
            raise DataError(
                f"{self.source}: {given[0]} is given but split is {method!r}; "
                "set split: predefined to use it, or leave it out"
            )
        if len(given) == 2:
            raise DataError(f"{self.source}: give one of {' or '.join(given)}, not both")

    def _check_split(self, split: Split, valid: np.ndarray, how: str, set_aside: int) -> None:
        """Warn about valid molecules in no part (besides the ``set_aside`` training molecules
        that ``train_fraction`` leaves out); refuse empty parts, tasks without training labels
        one-class classification tasks; warn about multiclass classes missing from training."""
        n_valid = int(valid.sum())
        unused = n_valid - sum(len(part) for part in split.parts()) - set_aside
        if unused:
            log.warning(
                "%s: %d of %d valid molecules are in no part of the split (%s) and are not used",
                self.source,
                unused,
                n_valid,
                how,
            )
        for name, part in split.named_parts().items():
            if len(part) == 0:
                raise DataError(
                    f"{self.source}: the {name} part of the split is empty ({n_valid} valid "
                    f"molecules, {how}); train, val and test each need at least one molecule"
                )
        train = self.targets[valid][split.train]
        for j, task in enumerate(self.tasks):
            labels = train[~np.isnan(train[:, j]), j]
            if labels.size == 0:
                raise DataError(
                    f"{self.source}: task {task!r} has no labelled rows in the train split "
                    f"({how}); nothing can be learned for it: leave the task out"
                )
            classes = np.unique(labels)
            if self.task_type == "classification" and len(classes) == 1:
                raise DataError(
                    f"{self.source}: classification task {task!r} has only class "
                    f"{int(classes[0])} in the train split ({labels.size} labelled molecules, "
                    f"{how}); a classifier cannot learn from one class: use a split that puts "
                    "both classes in training (e.g. scaffold_stratified) or leave the task out"
                )
            if self.task_type == "multiclass":
                labelled = self.targets[valid][:, j]
                unseen = sorted(set(np.unique(labelled[~np.isnan(labelled)])) - set(classes))
                if unseen:  # a warning: checkpoints of such runs must still test and report
                    log.warning(
                        "%s: multiclass task %r has class(es) %s in the data but not in the "
                        "train split (%s); a model cannot learn a class it never sees: use a "
                        "split that puts every class in training (e.g. scaffold_stratified)",
                        self.source,
                        task,
                        [int(c) for c in unseen],
                        how,
                    )
        if self.task_type == "classification":
            val = self.targets[valid][split.val]
            if not any(len(np.unique(c[~np.isnan(c)])) == 2 for c in val.T):
                raise DataError(
                    f"{self.source}: no task has both classes in the val split ({len(val)} "
                    f"molecules, {how}): validation ROC-AUC and PR-AUC, which checkpoints and "
                    "early stopping of classifiers watch, cannot be computed; use a split that "
                    "puts both classes in validation (e.g. scaffold_stratified)"
                )

    def _check_split_column(self, values: list, valid: np.ndarray) -> None:
        """Refuse split-column values of usable molecules that name no part, with the file's
        row numbers (an invalid molecule's row needs none)."""
        positions = np.flatnonzero(valid)
        unknown = positions[unknown_split_values(np.asarray(values, dtype=object)[valid])]
        if unknown.size:
            rows = self.frame["row"].to_numpy()
            shown = ", ".join(
                f"row {rows[i]} ({'empty' if pd.isna(values[i]) else repr(str(values[i]))})"
                for i in unknown[:10]
            )
            more = f" and {unknown.size - 10} more" if unknown.size > 10 else ""
            raise DataError(
                f"{self.source}: split column {self.split_column!r} has {unknown.size} value(s) "
                f"that name no part (train/val/valid/validation/test or 0/1/2): {shown}{more}"
            )

    def split_report(
        self,
        split: Split,
        valid: np.ndarray,
        scaffolds: Sequence[str] | None,
        canonical_smiles: Sequence[str] | None,
        *,
        method: str,
        seed: int,
        n_invalid: int,
    ) -> dict[str, Any]:
        """:func:`~molml.data.splits.split_report` of a split made by :meth:`make_split`,
        with its method, seed, source and number of invalid molecules."""
        report = split_report(
            split,
            smiles=self.frame["smiles"].to_numpy()[valid].tolist(),
            y=self.targets[valid],
            task_names=self.tasks,
            task_type=self.task_type,
            scaffolds=scaffolds,
            canonical_smiles=canonical_smiles,
        )
        report["method"] = method
        report["seed"] = seed
        report["source"] = str(self.source)
        report["invalid_molecules"] = n_invalid
        report.update(self.split_notes)
        # training molecules train_fraction leaves out are in no part on purpose
        report["n_unassigned"] -= report.get("n_set_aside_by_train_fraction", 0)
        shared = report["duplicate_molecules_across_splits"]
        if shared["total"] and rank_zero_only.rank == 0:
            log.warning(
                "%s: %d molecules occur in more than one part of the split (train-test: %d, "
                "train-val: %d, val-test: %d): scores on them partly measure recall of training "
                "molecules; see split_report.json, or deduplicate the file",
                self.source,
                shared["total"],
                shared["train-test"],
                shared["train-val"],
                shared["val-test"],
            )
        return report

    def write_split_files(
        self,
        directory: Path,
        split: Split,
        valid: np.ndarray,
        report: dict[str, Any],
        errors: dict[int, str],
    ) -> None:
        """Write ``split_report.json``, ``split.json`` (row positions) and, when molecules were
        left out, ``invalid_rows.csv`` into ``directory``: per molecule its ``row`` (the file's
        row number, as in messages), ``position`` (0-based among the data rows, as
        ``split.json`` counts), SMILES and reason."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "split_report.json").write_text(json.dumps(report, indent=2))
        split_rows(split, valid).to_json(directory / "split.json")
        if errors:
            rows = sorted(errors)
            pd.DataFrame(
                {
                    "row": self.frame["row"].iloc[rows].to_numpy(),
                    "position": rows,  # 0-based among the data rows, as split.json counts
                    "smiles": self.frame["smiles"].iloc[rows].to_numpy(),
                    "reason": [errors[r] for r in rows],
                }
            ).to_csv(directory / "invalid_rows.csv", index=False)


def split_rows(split: Split, valid: np.ndarray) -> Split:
    """A split of the valid molecules as 0-based row positions of the input table."""
    positions = np.flatnonzero(valid)
    return Split(*(positions[part] for part in split.parts()))


class MoleculeDataModule(L.LightningDataModule):
    """Molecules and targets from a registry dataset or a file, featurized and split.

    Args:
        dataset: a registry name (``esol``, ``bbbp``, ...; see ``molml.data.registry``).
        path: or a CSV/TSV/Parquet/SMI/SDF file (gzip too).
        smiles_column, target_columns: columns to use (default: the card's, or the SMILES column
            and every other column of the file); one target may be named without a list.
        task_type: ``regression``, ``classification`` (binary, one or more tasks) or
            ``multiclass``; inferred when not given (all labels 0/1 -> classification).
        data_dir: directory holding registry CSVs (default: ``$MOLML_DATA_DIR``).
        featurizer: graph featurizer (default ``MolGraphFeaturizer()``), or its config.
        split: ``scaffold``, ``scaffold_stratified``, ``random``, ``stratified`` or
            ``predefined`` (with ``split_file`` in chemprop's JSON format or ``split_column``).
        split_index: which entry of a split file with several splits (0-based).
        train_fraction: train on this random fraction of the training part only (seeded with
            ``split_seed``, nested: 10 % is part of 25 %; validation and test parts unchanged),
            to measure data efficiency.
        split_sizes, split_seed: fractions for train/val/test and the seed.
        strict: refuse the data if any SMILES is invalid (the error lists the first 20) instead of
            reporting and skipping them.
        predict_path: file to predict on with ``molml predict`` (default: the test split).
        predict_smiles_column: the SMILES column of ``predict_path`` (default: the training
            SMILES column when the file has one of that name, else ``smiles`` or the first).
        cache_dir: where featurized graphs are cached (``None`` disables the cache).
        featurize_jobs: processes for featurization (-1: all cores).
        molecule_features: molecule-level features concatenated before the model's head, by
            fingerprint name (``rdkit2d`` for RDKit's 2D descriptors, ``maccs``, ``ecfp4``, ...);
            normalized with the training split's statistics inside the model.
        balanced_sampler: binary classification: draw training molecules with a
            ``WeightedRandomSampler`` so that each task's classes are drawn about equally often
            (a molecule's weight: the largest 1 / class count over its labelled tasks).
    """

    def __init__(
        self,
        dataset: str | None = None,
        path: str | None = None,
        smiles_column: str | None = None,
        target_columns: list[str] | str | None = None,
        task_type: str | None = None,
        data_dir: str | None = None,
        featurizer: MolGraphFeaturizer | None = None,
        split: str = "scaffold",
        split_sizes: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        split_file: str | None = None,
        split_column: str | None = None,
        split_index: int = 0,
        train_fraction: float = 1.0,
        batch_size: int = 64,
        num_workers: int = 0,
        strict: bool = False,
        predict_path: str | None = None,
        predict_smiles_column: str | None = None,
        cache_dir: str | None = ".molml_cache",
        featurize_jobs: int = -1,
        molecule_features: str | None = None,
        balanced_sampler: bool = False,
    ) -> None:
        super().__init__()
        check_int(batch_size, "data.batch_size", minimum=1)
        check_int(num_workers, "data.num_workers", minimum=0)
        check_int(split_index, "data.split_index", minimum=0)
        check_int(split_seed, "data.split_seed")
        if isinstance(featurizer, dict):  # a config, as MolGraphFeaturizer.to_config() writes
            try:
                featurizer = MolGraphFeaturizer.from_config(featurizer)
            except (TypeError, ValueError) as exc:
                raise DataError(f"data.featurizer config {featurizer!r}: {exc}") from exc
        elif featurizer is not None and not isinstance(featurizer, MolGraphFeaturizer):
            raise DataError(
                f"data.featurizer must be a MolGraphFeaturizer or its config, got "
                f"{featurizer!r} (a preset: MolGraphFeaturizer(preset=...))"
            )
        if not (isinstance(train_fraction, (int, float)) and 0 < train_fraction <= 1):
            raise DataError(f"data.train_fraction must be in (0, 1], got {train_fraction!r}")
        check_jobs(featurize_jobs, "data.featurize_jobs")
        if predict_smiles_column is not None and predict_path is None:
            raise DataError(
                "data.predict_smiles_column names a column of data.predict_path: give both"
            )
        # task_type and molecule_features are resolved below and handed to the model, which
        # logs the resolved values (the same key with another value would clash in the loggers)
        self.save_hyperparameters(ignore=["featurizer", "task_type", "molecule_features"])
        self.hparams.update(plain_data(dict(self.hparams)))  # Path and numpy values as plain
        self.molecules = MoleculeTable.read(
            dataset,
            path,
            data_dir=data_dir,
            smiles_column=smiles_column,
            target_columns=target_columns,
            task_type=task_type,
            split_column=split_column,
        )
        if balanced_sampler and self.molecules.task_type != "classification":
            raise DataError(
                f"data.balanced_sampler is for binary classification; the data has "
                f"{self.molecules.task_type} tasks {self.molecules.tasks}"
            )
        self.featurizer = featurizer or MolGraphFeaturizer()
        self.molecule_features = make_fingerprint(molecule_features) if molecule_features else None
        self.source = self.molecules.source
        self.table = self.molecules.frame
        self.tasks = self.molecules.tasks
        self.targets = self.molecules.targets
        self.task_type = self.molecules.task_type
        self.target_units = self.molecules.target_units
        self.featurized: FeaturizedMolecules | None = None
        self.split: Split | None = None
        self.report: dict[str, Any] | None = None
        self.predict_frame: pd.DataFrame | None = None
        self._predict_store: GraphStore | None = None
        self._train_fingerprint: str | None = None

    @property
    def molecule_features_config(self) -> dict[str, Any] | None:
        """Config of the molecule-level features (stored in the model's checkpoint), if any."""
        return self.molecule_features.to_config() if self.molecule_features else None

    @property
    def featurizer_config(self) -> dict[str, Any]:
        """The featurizer's config, passed on to the model and stored in its checkpoint."""
        return self.featurizer.to_config()

    @property
    def num_classes(self) -> int:
        """Number of classes for multiclass tasks (2 otherwise)."""
        if self.task_type != "multiclass":
            return 2
        return int(np.nanmax(self.targets)) + 1

    @property
    def task_classes(self) -> list[int] | None:
        """Multiclass: each task's own class count (see :func:`molml.tasks.classes_per_task`);
        ``None`` otherwise."""
        return classes_per_task(self.targets) if self.task_type == "multiclass" else None

    # ------------------------------------------------------------------ featurize + split
    def _featurize(self, smiles: Sequence[str]) -> FeaturizedMolecules:
        return featurize_molecules(
            smiles,
            self.featurizer,
            n_jobs=self.hparams.featurize_jobs,
            cache_dir=self.hparams.cache_dir,
            molecule_features=self.molecule_features,
        )

    def prepare_data(self) -> None:
        """Featurize once (rank 0) so the other ranks read the cache."""
        if self.hparams.cache_dir is not None:
            self._featurize(self.table["smiles"].tolist())

    def setup(self, stage: str | None = None) -> None:
        # predicting a file needs the training data's tasks (read with the table), not its
        # molecules: they are featurized and split for every other stage only
        predicting_a_file = stage == "predict" and self.hparams.predict_path
        if self.featurized is None and not predicting_a_file:
            featurized = self.featurized = self._featurize(self.table["smiles"].tolist())
            self.molecules.report_invalid(
                featurized.errors, "training data", strict=self.hparams.strict
            )
            self._check_classes_of_valid_molecules(featurized.valid)
            self.graphs = featurized.graphs.with_targets(self.targets[featurized.valid])
            hp = self.hparams
            self.split = self.molecules.make_split(
                featurized.valid,
                featurized.scaffolds,
                method=hp.split,
                sizes=hp.split_sizes,
                seed=hp.split_seed,
                split_file=hp.split_file,
                split_index=hp.split_index,
                train_fraction=hp.train_fraction,
            )
            self.report = self.molecules.split_report(
                self.split,
                featurized.valid,
                featurized.scaffolds,
                featurized.canonical_smiles,
                method=hp.split,
                seed=hp.split_seed,
                n_invalid=len(featurized.errors),
            )
            self._write_reports(stage)
        if not predicting_a_file:  # before training: fit tests its best checkpoint at the end
            if stage in ("fit", "validate"):
                self._check_devices(len(self.split.val), "the validation split")
            if stage in ("fit", "test", "predict"):
                self._check_devices(len(self.split.test), "the test split")
        if stage == "predict" and self.hparams.predict_path and self._predict_store is None:
            trained_on = self.hparams.smiles_column or self.table.attrs.get("smiles_column")
            frame = read_molecules_to_predict(
                self.hparams.predict_path, trained_on, self.hparams.predict_smiles_column
            )
            result = self._featurize(frame["smiles"].tolist())
            frame = keep_input_columns(frame, ["status"])
            frame["status"] = "ok"
            for position, reason in result.errors.items():
                frame.loc[frame.index[position], "status"] = reason
            self.predict_frame, self._predict_store = frame, result.graphs

    def _check_classes_of_valid_molecules(self, valid: np.ndarray) -> None:
        """Multiclass: the class count comes from every label, so a class whose only
        molecules are invalid would be a class no molecule can teach."""
        if self.task_type != "multiclass":
            return
        labels = self.targets[valid]
        present = set(np.unique(labels[~np.isnan(labels)]).astype(int).tolist())
        missing = sorted(set(range(self.num_classes)) - present)
        if missing:
            labelled = np.isin(self.targets, missing).any(axis=1)
            rows = self.table["row"].to_numpy()[labelled & ~valid].tolist()
            raise DataError(
                f"{self.source}: class(es) {missing} label only invalid molecules (rows "
                f"{rows[:10]}); no molecule can teach them: fix or remove those rows"
            )

    def split_rows(self) -> Split:
        """The split as 0-based row positions of the input table (chemprop's splits format)."""
        return split_rows(self.split, self.featurized.valid)

    def _write_reports(self, stage: str | None) -> None:
        """The split files, in the run folder; without a logger only by ``fit``: the folder
        is then the trainer's root, where a training run keeps its own."""
        directory = self.run_dir()
        if directory is not None and (self.trainer.logger is not None or stage == "fit"):
            self.molecules.write_split_files(
                directory, self.split, self.featurized.valid, self.report, self.featurized.errors
            )

    def describe(self) -> dict[str, Any]:
        """What a model trained on this data saw: dataset name or file, rows, split sizes."""
        hp = self.hparams
        info: dict[str, Any] = {
            "name": hp.dataset or Path(self.source).stem,
            "source": str(self.source),
            "rows": len(self.table),
            "split": hp.split,
            "split_seed": hp.split_seed,
        }
        if self.split is not None:
            info.update({name: len(part) for name, part in self.split.named_parts().items()})
            info["train_sha256"] = self.train_fingerprint()
        return info

    def train_fingerprint(self) -> str:
        """SHA-256 of the training part's sorted (canonical) SMILES: a checkpoint records it,
        so testing it on data whose training part differs (another file, or the same file
        changed or reordered, when its test part may hold training molecules) is noticed."""
        if self._train_fingerprint is not None:
            return self._train_fingerprint
        featurized = self.featurized
        smiles = featurized.canonical_smiles or (
            self.table["smiles"].to_numpy()[featurized.valid].tolist()
        )
        self._train_fingerprint = training_part_fingerprint(smiles[i] for i in self.split.train)
        return self._train_fingerprint

    def run_dir(self) -> Path | None:
        """The trainer's log directory (rank 0 only), where reports are written."""
        trainer = self.trainer
        if trainer is None:
            return None
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if not trainer.is_global_zero or log_dir is None:
            return None
        return Path(log_dir)

    # ------------------------------------------------------------------ statistics + loaders
    def target_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-task mean and standard deviation of the training labels (NaN ignored)."""
        return target_scaling(self.graphs.y[self.split.train].numpy())

    def positive_weights(self) -> np.ndarray:
        """Per task, negatives / positives among the training labels (float32; a task without
        positives or negatives gets 1)."""
        y = self.graphs.y[self.split.train].numpy()
        positives, negatives = np.sum(y == 1, axis=0), np.sum(y == 0, axis=0)
        ok = (positives > 0) & (negatives > 0)
        return np.where(ok, negatives / np.maximum(positives, 1), 1.0).astype(np.float32)

    def _balanced_weights(self) -> np.ndarray:
        """Sampling weight of each training molecule: the largest 1 / (count of its class) over
        its labelled tasks (1 / number of molecules when it has no label)."""
        y = self.graphs.y[self.split.train].numpy()
        weights = np.full(len(y), 1.0 / max(len(y), 1))
        for column in y.T:
            for label in (0.0, 1.0):
                members = column == label
                if members.any():
                    weights[members] = np.maximum(weights[members], 1.0 / members.sum())
        return weights

    def feature_statistics(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Mean and standard deviation of each molecule-level feature on the training split
        (NaN ignored; constant or all-NaN features get mean 0 and std 1)."""
        if self.graphs.features is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            features = self.graphs.features[self.split.train].double().numpy()
            mean = np.nan_to_num(np.nanmean(features, axis=0), nan=0.0)
            std = np.nan_to_num(np.nanstd(features, axis=0), nan=1.0)
        return mean, np.where(std > 1e-8, std, 1.0)

    def _check_devices(self, molecules: int, what: str) -> None:
        """Evaluation parts are divided over the processes without repeats: each needs one
        molecule at least (Lightning's sampler would fail with a bare AssertionError)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1 or molecules >= trainer.world_size:
            return
        if molecules == 0:  # nothing to divide: Lightning's sampler takes an empty part
            return
        raise DataError(
            f"{what} has {molecules} valid molecule(s), fewer than the {trainer.world_size} "
            "processes (--trainer.devices, --trainer.num_nodes) it would be divided over; "
            "run it on fewer devices, e.g. --trainer.devices 1"
        )

    def _loader(self, indices: np.ndarray, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        dataset = GraphBatches(self.graphs, indices)
        sampler = None
        trainer = self.trainer
        if not shuffle and trainer is not None and trainer.world_size > 1:
            # Lightning's default DistributedSampler pads ranks to equal length by repeating
            # molecules, which would count them twice in validation and test metrics
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=as_batch,
        )

    def train_dataloader(self) -> DataLoader:
        if not self.hparams.balanced_sampler:
            return self._loader(self.split.train, shuffle=True)
        if self.trainer is not None and self.trainer.world_size > 1:
            raise DataError("data.balanced_sampler works on one device only")
        weights = torch.as_tensor(self._balanced_weights(), dtype=torch.double)
        return DataLoader(
            GraphBatches(self.graphs, self.split.train),
            batch_size=self.hparams.batch_size,
            sampler=WeightedRandomSampler(weights, num_samples=len(weights), replacement=True),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            collate_fn=as_batch,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split.val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split.test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self._predict_store is None:
            rows = self.split_rows().test
            frame = self.table.iloc[rows][["row", "smiles"]]  # index = input position
            frame["status"] = "ok"
            self.predict_frame = frame
            return self._loader(self.split.test, shuffle=False)
        self._check_devices(
            len(self._predict_store), f"data.predict_path {self.hparams.predict_path}"
        )
        return DataLoader(
            GraphBatches(self._predict_store, np.arange(len(self._predict_store))),
            batch_size=self.hparams.batch_size,
            collate_fn=as_batch,
        )


def subsample_train(split: Split, fraction: float, seed: int) -> Split:
    """The split with a seeded random ``fraction`` of its training part (at least 2); the
    fractions of one seed are nested."""
    if len(split.train) < 2:
        raise DataError(
            f"data.train_fraction needs at least 2 training molecules, not {len(split.train)}"
        )
    keep = max(2, round(len(split.train) * fraction))
    # the first `keep` of one seeded order: a smaller fraction is part of every larger one
    train = np.sort(np.random.default_rng(seed).permutation(split.train)[:keep])
    return Split(train, split.val, split.test)


def _resolve_source(
    dataset: str | None,
    path: str | None,
    data_dir: str | None,
    smiles_column: str | None,
    target_columns: list[str] | str | None,
) -> tuple[Path, str | None, list[str] | None, str | None, str | None]:
    """The file, SMILES column, target columns, task type and target units to read: a
    registry card's (units only for the card's own targets) or the caller's."""
    if isinstance(target_columns, str):  # one task, named without a list
        target_columns = [target_columns]
    if path is not None:
        return Path(path), smiles_column, target_columns, None, None
    card = get_card(dataset)
    own_targets = not target_columns or list(target_columns) == list(card.target_columns)
    return (
        dataset_path(dataset, data_dir=data_dir),
        smiles_column or card.smiles_column,
        target_columns or list(card.target_columns),
        card.task_type,
        card.units if own_targets else None,
    )


#: largest target magnitude accepted: squared errors summed over millions of molecules stay
#: finite in float32 (3.4e38)
MAX_TARGET_MAGNITUDE = 1e15


def _check_task_names(tasks: list[str], source: Path) -> None:
    """Refuse task names that prediction outputs would read as another column: ``status``, or
    a task's uncertainty or class column (``<task>_std``, ``_lower``, ``_upper``, ``_class<k>``)
    when ``<task>`` is a task too; and a task named twice."""
    twice = sorted({task for task in tasks if tasks.count(task) > 1})
    if twice:
        raise DataError(f"{source}: target column(s) {twice} given more than once")
    if "status" in tasks:
        raise DataError(
            f"{source}: target column 'status' clashes with the 'status' column of every "
            "prediction output; rename it"
        )
    derived = re.compile(r"(.+?)(_std|_lower|_upper|_class\d+)")
    for task in tasks:
        match = derived.fullmatch(task)
        if match and match.group(1) in tasks:
            raise DataError(
                f"{source}: target columns {match.group(1)!r} and {task!r} clash: predictions "
                f"of {match.group(1)!r} name their uncertainty or class columns "
                f"'{match.group(1)}{match.group(2)}'; rename {task!r}"
            )


_UNNAMED = re.compile(r"Unnamed: \d+|_Name")  # pandas' name of a headerless column; SDF titles
# identifiers: "id", "compound_id", "Mol ID", "idx", "cid"; "index" / "no" / "number" only
# alone or after a word that says what is counted (never "wiener_index", "cetane_number")
_ID_NAME = re.compile(
    r"(.*[_\s-])?(id|ids|idx|cid|sid|cas)"
    r"|((compound|cpd|mol|molecule|row|entry|sample|record)[_\s-]?)?(index|no|number|num)",
    re.IGNORECASE,
)


def default_target_columns(
    frame: pd.DataFrame, source: Path, exclude: Sequence[str] = ()
) -> list[str]:
    """The targets when none are named: every column besides the SMILES, the row number and
    ``exclude`` (a split column), leaving out (with a warning) unnamed columns (pandas' index,
    SDF titles) and identifiers (named like ``id`` / ``compound_id`` / ``index`` and holding a
    different integer in every row that has one); the columns taken are logged."""
    not_targets = {"smiles", "row", "input_smiles", "input_row", *exclude}
    columns = [c for c in frame.columns if c not in not_targets]
    unnamed = [c for c in columns if _UNNAMED.fullmatch(str(c))]
    if file_kind(source) == "smi":  # a SMILES file's second field is the molecule's name
        read = frame.attrs.get("columns") or []
        at = (
            read.index(frame.attrs.get("smiles_column"))
            if frame.attrs.get("smiles_column") in read
            else -1
        )
        name = read[at + 1] if 0 <= at < len(read) - 1 else None
        # names are text: a numeric field there (``smiles logS``) is a property
        numeric = name in columns and pd.to_numeric(frame[name], errors="coerce").notna().all()
        if name in columns and name not in unnamed and not numeric:
            unnamed.append(name)
    identifiers = [c for c in columns if c not in unnamed and _is_identifier(frame[c], str(c))]
    left_out = {
        "an unnamed column, such as pandas' index, an SDF record title or a SMILES file's "
        "molecule name": unnamed,
        "named like an identifier, a different integer in every row that has one": identifiers,
    }
    for why, names in left_out.items():
        if names:
            log.warning(
                "%s: column(s) %s are not taken as targets (%s); name them in target_columns "
                "to train on them",
                source,
                names,
                why,
            )
    targets = [c for c in columns if c not in unnamed and c not in identifiers]
    if targets:  # several columns taken unasked are worth a look
        level = logging.WARNING if len(targets) > 1 else logging.INFO
        log.log(
            level,
            "%s: targets %s (every other column; choose with target_columns)",
            source,
            targets,
        )
    return targets


def _is_identifier(values: pd.Series, name: str) -> bool:
    if not _ID_NAME.fullmatch(name.strip()):
        return False
    present = values[values.notna() & (values.astype(str).str.strip() != "")]
    numbers = pd.to_numeric(present, errors="coerce")  # empty cells aside: a missing id
    whole = numbers.notna().all() and (numbers % 1 == 0).all()
    return bool(whole and numbers.is_unique and len(numbers) > 1)


def _numeric_targets(table: pd.DataFrame, columns: list[str], source: Path) -> np.ndarray:
    out = np.empty((len(table), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        raw = table[column]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            examples = ", ".join(
                f"row {r} ({v!r})" for r, v in zip(table["row"][bad][:5], raw[bad][:5], strict=True)
            )
            raise DataError(
                f"{source}: target column {column!r} has {int(bad.sum())} non-numeric values: "
                f"{examples}"
            )
        if values.isna().all():
            raise DataError(f"{source}: target column {column!r} has no values (all empty/NaN)")
        numbers = values.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            infinite = values.notna().to_numpy() & ~(np.abs(numbers) <= MAX_TARGET_MAGNITUDE)
        if infinite.any():
            examples = ", ".join(
                f"row {r} ({v})"
                for r, v in zip(table["row"][infinite][:5], raw[infinite][:5], strict=True)
            )
            raise DataError(
                f"{source}: target column {column!r} has {int(infinite.sum())} value(s) too "
                f"large to train on and score: inf, or beyond +-{MAX_TARGET_MAGNITUDE:.0e}, where "
                f"squared errors overflow float32 (rescale the column, e.g. log10): {examples}"
            )
        out[:, j] = numbers
    return out


def keep_input_columns(frame: pd.DataFrame, outputs: Sequence[str]) -> pd.DataFrame:
    """``frame`` with its columns named like an output column renamed ``input_<name>`` (with a
    warning), so that writing the outputs loses none of the input."""
    clashing = [name for name in outputs if name in frame.columns]
    if clashing:
        log.warning(
            "input column(s) %s share a name with prediction output; kept as %s",
            clashing,
            [f"input_{name}" for name in clashing],
        )
    return frame.rename(columns={name: f"input_{name}" for name in clashing})


def _warn_if_float32_loses_the_spread(y: np.ndarray, tasks: list[str], source: Path) -> None:
    """Warn when float32, in which targets are stored and trained, rounds a task's values by
    more than 0.1% of their spread (values with a large offset, such as 1e8 + x)."""
    for j, task in enumerate(tasks):
        values = y[~np.isnan(y[:, j]), j]
        if len(values) < 2:
            continue
        rounding = float(np.abs(values - values.astype(np.float32).astype(np.float64)).max())
        spread = float(values.std())
        if rounding > 1e-3 * spread:
            log.warning(
                "%s: task %r: its values (mean %.6g, standard deviation %.3g) lose up to %.3g "
                "in float32, in which they are trained; subtract an offset or rescale the column",
                source,
                task,
                float(values.mean()),
                spread,
                rounding,
            )


MAX_CLASS_VALUES = 10  # fewer distinct integer labels than this look like classes


def _warn_if_classes_look_continuous(y: np.ndarray, tasks: list[str], source: Path) -> None:
    """Warn when a task inferred as regression holds a few distinct integers (class codes such
    as 0/1/2 or 1/2 would otherwise be fitted as numbers without a word)."""
    if _infer_task_type(y) != "regression":
        return
    for j, task in enumerate(tasks):
        values = np.unique(y[~np.isnan(y[:, j]), j])
        if 2 <= len(values) < MAX_CLASS_VALUES and (values == np.round(values)).all():
            log.warning(
                "%s: task %r has only the integer values %s and is trained as regression; if "
                "they are classes, set data.task_type: multiclass (0, 1, 2, ...) or "
                "classification (0/1)",
                source,
                task,
                values.astype(int).tolist(),
            )


def _infer_task_type(y: np.ndarray) -> str:
    labels = y[~np.isnan(y)]
    return "classification" if np.isin(labels, (0.0, 1.0)).all() else "regression"


def _check_labels(
    y: np.ndarray, tasks: list[str], task_type: str, table: pd.DataFrame, source: Path
) -> None:
    if task_type not in TASK_TYPES:
        raise DataError(f"unknown task_type {task_type!r}; choose from {TASK_TYPES}")
    if task_type == "regression":
        _warn_if_float32_loses_the_spread(y, tasks, source)
        return
    for j, task in enumerate(tasks):
        column = y[:, j]
        labelled = ~np.isnan(column)
        if task_type == "classification":
            bad = labelled & ~np.isin(column, (0.0, 1.0))
            allowed = "0 or 1"
        else:
            bad = labelled & ((column < 0) | (column != np.round(column)))
            allowed = "class indices 0, 1, 2, ..."
        if bad.any():
            rows = table["row"].to_numpy()[bad][:5].tolist()
            values = sorted(set(column[bad].tolist()))[:5]
            classes = column[labelled]
            more_classes = (
                task_type == "classification"
                and ((classes >= 0) & (classes == np.round(classes))).all()
            )
            hint = (
                "set task_type: multiclass for more than two classes (labelled 0, 1, 2, ...)"
                if more_classes
                else "set task_type: regression if it is continuous"
            )
            raise DataError(
                f"{source}: column {task!r} is a {task_type} target but has values other than "
                f"{allowed}: {values} (rows {rows}); {hint}"
            )
    if task_type == "multiclass" and not np.isnan(y).all():
        # classes are 0..K-1 with K from the largest label: one without rows would be a class
        # the model predicts but never saw (1-based labels give a phantom class 0)
        labels = y[~np.isnan(y)]
        missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.astype(int).tolist()))
        if missing:
            hint = "; the labels look 1-based: subtract 1" if missing == [0] else ""
            raise DataError(
                f"{source}: multiclass labels are class indices 0..{int(labels.max())}, but "
                f"class(es) {missing[:10]} have no rows{hint}"
            )


def _split_file_to_valid(
    split_file: str, index: int, valid: np.ndarray, source: Path
) -> tuple[Split, dict[str, int]]:
    """Entry ``index`` of a split file: its 0-based row positions mapped onto the valid
    molecules, and how many rows of each part were invalid molecules and left out."""
    split = Split.from_json(split_file, index)
    n_rows = len(valid)
    for name, part in split.named_parts().items():
        beyond = part[part >= n_rows]
        if beyond.size:
            raise DataError(
                f"split file {split_file}: {name!r} index {int(beyond.max())} is beyond the "
                f"{n_rows} rows of {source} (0-based row positions 0 to {n_rows - 1})"
            )
    lookup = np.full(n_rows, -1, dtype=np.int64)
    lookup[valid] = np.arange(int(valid.sum()))
    parts, dropped = [], {}
    for name, part in split.named_parts().items():
        mapped = lookup[part]
        dropped[name] = int((mapped < 0).sum())
        parts.append(mapped[mapped >= 0])
    if any(dropped.values()):
        log.warning(
            "split file %s: %d rows are invalid molecules and are left out (%s)",
            split_file,
            sum(dropped.values()),
            ", ".join(f"{name} {count}" for name, count in dropped.items()),
        )
    return Split(*parts), dropped
