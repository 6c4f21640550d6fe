"""scripts/benchmark.py: the column that picks a model per split entry on validation."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("molml_benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def write_cell(
    out: Path, dataset: str, model: str, seed: int, val: float, test: float, repeat: int = 0
) -> None:
    name = f"seed_{seed}.json" if repeat == 0 else f"seed_{seed}_repeat{repeat}.json"
    path = out / "results" / dataset / model / name
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"seed": seed, "repeat": repeat, "val": val, "test": test, "wall_s": 10.0}
    path.write_text(json.dumps(record))


def test_the_model_with_the_best_validation_score_is_picked_per_entry(benchmark, tmp_path):
    a, b = "dmpnn_pretrained", "dmpnn_pretrained_sum"
    # ESOL is scored by RMSE (lower is better), BACE by ROC-AUC (higher is better)
    write_cell(tmp_path, "esol", a, 0, val=0.5, test=0.9)
    write_cell(tmp_path, "esol", b, 0, val=0.6, test=0.7)
    write_cell(tmp_path, "esol", a, 1, val=0.8, test=1.0)
    write_cell(tmp_path, "esol", b, 1, val=0.4, test=0.6)
    write_cell(tmp_path, "esol", a, 2, val=0.3, test=0.5)  # b has no entry 2: not compared
    write_cell(tmp_path, "bace", a, 0, val=0.70, test=0.80)
    write_cell(tmp_path, "bace", b, 0, val=0.90, test=0.85)

    summary = benchmark.summarize(tmp_path, [a, benchmark.CHOSEN], ["esol", "bace"], choose=[a, b])

    esol = summary["esol"]["models"]
    assert set(esol) == {a, benchmark.CHOSEN}  # b was a candidate, not a column
    chosen = esol[benchmark.CHOSEN]
    assert chosen["seeds"] == [0, 1]
    assert chosen["chosen"] == [a, b]
    assert chosen["values"] == [0.9, 0.6]
    assert chosen["mean"] == pytest.approx(0.75)
    assert summary["bace"]["models"][benchmark.CHOSEN]["chosen"] == [b]
    note = benchmark.picked_note(summary, [a, b])
    # one column per split entry that any data set has; an entry a data set lacks is "–"
    assert "| dataset | entry 0 | entry 1 |" in note
    assert "| esol | D-MPNN fine-tuned | D-MPNN fine-tuned, sum readout |" in note
    assert "| bace | D-MPNN fine-tuned, sum readout | – |" in note


def test_unknown_candidate_models_are_refused(benchmark, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--choose-on-validation", "dmpnn_pretrained", "no_such_model"])
    assert "no_such_model" in capsys.readouterr().err


def test_repeats_of_an_entry_are_averaged_before_the_entries(benchmark, tmp_path):
    a = "dmpnn_pretrained"
    assert benchmark.cell_path(tmp_path, a, "esol", 1, repeat=2).name == "seed_1_repeat2.json"
    write_cell(tmp_path, "esol", a, 0, val=0.4, test=0.9)
    write_cell(tmp_path, "esol", a, 0, val=0.6, test=0.7, repeat=1)
    write_cell(tmp_path, "esol", a, 1, val=0.5, test=1.2)
    write_cell(tmp_path, "esol", a, 1, val=0.7, test=1.0, repeat=1)

    column = benchmark.summarize(tmp_path, [a], ["esol"])["esol"]["models"][a]

    assert column["seeds"] == [0, 1]
    assert column["values"] == pytest.approx([0.8, 1.1])
    assert column["val"] == pytest.approx([0.5, 0.6])
    assert column["repeats"] == 2
    assert column["mean"] == pytest.approx(0.95)
    table = benchmark.markdown_table(
        benchmark.summarize(tmp_path, [a], ["esol"]), [a], ["fine-tuned"]
    )
    assert "0.950 ± 0.212 (2 seeds per entry)" in table


def write_predictions(
    out: Path, model: str, seed: int, repeat: int, predictions: list[float], targets: list
) -> None:
    """A classification cell of ``bace`` with its test predictions (one task)."""
    write_cell(out, "bace", model, seed, val=0.8, test=0.5, repeat=repeat)
    path = benchmark_cell(out, model, seed, repeat)
    record = json.loads(path.read_text())
    record.update(
        task_type="classification",
        tasks=["Class"],
        test_predictions=[[p] for p in predictions],
        test_targets=[[t] for t in targets],
    )
    path.write_text(json.dumps(record))


def benchmark_cell(out: Path, model: str, seed: int, repeat: int) -> Path:
    name = f"seed_{seed}.json" if repeat == 0 else f"seed_{seed}_repeat{repeat}.json"
    return out / "results" / "bace" / model / name


def test_an_ensemble_is_scored_on_the_mean_prediction_of_an_entrys_repeats(benchmark, tmp_path):
    a = "dmpnn_pretrained"
    targets = [0, 1, 0, 1, float("nan")]  # the last molecule is unlabelled: not scored
    # each member ranks one positive below a negative; their mean ranks every positive first
    write_predictions(tmp_path, a, 0, 0, [0.1, 0.9, 0.6, 0.5, 0.0], targets)
    write_predictions(tmp_path, a, 0, 1, [0.6, 0.5, 0.1, 0.9, 1.0], targets)
    write_predictions(tmp_path, a, 1, 0, [0.2, 0.8, 0.3, 0.7, 0.5], targets)  # one member only

    key = a + benchmark.ENSEMBLE
    row = benchmark.summarize(tmp_path, [a, key], ["bace"])["bace"]["models"]

    assert row[a]["values"] == pytest.approx([0.5, 0.5])  # the cells' own scores, averaged
    assert row[key]["seeds"] == [0]  # an entry with one member is no ensemble
    assert row[key]["values"] == pytest.approx([1.0])
    assert row[key]["members"] == 2
    assert benchmark.column_title(key, 1.0, 2) == "D-MPNN fine-tuned, ensemble of 2"


def test_repeats_tested_on_different_molecules_are_not_ensembled(benchmark, tmp_path):
    a = "dmpnn_pretrained"
    write_predictions(tmp_path, a, 0, 0, [0.1, 0.9], [0, 1])
    write_predictions(tmp_path, a, 0, 1, [0.1, 0.9], [1, 0])
    with pytest.raises(ValueError, match="split entry 0"):
        benchmark.summarize(tmp_path, [a + benchmark.ENSEMBLE], ["bace"])


def test_ensemble_needs_repeats(benchmark, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--ensemble"])
    assert "--repeats" in capsys.readouterr().err


def test_the_chemprop_peer_needs_its_interpreter_and_split_files(benchmark, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--models", "chemprop", "--splits-dir", "splits"])
    assert "--chemprop PYTHON" in capsys.readouterr().err
    args = benchmark.parse_args(
        ["--models", "chemprop", "--splits-dir", "s", "--chemprop", "py", "--repeats", "2"]
    )
    # trained once per repeat, like a graph model, so its repeats can be ensembled
    assert benchmark.MODELS["chemprop"].kind in benchmark.TRAINED_PER_REPEAT
    assert args.repeats == 2


def test_pretrained_replaces_the_encoder_of_fine_tuned_models_only(benchmark, tmp_path):
    args = benchmark.parse_args(["--pretrained", "my/encoder.ckpt", "--out", str(tmp_path)])

    def config(model: str, repeat: int = 0) -> dict:
        return benchmark.graph_config(model, "esol", 1, "rmse", args, 1.0, repeat, "cell")

    fine_tuned = config("dmpnn_chemprop_pretrained", repeat=2)
    assert fine_tuned["model"]["pretrained"] == "my/encoder.ckpt"
    assert fine_tuned["seed_everything"] == 1 + 2 * benchmark.REPEAT_SEED_STEP
    assert fine_tuned["data"]["dataset"] == "esol"
    # a model trained from scratch stays from scratch
    assert not config("dmpnn")["model"].get("pretrained")
    default = benchmark.parse_args(["--out", str(tmp_path)])
    shipped = benchmark.graph_config(
        "dmpnn_chemprop_pretrained", "esol", 0, "rmse", default, 1.0, 0, "cell"
    )
    assert shipped["model"]["pretrained"] == "zinc-dmpnn-chemprop"


def test_a_variant_sets_its_model_options_on_its_template(benchmark, tmp_path):
    args = benchmark.parse_args(["--out", str(tmp_path)])

    def model_options(model: str) -> dict:
        return benchmark.graph_config(model, "bace", 0, "roc_auc", args, 1.0, 0, "cell")["model"]

    plain = model_options("dmpnn_chemprop_pretrained")
    anchored = model_options("dmpnn_chemprop_pretrained_l2sp3e3")
    assert anchored["pretrained_l2_weight"] == 0.003 and "pretrained_l2_weight" not in plain
    assert {k: v for k, v in anchored.items() if k != "pretrained_l2_weight"} == plain
    assert model_options("dmpnn_chemprop_pretrained_mean")["readout"] == "mean"
    assert plain["readout"] == "norm"
