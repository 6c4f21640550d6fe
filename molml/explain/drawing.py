"""Drawings of explanations: molecules coloured by attribution (RDKit), feature bar plots, a
baseline's SHAP summary over all molecules and an HTML grid of all molecules.

Atoms and bonds are coloured with a diverging colour map (blue negative, white zero, red
positive), scaled per molecule to the largest absolute score, which the colour bar under the
molecule states; atom highlight radii grow with the absolute score too. An atom's colour is
its total (its own score plus half of each of its bonds',
:attr:`~molml.explain.core.MoleculeExplanation.atom_totals`), a bond's its own score.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from rdkit.Chem.Draw import rdMolDraw2D  # noqa: E402
from rdkit.Geometry import Point2D  # noqa: E402

from molml.explain.core import MoleculeExplanation, top_features  # noqa: E402

COLOUR_MAP = "bwr"
BAR_HEIGHT = 56  # pixels under the molecule: colour bar and its labels
BAR_STEPS = 48
SUMMARY_FEATURES = 20  # features in the SHAP summary plot
BASELINE_NAMES = {"carbon": "chain carbons", "zeros": "zero features"}


def missing_id(value: Any) -> bool:
    """Whether an id is missing: None, NaN, NaT, pandas' NA or empty text (an empty cell, a
    nameless line, an untitled SD record)."""
    if isinstance(value, str):
        return value == ""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def canvas_size(n_atoms: int) -> int:
    """Side of the square drawing in pixels: larger for large molecules."""
    return int(min(1200, max(400, 40 * math.sqrt(max(n_atoms, 1)) * 3.2)))


def draw_molecule(item: MoleculeExplanation, stem: Path, units: str) -> list[Path]:
    """Draw one explained molecule to ``<stem>.svg`` and ``<stem>.png``; returns both paths."""
    side = canvas_size(item.mol.GetNumAtoms())
    scheme = _Colouring(item)
    mol = rdMolDraw2D.PrepareMolForDrawing(item.mol)  # laid out once for both files
    svg = rdMolDraw2D.MolDraw2DSVG(side, side + BAR_HEIGHT, side, side)
    _draw(svg, mol, item, scheme, side, units)
    png = rdMolDraw2D.MolDraw2DCairo(side, side + BAR_HEIGHT, side, side)
    _draw(png, mol, item, scheme, side, units)
    paths = [stem.with_suffix(".svg"), stem.with_suffix(".png")]
    paths[0].write_text(svg.GetDrawingText())
    paths[1].write_bytes(png.GetDrawingText())
    return paths


class _Colouring:
    """An explanation's colours: per atom and bond, and the colour bar's, on one scale (the
    largest absolute score), computed once for both drawings."""

    def __init__(self, item: MoleculeExplanation) -> None:
        atoms = np.nan_to_num(np.asarray(item.atom_totals, dtype=np.float64))
        bonds = np.asarray(item.bond_scores, dtype=np.float64)
        finite = np.concatenate([atoms, bonds[np.isfinite(bonds)]])
        scale = float(np.abs(finite).max()) if finite.size else 0.0
        self.scale = scale if scale > 0 else 1.0
        self.any_score = bool(np.any(finite))
        self.bond_ids = [int(k) for k in np.flatnonzero(np.isfinite(bonds))]
        self.atom_colours = dict(enumerate(self._colours(atoms)))
        bond_colours = self._colours(bonds[self.bond_ids])
        self.bond_colours = dict(zip(self.bond_ids, bond_colours, strict=True))
        self.radii = {i: 0.25 + 0.25 * float(abs(s)) / self.scale for i, s in enumerate(atoms)}
        steps = self.scale * (2 * (np.arange(BAR_STEPS) + 0.5) / BAR_STEPS - 1)
        self.bar_colours = self._colours(steps)

    def _colours(self, scores: np.ndarray) -> list[tuple[float, float, float]]:
        rgba = colormaps[COLOUR_MAP](0.5 + 0.5 * np.asarray(scores, dtype=np.float64) / self.scale)
        return [tuple(float(c) for c in row[:3]) for row in rgba]


def _draw(
    canvas: rdMolDraw2D.MolDraw2D,
    mol: Any,
    item: MoleculeExplanation,
    scheme: _Colouring,
    side: int,
    units: str,
) -> None:
    options = canvas.drawOptions()
    options.legendFontSize = 16
    options.fillHighlights = True
    options.clearBackground = True
    options.continuousHighlight = True
    how = item.method.replace("_", " ")
    if item.baseline is not None and math.isfinite(item.baseline_value):
        start = BASELINE_NAMES.get(item.baseline, item.baseline)
        how += f" from {start}: {_in_units(item.baseline_value, units, 3)}"
    legend = f"{value_caption(item, units)}   ({how})"
    if item.atom_std is not None:
        legend += f"   ensemble: max atom std {float(np.max(item.atom_std)):.3g}"
    canvas.DrawMolecule(
        mol,
        legend=legend,
        highlightAtoms=list(scheme.atom_colours),
        highlightAtomColors=scheme.atom_colours,
        highlightAtomRadii=scheme.radii,
        highlightBonds=scheme.bond_ids,
        highlightBondColors=scheme.bond_colours,
    )
    if scheme.any_score:
        _colour_bar(canvas, side, scheme, units)
    else:  # e.g. a descriptor model: the credit is on features, not atoms
        canvas.SetColour((0.0, 0.0, 0.0))
        canvas.SetFontSize(13)
        note = "no atom or bond carries a score"
        if item.feature_scores:
            note += " (see the features' bar plot)"
        canvas.DrawString(note, Point2D(side / 2, side + 20), 0, True)
    canvas.FinishDrawing()


def value_caption(item: MoleculeExplanation, units: str) -> str:
    """``task = prediction``, followed by the explained logit where the scores explain a
    classifier's logit rather than the probability it predicts, or by the explained probability
    where it is not the one predicted (a calibrated model's scores explain the probability of
    the model under its calibration)."""
    caption = f"{item.task} = {item.prediction:.4g}"
    explained = item.explained_value
    if units == "logit" and math.isfinite(explained):
        caption += f" ({_in_units(explained, units, 4)})"
    elif (
        units == "probability"
        and math.isfinite(explained)
        and not math.isclose(explained, item.prediction, abs_tol=5e-4)
    ):
        caption += f" (explained: probability {explained:.4g})"
    return caption


def _in_units(value: float, units: str, digits: int) -> str:
    """``value`` with its units named, unless they are the target's own."""
    return f"{value:.{digits}g}" if units == "target units" else f"{units} {value:.{digits}g}"


def _colour_bar(canvas: rdMolDraw2D.MolDraw2D, side: int, scheme: _Colouring, units: str) -> None:
    left, right = 0.15 * side, 0.85 * side
    top, bottom = side + 6, side + 22
    step = (right - left) / BAR_STEPS
    canvas.SetFillPolys(True)
    for k, colour in enumerate(scheme.bar_colours):
        canvas.SetColour(colour)
        canvas.DrawRect(
            Point2D(left + k * step, top), Point2D(left + (k + 1) * step + 0.5, bottom), True
        )
    canvas.SetColour((0.0, 0.0, 0.0))
    canvas.SetFontSize(13)
    scale = scheme.scale
    for text, x in ((f"{-scale:.3g}", left), ("0", (left + right) / 2), (f"{scale:.3g}", right)):
        canvas.DrawString(text, Point2D(x, bottom + 10), 0, True)
    canvas.DrawString(f"attribution ({units})", Point2D((left + right) / 2, bottom + 26), 0, True)


def feature_bar_plot(item: MoleculeExplanation, path: Path, units: str) -> Path:
    """Horizontal bars of the SHAP values of features that map to no atom (descriptors, ...)."""
    shown = top_features(item)[::-1]
    names, values = [name for name, _ in shown], [value for _, value in shown]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1.2))
    ax.barh(names, values, color=[colormaps[COLOUR_MAP](0.85 if v > 0 else 0.15) for v in values])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"SHAP value ({units})")
    ax.set_title(f"{item.task} = {item.prediction:.4g}: features without atoms", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def shap_summary(
    explanations: list[MoleculeExplanation], directory: Path, units: str
) -> list[Path]:
    """The SHAP summary of a baseline over all explained molecules: ``shap_summary.csv`` (per
    feature: mean |SHAP|, mean SHAP and the share of molecules where the feature is non-zero,
    largest mean |SHAP| first) and ``shap_summary.png`` (SHAP's beeswarm of the top features:
    one dot per molecule, coloured by the feature's value). Nothing for graph models."""
    items = [e for e in explanations if e.ok and e.shap_values is not None]
    if not items or items[0].feature_names is None:
        return []
    import shap

    values = np.stack([e.shap_values for e in items])
    inputs = np.stack([e.feature_values for e in items])
    names = items[0].feature_names
    table = pd.DataFrame(
        {
            "feature": names,
            "mean_abs_shap": np.abs(values).mean(axis=0),
            "mean_shap": values.mean(axis=0),
            "share_nonzero": (inputs != 0).mean(axis=0),
        }
    ).sort_values("mean_abs_shap", ascending=False, kind="stable")
    csv = directory / "shap_summary.csv"
    table.to_csv(csv, index=False)
    shap.summary_plot(
        values,
        inputs,
        feature_names=names,
        max_display=SUMMARY_FEATURES,
        show=False,
        plot_size=(11, 0.4 * min(SUMMARY_FEATURES, len(names)) + 1.5),
    )
    figure = plt.gcf()
    figure.axes[0].set_xlabel(f"SHAP value ({units}): its effect on {items[0].task}")
    figure.axes[0].set_title(
        f"{items[0].task}: top {min(SUMMARY_FEATURES, len(names))} features over "
        f"{len(items)} molecules",
        fontsize=11,
    )
    png = directory / "shap_summary.png"
    figure.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return [csv, png]


def write_index(
    output: Path,
    explanations: list[MoleculeExplanation],
    images: dict[int, list[Path]],
    title: str,
    table: Path,
    units: str,
    summary: Path | None = None,
    ids: Sequence[Any] | None = None,
) -> Path:
    """``index.html``: a grid with one card per molecule (its drawing, by relative link, and
    its id when there are ``ids``; none for a missing id), under the SHAP summary plot when
    there is one."""
    cards = []
    for number, item in enumerate(explanations):
        given = ids is not None and not missing_id(ids[number])
        name = f" {html.escape(str(ids[number]))}" if given else ""
        parts = [f"<div class='card'><div class='n'>#{number}{name}</div>"]
        for image in images.get(number, []):
            relative = image.relative_to(output).as_posix()
            parts.append(f"<a href='{relative}'><img src='{relative}' loading='lazy'></a>")
        if item.ok:
            parts.append(f"<div>{html.escape(value_caption(item, units))}</div>")
            if math.isfinite(item.completeness_gap):
                gap = _in_units(item.completeness_gap, units, 2)
                parts.append(f"<div class='s'>IG completeness gap: {html.escape(gap)}</div>")
        else:
            parts.append(f"<div class='bad'>{html.escape(item.status)}</div>")
        parts.append(f"<div class='smi'>{html.escape(item.smiles)}</div></div>")
        cards.append("".join(parts))
    link = html.escape(quote(table.relative_to(output).as_posix()))  # '#' or '?' in a name
    overview = ""
    if summary is not None:
        relative = html.escape(summary.relative_to(output).as_posix())
        overview = (
            "<h2>Features over all molecules (SHAP summary)</h2>"
            f"<p><a href='{relative}'><img class='summary' src='{relative}'></a></p>"
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: 8px; font-size: 13px; }}
.card img {{ width: 100%; height: auto; }}
.n, .s {{ color: #666; }}
.bad {{ color: #b00; }}
.smi {{ font-family: monospace; font-size: 11px; word-break: break-all; color: #444; }}
.summary {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Red: the atom or bond raises the explained value; blue: lowers it. Colours are scaled per
molecule (see each colour bar). All scores: <a href="{link}">{html.escape(table.name)}</a>.</p>
{overview}
<div class="grid">
{chr(10).join(cards)}
</div></body></html>
"""
    path = output / "index.html"
    path.write_text(page)
    return path
