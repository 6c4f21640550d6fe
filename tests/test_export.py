"""``molml export``: ONNX and torch.export files reproduce the PyTorch model, on molecules of
very different sizes in one batch, and the ONNX file is a Predictor like the checkpoint."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from conftest import INVALID_SMILES, nci_smiles
from torch.overrides import TorchFunctionMode

import molml
from molml.cli import main
from molml.data.graphs import featurize_block
from molml.errors import CheckpointError, DataError, ExportError
from molml.export import export_model
from molml.models import (
    DMPNN,
    GINE,
    GPS,
    PNA,
    AttentiveFP,
    Encoder,
    GATv2,
    Graphormer,
    MoleculeModel,
    register_encoder,
)
from molml.predict import GraphPredictor, OnnxPredictor
from molml.predict.onnx import batch_arrays
from molml.predict.pt2 import PT2_METADATA_FILE

# one atom, a salt without bonds, a 66-heavy-atom chain, and ordinary molecules
LONG_CHAIN = "C" * 60 + "c1ccccc1"
MIXED_BATCH = ["C", "[Na+].[Cl-]", LONG_CHAIN, "CCO", "c1ccc2ccccc2c1C(=O)O"]
TOLERANCE = 1e-4

EXPORTABLE = {
    "dmpnn": lambda: (DMPNN(32, 2), "mean"),
    "gine": lambda: (GINE(32, 2), "sum"),
    "gatv2": lambda: (GATv2(32, 2), "max"),
    "attentivefp": lambda: (AttentiveFP(32, 2), "attentivefp"),
    "pna": lambda: (PNA(30, 2), "mean"),
    "gps": lambda: (GPS(32, 2), "sum"),
    "graphormer": lambda: (Graphormer(32, 2), "mean"),
}


def untrained_checkpoint(path: Path, encoder, readout: str = "mean", **kwargs) -> Path:
    """A loadable checkpoint with random weights and a non-trivial target scaling (parity
    does not need a trained model)."""
    torch.manual_seed(0)
    model = MoleculeModel(encoder=encoder, readout=readout, ffn_hidden_dim=32, **kwargs)
    if model.task_type == "regression":
        model.target_mean.fill_(3.0)
        model.target_std.fill_(2.5)
    torch.save({"molml": model.spec(), "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "sample.smi"
    path.write_text("\n".join([LONG_CHAIN, *nci_smiles(20)]) + "\n")
    return path


def mixed_inputs(predictor: GraphPredictor) -> dict[str, np.ndarray]:
    arrays, errors, _, _ = featurize_block(predictor.model.featurizer, MIXED_BATCH)
    assert not errors and arrays["n_atoms"].max() >= 60 and arrays["n_edges"][:2].sum() == 0
    return batch_arrays(arrays, 0, len(MIXED_BATCH))


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("name", sorted(EXPORTABLE))
def test_export_matches_pytorch_on_one_mixed_batch(
    name: str, fmt: str, sample_file: Path, tmp_path: Path
) -> None:
    encoder, readout = EXPORTABLE[name]()
    ckpt = untrained_checkpoint(tmp_path / f"{name}.ckpt", encoder, readout, tasks=["a", "b"])
    result = export_model(ckpt, format=fmt, sample=sample_file)
    assert result.path == tmp_path / f"{name}.{fmt}" and result.passed
    assert result.molecules == 23 and set(result.max_abs_diff) == {"a", "b"}

    predictor = molml.load_model(ckpt)
    expected = predictor.predict(MIXED_BATCH)[["a", "b"]].to_numpy()
    inputs = mixed_inputs(predictor)
    names = molml.load_model(result.path).metadata["inputs"]
    assert ("atom_slots" in names) == (name in ("gps", "graphormer"))
    inputs = {name: inputs[name] for name in names}
    if fmt == "onnx":
        session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == names
        got = session.run(None, inputs)[0]
    else:
        module = torch.export.load(result.path).module()
        got = module(**{k: torch.from_numpy(v) for k, v in inputs.items()}).detach().numpy()
    assert got.shape == (len(MIXED_BATCH), 2)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    assert np.ptp(expected[:, 0]) > 1e-3  # the molecules really differ, so the check has teeth


def test_pt2_file_carries_the_metadata(graph_run: dict, tmp_path: Path) -> None:
    output = tmp_path / "model.pt2"
    export_model(graph_run["ckpt"], output, format="pt2", sample=None)
    extra = {PT2_METADATA_FILE: ""}
    torch.export.load(output, extra_files=extra)
    meta = json.loads(extra[PT2_METADATA_FILE])
    assert meta["tasks"] == ["logp", "tpsa"] and meta["parity"]["molecules"] == 202
    # and molml.load_model runs it: the checkpoint's frame, invalid molecules included
    smiles = ["CCO", "c1ccccc1O", "C1CC", "CC(=O)Nc1ccc(O)cc1"]
    exported = molml.load_model(output)
    assert exported.kind == "pt2" and exported.metadata["tasks"] == ["logp", "tpsa"]
    got = exported.predict(smiles)
    expected = molml.load_model(graph_run["ckpt"]).predict(smiles)
    assert got["status"].tolist() == expected["status"].tolist()
    np.testing.assert_allclose(got[["logp", "tpsa"]], expected[["logp", "tpsa"]], atol=1e-4)
    # pickled (as for a process pool) or copied, it loads its file again
    for again in (pickle.loads(pickle.dumps(exported)), copy.deepcopy(exported)):
        pd.testing.assert_frame_equal(again.predict(smiles), got)
    (tmp_path / "bad.pt2").write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match="bad.pt2 is not a torch.export program"):
        molml.load_model(tmp_path / "bad.pt2")


def test_onnx_predictor_gives_the_checkpoints_frame(
    graph_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "model.onnx"
    main(["export", "--model", str(graph_run["ckpt"]), "--output", str(output)])
    printed = capsys.readouterr().out
    assert f"wrote {output} (onnx)" in printed and "parity ok" in printed

    onnx_model = molml.load_model(output)
    assert isinstance(onnx_model, OnnxPredictor)
    one_thread = molml.load_model([output, output], threads=1).members[0]  # as serve loads
    assert one_thread.session.get_session_options().intra_op_num_threads == 1
    # pickled (as for a process pool) or copied, it opens its file again, threads kept
    for again in (pickle.loads(pickle.dumps(one_thread)), copy.deepcopy(one_thread)):
        assert again.session.get_session_options().intra_op_num_threads == 1
        pd.testing.assert_frame_equal(again.predict(["CCO", "C1CC"]),
                                      one_thread.predict(["CCO", "C1CC"]))  # fmt: skip
    graph = molml.load_model(graph_run["ckpt"])
    assert onnx_model.tasks == graph.tasks and onnx_model.task_type == graph.task_type
    meta = onnx_model.metadata
    assert meta["featurizer"] == graph.featurization and meta["encoder"] == "DMPNN"
    assert meta["training_data"] == graph.metadata["training_data"]
    assert max(meta["parity"]["max_abs_diff"].values()) <= TOLERANCE
    assert meta["parity"]["molecules"] == 202  # 200 NCI molecules + the two edge cases

    smiles = [*nci_smiles(30), *INVALID_SMILES, "C", "[Na+].[Cl-]", LONG_CHAIN]
    got, expected = onnx_model.predict(smiles, batch_size=7), graph.predict(smiles)
    assert list(got.columns) == list(expected.columns)
    assert got["status"].tolist() == expected["status"].tolist()
    assert (got["status"] != "ok").sum() == len(INVALID_SMILES)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=TOLERANCE, rtol=0)


class _NoTorch(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        raise AssertionError(f"torch was called: {func}")


def test_onnx_prediction_path_never_calls_torch(graph_run: dict, tmp_path: Path) -> None:
    output = export_model(graph_run["ckpt"], tmp_path / "model.onnx").path
    predictor = molml.load_model(output)
    with _NoTorch():
        frame = predictor.predict(["CCO", "C1CC", "c1ccccc1"])
    assert frame["status"].tolist()[::2] == ["ok", "ok"]
    with pytest.raises(AssertionError, match="torch was called"), _NoTorch():
        torch.zeros(1) + 1  # the guard itself works


def test_screen_accepts_the_onnx_file(graph_run: dict, tmp_path: Path) -> None:
    output = export_model(graph_run["ckpt"], tmp_path / "model.onnx").path
    library = tmp_path / "library.smi"
    smiles = [*nci_smiles(40), "C1CC"]
    library.write_text("\n".join(f"{s} m{i}" for i, s in enumerate(smiles)) + "\n")
    scores = tmp_path / "scores.csv"
    main(["screen", "--model", str(output), "--input", str(library), "--output", str(scores)])
    frame = pd.read_csv(scores)
    expected = molml.load_model(graph_run["ckpt"]).predict(smiles)
    assert len(frame) == len(smiles) and frame["status"].tolist() == expected["status"].tolist()
    np.testing.assert_allclose(frame["logp"], expected["logp"], atol=TOLERANCE, equal_nan=True)


def test_onnx_without_molml_metadata_is_refused(graph_run: dict, tmp_path: Path) -> None:
    exported = export_model(graph_run["ckpt"], tmp_path / "model.onnx").path
    proto = onnx.load(str(exported))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(CheckpointError, match="without molml metadata.*molml export"):
        molml.load_model(bare)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        molml.load_model(tmp_path / "junk.onnx")


def test_classification_with_molecule_features(tmp_path: Path) -> None:
    """Sigmoid and the molecule-level features (standardized inside) are part of the file."""
    ckpt = untrained_checkpoint(
        tmp_path / "clf.ckpt",
        DMPNN(32, 2),
        tasks=["active"],
        task_type="classification",
        molecule_features={"class": "maccs"},
    )
    exported = export_model(ckpt, sample=None).path
    onnx_model, graph = molml.load_model(exported), molml.load_model(ckpt)
    assert onnx_model.metadata["molecule_feature_statistics"]["mean"][:3] == [0.0, 0.0, 0.0]
    smiles = ["CCO", "C", LONG_CHAIN, "c1ccccc1N"]
    got, expected = onnx_model.predict(smiles), graph.predict(smiles)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=TOLERANCE, rtol=0)
    assert got["active"].between(0, 1).all()


class LargestMoleculeEncoder(Encoder):
    """Scales atoms by the size of the largest molecule, read from the values of ``batch``."""

    def __init__(self, hidden_dim: int = 32) -> None:
        super().__init__(hidden_dim=hidden_dim)
        self.hidden_dim = self.out_dim = hidden_dim

    def forward(self, x, edge_index, edge_attr, batch):  # noqa: ANN001, ANN201
        return x / int(torch.bincount(batch).max())


def test_untraceable_encoders_fail_with_the_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    register_encoder(LargestMoleculeEncoder)
    ckpt = untrained_checkpoint(tmp_path / "model.ckpt", LargestMoleculeEncoder())
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", str(ckpt), "--format", "pt2"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("molml export: error:") and len(error.splitlines()) == 1
    assert (
        "LargestMoleculeEncoder" in error and "in forward (" in error and "test_export.py:" in error
    )
    assert "computes a tensor size from the input values" in error
    assert "use the checkpoint itself" in error
    assert not (tmp_path / "model.pt2").exists()


class IndexAddEncoder(Encoder):
    """Sums neighbours with index_add_, which exports to ONNX ScatterND (reduction add)."""

    def __init__(self, hidden_dim: int = 32) -> None:
        super().__init__(hidden_dim=hidden_dim)
        self.hidden_dim = self.out_dim = hidden_dim

    def forward(self, x, edge_index, edge_attr, batch):  # noqa: ANN001, ANN201
        return x + torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])


def test_racy_onnx_scatter_is_refused(tmp_path: Path) -> None:
    register_encoder(IndexAddEncoder)
    ckpt = untrained_checkpoint(tmp_path / "model.ckpt", IndexAddEncoder())
    with pytest.raises(ExportError, match="ScatterND.*scatter_add_"):
        export_model(ckpt, sample=None)
    assert export_model(ckpt, format="pt2").passed  # torch.export itself is fine


def test_parity_failure_writes_nothing_unless_unchecked(
    graph_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import molml.export.exporter as exporter

    # an exported graph 1e-3 off everywhere (on some CPUs the real one matches bit for bit)
    exact = exporter.max_abs_diff
    monkeypatch.setattr(
        exporter, "max_abs_diff", lambda *a: {k: v + 1e-3 for k, v in exact(*a).items()}
    )
    output = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="differs from the PyTorch model"):
        export_model(graph_run["ckpt"], output, tolerance=1e-4, sample=None)
    assert not output.exists() and not list(tmp_path.iterdir())
    result = export_model(graph_run["ckpt"], output, tolerance=1e-4, check=False)
    assert output.exists() and not result.passed
    assert "WARNING" in capsys.readouterr().err
    assert molml.load_model(output).metadata["parity"]["passed"] is False


def test_export_never_overwrites_its_checkpoint_and_keeps_the_suffix(
    graph_run: dict, tmp_path: Path
) -> None:
    copy = tmp_path / "model.ckpt"
    copy.write_bytes(Path(graph_run["ckpt"]).read_bytes())
    with pytest.raises(DataError, match="must end in .onnx"):
        export_model(copy, copy)
    link = tmp_path / "model.onnx"
    link.symlink_to(copy)
    with pytest.raises(DataError, match="is the checkpoint being exported"):
        export_model(copy, link)
    with pytest.raises(CheckpointError, match="is not a loadable ONNX model"):
        export_model(link, link)  # what the file's name says it is: not a graph checkpoint
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(DataError, match="folder.onnx is a folder; give the file to write"):
        export_model(copy, tmp_path / "folder.onnx")
    with pytest.raises(DataError, match="a pt2 file must end in .pt2"):
        export_model(copy, tmp_path / "model.onnx", format="pt2")
    assert molml.load_model(copy).tasks == molml.load_model(graph_run["ckpt"]).tasks


def test_baseline_export_is_refused_with_the_reason(property_csv: Path, tmp_path: Path) -> None:
    from molml.baselines import (
        BaselineConfig,
        DataConfig,
        EstimatorConfig,
        FeaturesConfig,
        fit_baseline,
    )

    result = fit_baseline(
        BaselineConfig(
            data=DataConfig(path=str(property_csv), target_columns=["logp"]),
            features=FeaturesConfig(name="ecfp4", params={"n_bits": 256}, n_jobs=1),
            estimator=EstimatorConfig(params={"n_estimators": 5, "n_jobs": 1}),
            tracking_uri=None,
        )
    )
    result.model.save(tmp_path / "model")
    with pytest.raises(CheckpointError, match="onnxmltools or skl2onnx.*without pickle"):
        export_model(tmp_path / "model")


def test_a_parity_sample_without_molecules_is_refused(tmp_path: Path) -> None:
    """A sample file whose SMILES are read from the wrong column (ids) would leave only the
    built-in edge cases to compare: refused, naming the column read."""
    from molml.export.exporter import read_sample

    pd.DataFrame({"id": ["CPD-1", "CPD-2"], "Structure": ["CCO", "CCN"]}).to_csv(
        tmp_path / "sample.csv", index=False
    )
    with pytest.raises(
        DataError, match=r"none of its 2 rows is a molecule .* column 'id'.*'smiles'"
    ):
        read_sample(tmp_path / "sample.csv")
    # read from a column named smiles already: no advice to name it so
    pd.DataFrame({"smiles": ["C1CC", "nope"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"of \['smiles'\]\)$"):
        read_sample(tmp_path / "bad.csv")
    pd.DataFrame({"smiles": ["CCO", "nope"]}).to_csv(tmp_path / "ok.csv", index=False)
    smiles, description = read_sample(tmp_path / "ok.csv")
    assert smiles[-2:] == ["CCO", "nope"] and description == str(tmp_path / "ok.csv")


def test_several_models_are_refused_not_all_but_the_last_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", "a.ckpt", "--model", "b.ckpt"])
    assert exit_info.value.code == 2
    assert "--model given 2 times: export writes one checkpoint" in capsys.readouterr().err
