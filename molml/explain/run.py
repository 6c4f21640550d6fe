"""``explain``: attributions of any molml predictor, and writing them as a table, drawings and
an HTML page."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from molml.errors import DataError, PredictorError
from molml.explain.baseline import explain_baseline
from molml.explain.core import (
    TABLE_COLUMNS,
    MoleculeExplanation,
    check_method,
    default_method,
    explanations_frame,
    supported_methods,
    target_column,
)
from molml.explain.drawing import (
    draw_molecule,
    feature_bar_plot,
    missing_id,
    shap_summary,
    write_index,
)
from molml.explain.graph import BATCH_SIZE, explain_graph
from molml.explain.options import (
    ATTRIBUTION_INPUTS,
    BIT_MAPPINGS,
    EXPLAINED,
    IG_BASELINES,
    IG_STEPS,
    PRECISIONS,
)
from molml.models.precision import native_bf16
from molml.options import check_int, check_jobs, cpu_cores, writable_directory
from molml.predict import GraphPredictor, Predictor
from molml.predict.base import as_smiles_list

log = logging.getLogger(__name__)
TABLE_SUFFIXES = (".csv", ".parquet")
OLD_DRAWING = re.compile(r"\d+(_features)?\.(svg|png)")  # the names write_explanations uses


def explain(
    predictor: Predictor,
    smiles: str | Iterable[Any],
    method: str | None = None,
    task: str | None = None,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    precision: str = "32",
    shap_mapping: str = "shared",
    inputs: str = "atoms_and_bonds",
    baseline: str | None = None,
    explained: str = "logit",
    progress: bool = False,
) -> list[MoleculeExplanation]:
    """Per-atom and per-bond attributions of ``predictor``'s prediction for each molecule.

    Args:
        predictor: from :func:`molml.load_model` (graph model, baseline or ensemble).
        smiles: one SMILES or many; invalid ones get an explanation with their ``status``.
        method: ``integrated_gradients`` (graph models' default), ``saliency``,
            ``input_x_gradient``, ``occlusion`` (graph models) or ``shap`` (baselines' default).
        task: the prediction column to explain (default: the first).
        steps: Integrated Gradients interpolation steps (default ``IG_STEPS``, 50); refused
            for other methods, which take no steps.
        batch_size: molecules per chunk of work (default: 32 when a graph model runs on the
            CPU, else 256; see ``molml.explain.graph.BATCH_SIZE``).
        precision: ``"32"`` or ``"bf16-mixed"`` (graph models: attribution passes under bf16
            autocast, about 3x faster on CPUs with native bf16, scores within a few percent).
        shap_mapping: how baselines' Morgan bits reach atoms: ``"shared"`` (each bit's value
            split over the environments that set it; atom scores add up to the SHAP total) or
            ``"occurrence"`` (each environment carries the bit's whole value; see
            :mod:`molml.explain.baseline`).
        inputs: graph models' gradient methods: ``"atoms_and_bonds"`` (atom and bond features
            attributed together; Integrated Gradients moves both from its baseline) or ``"atoms"``
            (atom features only, bond features kept as they are; bond scores are NaN).
        baseline: where graph models' Integrated Gradients starts: ``"carbon"`` (every atom an
            aliphatic CH2 carbon, every bond a single C-C bond; a chain CH2 scores zero) or
            ``"zeros"`` (all-zero features); default (``None``): ``"carbon"`` for classifiers,
            whose question is what sets a molecule apart from a plain hydrocarbon, ``"zeros"``
            for regression, where a property such as solubility adds up over every atom, chain
            carbons included (see :func:`default_baseline`, :mod:`molml.explain.graph`).
        explained: what classifiers' graph-model attributions explain: ``"logit"`` or
            ``"probability"`` (the scores add up to a change of the predicted probability; for
            multiclass, of the class's softmax probability). SHAP explains what a baseline's
            trees add up: XGBoost's logit, a random forest's probability.
        progress: show a progress bar over molecules.

    Returns one :class:`MoleculeExplanation` per input, in input order; an ensemble's scores
    are its members' mean, with their standard deviation in ``atom_std`` / ``bond_std``. A
    calibrated model's scores explain its underlying model (``explained_value``, the logit);
    its ``prediction`` is the calibrated probability.
    Use :func:`explanations_frame` for one table.
    """
    if batch_size is not None:
        check_int(batch_size, "batch_size", minimum=1)
    smiles = as_smiles_list(smiles)
    members = predictor.members
    method, baseline, column = check_settings(
        predictor,
        method,
        task,
        steps=steps,
        precision=precision,
        shap_mapping=shap_mapping,
        inputs=inputs,
        baseline=baseline,
        explained=explained,
    )
    on_cpu = any(isinstance(m, GraphPredictor) and m.model.device.type == "cpu" for m in members)
    if batch_size is None:
        batch_size = BATCH_SIZE["cpu" if on_cpu else "other"]
    if precision == "bf16-mixed" and on_cpu and not native_bf16("cpu"):
        log.warning(
            "precision bf16-mixed on this CPU is emulated (it has no AVX512-BF16 or AMX): "
            "attributions take several times longer than with precision 32"
        )
    runs = []
    for member in members:
        if member.kind == "baseline":
            runs.append(
                explain_baseline(
                    member,
                    smiles,
                    column,
                    batch_size=batch_size,
                    mapping=shap_mapping,
                    progress=progress,
                )
            )
        else:
            runs.append(
                explain_graph(
                    member,
                    smiles,
                    method,
                    column,
                    steps=steps or IG_STEPS,
                    batch_size=batch_size,
                    precision=precision,
                    inputs=inputs,
                    baseline=baseline,
                    explained=explained,
                    progress=progress,
                )
            )
    explanations = runs[0] if len(runs) == 1 else _combine(runs)
    if predictor.kind == "calibrated":
        # the scores explain the underlying model's logit (explained_value); the prediction
        # shown is the calibrated probability, as predictor.predict gives it
        calibrated = predictor.predict(smiles, batch_size=batch_size)[column].to_numpy()
        for explanation, value in zip(explanations, calibrated, strict=True):
            if not math.isnan(explanation.prediction):  # also a row that failed to explain
                explanation.prediction = float(value)
    return explanations


def check_settings(
    predictor: Predictor,
    method: str | None = None,
    task: str | None = None,
    *,
    steps: int | None = None,
    precision: str = "32",
    shap_mapping: str = "shared",
    inputs: str = "atoms_and_bonds",
    baseline: str | None = None,
    explained: str = "logit",
) -> tuple[str, str, str]:
    """Check :func:`explain`'s settings for ``predictor`` before any work (a setting that does
    not apply to the model or method is refused, not ignored); returns the method, Integrated
    Gradients' start and the prediction column to explain, defaults filled in."""
    if steps is not None:
        check_int(steps, "steps", minimum=1)
    for name, value, choices in (
        ("precision", precision, PRECISIONS),
        ("shap_mapping", shap_mapping, BIT_MAPPINGS),
        ("inputs", inputs, ATTRIBUTION_INPUTS),
        ("baseline", baseline, (None, *IG_BASELINES)),
        ("explained", explained, EXPLAINED),
    ):
        if value not in choices:
            shown = [c for c in choices if c is not None]
            raise DataError(f"{name} must be one of {shown}, got {value!r}")
    method = method or default_method(predictor)
    check_method(predictor, method)
    # Integrated Gradients as the way out only where the model has it (not for a baseline)
    has_ig = all("integrated_gradients" in supported_methods(m) for m in predictor.members)
    other = " or use method integrated_gradients" if has_ig else ""
    if steps is not None and method != "integrated_gradients":
        raise DataError(
            f"steps are Integrated Gradients' interpolation steps; method {method!r} takes "
            f"none: leave them out{other}"
        )
    if baseline is not None and method != "integrated_gradients":
        raise DataError(
            f"baseline {baseline!r} is where Integrated Gradients starts; method {method!r} "
            f"has none: leave it out{other}"
        )
    if explained == "probability" and predictor.task_type == "regression":
        raise DataError(
            "explained 'probability' applies to classifiers; a regression model's scores are in "
            "the target's units"
        )
    if inputs == "atoms" and method == "occlusion":
        raise DataError(
            "inputs='atoms' applies to gradient methods; occlusion masks atoms and their bonds"
        )
    if method == "shap":
        for name, value, default in (
            ("inputs", inputs, "atoms_and_bonds"),
            ("precision", precision, "32"),
            ("explained", explained, "logit"),
        ):
            if value != default:
                raise DataError(
                    f"{name} {value!r} applies to graph models' attributions; SHAP on a "
                    "baseline has no such setting: leave it out"
                )
    elif shap_mapping != "shared":
        raise DataError(
            f"shap_mapping {shap_mapping!r} maps baselines' SHAP values to atoms; method "
            f"{method!r} has none: leave it out"
        )
    _check_members_agree(predictor.members, method, explained)
    return method, baseline or default_baseline(predictor), target_column(predictor, task)


GRAPH_SHAPING = ("add_hydrogens", "standardize")  # featurizer options that change the atoms


def _check_members_agree(members: list[Predictor], method: str, explained: str) -> None:
    """An ensemble's maps are averaged atom by atom on one scale: its members must draw the
    same molecule (graph models: the same hydrogens and standardization) and explain the same
    quantity (baselines: XGBoost's SHAP values are logits, a random forest's probabilities)."""
    if len(members) < 2:
        return
    units = {score_units(member, method, explained) for member in members}
    if len(units) > 1:
        raise PredictorError(
            f"this ensemble's members explain different quantities ({' and '.join(sorted(units))}"
            ": XGBoost classifiers' SHAP values are logits, random forests' probabilities); "
            "explain each member on its own"
        )
    drawn = {
        json.dumps({k: m.featurization["graph"].get(k) for k in GRAPH_SHAPING}, sort_keys=True)
        for m in members
        if m.kind == "graph"
    }
    if len(drawn) > 1:
        raise PredictorError(
            f"this ensemble's members draw molecules differently ({' vs '.join(sorted(drawn))}), "
            "so their atoms do not line up; explain each member on its own"
        )


def default_baseline(predictor: Predictor) -> str:
    """Integrated Gradients' default start for ``predictor``: ``zeros`` for regression (every
    atom's share of an additive property, chain carbons included), ``carbon`` for
    classification (what sets a molecule apart from a plain hydrocarbon; on substructure tasks
    it ranks the true atoms higher for GINE, AttentiveFP and GPS, ``scripts/bench_explain.py``)."""
    return "zeros" if predictor.task_type == "regression" else "carbon"


def _combine(runs: list[list[MoleculeExplanation]]) -> list[MoleculeExplanation]:
    """Mean scores, their spread over members, and the mean of the scalar fields."""
    combined = []
    for items in zip(*runs, strict=True):
        first = items[0]
        bad = next((item for item in items if not item.ok), None)
        if bad is not None:  # the prediction stays if every member made one
            prediction = float(np.mean([item.prediction for item in items]))
            combined.append(
                MoleculeExplanation(first.smiles, bad.status, first.task, first.method,
                                    prediction=prediction)
            )  # fmt: skip
            continue
        atoms = np.stack([item.atom_scores for item in items])
        bonds = np.stack([item.bond_scores for item in items])
        combined.append(
            MoleculeExplanation(
                smiles=first.smiles,
                status="ok",
                task=first.task,
                method=first.method,
                mol=first.mol,
                prediction=float(np.mean([i.prediction for i in items])),
                explained_value=float(np.mean([i.explained_value for i in items])),
                atom_scores=atoms.mean(axis=0),
                bond_scores=bonds.mean(axis=0),
                atom_std=atoms.std(axis=0),
                bond_std=bonds.std(axis=0),
                baseline=first.baseline,
                baseline_value=float(np.mean([i.baseline_value for i in items])),
                completeness_gap=float(np.mean([i.completeness_gap for i in items])),
                unmapped_score=float(np.mean([i.unmapped_score for i in items])),
                **_combined_features(items),
            )
        )
    member_features = {tuple(i.feature_names) for run in runs for i in run if i.feature_names}
    if len(member_features) > 1:
        log.warning(
            "the members use different features: no SHAP summary over the data set (each "
            "molecule keeps its atoms and the bar plot of its features without atoms)"
        )
    return combined


def _combined_features(items: Sequence[MoleculeExplanation]) -> dict[str, Any]:
    """Baseline members' per-feature SHAP values, averaged: ``feature_scores`` over every
    feature without atoms of any member (a member without it, or where it is zero, adds
    zero), and when all members share one featurizer the full ``shap_values`` for the data
    set's summary."""
    if all(item.feature_names is None for item in items):
        return {}
    names = dict.fromkeys(name for item in items for name in item.feature_scores)
    means = {n: float(np.mean([item.feature_scores.get(n, 0.0) for item in items])) for n in names}
    ranked = sorted((n for n in means if means[n] != 0), key=lambda n: -abs(means[n]))
    combined: dict[str, Any] = {"feature_scores": {n: means[n] for n in ranked}}
    first = items[0]
    if all(item.feature_names == first.feature_names for item in items):
        combined["shap_values"] = np.mean([item.shap_values for item in items], axis=0)
        combined["feature_values"] = first.feature_values
        combined["feature_names"] = first.feature_names
    return combined


def score_units(predictor: Predictor, method: str, explained: str = "logit") -> str:
    """What the scores of ``method`` on ``predictor`` are measured in."""
    if predictor.task_type == "regression":
        return "target units"
    if explained == "probability":
        return "probability"
    random_forest = any(
        getattr(m.model, "estimator", "") == "random_forest" for m in predictor.members
    )
    return "probability" if method == "shap" and random_forest else "logit"


SUMMARY_FILES = ("shap_summary.csv", "shap_summary.png")
RUN_RECORD = "explain.json"  # the run's summary, as printed


def check_table_name(table: str) -> None:
    """Refuse a table name that is not a plain CSV/Parquet file name or is one of the other
    files an explanation run writes."""
    if Path(table).suffix not in TABLE_SUFFIXES or Path(table).name != table:
        raise DataError(f"table must be a file name ending in one of {TABLE_SUFFIXES}: {table!r}")
    if table in SUMMARY_FILES:
        raise DataError(f"table {table!r} is the name of another file of the run; choose another")


def _id_text(value: Any) -> str | None:
    """An id as text (one type for a Parquet column); a missing id stays missing."""
    return None if missing_id(value) else str(value)


def check_input_kept(source: str | Path, output: str | Path, table: str) -> None:
    """Refuse an input file that a run into ``output`` would write over or remove: its table
    (this run's, or the earlier run's it replaces), ``index.html``, ``explain.json`` or a SHAP
    summary."""
    source, output = Path(source), Path(output)
    if not source.is_file():
        return
    replaced = [table, "index.html", RUN_RECORD, *SUMMARY_FILES]
    earlier = _earlier_table(output / RUN_RECORD)
    if earlier is not None:
        replaced.append(earlier)
    for name in replaced:
        path = output / name
        if path.is_file() and path.samefile(source):
            raise DataError(
                f"the input {source} is {path.name} of --output {output}, which this run "
                "writes or removes; copy it elsewhere first, or choose another --output"
            )


def prepare_output(
    output: str | Path, table: str = "attributions.csv", *, clear: bool = False
) -> Path:
    """Check ``table``'s name and make ``output/molecules`` (call it before any work, so a long
    run cannot end unable to write); ``clear`` removes the drawings, SHAP summary and table
    of an earlier run (the table by the name its ``explain.json`` gives)."""
    check_table_name(table)
    output = Path(output)
    drawings = writable_directory(
        output / "molecules", f"--output {output}: cannot write drawings to {output / 'molecules'}"
    )
    if not clear:
        return output
    for old in drawings.iterdir():
        if OLD_DRAWING.fullmatch(old.name):
            old.unlink()
    for name in SUMMARY_FILES:  # a baseline run's, not this run's
        (output / name).unlink(missing_ok=True)
    old_table = _earlier_table(output / RUN_RECORD)
    if old_table is not None and old_table != table:
        (output / old_table).unlink(missing_ok=True)
    return output


def _earlier_table(record: Path) -> str | None:
    """The table file name an earlier run wrote next to ``record``, if it says so."""
    try:
        name = Path(json.loads(record.read_text())["table"]).name
    except (OSError, ValueError, KeyError, TypeError):
        return None
    is_table = Path(name).suffix in TABLE_SUFFIXES
    return name if is_table else None


def write_explanations(
    explanations: list[MoleculeExplanation],
    output: str | Path,
    *,
    units: str,
    table: str = "attributions.csv",
    title: str = "molml explanations",
    ids: Sequence[Any] | None = None,
    id_column: str = "id",
    progress: bool = False,
    jobs: int = -1,
) -> dict[str, Any]:
    """Write ``table`` (CSV, or Parquet by suffix), ``molecules/NNNNN.svg|png`` (plus
    ``NNNNN_features.png`` for features without atoms), for a baseline ``shap_summary.csv``
    and ``shap_summary.png`` (every feature's effect over all molecules) and ``index.html``
    into ``output``. ``ids`` (one per explanation) become the table's ``id_column`` and the
    page's captions; ``progress`` shows a progress bar over the drawings, which ``jobs``
    processes draw (-1: one per CPU core). Returns a summary (paths and counts)."""
    check_jobs(jobs, "jobs")
    if ids is not None and len(ids) != len(explanations):
        raise DataError(f"{len(ids)} ids for {len(explanations)} explanations")
    if ids is not None and id_column in TABLE_COLUMNS:
        raise DataError(f"id column {id_column!r} clashes with a column of the table")
    frame = explanations_frame(explanations)
    if ids is not None:
        # as given (an object column: pandas would make 101 and None into 101.0 and NaN); ids
        # of several types (7 and "b") as text, Parquet's one type for them
        mixed = len({type(value) for value in ids if not missing_id(value)}) > 1
        shown = [_id_text(value) for value in ids] if mixed else list(ids)
        given = [shown[number] for number in frame["molecule"]]
        frame.insert(1, id_column, pd.Series(given, index=frame.index, dtype=object))
    output = prepare_output(output, table, clear=True)  # the earlier run's files go now
    drawings = output / "molecules"
    table_path = output / table
    if table_path.suffix == ".parquet":
        frame.to_parquet(table_path, index=False)
    else:
        frame.to_csv(table_path, index=False)
    width = max(5, len(str(len(explanations))))
    work = [
        (number, item, drawings / f"{number:0{width}d}", units)
        for number, item in enumerate(explanations)
        if item.ok and item.mol is not None
    ]
    images = dict(_draw_all(work, jobs, progress))
    summary = shap_summary(explanations, output, units)
    index = write_index(
        output,
        explanations,
        images,
        title,
        table_path,
        units,
        summary[-1] if summary else None,
        ids,
    )
    record = {
        "table": str(table_path),
        "index": str(index),
        **({"shap_summary": str(summary[-1])} if summary else {}),
        "units": units,
        "molecules": len(explanations),
        "explained": sum(item.ok for item in explanations),
        "failed": sum(not item.ok for item in explanations),
    }
    (output / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


DRAWINGS_PER_PROCESS = 8
"""Below this many molecules per extra process, drawing stays in this process (starting
workers costs more than it saves)."""

_DRAWING: list[tuple[int, MoleculeExplanation, Path, str]] = []
"""The work of :func:`_draw_all`'s forked processes, which inherit it: a pickled RDKit
molecule loses state that its depiction depends on, so it is not sent to them."""


def _draw_all(
    work: list[tuple[int, MoleculeExplanation, Path, str]], jobs: int, progress: bool
) -> Iterator[tuple[int, list[Path]]]:
    """Draw each ``(number, explanation, stem, units)`` of ``work``, in ``jobs`` forked
    processes (RDKit's PNG encoding takes most of a drawing's time); yields each molecule's
    number and drawings in order."""
    jobs = cpu_cores() if jobs == -1 else jobs
    jobs = min(jobs, len(work) // DRAWINGS_PER_PROCESS)
    bar = tqdm(total=len(work), desc="drawing", unit="mol", disable=not progress)
    _DRAWING[:] = work
    try:
        if jobs <= 1 or "fork" not in mp.get_all_start_methods():
            for result in map(_draw_one, range(len(work))):
                bar.update()
                yield result
        else:
            with mp.get_context("fork").Pool(jobs) as pool:
                for result in pool.imap(_draw_one, range(len(work)), chunksize=4):
                    bar.update()
                    yield result
    finally:
        _DRAWING.clear()
        bar.close()


def _draw_one(position: int) -> tuple[int, list[Path]]:
    number, item, stem, units = _DRAWING[position]
    paths = draw_molecule(item, stem, units)[:1]  # the page shows the SVG
    if item.feature_scores:
        paths.append(feature_bar_plot(item, stem.with_name(f"{stem.name}_features.png"), units))
    return number, paths
