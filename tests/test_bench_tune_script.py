"""scripts/bench_tune.py: the summary of default vs tuned rows, seed means and ensembles."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def bench_tune():
    sys.path.insert(0, str(SCRIPTS))  # bench_tune imports its sibling benchmark.py
    spec = importlib.util.spec_from_file_location("molml_bench_tune", SCRIPTS / "bench_tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(SCRIPTS))


def row(split: int, default: list[float], tuned: list[float], ensembles=None) -> dict:
    record = {
        "dataset": "freesolv",
        "split": split,
        "model": "dmpnn_pretrained",
        "metric": "test/rmse",
        "default_test": default[0],
        "tuned_test": tuned[0],
        "gain": default[0] - tuned[0],
        "trials": 30,
        "pruned": 10,
        "tune_seconds": 600.0,
        "default_tests": default,
        "tuned_tests": tuned,
    }
    if ensembles:
        record["default_ensemble"], record["tuned_ensemble"] = ensembles
    return record


def test_summary_reports_seed_means_and_ensembles_over_the_entries(bench_tune, tmp_path):
    rows = [
        row(0, [2.0, 2.2], [1.5, 1.7], (1.9, 1.4)),
        row(1, [3.0, 3.2], [2.5, 2.9], (2.9, 2.6)),
    ]
    (summary,) = bench_tune.summary(rows, tmp_path).to_dict("records")
    assert summary["tuned test"] == "2.000 ± 0.707"  # the seed-0 runs: 1.5 and 2.5
    assert summary["default test, 2 seeds"] == "2.600 ± 0.707"  # means 2.1 and 3.1
    assert summary["tuned test, 2 seeds"] == "2.150 ± 0.778"  # means 1.6 and 2.7
    assert summary["default ensemble of 2"] == "2.400 ± 0.707"
    assert summary["tuned ensemble of 2"] == "2.000 ± 0.849"
    assert summary["pruned / trials"] == "20 / 60"


def test_ensemble_columns_appear_only_when_every_entry_has_them(bench_tune, tmp_path):
    rows = [row(0, [2.0, 2.2], [1.5, 1.7], (1.9, 1.4)), row(1, [3.0, 3.2], [2.5, 2.9])]
    (summary,) = bench_tune.summary(rows, tmp_path).to_dict("records")
    assert "tuned test, 2 seeds" in summary
    assert not any("ensemble" in key for key in summary)
