"""A self-contained HTML page: headings, warnings, tables and embedded PNG figures."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
.warn { background: #fff3cd; border-left: 4px solid #e0a800; padding: 6px 10px; margin: 4px 0; }
.ok { background: #e7f5e7; border-left: 4px solid #3a3; padding: 6px 10px; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; } .note { color: #555; }
"""


class Page:
    """An HTML report page whose figures are PNG files in ``directory``, embedded as base64."""

    def __init__(self, title: str, directory: Path) -> None:
        self.title = title
        self.directory = directory
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        self.images: list[Path] = []
        directory.mkdir(parents=True, exist_ok=True)

    def section(self, title: str) -> None:
        """Start a section (``<h2>``)."""
        self.parts.append(f"<h2>{html.escape(title)}</h2>")

    def text(self, text: str, css: str = "note") -> None:
        """A paragraph of plain text."""
        self.parts.append(f'<p class="{css}">{html.escape(text)}</p>')

    def warnings(self, warnings: Sequence[str], at: int | None = None) -> None:
        """Each warning in a yellow box, or one green line when there is none; appended, or
        inserted before part ``at`` (a position remembered as ``len(page.parts)``)."""
        parts = [f'<div class="warn">{html.escape(w)}</div>' for w in warnings]
        parts = parts or ['<p class="ok">No problems found.</p>']
        position = len(self.parts) if at is None else at
        self.parts[position:position] = parts

    def table(self, rows: Sequence[dict[str, Any]], limit: int = 50) -> None:
        """A table of dicts (columns: every key, in order of first appearance; a missing one
        shows as an empty cell), at most ``limit`` rows."""
        if not rows:
            self.text("(none)")
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns)
            + "</tr>"
            for row in rows[:limit]
        )
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")
        if len(rows) > limit:
            self.text(f"... and {len(rows) - limit} more rows (all of them are in the JSON file)")

    def figure(self, fig: plt.Figure, name: str) -> Path:
        """Save ``fig`` as ``<directory>/<name>.png`` and embed it; characters of ``name`` that
        do not belong in a file name (a task named ``log S (mol/L)``) become ``_``."""
        stem = re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("._") or "plot"
        path, copy = self.directory / f"{stem}.png", 1
        while path in self.images:  # two names that read the same in a file name
            copy += 1
            path = self.directory / f"{stem}_{copy}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return self.image(path)

    def image(self, path: Path) -> Path:
        """Embed a PNG file written in ``directory``."""
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.parts.append(
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}" '
            f'title="{html.escape(path.name)}">'
        )
        self.images.append(path)
        return path

    def write(self, name: str = "report.html") -> Path:
        """Write the page; returns its path."""
        path = self.directory / name
        body = "\n".join(self.parts)
        path.write_text(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{STYLE}</style></head><body>{body}</body></html>",
            encoding="utf-8",
        )
        return path


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer() and abs(value) < 1e15:  # a count: every digit
            return str(int(value))
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.4e}"
    return str(value)


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write ``data`` as indented JSON; NaN and infinity become null."""
    path.write_text(json.dumps(_plain(data), indent=2))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def panels(n: int, cols: int = 4, size: float = 3.4) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure with ``n`` axes in rows of ``cols``; unused axes hidden."""
    cols = max(1, min(n, cols))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
