"""The predictor layer: one ``Predictor`` interface for graph checkpoints, fingerprint baselines
and ensembles of both, and ``load_model`` refusing checkpoints it must not trust. Runs on data
the tests generate (RDKit's NCI molecules with RDKit-computed targets), no download needed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import molml
from molml.baselines import (
    BaselineConfig,
    DataConfig,
    EstimatorConfig,
    FeaturesConfig,
    fit_baseline,
)
from molml.errors import CheckpointError, DataError, PredictorError
from molml.models import Encoder, MoleculeModel
from molml.predict import BaselinePredictor, EnsemblePredictor, GraphPredictor, Predictor
from molml.screen import screen_library

TASKS = ["logp", "tpsa"]
PROBE = ["CCO", "c1ccccc1O", "C1CC", "CC(=O)Nc1ccc(O)cc1", "[Na+].[Cl-]", "C"]


@pytest.fixture(scope="module")
def baseline_dir(property_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = BaselineConfig(
        data=DataConfig(path=str(property_csv), target_columns=TASKS),
        features=FeaturesConfig(name="ecfp4", params={"n_bits": 1024, "counts": True}, n_jobs=1),
        estimator=EstimatorConfig(name="xgboost", params={"n_estimators": 60, "max_depth": 4}),
    )
    directory = tmp_path_factory.mktemp("baseline") / "model"
    fit_baseline(config).model.save(directory)
    return directory


def test_graph_checkpoint_loads_as_a_predictor_equal_to_the_trained_model(graph_run) -> None:
    predictor = molml.load_model(graph_run["ckpt"])
    assert isinstance(predictor, GraphPredictor) and isinstance(predictor, Predictor)
    assert predictor.tasks == TASKS and predictor.task_type == "regression"
    trained = GraphPredictor(graph_run["model"]).predict(PROBE)
    loaded = predictor.predict(PROBE)
    pd.testing.assert_frame_equal(trained, loaded, atol=1e-6)
    assert loaded["status"].tolist()[2].startswith("invalid SMILES")
    assert (loaded["status"].drop(index=2) == "ok").all()
    embedding = predictor.embed(PROBE)
    assert embedding.shape == (len(PROBE), 48) and np.isnan(embedding[2]).all()


def test_metadata_names_version_training_data_test_metrics_and_featurizer(graph_run) -> None:
    meta = molml.load_model(graph_run["ckpt"]).metadata
    dm = graph_run["dm"]
    assert meta["kind"] == "graph" and meta["molml_version"] == molml.__version__
    assert meta["encoder"] == "DMPNN" and meta["encoder_args"]["hidden_dim"] == 48
    data = meta["training_data"]
    assert data["name"] == "nci_props" and data["rows"] == len(dm.table) == 403
    assert (data["train"], data["val"], data["test"]) == tuple(map(len, dm.split.parts()))
    assert meta["test_metrics"]["rmse"] == pytest.approx(graph_run["tested"]["test/rmse"])
    assert meta["featurizer"]["graph"] == dm.featurizer_config


def test_inputs_are_read_the_same_by_every_predictor(graph_run, baseline_dir, tmp_path) -> None:
    for predictor in (
        molml.load_model(graph_run["ckpt"]),
        molml.load_model(baseline_dir),
        molml.load_model([graph_run["ckpt"], baseline_dir]),
    ):
        values, status = predictor.predict_values("CCO", 8)  # one molecule, not three atoms
        assert len(values) == 1 and status == ["ok"]
        with pytest.raises(DataError, match="batch_size"):
            predictor.predict_values(["CCO"], 0)
        with pytest.raises(DataError, match=r"DataFrame; pass its SMILES column"):
            predictor.predict(pd.DataFrame({"smiles": PROBE}))
        with pytest.raises(DataError, match="got a set"):
            predictor.predict({"CCO", "CCN"})
        # a filtered Series keeps its index, so the result lines up with its frame
        frame = pd.DataFrame({"smiles": PROBE}, index=range(10, 10 + len(PROBE)))
        subset = frame[frame.index % 2 == 1]
        predicted = predictor.predict(subset["smiles"])
        assert predicted.index.tolist() == subset.index.tolist()
        assert (predicted["smiles"] == subset["smiles"]).all()


def test_load_model_refuses_cycles_and_devices_it_cannot_use(graph_run, tmp_path) -> None:
    manifest = tmp_path / "self.json"
    manifest.write_text(f'{{"ensemble": ["self.json", "{graph_run["ckpt"]}"]}}')
    with pytest.raises(CheckpointError, match="refers back to itself"):
        molml.load_model(manifest)
    with pytest.raises(DataError, match="not a device"):
        molml.load_model(graph_run["ckpt"], map_location="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(DataError, match=r"no cuda device is available here \(.*: cpu"):
            molml.load_model(graph_run["ckpt"], map_location="cuda")
    # a device of a type this machine lacks, or the meta device, is the option's fault: it
    # used to be reported as a damaged checkpoint
    with pytest.raises(DataError, match="models cannot run on the meta device"):
        molml.load_model(graph_run["ckpt"], map_location="meta")
    if not torch.backends.mps.is_available():
        with pytest.raises(DataError, match="no mps device is available here"):
            molml.load_model(graph_run["ckpt"], map_location="mps")
    if torch.cuda.is_available():
        with pytest.raises(DataError, match="numbered from 0"):
            molml.load_model(graph_run["ckpt"], map_location=f"cuda:{torch.cuda.device_count()}")
    # the model is put on the device asked for ("cpu:0" used to fail to load)
    on_cpu = molml.load_model(graph_run["ckpt"], map_location=torch.device("cpu", 0))
    assert on_cpu.model.device.type == "cpu"
    assert not on_cpu.predict(["CCO"])["status"].ne("ok").any()
    with pytest.raises(DataError, match="a model path or a list of paths"):
        molml.load_model(5)


def test_baseline_loads_as_a_predictor_equal_to_the_baseline_model(baseline_dir: Path) -> None:
    predictor = molml.load_model(baseline_dir)
    assert isinstance(predictor, BaselinePredictor)
    pd.testing.assert_frame_equal(predictor.predict(PROBE), predictor.model.predict(PROBE))
    assert predictor.metadata["estimator"] == "xgboost" and predictor.tasks == TASKS


def test_mixed_ensemble_is_the_mean_and_spread_of_its_members(graph_run, baseline_dir) -> None:
    ensemble = molml.load_model([graph_run["ckpt"], baseline_dir])
    assert isinstance(ensemble, EnsemblePredictor) and len(ensemble.members) == 2
    assert ensemble.prediction_columns() == [*TASKS, "logp_std", "tpsa_std"]
    got = ensemble.predict(PROBE)
    members = [m.predict(PROBE)[TASKS].to_numpy() for m in ensemble.members]
    ok = (got["status"] == "ok").to_numpy()
    np.testing.assert_allclose(got.loc[ok, TASKS], np.mean(members, axis=0)[ok], atol=1e-9)
    np.testing.assert_allclose(
        got.loc[ok, ["logp_std", "tpsa_std"]], np.std(members, axis=0)[ok], atol=1e-9
    )
    assert got.loc[~ok, TASKS].isna().all().all()
    with pytest.raises(PredictorError, match="no molecule embedding"):
        ensemble.embed(PROBE)


def test_screening_an_ensemble_equals_predicting_with_it(graph_run, baseline_dir, tmp_path):
    library = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": PROBE}).to_csv(library, index=False)
    out = tmp_path / "scores.csv"
    screen_library(
        [graph_run["ckpt"], baseline_dir], library, out, progress=False, precision="32-true"
    )
    screened = pd.read_csv(out)
    predicted = molml.load_model([graph_run["ckpt"], baseline_dir]).predict(PROBE)
    assert screened["status"].tolist() == predicted["status"].tolist()
    columns = [*TASKS, "logp_std", "tpsa_std"]
    np.testing.assert_allclose(screened[columns], predicted[columns], atol=1e-5)


@pytest.mark.parametrize("kind", ["graph", "baseline", "ensemble"])
def test_every_predictor_takes_the_same_inputs(kind, graph_run, baseline_dir) -> None:
    paths = {
        "graph": graph_run["ckpt"],
        "baseline": baseline_dir,
        "ensemble": [graph_run["ckpt"], baseline_dir],
    }
    predictor = molml.load_model(paths[kind])
    one = predictor.predict("CCO")  # a string is one molecule, not three letters
    assert len(one) == 1 and one["smiles"][0] == "CCO" and one["status"][0] == "ok"
    empty = predictor.predict([])
    assert len(empty) == 0 and list(empty.columns) == list(one.columns)
    from_generator = predictor.predict(s for s in ["CCO", "CCN"])
    assert from_generator["smiles"].tolist() == ["CCO", "CCN"]
    odd = predictor.predict(["CCO", None, float("nan"), 5, "C\ud800C"])  # a lone surrogate
    assert odd["status"].tolist()[0] == "ok" and (odd["status"][1:] != "ok").all()
    assert "not valid UTF-8" in odd["status"].iloc[-1]
    for bad in (None, 42):
        with pytest.raises(DataError, match="expected a SMILES string"):
            predictor.predict(bad)
    for batch_size in (0, -1, 2.5):
        with pytest.raises(DataError, match="batch_size"):
            predictor.predict(["CCO"], batch_size=batch_size)


def test_a_non_finite_prediction_is_never_ok(graph_run) -> None:
    predictor = molml.load_model(graph_run["ckpt"])
    with torch.no_grad():
        predictor.model.head[-1].weight.fill_(float("nan"))
    frame = predictor.predict(["CCO", "C1CC"])
    assert frame["status"].tolist()[0] == "non-finite prediction"
    assert frame["status"][1].startswith("invalid SMILES")


def _tampered(checkpoint: Path, tmp_path: Path, change) -> Path:
    blob = torch.load(checkpoint, weights_only=True)
    change(blob["molml"])
    path = tmp_path / "tampered.ckpt"
    torch.save(blob, path)
    return path


def test_a_checkpoint_naming_an_outside_module_is_refused_without_importing_it(
    graph_run, tmp_path: Path
) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "planted_encoder.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from molml.models import DMPNN\n"
        "class Evil(DMPNN):\n    pass\n"
    )
    crafted = _tampered(
        graph_run["ckpt"],
        tmp_path,
        lambda spec: spec["encoder"].update(class_path="planted_encoder.Evil"),
    )
    code = (
        "import sys, molml\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "try:\n"
        f"    molml.load_model({str(crafted)!r})\n"
        "except molml.errors.CheckpointError as exc:\n"
        "    print('refused:', exc)\n"
        "print('planted_encoder' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "refused:" in result.stdout and "not a registered molml encoder" in result.stdout
    assert "register_encoder" in result.stdout
    assert result.stdout.strip().endswith("False") and not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["encoder"].update(class_path="molml.models.encoders.Encoder"), "registered"),
        (lambda s: s["encoder"].update(class_path="os.system"), "registered"),
        (lambda s: s["encoder"]["init_args"].update(hidden_dim=200_000), "do not fit"),
        (lambda s: s["encoder"]["init_args"].update(depth=10**9), "outside 1..100"),
        (lambda s: s["encoder"].update(init_args=["x"]), "malformed encoder arguments"),
        (lambda s: s["hparams"].update(ffn_hidden_dim=-5), "incomplete or invalid"),
        (lambda s: s.update(encoder="DMPNN"), "no encoder class"),
    ],
    ids=["abstract", "stdlib", "huge", "deep", "args", "negative", "no-class"],
)
def test_crafted_specs_are_refused_quickly(graph_run, tmp_path, change, message) -> None:
    crafted = _tampered(graph_run["ckpt"], tmp_path, change)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        molml.load_model(crafted)
    assert time.perf_counter() - started < 10  # refused before building anything huge


def test_changed_weights_are_refused_and_older_checkpoints_without_a_digest_load(
    graph_run, tmp_path: Path
) -> None:
    """A checkpoint records the SHA-256 of its weights when saved: one whose weights were
    changed since (same size, same format: torch's reader does not notice) is refused, as is
    a changed copy of a shipped pretrained encoder; one written before the digest loads."""
    from molml.models.pretrained import pretrained_path, read_pretrained

    blob = torch.load(graph_run["ckpt"], weights_only=True)
    assert blob["molml"]["weights_sha256"]
    first = next(name for name in blob["state_dict"] if name.endswith("weight"))
    blob["state_dict"][first][0, 0] += 1.0
    changed = tmp_path / "changed.ckpt"
    torch.save(blob, changed)
    with pytest.raises(CheckpointError, match="changed.ckpt: its weights are not the ones"):
        molml.load_model(changed)
    del blob["molml"]["weights_sha256"]  # as molml wrote checkpoints before it kept the digest
    older = tmp_path / "older.ckpt"
    torch.save(blob, older)
    assert molml.load_model(older).predict(["CCO"])["status"].tolist() == ["ok"]
    shipped = torch.load(pretrained_path("zinc-dmpnn"), weights_only=True)
    shipped["state_dict"]["encoder.W_o.weight"][0, 0] += 1.0
    torch.save(shipped, tmp_path / "zinc.ckpt")
    with pytest.raises(CheckpointError, match="zinc.ckpt: its weights are not the ones"):
        read_pretrained(str(tmp_path / "zinc.ckpt"))
    read_pretrained("zinc-dmpnn")  # the shipped file itself is intact


def test_a_url_is_not_fetched() -> None:
    with pytest.raises(CheckpointError, match="not URLs"):
        molml.load_model("https://example.org/model.ckpt")


def test_registered_user_encoders_load(property_csv: Path, tmp_path: Path) -> None:
    class Plain(Encoder):
        """Atom embeddings passed through one linear layer (no message passing)."""

        def __init__(self, hidden_dim: int = 16) -> None:
            super().__init__(hidden_dim=hidden_dim)
            self.hidden_dim = self.out_dim = hidden_dim
            self.linear = torch.nn.Linear(hidden_dim, hidden_dim)

        def forward(self, x, edge_index, edge_attr, batch):
            return self.linear(x)

    model = MoleculeModel(encoder=Plain(), ffn_hidden_dim=16, tasks=["logp"])
    path = tmp_path / "plain.ckpt"
    torch.save({"molml": model.spec(), "state_dict": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="not a registered"):
        molml.load_model(path)
    molml.register_encoder(Plain)
    expected = GraphPredictor(model).predict(PROBE)
    pd.testing.assert_frame_equal(molml.load_model(path).predict(PROBE), expected)
    with pytest.raises(TypeError):
        molml.register_encoder(Encoder)

    class Scaled(Plain):
        """A subclass whose new argument is not recorded: a checkpoint rebuilt it with
        scale 1.0 and predicted other numbers, silently."""

        def __init__(self, hidden_dim: int = 16, scale: float = 1.0) -> None:
            super().__init__(hidden_dim=hidden_dim)
            self.scale = scale

    scaled = MoleculeModel(encoder=Scaled(scale=5.0), ffn_hidden_dim=16, tasks=["logp"])
    with pytest.raises(DataError, match=r"Scaled takes \['scale'\] but does not record them"):
        scaled.setup("fit")  # refused when training starts
    molml.register_encoder(Scaled)  # a checkpoint of it still loads (with scale's default)
    scaled_path = tmp_path / "scaled.ckpt"
    torch.save({"molml": scaled.spec(), "state_dict": scaled.state_dict()}, scaled_path)
    assert molml.load_model(scaled_path).model.encoder.scale == 1.0
