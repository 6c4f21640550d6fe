"""Reports on data and trained models: ``molml report data`` and ``molml report eval``.

Each report is one self-contained HTML page (plots embedded as PNG, and written beside it)
plus the same numbers as JSON.
"""

from molml.report.data import data_report
from molml.report.evaluation import eval_report

__all__ = ["data_report", "eval_report"]
