"""``molml report data|eval``, the report statistics, and class weighting for graph models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import nci_smiles
from PIL import Image

from molml.cli import main
from molml.report.stats import bootstrap_ci, paired_bootstrap


def run_report(args: list[str]) -> None:
    main(["report", *args])


def page_images(page: Path) -> list[str]:
    """Names of the PNGs embedded in a report page (each checked to decode)."""
    text = page.read_text()
    names = re.findall(r'alt="([^"]+\.png)"', text)
    for name in names:
        with Image.open(page.parent / name) as image:
            image.verify()
    assert text.count("data:image/png;base64,") == len(names)
    return names


# beta-cyclodextrin: seven glucose rings closed into a macrocycle
CYCLODEXTRIN = (
    "OC[C@H]1O[C@@H]2O[C@@H]3[C@@H](CO)O[C@H](O[C@@H]4[C@@H](CO)O[C@H](O[C@@H]5[C@@H](CO)"
    "O[C@H](O[C@@H]6[C@@H](CO)O[C@H](O[C@@H]7[C@@H](CO)O[C@H](O[C@@H]8[C@@H](CO)O[C@H]"
    "(O[C@@H]9[C@@H](CO)O[C@H](O[C@H]1[C@H](O)[C@H]2O)[C@H](O)[C@H]9O)[C@H](O)[C@H]8O)"
    "[C@H](O)[C@H]7O)[C@H](O)[C@H]6O)[C@H](O)[C@H]5O)[C@H](O)[C@H]4O)[C@H](O)[C@H]3O"
)


def test_data_report_finds_duplicates_and_conflicts(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "smiles": ["CCO", "OCC", "c1ccccc1", "C1=CC=CC=C1", "CCN", "not_a_smiles", "CCCl"]
            + [f"C{'C' * i}O" for i in range(3, 23)]
            + [CYCLODEXTRIN],
            "y": [1.0, 3.0, 2.0, 2.5, 0.5, 1.0, 1.0] + list(np.linspace(0, 2, 20)) + [1.5],
        }
    )
    path = tmp_path / "dups.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "report"
    run_report(["data", "--data.path", str(path), "--data.split", "random", "--output", str(out)])
    report = json.loads((out / "report.json").read_text())
    groups = {d["canonical_smiles"]: d["rows"] for d in report["duplicates"]}
    assert groups == {"CCO": [2, 3], "c1ccccc1": [4, 5]}  # rows are file lines (header = 1)
    assert [(c["canonical_smiles"], c["labels"]) for c in report["conflicts"]] == [
        ("CCO", [1.0, 3.0])  # benzene differs by 0.5 only, below the default threshold of 1
    ]
    assert report["invalid"][0]["row"] == 7
    assert any("disagree by more than 1" in w for w in report["warnings"])
    assert report["split"]["sizes"]["test"] > 0
    # benzene and the cyclodextrin are the two scaffolds (acyclic molecules have none); the
    # cyclodextrin has 9 rings, not the 264 of RDKit's symmetrized ring set
    assert report["scaffolds"]["n_scaffolds"] == 2
    assert report["scaffolds"]["acyclic_molecules"] == len(frame) - 4  # less benzenes, invalid
    assert report["descriptors"]["rings"]["max"] == 9
    html = (out / "report.html").read_text()
    from molml.report.page import _cell

    # counts in full (1128 was shown as 1.13e+03), other numbers to 4 significant digits
    assert [_cell(v) for v in (1128.0, 7823.0, 0.123456, 1875.52, 2.5e7 + 0.5)] == [
        "1128",
        "7823",
        "0.1235",
        "1876",
        "2.5000e+07",
    ]
    for section in (
        "Invalid SMILES",
        "Duplicates with conflicting labels",
        "Descriptors",
        "Elements and formal charges",
        "Scaffolds",
        "Outliers",
        "Split",
    ):
        assert f"<h2>{section}</h2>" in html
    assert set(page_images(out / "report.html")) == {
        "labels.png",
        "descriptors.png",
        "scaffolds.png",
        "split.png",
    }
    # a tighter threshold makes the benzene pair a conflict too
    run_report(
        [
            "data",
            "--data.path",
            str(path),
            "--data.split",
            "random",
            "--output",
            str(out),
            "--conflict_threshold",
            "0.4",
        ]
    )
    assert len(json.loads((out / "report.json").read_text())["conflicts"]) == 2


def test_data_report_on_unusable_labels_still_writes(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    smiles = [f"C{'C' * i}O" for i in range(12)]
    pd.DataFrame({"smiles": smiles, "y": [""] * 12, "c": [0.0] * 12}).to_csv(path, index=False)
    out = tmp_path / "report"
    run_report(["data", "--data.path", str(path), "--output", str(out)])
    report = json.loads((out / "report.json").read_text())
    text = " ".join(report["warnings"])
    assert "'y' has no values" in text and "Task 'y' has no labels at all" in text
    assert "Task 'c' has one class only" in text
    assert "configured split cannot be used" in text
    assert report["split"] is None and (out / "report.html").is_file()


def test_data_report_counts_multiclass_labels_per_class(tmp_path: Path) -> None:
    """Class labels are counted per class, not described by a mean and outliers."""
    path = tmp_path / "classes.csv"
    smiles = nci_smiles(60)
    labels = [i % 3 for i in range(58)] + [2, 2]  # 20 / 19 / 21
    pd.DataFrame({"smiles": smiles, "kind": labels}).to_csv(path, index=False)
    out = tmp_path / "report"
    run_report(
        ["data", "--data.path", str(path), "--data.task_type", "multiclass", "--output", str(out)]
    )
    report = json.loads((out / "report.json").read_text())
    stats = report["labels"]["kind"]
    assert stats["class_counts"] == {"0": 20, "1": 19, "2": 21} and "mean" not in stats
    assert not any(o["column"] == "kind" for o in report.get("outliers", []))
    assert (out / "labels.png").is_file()


def test_data_report_of_structures_without_labels(tmp_path: Path) -> None:
    """A SMILES-only file (checked before it is labelled) crashed drawing zero label panels;
    a ';'-separated .csv is pointed at its separator."""
    path = tmp_path / "structures.csv"
    pd.DataFrame({"smiles": [f"C{'C' * i}O" for i in range(12)] + ["c1ccccc1"]}).to_csv(
        path, index=False
    )
    out = tmp_path / "report"
    run_report(["data", "--data.path", str(path), "--output", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == [] and report["valid_molecules"] == 13
    assert "no target columns" in " ".join(report["warnings"])
    assert "No label columns" in (out / "report.html").read_text()
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_text("smiles;y\nCCO;1\nCCC;2\n")
    run_report(["data", "--data.path", str(semicolons), "--output", str(tmp_path / "semi")])
    warnings = json.loads((tmp_path / "semi" / "report.json").read_text())["warnings"]
    assert "is the file separated by ';'" in " ".join(warnings)


def test_data_report_on_unusable_labels_keeps_the_split_column_and_the_named_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The report of a file the data module refuses (an empty task) still leaves the split
    column, ids and the index out of the tasks and splits by that column; a named column that
    is missing is an error listing the file's columns, as in training."""
    path = tmp_path / "folds.csv"
    smiles = nci_smiles(30)
    frame = pd.DataFrame({
        "compound_id": np.arange(101, 131), "smiles": smiles, "y": np.arange(30) / 3,
        "fold": ["train"] * 20 + ["val"] * 5 + ["test"] * 5, "empty": np.nan,
    })  # fmt: skip
    frame.to_csv(path)
    out = tmp_path / "report"
    split = ["--data.split", "predefined", "--data.split_column", "fold"]
    run_report(["data", "--data.path", str(path), *split, "--output", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == ["y", "empty"]
    assert not any("split_column" in warning for warning in report["warnings"])
    with pytest.raises(SystemExit):
        main(["report", "data", "--data.path", str(path), "--data.target_columns", "logS",
              "--output", str(tmp_path / "other")])  # fmt: skip
    assert "['logS'] not found; the file has columns" in capsys.readouterr().err


def test_data_report_on_an_infinite_label_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "inf.csv"
    path.write_text("smiles,y\nCCO,1\nCCN,inf\nCCC,2\nCCCC,3\nc1ccccc1,4\n")
    out = tmp_path / "report"
    run_report(["data", "--data.path", str(path), "--output", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert "too large to train on and score" in " ".join(report["warnings"])
    assert "row 3 (inf)" in " ".join(report["warnings"])
    assert report["labels"]["y"] == {
        "labelled": 5, "missing": 0, "not_finite": 1, "mean": 2.5,
        "std": pytest.approx(np.std([1, 2, 3, 4])), "min": 1.0, "max": 4.0,
    }  # fmt: skip
    assert (out / "labels.png").is_file()


def test_data_report_splits_data_with_an_infinite_label(tmp_path: Path) -> None:
    """Enough molecules for a split: its label histograms leave the infinite one out (they
    raised on it)."""
    frame = pd.DataFrame({"smiles": nci_smiles(60), "y": np.arange(60.0)})
    frame.loc[6, "y"], frame.loc[7, "y"] = np.inf, -np.inf
    frame.to_csv(tmp_path / "inf.csv", index=False)
    out = tmp_path / "report"
    run_report(["data", "--data.path", str(tmp_path / "inf.csv"), "--output", str(out),
                "--data.split", "random"])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["split"] is not None and report["labels"]["y"]["not_finite"] == 2
    assert (out / "split.png").is_file()


def test_report_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        run_report(["data"])
    assert exc.value.code == 2 and "--data.path" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("data: {path: x.csv}\n")
    with pytest.raises(SystemExit) as exc:
        run_report(["eval", "--run", str(tmp_path)])
    assert exc.value.code == 3 and "no trained model" in capsys.readouterr().err


def test_report_on_unreadable_data_leaves_no_folder_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exc:
        run_report(["data", "--data.path", str(tmp_path / "absent.csv"), "--output", str(out)])
    assert exc.value.code != 0 and "absent.csv" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "config.yaml").write_text("data: {path: x.csv}\n")
    with pytest.raises(SystemExit):
        run_report(["eval", "--run", str(tmp_path), "--output", str(out)])
    assert not out.exists()


def test_bootstrap_ci_contains_estimate_and_shrinks() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 2000):
        y = rng.normal(size=n)
        p = y + rng.normal(scale=0.5, size=n)
        ci = bootstrap_ci("rmse", y, p, n_bootstrap=300)
        assert ci["low"] <= ci["value"] <= ci["high"]
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 3  # ~ 1 / sqrt(n): 7x narrower expected
    labels = (rng.random(300) < 0.3).astype(float)
    ci = bootstrap_ci("roc_auc", labels, labels * 0.5 + rng.random(300), n_bootstrap=200)
    assert ci["low"] <= ci["value"] <= ci["high"] <= 1.0


def test_paired_bootstrap_difference() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    good, bad = y + rng.normal(scale=0.3, size=200), y + rng.normal(scale=1.0, size=200)
    same = paired_bootstrap("rmse", y, good, good, n_bootstrap=100)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    better = paired_bootstrap("rmse", y, bad, good, n_bootstrap=200)
    assert better["high"] < 0 and better["b_better"] == 1.0


def test_pos_weight_loss_matches_hand_computation() -> None:
    from molml.models import DMPNN, MoleculeModel

    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=8, depth=1),
        ffn_hidden_dim=8,
        tasks=["a", "b"],
        task_type="classification",
        pos_weight=[3.0, 1.0],
    )
    out = torch.tensor([[0.5, -1.0], [-2.0, 0.3]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    batch = SimpleNamespace(y=y, y_mask=torch.ones_like(y, dtype=torch.bool))
    s = torch.sigmoid
    expected = (
        -3.0 * torch.log(s(torch.tensor(0.5)))  # positive of task a: weighted 3x
        - torch.log(1 - s(torch.tensor(-1.0)))
        - torch.log(1 - s(torch.tensor(-2.0)))
        - torch.log(s(torch.tensor(0.3)))
    ) / 4
    assert torch.isclose(model.loss(out, batch), expected)
    unweighted = MoleculeModel(
        encoder=DMPNN(hidden_dim=8, depth=1),
        ffn_hidden_dim=8,
        tasks=["a", "b"],
        task_type="classification",
    )
    assert not hasattr(unweighted, "pos_weight")  # state dicts of older checkpoints still fit
    assert unweighted.loss(out, batch) < model.loss(out, batch)
    with pytest.raises(ValueError, match="one per task"):
        MoleculeModel(tasks=["a", "b"], task_type="classification", pos_weight=[2.0])


def test_balanced_sampler_draws_positives_often(property_csv: Path) -> None:
    from molml.data.datamodule import MoleculeDataModule

    dm = MoleculeDataModule(
        path=str(property_csv),
        target_columns=["active"],
        cache_dir=None,
        featurize_jobs=1,
        split="scaffold_stratified",
        balanced_sampler=True,
        batch_size=500,
    )
    dm.setup("fit")
    base_rate = float(dm.graphs.y[dm.split.train].mean())
    torch.manual_seed(0)
    drawn = torch.cat([batch.y for _ in range(5) for batch in dm.train_dataloader()])
    assert base_rate < 0.15 and 0.35 < float(drawn.mean()) < 0.65
    assert dm.positive_weights()[0] == pytest.approx((1 - base_rate) / base_rate, rel=1e-5)
    with pytest.raises(ValueError, match="balanced_sampler"):
        MoleculeDataModule(path=str(property_csv), target_columns=["logp"], balanced_sampler=True)


def test_eval_report_compares_gnn_and_baseline(classification_runs: dict) -> None:
    import molml

    run, baseline = classification_runs["graph"], classification_runs["baseline"]
    gnn = molml.load_model(run / "checkpoints" / "best.ckpt")
    split = json.loads((run / "split.json").read_text())[0]
    labels = pd.read_csv(gnn.metadata["training_data"]["source"])["active"].to_numpy()
    train = labels[split["train"]]
    train = train[~np.isnan(train)]
    auto = (train == 0).sum() / (train == 1).sum()
    assert gnn.model.pos_weight.item() == pytest.approx(auto, rel=1e-5)

    run_report(
        ["eval", "--run", str(run), "--model", str(baseline / "model"), "--n_bootstrap", "100"]
    )
    report = json.loads((run / "report" / "report.json").read_text())
    task = report["tasks"]["active"]
    assert len(task["metrics"]) == 2
    for name, metrics in task["metrics"].items():
        for metric in ("roc_auc", "pr_auc", "brier"):
            ci = metrics[metric]
            assert ci["low"] <= ci["value"] <= ci["high"], (name, metric)
        assert 0.0 <= task["thresholds"][name] <= 1.0
        assert np.sum(task["confusion"][name]) == task["n_test"]
    assert {c["metric"] for c in task["comparisons"]} == {"roc_auc", "pr_auc", "brier"}
    assert sum(b["n"] for b in task["similarity_bins"]) == task["n_test"]
    html = (run / "report" / "report.html").read_text()
    assert "<h2>Task active</h2>" in html and "Youden" in html
    assert page_images(run / "report" / "report.html") == ["active_plots.png"]
    # the data and split the run trained on: its training part matches the checkpoint's
    assert not any("another training part" in w for w in report["warnings"])


def test_eval_report_warns_when_validation_gives_no_threshold_better_than_chance(
    classification_runs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation predictions that separate nothing (here: all equal) make the chosen
    threshold meaningless; the page says so instead of "No problems found"."""
    from molml.report import evaluation

    monkeypatch.setattr(
        evaluation, "_predict", lambda predictor, smiles, tasks: np.full((len(smiles), 1), 0.3)
    )
    run = classification_runs["graph"]
    out = tmp_path / "report"
    run_report(["eval", "--run", str(run), "--n_bootstrap", "20", "--output", str(out)])
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("no threshold separates the classes better than chance" in w for w in warnings)
    assert "No problems found" not in (out / "report.html").read_text()


def test_eval_report_warns_when_the_training_part_is_not_the_models(
    classification_runs: dict, tmp_path: Path
) -> None:
    import molml

    run = classification_runs["graph"]
    source = molml.load_model(run / "checkpoints" / "best.ckpt").metadata["training_data"]
    reordered = tmp_path / "reordered.csv"
    pd.read_csv(source["source"]).sample(frac=1, random_state=5).to_csv(reordered, index=False)
    out = tmp_path / "report"
    run_report(["eval", "--run", str(run), "--data.path", str(reordered), "--output", str(out),
                "--n_bootstrap", "20"])  # fmt: skip
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert any("was trained on another training part" in w for w in warnings)
    # a split option alone goes over the run's config (which names the data)
    reseeded = tmp_path / "reseeded"
    baseline = classification_runs["baseline"] / "model"
    run_report(["eval", "--run", str(run), "--model", str(baseline), "--data.split_seed", "3",
                "--output", str(reseeded), "--n_bootstrap", "20"])  # fmt: skip
    warnings = json.loads((reseeded / "report.json").read_text())["warnings"]
    warned = [w for w in warnings if "was trained on another training part" in w]
    assert len(warned) == 2 and any("xgb" in w for w in warned)  # the baseline's record too
    # an ensemble is named when one of its members was
    manifest = tmp_path / "pair.json"
    manifest.write_text(json.dumps({"ensemble": [str(run / "checkpoints" / "best.ckpt"),
                                                 str(baseline)]}))  # fmt: skip
    paired = tmp_path / "paired"
    run_report(["eval", "--run", str(run), "--model", str(manifest), "--data.split_seed", "3",
                "--output", str(paired), "--n_bootstrap", "20"])  # fmt: skip
    warnings = json.loads((paired / "report.json").read_text())["warnings"]
    assert any("pair.json was trained on another training part" in w for w in warnings)


def test_eval_report_refuses_data_of_the_other_task_type(
    classification_runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A classifier's probabilities were scored as regression values (RMSE, exit 0) on data
    whose column of that name holds numbers."""
    import molml

    run = classification_runs["graph"]
    source = molml.load_model(run / "checkpoints" / "best.ckpt").metadata["training_data"]
    frame = pd.read_csv(source["source"])
    frame["active"] = np.linspace(-3.0, 2.0, len(frame))
    numbers = tmp_path / "numbers.csv"
    frame.to_csv(numbers, index=False)
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exit_info:
        run_report(["eval", "--run", str(run), "--data.path", str(numbers), "--output",
                    str(out), "--n_bootstrap", "20"])  # fmt: skip
    assert exit_info.value.code == 2 and not out.exists()
    error = capsys.readouterr().err
    assert "predicts classification" in error and "regression tasks" in error


def test_eval_report_joins_the_runs_mlflow_record(property_csv: Path, tmp_path: Path) -> None:
    import yaml
    from mlflow.tracking import MlflowClient

    config = {
        "data": {"path": str(property_csv), "target_columns": ["logp"]},
        "features": {"name": "ecfp4", "params": {"n_bits": 512}},
        "estimator": {"name": "xgboost", "params": {"n_estimators": 20}},
        "name": "tracked",
        "output_dir": str(tmp_path / "runs"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_location": str(tmp_path / "artifacts"),
    }
    (tmp_path / "xgb.yaml").write_text(yaml.safe_dump(config))
    main(["baseline", "fit", "--config", str(tmp_path / "xgb.yaml")])
    run = tmp_path / "runs" / "tracked" / "version_0"
    recorded = json.loads((run / "mlflow_run.json").read_text())
    run_report(["eval", "--run", str(run), "--n_bootstrap", "50"])
    client = MlflowClient(recorded["tracking_uri"])
    logged = {a.path for a in client.list_artifacts(recorded["run_id"], "report")}
    assert {"report/report.html", "report/report.json", "report/logp_plots.png"} <= logged
    # a second report elsewhere (another split) goes beside the first, not over it
    first = {a.path: a.file_size for a in client.list_artifacts(recorded["run_id"], "report")}
    run_report(["eval", "--run", str(run), "--n_bootstrap", "50", "--data.split", "random",
                "--output", str(tmp_path / "random_split")])  # fmt: skip
    now = {a.path: a.file_size for a in client.list_artifacts(recorded["run_id"], "report")}
    assert {k: now[k] for k in first} == first
    other = {a.path for a in client.list_artifacts(recorded["run_id"], "report/random_split")}
    assert "report/random_split/report.json" in other


def test_report_split_takes_the_configured_entry_of_a_split_file(
    property_csv: Path, tmp_path: Path
) -> None:
    from molml.report.heldout import split_molecules

    rows = [i for i in range(403) if i not in (40, 41, 42)]  # the three invalid rows
    entries = [
        {"train": rows[:300], "val": rows[300:350], "test": rows[350:]},
        {"train": rows[100:], "val": rows[50:100], "test": rows[:50]},
    ]
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps(entries))
    options = {"path": str(property_csv), "target_columns": ["logp"], "split": "predefined"}
    options["split_file"] = str(split_file)
    held = [split_molecules({**options, "split_index": k}) for k in (0, 1)]
    tests = [set(h.smiles[h.split.test]) for h in held]
    table = pd.read_csv(property_csv)
    assert tests[0] == set(table["smiles"].iloc[rows[350:]])
    assert tests[1] == set(table["smiles"].iloc[rows[:50]])


def test_a_cv_fold_run_is_reported_on_its_own_split(property_csv: Path, tmp_path: Path) -> None:
    """A fold run's config names its fold of the folds file; its split.json holds one split."""
    import yaml

    from molml.report.heldout import resolve_run, split_molecules

    run = tmp_path / "fold_2"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").touch()
    rows = [i for i in range(403) if i not in (40, 41, 42)]
    data = {"path": str(property_csv), "target_columns": ["logp"], "split_index": 2}
    (run / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    (run / "split.json").write_text(
        json.dumps([{"train": rows[:300], "val": rows[300:350], "test": rows[350:]}])
    )
    warnings: list[str] = []
    paths, options = resolve_run(run, [], None, warnings)
    assert paths == [run / "checkpoints" / "best.ckpt"] and not warnings
    held = split_molecules(options)
    assert len(held.split.test) == len(rows[350:])


def test_a_run_split_by_a_column_is_reported_on_its_split_json(tmp_path: Path) -> None:
    """The run's split.json replaces its split column, which would otherwise clash with it."""
    import yaml

    from molml.report.heldout import resolve_run, split_molecules

    parts = ["train"] * 20 + ["val"] * 5 + ["test"] * 5
    frame = pd.DataFrame({"smiles": nci_smiles(30), "y": np.arange(30.0), "part": parts})
    frame.to_csv(tmp_path / "parts.csv", index=False)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").touch()
    data = {"path": str(tmp_path / "parts.csv"), "target_columns": ["y"], "split": "predefined"}
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {**data, "split_column": "part"}}))
    split = {"train": list(range(20)), "val": list(range(20, 25)), "test": list(range(25, 30))}
    (run / "split.json").write_text(json.dumps([split]))
    _, options = resolve_run(run, [], None, [])
    held = split_molecules(options)
    assert sorted(held.smiles[held.split.test]) == sorted(frame["smiles"].iloc[25:])
    # a run trained on a fraction of its training part: split.json holds that fraction
    config = {"data": {**data, "split_column": "part", "train_fraction": 0.5}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    split["train"] = list(range(10))
    (run / "split.json").write_text(json.dumps([split]))
    _, options = resolve_run(run, [], None, [])
    held = split_molecules(options)
    assert sorted(held.smiles[held.split.train]) == sorted(frame["smiles"].iloc[:10])


def test_figures_of_tasks_with_units_in_their_names_are_written(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from molml.report.page import Page

    page = Page("t", tmp_path)
    path = page.figure(plt.figure(), "log S (mol/L)_plots")
    assert path == tmp_path / "log_S_mol_L_plots.png" and path.is_file()
    other = page.figure(plt.figure(), "log S [mol/L]_plots")  # the same file name: kept apart
    assert other == tmp_path / "log_S_mol_L_plots_2.png" and other.is_file()


def test_model_names_of_files_in_the_working_directory_have_no_empty_parts() -> None:
    from molml.report.evaluation import _model_names

    names = _model_names([Path("model.onnx"), Path("runs/a/version_0/checkpoints/best.ckpt")])
    assert names == ["model.onnx", "a/version_0/best.ckpt"]


def test_data_report_says_when_the_split_file_leaves_molecules_out(tmp_path: Path) -> None:
    """A split file made for other data (fewer rows) gives the report a warning and
    n_unassigned, as fit does."""
    path = tmp_path / "chains.csv"
    pd.DataFrame(
        {"smiles": [f"C{'C' * i}O" for i in range(30)], "y": np.linspace(0, 3, 30)}
    ).to_csv(path, index=False)
    split_file = tmp_path / "split.json"
    split_file.write_text(
        json.dumps([{"train": list(range(16)), "val": [16, 17], "test": [18, 19]}])
    )
    out = tmp_path / "report"
    run_report(["data", "--data.path", str(path), "--data.split", "predefined",
                "--data.split_file", str(split_file), "--output", str(out)])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["split"]["n_unassigned"] == 10
    assert any("10 of 30 valid molecules are in no part" in w for w in report["warnings"])
