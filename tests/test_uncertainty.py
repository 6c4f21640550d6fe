"""Uncertainty: conformal intervals, probability calibration, mean-variance models, MC dropout,
ensembles, calibration files and their use in screening and the evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import brier_score_loss, roc_auc_score

from molml.cli import main
from molml.errors import CheckpointError, DataError, PredictorError
from molml.models import DMPNN, MoleculeModel
from molml.predict import CalibratedPredictor, EnsemblePredictor, GraphPredictor, load_model
from molml.uncertainty import (
    ConformalInterval,
    ProbabilityCalibration,
    calibration_from_dict,
    conformal_margin,
    expected_calibration_error,
    interval_coverage,
    miscalibration_area,
    regression_uncertainty_scores,
)


def heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets ``y = mu + sigma * noise`` with a known, molecule-dependent ``sigma``."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=n)
    sigma = np.exp(rng.normal(scale=0.7, size=n))
    return mu + sigma * rng.normal(size=n), mu, sigma


def test_conformal_intervals_cover_at_the_requested_level() -> None:
    y_cal, mu_cal, sigma_cal = heteroscedastic(2000, seed=0)
    y, mu, sigma = heteroscedastic(20000, seed=1)
    for level in (0.8, 0.9):
        adaptive = ConformalInterval.fit(y_cal, mu_cal, sigma_cal, level)
        constant = ConformalInterval.fit(y_cal, mu_cal, None, level)
        adaptive_bounds = adaptive.bounds(mu, sigma)
        constant_bounds = constant.bounds(mu, None)
        assert abs(interval_coverage(y, *adaptive_bounds) - level) < 0.02
        assert abs(interval_coverage(y, *constant_bounds) - level) < 0.02
    # at 90% the interval that knows the noise is narrower on average at the same coverage
    width = np.mean(adaptive_bounds[1] - adaptive_bounds[0])
    assert width < 0.95 * np.mean(constant_bounds[1] - constant_bounds[0])
    # with the true sigma the score is |N(0, 1)|: the margin is its 90% quantile
    assert adaptive.margin == pytest.approx(1.645, abs=0.1)


def test_conformal_margin_is_the_finite_sample_quantile() -> None:
    scores = np.arange(1.0, 10.0)  # n = 9: rank ceil(10 * 0.8) = 8
    assert conformal_margin(scores, 0.8) == 8.0
    assert conformal_margin(scores, 0.95) == np.inf  # rank 10 > n
    with pytest.raises(DataError, match="too few"):
        ConformalInterval.fit(np.zeros(5), np.zeros(5), None, 0.95)
    with pytest.raises(DataError, match="between 0 and 1"):
        conformal_margin(scores, 1.5)
    with pytest.raises(DataError, match="no labelled calibration molecule"):
        ConformalInterval.fit(np.full(20, np.nan), np.zeros(20), np.ones(20), 0.9)
    with pytest.raises(DataError, match="standard deviation of 0 .* use --constant-width"):
        ConformalInterval.fit(np.zeros(20), np.zeros(20), np.zeros(20), 0.9)


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities and a model that is far too sure of them."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(scale=1.5, size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-true_logit))).astype(float)
    return y, 1 / (1 + np.exp(-4 * true_logit + 1))


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_probability_calibration_improves_brier(method: str) -> None:
    y_cal, p_cal = overconfident(3000, seed=0)
    y, p = overconfident(5000, seed=1)
    calibration = ProbabilityCalibration.fit(y_cal, p_cal, method)
    calibrated = calibration.transform(p)
    assert brier_score_loss(y, calibrated) < brier_score_loss(y, p) - 0.01
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, p) / 2
    # both maps are strictly increasing: the ranking, and so the ROC-AUC, is kept exactly
    assert roc_auc_score(y, calibrated) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    restored = ProbabilityCalibration(**{**calibration.to_dict(), "kind": "probability"})
    np.testing.assert_allclose(restored.transform(p), calibrated)
    with pytest.raises(DataError, match="both classes"):
        ProbabilityCalibration.fit(np.ones(10), np.full(10, 0.5), method)


def test_platt_on_a_separable_calibration_set_keeps_the_ranking() -> None:
    """Perfectly separated calibration molecules do not drive the slope to infinity: new
    probabilities stay below 1 and as distinct as they came."""
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50), np.ones(50)]
    p = np.r_[rng.uniform(0.01, 0.4, 50), rng.uniform(0.6, 0.99, 50)]
    calibration = ProbabilityCalibration.fit(y, p, "platt")
    assert 0 < calibration.params["a"] < 10
    new = rng.uniform(0.5, 0.999, 1000)
    calibrated = calibration.transform(new)
    assert calibrated.max() < 1 and len(np.unique(calibrated)) == len(np.unique(new))


def test_platt_refuses_to_reverse_a_ranking() -> None:
    y, p = overconfident(500, seed=3)
    with pytest.raises(DataError, match="slope of -.* no better than chance.*isotonic"):
        ProbabilityCalibration.fit(y, 1 - p, "platt")  # a model that ranks backwards
    reversed_isotonic = ProbabilityCalibration.fit(y, 1 - p, "isotonic").transform(1 - p)
    assert roc_auc_score(y, reversed_isotonic) < 0.5  # isotonic keeps the ranking as it is


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("foo", {}, "unknown calibration method 'foo'"),
        ("platt", {"a": -1.0, "b": 0.0}, "reverse the ranking"),
        ("platt", {"a": 1.0}, "finite numbers"),
        ("isotonic", {"x": [0.5, 0.1], "y": [0.2, 0.3]}, "not decreasing"),
        ("isotonic", {"x": [0.1, 0.5], "y": [0.2, 1.5]}, "between 0 and 1"),
        ("isotonic", {"x": [0.1]}, "equally many"),
    ],
)
def test_a_stored_probability_map_is_checked(method: str, params: dict, message: str) -> None:
    """A hand-edited calibration file was used as it was: a negative Platt slope reversed the
    ranking silently, an unknown method failed on its first prediction (KeyError)."""
    stored = {"kind": "probability", "method": method, "params": params, "n_calibration": 3}
    with pytest.raises(DataError, match=message):
        calibration_from_dict(stored)
    y, p = overconfident(200, seed=1)
    for fitted in ("platt", "isotonic"):  # what fit writes loads back
        made = ProbabilityCalibration.fit(y, p, fitted)
        assert calibration_from_dict(made.to_dict()) == made


def test_uncertainty_scores_tell_calibrated_from_overconfident_spread() -> None:
    y, mu, sigma = heteroscedastic(5000, seed=2)
    good = regression_uncertainty_scores(y, mu, sigma)
    shrunk = regression_uncertainty_scores(y, mu, sigma / 3)
    assert good["miscalibration_area"] < 0.02 < 0.2 < shrunk["miscalibration_area"]
    assert good["nll"] < shrunk["nll"]
    assert good["spearman_abs_error"] > 0.3  # |error| grows with the known sigma
    assert miscalibration_area(y, mu, sigma * 3) > 0.2


# ---------------------------------------------------------------------- graph models
def train_model(property_csv: Path, root: Path, **model_args: object) -> Path:
    """A small D-MPNN on logP for three epochs; returns its checkpoint."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from molml.data.datamodule import MoleculeDataModule

    L.seed_everything(0)
    dm = MoleculeDataModule(
        path=str(property_csv), target_columns=["logp"], cache_dir=None, batch_size=32
    )
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=32, depth=2),
        ffn_hidden_dim=32,
        tasks=dm.tasks,
        featurizer=dm.featurizer_config,
        **model_args,
    )
    checkpoint = ModelCheckpoint(dirpath=root, filename="best", monitor="val/rmse")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=dm)
    return Path(checkpoint.best_model_path)


@pytest.fixture(scope="module")
def mve_checkpoints(property_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two mean-variance D-MPNNs with dropout (seeds differ through the data order)."""
    root = tmp_path_factory.mktemp("mve")
    first = train_model(property_csv, root / "a", mean_variance=True, dropout=0.2)
    L.seed_everything(1)
    second = train_model(property_csv, root / "b", mean_variance=True, dropout=0.2, lr=2e-3)
    return [first, second]


def test_mean_variance_model_predicts_std_and_trains_on_gaussian_nll(
    mve_checkpoints: list[Path], property_csv: Path
) -> None:
    predictor = load_model(mve_checkpoints[0])
    assert predictor.prediction_columns() == ["logp", "logp_std"]
    assert predictor.point_columns() == ["logp"]
    smiles = pd.read_csv(property_csv)["smiles"].tolist()[:60]
    frame = predictor.predict(smiles)
    ok = frame["status"] == "ok"
    assert (frame.loc[ok, "logp_std"] > 0).all()
    assert frame.loc[~ok, "logp_std"].isna().all()
    # the loss is the Gaussian NLL of the standardized target under the predicted variance
    model = predictor.model
    batch = predictor._featurize(smiles[:8])[0].batch(0, 8)
    batch.y = torch.randn(batch.num_graphs, 1)
    batch.y_mask = torch.ones_like(batch.y, dtype=torch.bool)
    with torch.no_grad():
        out = model(batch)
        mean, raw = out[:, :1], out[:, 1:]
        var = torch.nn.functional.softplus(raw) + 1e-6
        target = (batch.y - model.target_mean) / model.target_std
        expected = (0.5 * (torch.log(var) + (target - mean) ** 2 / var)).mean()
        assert model.loss(out, batch).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(DataError, match="regression"):
        type(model)(task_type="classification", mean_variance=True)


def test_an_ensemble_of_a_mean_variance_model_and_a_plain_one_says_why_it_is_refused(
    mve_checkpoints: list[Path], property_csv: Path, tmp_path: Path
) -> None:
    plain = train_model(property_csv, tmp_path / "plain")
    with pytest.raises(PredictorError, match="standard deviation or none") as info:
        load_model([mve_checkpoints[0], plain])
    assert str(mve_checkpoints[0]) in str(info.value) and str(plain) in str(info.value)


def test_mc_dropout_is_repeatable_and_needs_dropout(
    mve_checkpoints: list[Path], graph_run: dict, property_csv: Path
) -> None:
    smiles = pd.read_csv(property_csv)["smiles"].tolist()[:30]
    plain = load_model(mve_checkpoints[0]).predict(smiles)
    mc = load_model(mve_checkpoints[0], mc_dropout=10)
    first, second = mc.predict(smiles), mc.predict(smiles)
    pd.testing.assert_frame_equal(first, second)
    ok = first["status"] == "ok"
    assert not np.allclose(first.loc[ok, "logp"], plain.loc[ok, "logp"])
    assert (first.loc[ok, "logp_std"] > 0).all()
    assert mc.metadata["mc_dropout"] == 10
    assert not mc.model.training  # back in eval mode after the passes
    # calls from several threads give what one thread gives (the seed is process-wide)
    from concurrent.futures import ThreadPoolExecutor

    chunks = [smiles[i::3] for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(lambda c: mc.predict(c, batch_size=4), chunks * 2))
    for i, frame in enumerate(threaded):
        pd.testing.assert_frame_equal(frame, mc.predict(chunks[i % 3], batch_size=4))
    with pytest.raises(PredictorError, match="dropout"):
        load_model(graph_run["ckpt"], mc_dropout=5)  # trained without dropout
    with pytest.raises(PredictorError, match="no spread between passes"):  # one pass
        load_model(mve_checkpoints[0], mc_dropout=1)
    # an ensemble of MC-dropout models: spread over members and passes, same columns
    ensemble = load_model(mve_checkpoints, mc_dropout=4)
    assert ensemble.prediction_columns() == ["logp", "logp_std"]
    assert (ensemble.predict(smiles).loc[ok, "logp_std"] > 0).all()


def test_resumed_mc_dropout_screen_keeps_its_batch_size(
    mve_checkpoints: list[Path], property_csv: Path, tmp_path: Path, monkeypatch
) -> None:
    """Dropout masks are drawn per batch: a resume with another batch size mixed values
    of two settings in one file."""
    from molml.screen import run as screen_run
    from molml.screen import screen_library as screen

    library, out = tmp_path / "library.csv", tmp_path / "screened.csv"
    pd.read_csv(property_csv)[["smiles"]].head(60).to_csv(library, index=False)
    common = dict(chunk_size=20, mc_dropout=3, progress=False)

    def crash(*args, **kwargs):
        raise RuntimeError("killed while merging")

    with monkeypatch.context() as patched:
        patched.setattr(screen_run, "merge_parts", crash)
        with pytest.raises(RuntimeError, match="killed"):
            screen([mve_checkpoints[0]], library, out, batch_size=8, **common)
    with pytest.raises(DataError, match="different screen .*batch_size"):
        screen([mve_checkpoints[0]], library, out, batch_size=16, **common)
    summary = screen([mve_checkpoints[0]], library, out, batch_size=8, **common)
    assert summary["resumed_chunks"] == 3


def test_mc_dropout_of_a_model_without_variance_head(property_csv: Path) -> None:
    from molml.data.datamodule import MoleculeDataModule

    featurizer = MoleculeDataModule(path=str(property_csv), target_columns=["logp"])
    model = MoleculeModel(dropout=0.3, tasks=["logp"], featurizer=featurizer.featurizer_config)
    smiles = pd.read_csv(property_csv)["smiles"].tolist()[:20]
    plain = GraphPredictor(model).predict(smiles)
    mc = GraphPredictor(model, mc_dropout=8)
    assert mc.prediction_columns() == ["logp", "logp_std"]
    frame = mc.predict(smiles)
    ok = frame["status"] == "ok"
    assert (frame.loc[ok, "logp_std"] > 0).all()
    assert not np.allclose(frame.loc[ok, "logp"], plain.loc[ok, "logp"])
    # batch norm keeps its running statistics during the passes
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    before = [n.running_mean.clone() for n in norms]
    mc.predict(smiles)
    for norm, mean in zip(norms, before, strict=True):
        assert torch.equal(norm.running_mean, mean)


def test_ensemble_of_mean_variance_models_adds_the_variances(
    mve_checkpoints: list[Path], property_csv: Path
) -> None:
    smiles = pd.read_csv(property_csv)["smiles"].tolist()[:30]
    members = [load_model(c).predict(smiles) for c in mve_checkpoints]
    ensemble = load_model(mve_checkpoints)
    assert isinstance(ensemble, EnsemblePredictor)
    assert ensemble.prediction_columns() == ["logp", "logp_std"]
    frame = ensemble.predict(smiles)
    means = np.stack([m["logp"] for m in members])
    variance = means.var(axis=0) + np.mean([m["logp_std"] ** 2 for m in members], axis=0)
    np.testing.assert_allclose(frame["logp"], means.mean(axis=0))
    np.testing.assert_allclose(frame["logp_std"], np.sqrt(variance))


def test_calibrate_command_writes_a_file_that_screens_and_reports(
    mve_checkpoints: list[Path], property_csv: Path, tmp_path: Path
) -> None:
    calibration = tmp_path / "calibrated.json"
    data = ["--data.path", str(property_csv), "--data.target_columns", "[logp]"]
    main(["calibrate", "--model", str(mve_checkpoints[0]), "--output", str(calibration), *data])
    with pytest.raises(SystemExit) as exit_info:  # a classifier's option on a regression model
        main(["calibrate", "--model", str(mve_checkpoints[0]), "--method", "platt",
              "--output", str(tmp_path / "platt.json"), *data])  # fmt: skip
    assert exit_info.value.code == 2 and not (tmp_path / "platt.json").exists()
    with pytest.raises(SystemExit) as exit_info:  # its intervals would be added twice
        main(["calibrate", "--model", str(calibration), "--output", str(tmp_path / "twice.json"),
              *data])  # fmt: skip
    assert exit_info.value.code == 2 and not (tmp_path / "twice.json").exists()
    manifest = json.loads(calibration.read_text())["calibrated"]
    assert manifest["tasks"]["logp"]["normalized"] is True
    for bad in (-1, "abc", None):  # a hand-edited file is refused on loading
        edited = json.loads(calibration.read_text())
        edited["calibrated"]["tasks"]["logp"]["margin"] = bad
        (tmp_path / "edited.json").write_text(json.dumps(edited))
        with pytest.raises(CheckpointError, match="margin must be a finite number"):
            load_model(tmp_path / "edited.json")
    assert manifest["tasks"]["logp"]["n_calibration"] == 40  # the validation split
    predictor = load_model(calibration)
    assert isinstance(predictor, CalibratedPredictor)
    # its metadata says what it is and where it came from (it said "graph" and the checkpoint)
    info = predictor.metadata
    assert (info["kind"], info["source"]) == ("calibrated", str(calibration))
    assert info["calibrates"]["kind"] == "graph"
    assert Path(info["calibrates"]["source"]).resolve() == mve_checkpoints[0].resolve()
    assert info["tasks"] == ["logp"] and "logp" in info["calibration"]
    assert predictor.prediction_columns() == ["logp", "logp_std", "logp_lower", "logp_upper"]
    smiles = pd.read_csv(property_csv)["smiles"].tolist()[:50]
    frame = predictor.predict(smiles)
    margin = manifest["tasks"]["logp"]["margin"]
    np.testing.assert_allclose(frame["logp_upper"] - frame["logp"], margin * frame["logp_std"])

    # the same file screens a library (resumable screening keeps the extra columns)
    library = tmp_path / "library.csv"
    pd.DataFrame({"smiles": smiles + ["not_a_smiles"]}).to_csv(library, index=False)
    output = tmp_path / "screened.csv"
    main(["screen", "--model", str(calibration), "--input", str(library), "--output",
          str(output), "--num-workers", "0", "--precision", "32-true",
          "--no-progress"])  # fmt: skip
    screened = pd.read_csv(output)
    np.testing.assert_allclose(screened["logp_lower"][:50], frame["logp_lower"], rtol=1e-5)
    assert screened["status"].iloc[-1] != "ok" and np.isnan(screened["logp_lower"].iloc[-1])

    # and the evaluation report scores its interval and its standard deviation
    report_dir = tmp_path / "report"
    models = ["--model", str(mve_checkpoints[0]), "--model", str(calibration)]
    main(["report", "eval", *models, "--output", str(report_dir), *data])
    report = json.loads((report_dir / "report.json").read_text())
    raw, scores = report["tasks"]["logp"]["uncertainty"].values()
    assert raw["interval_level"] is None and "coverage" not in raw
    assert scores["interval_level"] == 0.9
    assert 0 < scores["coverage"] <= 1 and scores["mean_width"] > 0
    assert -1 <= scores["spearman_abs_error"] <= 1
    html = (report_dir / "report.html").read_text()
    assert "logp_uncertainty" in html and (report_dir / "logp_uncertainty.png").is_file()
    assert "<th>coverage</th>" in html  # a column only the second model has


def test_calibrated_ensemble_and_its_refusals(
    mve_checkpoints: list[Path], property_csv: Path, tmp_path: Path
) -> None:
    data = ["--data.path", str(property_csv), "--data.target_columns", "[logp]"]
    models = [arg for c in mve_checkpoints for arg in ("--model", str(c))]
    path = tmp_path / "ensemble_intervals.json"
    main(["calibrate", *models, "--mc-dropout", "3", "--output", str(path), *data])
    calibrated = load_model(path)
    assert isinstance(calibrated.base, EnsemblePredictor) and len(calibrated.members) == 2
    assert all(m.mc_dropout == 3 for m in calibrated.members)
    frame = calibrated.predict(pd.read_csv(property_csv)["smiles"].tolist()[:10])
    assert (frame["logp_lower"] < frame["logp_upper"]).all()
    with pytest.raises(PredictorError, match="calibrated with mc_dropout=3"):
        load_model(path, mc_dropout=5)
    with pytest.raises(CheckpointError, match="calibrate the ensemble instead"):
        load_model([path, mve_checkpoints[0]])
    # from Python: the file records the models and MC dropout passes the predictor has
    table = pd.read_csv(property_csv).iloc[:40]
    mc = load_model(mve_checkpoints[0], mc_dropout=3)
    fitted = CalibratedPredictor.fit(mc, table["smiles"].tolist(), table["logp"].to_numpy())
    again = load_model(fitted.save(tmp_path / "mc.json"))
    assert again.prediction_columns() == fitted.prediction_columns()
    assert [m.mc_dropout for m in again.members] == [3]
    pd.testing.assert_frame_equal(again.predict(smiles := table["smiles"].tolist()[:5]),
                                  fitted.predict(smiles))  # fmt: skip
    in_memory = CalibratedPredictor(GraphPredictor(mc.model), fitted.calibrations)
    with pytest.raises(CheckpointError, match="not loaded from a file"):
        in_memory.save(tmp_path / "nowhere.json")
    assert not (tmp_path / "nowhere.json").exists()


def test_multitask_tasks_without_calibration_data_pass_through(property_csv: Path) -> None:
    """With sparse multitask labels one task without validation labels (or of one class)
    refused the whole calibration; the tasks that can be calibrated now are."""
    from molml.data.datamodule import MoleculeDataModule

    featurizer = MoleculeDataModule(path=str(property_csv), target_columns=["logp"])
    torch.manual_seed(0)
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=16, depth=2),
        tasks=["a", "b"],
        task_type="classification",
        featurizer=featurizer.featurizer_config,
    )
    base = GraphPredictor(model)
    smiles = pd.read_csv(property_csv)["smiles"].tolist()[:60]
    rng = np.random.default_rng(0)
    targets = np.column_stack([rng.integers(0, 2, 60), np.ones(60)]).astype(float)
    calibrated = CalibratedPredictor.fit(base, smiles, targets)
    assert list(calibrated.calibrations) == ["a"]
    assert "one class only (1)" in calibrated.fitted_on["uncalibrated_tasks"]["b"]
    assert any("1 of 2 tasks are left uncalibrated" in w for w in calibrated.fitted_on["warnings"])
    raw, out = base.predict(smiles), calibrated.predict(smiles)
    np.testing.assert_allclose(out["b"], raw["b"])  # passes through
    assert not np.allclose(out["a"], raw["a"])
    with pytest.raises(DataError, match="no task can be calibrated: task .a.: one class.*'b'"):
        CalibratedPredictor.fit(base, smiles, np.ones((60, 2)))


def test_calibrated_classifier_keeps_its_ranking(classification_runs: dict, tmp_path: Path) -> None:
    from molml.report.calibrate import calibrate
    from molml.report.heldout import run_models

    run = classification_runs["graph"]
    base = load_model(run_models(run)[0])
    calibrated = calibrate(
        run=run, models=[], options=None, output=tmp_path / "platt.json", method="platt"
    )
    assert calibrated.calibrations["active"].method == "platt"
    assert calibrated.fitted_on["warnings"] == []  # its own validation split
    # labels that are numbers, not classes: the map was fitted to them (clipped to 0..1)
    frame = pd.read_csv(calibrated.fitted_on["data"])
    frame["active"] = np.linspace(-3.0, 2.0, len(frame))
    frame.to_csv(tmp_path / "numbers.csv", index=False)
    with pytest.raises(DataError, match="classification .*regression tasks"):
        calibrate(run=run, models=[], options={"path": str(tmp_path / "numbers.csv")},
                  output=tmp_path / "numbers.json")  # fmt: skip
    with pytest.raises(DataError, match="needs 0/1 labels"):
        ProbabilityCalibration.fit(np.array([0.0, 1.0, 2.0]), np.array([0.1, 0.5, 0.9]))
    # the output must not replace the model it calibrates, nor a run's records
    manifest = tmp_path / "pair.json"  # an ensemble of the run's model and itself
    manifest.write_text(json.dumps({"ensemble": [str(run_models(run)[0])]}))
    for path, models, message in (
        (manifest, [str(manifest)], "would overwrite the model being calibrated"),
        (run / "split.json", [], "exists and is not a calibration file"),
    ):
        before = path.read_bytes()
        with pytest.raises(DataError, match=message):
            calibrate(run=run, models=models, options=None, output=path)
        assert path.read_bytes() == before
    again = calibrate(run=run, models=[], options=None, output=tmp_path / "platt.json")
    assert again.calibrations["active"].method == "isotonic"  # a calibration file is replaced
    calibrated = calibrate(
        run=run, models=[], options=None, output=tmp_path / "platt.json", method="platt"
    )
    with pytest.raises(DataError, match="--level 0.5 is the coverage of regression intervals"):
        calibrate(run=run, models=[], options=None, output=tmp_path / "l.json", level=0.5)
    # another split (a data option alone goes over the run's data, from the command line
    # too): its validation molecules may be the model's training molecules
    main(["calibrate", "--run", str(run), "--data.split_seed", "3", "--method", "platt",
          "--output", str(tmp_path / "x.json")])  # fmt: skip
    elsewhere = json.loads((tmp_path / "x.json").read_text())["calibrated"]["fitted_on"]
    assert any("another training part" in w for w in elsewhere["warnings"])
    smiles = pd.read_csv(calibrated.fitted_on["data"])["smiles"].iloc[:80].tolist()
    raw, tuned = base.predict(smiles), load_model(tmp_path / "platt.json").predict(smiles)
    ok = (raw["status"] == "ok").to_numpy()
    assert not np.allclose(raw.loc[ok, "active"], tuned.loc[ok, "active"])
    order = np.argsort(raw.loc[ok, "active"].to_numpy(), kind="stable")
    assert np.all(np.diff(tuned.loc[ok, "active"].to_numpy()[order]) >= -1e-12)
    with pytest.raises(CheckpointError, match="not among"):
        CalibratedPredictor(base, {"other": calibrated.calibrations["active"]})
    with pytest.raises(DataError, match="level=0.5 does not apply to a classification model"):
        CalibratedPredictor.fit(base, smiles, np.zeros(len(smiles)), level=0.5)
    # screened in fp32 unless told otherwise, on any CPU: a calibration map's steps would
    # turn bf16's shifts of the raw probability into large ones
    library, screened = tmp_path / "library.csv", tmp_path / "screened.csv"
    pd.DataFrame({"smiles": smiles}).to_csv(library, index=False)
    main(["screen", "--model", str(tmp_path / "platt.json"), "--input", str(library),
          "--output", str(screened), "--num-workers", "0", "--no-progress"])  # fmt: skip
    summary = json.loads(screened.with_name("screened.csv.summary.json").read_text())
    assert summary["precision"] == "32-true"
    np.testing.assert_allclose(pd.read_csv(screened)["active"], tuned["active"], rtol=1e-5)
    # its explanations: the underlying model's logit explained, the calibrated value shown
    from molml.explain import explain

    explained = explain(load_model(tmp_path / "platt.json"), smiles[:3], steps=8)
    np.testing.assert_allclose([e.prediction for e in explained], tuned["active"][:3], rtol=1e-5)
    raw_explained = explain(base, smiles[:3], steps=8)
    assert [e.explained_value for e in explained] == [e.explained_value for e in raw_explained]


def test_calibration_refuses_bad_requests(
    graph_run: dict, property_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    base = GraphPredictor(graph_run["model"])
    smiles = pd.read_csv(property_csv)["smiles"].tolist()[:20]
    targets = np.zeros((20, 2))
    with pytest.raises(DataError, match="standard deviation"):
        CalibratedPredictor.fit(base, smiles, targets, normalized=True)
    with pytest.raises(DataError, match=r"shape \(20, 2\) for 20 molecules.*got shape \(19, 2\)"):
        CalibratedPredictor.fit(base, smiles, targets[:19])
    with pytest.raises(DataError, match="method='platt' does not apply to a regression model"):
        CalibratedPredictor.fit(base, smiles, targets, method="platt")
    multiclass = MoleculeModel(tasks=["c"], task_type="multiclass", num_classes=3,
                               encoder=DMPNN(hidden_dim=8, depth=1))  # fmt: skip
    with pytest.raises(DataError, match="this one is multiclass"):  # before it predicts
        CalibratedPredictor.fit(GraphPredictor(multiclass), smiles, targets[:, :1])
    for level in ("nan", "1.5", "0"):  # refused before any model loads
        with pytest.raises(SystemExit) as info:
            main(["calibrate", "--model", "x.ckpt", "--level", level, "--output", "c.json"])
        assert info.value.code == 2
        assert f"--level {float(level)}: the interval level must be between 0 and 1" in (
            capsys.readouterr().err
        )
    with pytest.raises(SystemExit):
        main(["calibrate", "--model", "x.ckpt", "--output", "out.yaml", "--data.path", "x.csv"])
    assert "must end in .json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "--model", "x.ckpt", "--output", "no/such/dir/c.json"])
    assert "directory no/such/dir does not exist" in capsys.readouterr().err
    assert not Path("no").exists()
