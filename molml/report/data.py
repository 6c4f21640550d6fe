"""``molml report data``: what is in a molecule table before any model sees it.

Rows and invalid SMILES, duplicates by canonical structure (after the configured
standardization) and duplicates whose labels disagree, missing labels, label and descriptor
distributions, elements and formal charges, scaffolds, outliers and, with the configured split,
train/val/test label distributions and the test set's similarity to the training set.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors, Draw, rdMolDescriptors

from molml.chem.parsing import parse_smiles
from molml.data.datamodule import MoleculeTable, default_target_columns
from molml.data.readers import read_molecules
from molml.data.registry import dataset_path
from molml.data.splits import split_keys
from molml.errors import DataError, InvalidMoleculeError
from molml.options import creatable_directory, writable_directory
from molml.report.config import configured_split, read_table, standardize_option
from molml.report.page import Page, panels, write_json
from molml.report.stats import morgan_fingerprints, nearest_similarity

DESCRIPTORS = {
    "MW": Descriptors.MolWt,
    "logP (Crippen)": Crippen.MolLogP,
    "TPSA": rdMolDescriptors.CalcTPSA,
    "HBD": rdMolDescriptors.CalcNumHBD,
    "HBA": rdMolDescriptors.CalcNumHBA,
    "heavy atoms": lambda mol: mol.GetNumHeavyAtoms(),
    # the smallest set of smallest rings: RDKit's ring count (CalcNumRings) counts the
    # symmetrized set, 264 rings for a cyclodextrin whose SSSR has 9
    "rings": lambda mol: len(Chem.GetSSSR(Chem.Mol(mol))),
}
UNITS = {"MW": "g/mol", "TPSA": "Å²"}  # the others are counts or unitless
OUTLIER_Z = 4.0
TOP_SCAFFOLDS = 12


def data_report(
    options: dict[str, Any], output: str | Path, *, conflict_threshold: float = 1.0
) -> dict[str, Any]:
    """Write ``report.html``, ``report.json`` and the PNGs for the data ``options`` into
    ``output``; returns the JSON's content. ``conflict_threshold``: regression labels of one
    structure that differ by more than this are a conflict."""
    problem = f"report folder {output} cannot be written"
    creatable_directory(output, problem)
    warnings: list[str] = []
    table = _read(options, warnings)
    # after the data are read: a bad file leaves no empty report folder behind
    output = writable_directory(output, problem)
    standardize = standardize_option(options)
    smiles = table.frame["smiles"].tolist()
    rows = table.frame["row"].to_numpy()
    mols: list[Chem.Mol | None] = []
    invalid = []
    for position, text in enumerate(smiles):
        try:
            mols.append(parse_smiles(text, standardize_mol=standardize))
        except InvalidMoleculeError as exc:
            mols.append(None)
            shown = text if isinstance(text, str) else ""  # an empty cell is no 'nan' SMILES
            invalid.append({"row": int(rows[position]), "smiles": shown, "reason": str(exc)})
    valid = np.array([mol is not None for mol in mols])
    good = [mol for mol in mols if mol is not None]
    keys = [split_keys(mol) for mol in good]
    canonical = [k[0] for k in keys]
    scaffolds = [k[1] for k in keys]
    targets = table.targets[valid]
    report: dict[str, Any] = {
        "source": str(table.source),
        "rows": len(smiles),
        "valid_molecules": int(valid.sum()),
        "standardized": standardize,
        "tasks": table.tasks,
        "task_type": table.task_type,
        "invalid": invalid,
    }
    if invalid:
        warnings.append(f"{len(invalid)} of {len(smiles)} rows are not valid molecules.")
    page = Page(f"Data report: {Path(table.source).name}", output)
    page.text(
        f"{table.source}: {len(smiles)} rows, {int(valid.sum())} valid molecules, "
        f"{len(table.tasks)} {table.task_type} task(s): {', '.join(table.tasks)}; "
        f"structures compared {'after' if standardize else 'without'} standardization."
    )
    page.section("Warnings")
    warnings_at = len(page.parts)

    page.section("Invalid SMILES")
    page.table(invalid)

    report["duplicates"], report["conflicts"] = _duplicates(
        canonical, rows[valid], targets, table, conflict_threshold
    )
    n_dup = len(report["duplicates"])
    if n_dup:
        warnings.append(
            f"{n_dup} structures occur more than once "
            f"({sum(len(d['rows']) for d in report['duplicates'])} rows)."
        )
    if report["conflicts"]:
        how = (
            f"by more than {conflict_threshold:g} unit(s)"
            if table.task_type == "regression"
            else "in class"
        )
        warnings.append(
            f"{len(report['conflicts'])} duplicate structure/task pairs have labels that "
            f"disagree {how}."
        )
    page.section("Duplicates (same canonical structure)")
    page.table([{**d, "rows": ", ".join(map(str, d["rows"]))} for d in report["duplicates"]])
    page.section("Duplicates with conflicting labels")
    page.table(
        [
            {
                **c,
                "rows": ", ".join(map(str, c["rows"])),
                "labels": ", ".join(map(str, c["labels"])),
            }
            for c in report["conflicts"]
        ]
    )

    page.section("Labels")
    report["labels"] = _label_stats(targets, table)
    for task, stats in report["labels"].items():
        if stats["labelled"] == 0:
            warnings.append(f"Task {task!r} has no labels at all.")
        elif stats["missing"]:
            warnings.append(f"Task {task!r}: {stats['missing']} molecules have no label.")
        if table.task_type == "classification" and stats["labelled"]:
            if stats.get("positives") in (0, stats["labelled"]):
                warnings.append(f"Task {task!r} has one class only.")
            elif stats["positive_rate"] < 0.1 or stats["positive_rate"] > 0.9:
                warnings.append(
                    f"Task {task!r} is imbalanced: {stats['positive_rate']:.1%} positives."
                )
    if table.tasks:
        page.table([{"task": task, **stats} for task, stats in report["labels"].items()])
        page.figure(_label_figure(targets, table), "labels")
    else:
        page.text("No label columns: structures only.")

    page.section("Descriptors")
    descriptors = pd.DataFrame({name: [f(m) for m in good] for name, f in DESCRIPTORS.items()})
    report["descriptors"] = {
        name: descriptors[name].describe().to_dict() for name in descriptors.columns
    }
    page.table([{"descriptor": k, **v} for k, v in report["descriptors"].items()])
    page.figure(_descriptor_figure(descriptors), "descriptors")

    page.section("Elements and formal charges")
    elements, charges = Counter(), Counter()
    for mol in good:
        elements.update({atom.GetSymbol() for atom in mol.GetAtoms()})
        charges.update(atom.GetFormalCharge() for atom in mol.GetAtoms())
    report["elements"] = dict(elements.most_common())
    report["formal_charges"] = {str(k): v for k, v in sorted(charges.items())}
    page.table([{"element": e, "molecules": n} for e, n in elements.most_common()])
    page.table([{"formal charge": c, "atoms": n} for c, n in sorted(charges.items())])

    page.section("Scaffolds")
    counts = Counter(scaffolds)
    acyclic = counts.pop("", 0)  # no scaffold: not one of them
    top = counts.most_common(TOP_SCAFFOLDS)
    report["scaffolds"] = {
        "n_scaffolds": len(counts),
        "acyclic_molecules": acyclic,
        "singletons": sum(1 for n in counts.values() if n == 1),
        "largest": [{"scaffold": s, "molecules": n} for s, n in top],
    }
    page.text(
        f"{len(counts)} Bemis-Murcko scaffolds over {len(good)} molecules; "
        f"{report['scaffolds']['singletons']} occur once; {acyclic} molecules are "
        "acyclic (no scaffold). The largest groups:"
    )
    if top:
        grid = Draw.MolsToGridImage(
            [Chem.MolFromSmiles(s) for s, _ in top],
            molsPerRow=6,
            subImgSize=(200, 170),
            legends=[f"{n} molecules" for _, n in top],
        )
        grid.save(output / "scaffolds.png")
        page.image(output / "scaffolds.png")

    page.section("Outliers")
    report["outliers"] = _outliers(targets, descriptors, rows[valid], table.tasks, table.task_type)
    if report["outliers"]:
        warnings.append(
            f"{len(report['outliers'])} outlier values (|z| > {OUTLIER_Z:g} of a label or of "
            "the heavy-atom count)."
        )
    page.text(f"Labels and heavy-atom counts more than {OUTLIER_Z:g} standard deviations out.")
    page.table(report["outliers"])

    page.section("Split")
    report["split"] = _split_section(
        page, table, options, valid, good, canonical, scaffolds, warnings
    )

    report["warnings"] = warnings
    page.warnings(warnings, at=warnings_at)
    page.write()
    write_json(report, output / "report.json")
    return report


def _read(options: dict[str, Any], warnings: list[str]) -> MoleculeTable:
    """The table; when its labels are unusable (e.g. a column with no value), the table with
    the labels that can be read, and the reason as a warning."""
    try:
        return read_table(options)
    except DataError as exc:
        if options.get("dataset") is None and not Path(options["path"]).is_file():
            raise
        warnings.append(f"The data module would refuse this file: {exc}")
    source = (
        Path(options["path"])
        if options.get("path")
        else dataset_path(options["dataset"], data_dir=options.get("data_dir"))
    )
    named = options.get("target_columns")
    named = [named] if isinstance(named, str) else named
    split_column = options.get("split_column")
    extra = [split_column] if split_column else []
    # a named column that is missing is an error here too (it lists the file's columns)
    columns = None if named is None else [*named, *extra]
    frame = read_molecules(source, smiles_column=options.get("smiles_column"), columns=columns)
    if split_column and split_column not in frame.columns:
        raise DataError(
            f"{source}: split column {split_column!r} not found; the file has columns "
            f"{list(frame.columns.drop('row'))}"
        )
    tasks = named or default_target_columns(frame, source, extra)
    numeric = frame.reindex(columns=tasks).apply(pd.to_numeric, errors="coerce")
    targets = numeric.to_numpy(dtype=float)
    labels = targets[~np.isnan(targets)]
    task_type = options.get("task_type") or (
        "classification" if labels.size and np.isin(labels, (0, 1)).all() else "regression"
    )
    split_values = frame[split_column].tolist() if split_column else None
    return MoleculeTable(source, frame, list(tasks), targets, task_type, split_values, split_column)


def _duplicates(
    canonical: list[str],
    rows: np.ndarray,
    targets: np.ndarray,
    table: MoleculeTable,
    threshold: float,
) -> tuple[list[dict], list[dict]]:
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(canonical):
        groups.setdefault(key, []).append(i)
    duplicates, conflicts = [], []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        duplicates.append({"canonical_smiles": key, "rows": rows[members].tolist()})
        for j, task in enumerate(table.tasks):
            labels = targets[members, j]
            labels = labels[~np.isnan(labels)]
            if len(labels) < 2:
                continue
            spread = float(np.ptp(labels))
            disagree = spread > threshold if table.task_type == "regression" else spread > 0
            if disagree:
                conflicts.append(
                    {
                        "canonical_smiles": key,
                        "task": task,
                        "rows": rows[members].tolist(),
                        "labels": labels.tolist(),
                        "spread": spread,
                    }
                )
    return duplicates, conflicts


def _label_stats(targets: np.ndarray, table: MoleculeTable) -> dict[str, dict[str, Any]]:
    out = {}
    for j, task in enumerate(table.tasks):
        column = targets[:, j]
        labels = column[~np.isnan(column)]
        stats: dict[str, Any] = {"labelled": len(labels), "missing": int(np.isnan(column).sum())}
        if table.task_type == "classification":
            stats["positives"] = int((labels == 1).sum())
            stats["positive_rate"] = float(labels.mean()) if len(labels) else None
        elif table.task_type == "multiclass":
            classes, counts = np.unique(labels, return_counts=True)
            stats["class_counts"] = {int(c): int(n) for c, n in zip(classes, counts, strict=True)}
        else:
            finite = labels[np.isfinite(labels)]
            stats["not_finite"] = len(labels) - len(finite)
            if len(finite):
                stats.update(
                    mean=float(finite.mean()),
                    std=float(finite.std()),
                    min=float(finite.min()),
                    max=float(finite.max()),
                )
        out[task] = stats
    return out


def _label_figure(targets: np.ndarray, table: MoleculeTable):  # noqa: ANN202 - a Figure
    fig, axes = panels(len(table.tasks))
    for ax, (j, task) in zip(axes, enumerate(table.tasks), strict=False):
        labels = targets[~np.isnan(targets[:, j]), j]
        if table.task_type in ("classification", "multiclass"):
            n_classes = int(labels.max()) + 1 if labels.size else 0
            classes = range(2 if table.task_type == "classification" else n_classes)
            counts = [int((labels == c).sum()) for c in classes]
            ax.bar([str(c) for c in classes], counts, color=["#7a9", "#d65", "#58a", "#c9a"])
            ax.set_title(f"{task}: class balance", fontsize=9)
        else:
            finite = labels[np.isfinite(labels)]
            ax.hist(finite, bins=30, color="#58a")
            skipped = (
                f", {len(labels) - len(finite)} not finite" if len(finite) < len(labels) else ""
            )
            ax.set_title(f"{task}: n={len(finite)}{skipped}", fontsize=9)
        ax.set_ylabel("molecules")
    return fig


def _descriptor_figure(descriptors: pd.DataFrame):  # noqa: ANN202 - a Figure
    fig, axes = panels(len(descriptors.columns))
    for ax, name in zip(axes, descriptors.columns, strict=True):
        values = descriptors[name].to_numpy(dtype=float)
        ax.hist(values[np.isfinite(values)], bins=30, color="#888")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"{name} ({UNITS[name]})" if name in UNITS else name, fontsize=8)
        ax.set_ylabel("molecules", fontsize=8)
    return fig


def _outliers(
    targets: np.ndarray,
    descriptors: pd.DataFrame,
    rows: np.ndarray,
    tasks: list[str],
    task_type: str,
) -> list[dict[str, Any]]:
    labels_are_values = task_type == "regression"  # class labels have no outliers
    columns = {t: targets[:, j] for j, t in enumerate(tasks)} if labels_are_values else {}
    columns["heavy atoms"] = descriptors["heavy atoms"].to_numpy(dtype=float)
    out = []
    for name, values in columns.items():
        values = np.where(np.isfinite(values), values, np.nan)  # inf is reported as refused
        if np.isfinite(values).sum() < 2:  # no spread to measure (an empty task)
            continue
        std = np.nanstd(values)
        if not std > 0:
            continue
        z = (values - np.nanmean(values)) / std
        for i in np.flatnonzero(np.abs(np.nan_to_num(z)) > OUTLIER_Z):
            out.append({"row": int(rows[i]), "column": name, "value": float(values[i]), "z": z[i]})
    return out


def _split_section(
    page: Page,
    table: MoleculeTable,
    options: dict[str, Any],
    valid: np.ndarray,
    mols: list[Chem.Mol],
    canonical: list[str],
    scaffolds: list[str],
    warnings: list[str],
) -> dict[str, Any] | None:
    try:
        split = configured_split(table, options, valid, scaffolds)
    except DataError as exc:
        warnings.append(f"The configured split cannot be used: {exc}")
        page.text(f"No split: {exc}")
        return None
    targets = table.targets[valid]
    parts = split.named_parts()
    set_aside = table.split_notes.get("n_set_aside_by_train_fraction", 0)  # on purpose
    unassigned = int(valid.sum()) - sum(len(part) for part in parts.values()) - set_aside
    if unassigned > 0:  # a split file of another data set, most often
        warnings.append(
            f"{unassigned} of {int(valid.sum())} valid molecules are in no part of the split: "
            "a split file made for other data, or one that leaves them out on purpose."
        )
    train_keys = {canonical[i] for i in split.train}
    shared = sum(canonical[i] in train_keys for i in split.test)
    if shared:
        warnings.append(f"{shared} test molecules are also in the training set (same structure).")
    fps = morgan_fingerprints(mols)
    similarity = nearest_similarity([fps[i] for i in split.test], [fps[i] for i in split.train])
    info = {
        "method": options.get("split", "scaffold"),
        "sizes": {name: len(part) for name, part in parts.items()},
        "n_unassigned": unassigned,
        "n_set_aside_by_train_fraction": set_aside,
        "test_in_train": int(shared),
        "test_nearest_train_similarity": {
            "median": float(np.median(similarity)),
            "fraction_below_0.4": float((similarity < 0.4).mean()),
            "quartiles": np.quantile(similarity, [0.25, 0.5, 0.75]).tolist(),
        },
        "labels": {name: _label_stats(targets[part], table) for name, part in parts.items()},
    }
    page.text(f"{info['method']} split: " + ", ".join(f"{k} {v}" for k, v in info["sizes"].items()))
    page.table(
        [
            {"part": name, "task": task, **stats}
            for name, by_task in info["labels"].items()
            for task, stats in by_task.items()
        ]
    )
    fig, axes = panels(len(table.tasks) + 1)
    for ax, (j, task) in zip(axes, enumerate(table.tasks), strict=False):
        if table.task_type == "multiclass":
            known = targets[np.isfinite(targets[:, j]), j]
            classes = np.arange(int(known.max()) + 1 if known.size else 0)
        for name, part in parts.items():
            labels = targets[part, j]
            labels = labels[np.isfinite(labels)]  # infinite labels are counted in the table
            if table.task_type == "classification":
                ax.bar(name, labels.mean() if len(labels) else 0.0)
                ax.set_ylabel("positive rate")
            elif table.task_type == "multiclass":
                shares = [(labels == c).mean() if len(labels) else 0.0 for c in classes]
                ax.plot(classes, shares, marker="o", label=name)
                ax.set_xticks(classes)
                ax.set_xlabel("class")
                ax.set_ylabel("share of the part")
            elif len(labels):
                ax.hist(labels, bins=20, density=True, histtype="step", lw=2, label=name)
                ax.set_ylabel("density")
        ax.set_title(f"{task} by split part", fontsize=9)
        if table.task_type != "classification":
            ax.legend(fontsize=8)
    ax = axes[-1]
    ax.hist(similarity, bins=20, range=(0, 1), color="#a67")
    ax.set_title("test: nearest-neighbour Tanimoto to train", fontsize=9)
    ax.set_xlabel("max Tanimoto (Morgan r2, 2048 bits)")
    ax.set_ylabel("test molecules")
    page.figure(fig, "split")
    return info
