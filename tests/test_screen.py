"""molml screen: streamed library screening with real checkpoints, real files and real processes."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
from conftest import write_task_csv
from lightning.pytorch.callbacks import ModelCheckpoint
from rdkit import Chem, RDConfig

import molml
from molml.data.datamodule import MoleculeDataModule
from molml.data.readers import count_records
from molml.errors import CheckpointError, DataError
from molml.models import DMPNN, MoleculeModel
from molml.screen import screen_library
from molml.screen.run import main

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
BIG = "C" * 500  # a 500-heavy-atom chain
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def nci_lines(n: int) -> list[str]:
    return NCI.read_text().splitlines()[:n]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        yield


def _train(tmp_path: Path, seed: int, name: str) -> tuple[Path, MoleculeModel, MoleculeDataModule]:
    L.seed_everything(seed)
    write_task_csv(tmp_path / "logp150.csv", 150)  # NCI molecules with Crippen logP
    dm = MoleculeDataModule(
        path=str(tmp_path / "logp150.csv"),
        split="scaffold",
        batch_size=32,
        cache_dir=None,
        featurize_jobs=1,
    )
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=32, depth=2),
        ffn_hidden_dim=32,
        tasks=dm.tasks,
        task_type=dm.task_type,
        featurizer=dm.featurizer_config,
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / name, filename="best", monitor="val/loss")
    L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
        default_root_dir=str(tmp_path),
    ).fit(model, datamodule=dm)
    return Path(checkpoint.best_model_path), model, dm


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("screen_models")
    first, model, dm = _train(root, 0, "a")
    second, _, _ = _train(root, 1, "b")
    return {"ckpt": first, "ckpt2": second, "model": model, "dm": dm, "root": root}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NCI molecules (ids in column 2) plus the awkward lines a real library has."""
    lines = nci_lines(400)
    lines[10] = "not_a_smiles bad1"
    lines[20] = ""  # blank line
    lines[30] = f"{BIG} chain500"
    lines[40] = "C1CC unclosed"
    path = tmp_path_factory.mktemp("lib") / "library.smi.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def screen(models, library, output, **kwargs) -> dict:
    options = {
        "chunk_size": 64,
        "num_workers": 1,
        "accelerator": "cpu",
        "progress": False,
        "precision": "32-true",  # exact comparisons; the hardware default is tested on its own
    }
    return screen_library(models, library, output, **{**options, **kwargs})


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "molml.cli", "screen", *args, "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)


# ---------------------------------------------------------------------------- correctness


def test_every_row_once_in_input_order_with_the_models_predictions(trained, library, tmp_path):
    out = tmp_path / "scores.csv"
    summary = screen([trained["ckpt"]], library, out)
    scores = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert len(scores) == 400 == summary["rows"] == count_records(library)
    assert scores["row"].tolist() == list(range(1, 401))
    assert list(scores.columns) == ["row", "id", "smiles", "logp", "status"]

    status = scores.set_index("row")["status"]
    assert status[11].startswith("invalid SMILES syntax") and status[41].startswith("invalid")
    assert status[21].startswith("missing SMILES")
    assert status[31] == "ok" and scores.loc[30, "id"] == "chain500"
    assert summary["failed"] == (status != "ok").sum() and summary["ok"] == (status == "ok").sum()
    assert scores.loc[status.to_numpy() != "ok", "logp"].isna().all()

    expected = molml.load_model(trained["ckpt"]).predict(
        [s if isinstance(s, str) else None for s in scores["smiles"]]
    )
    ok = (scores["status"] == "ok").to_numpy()
    assert (expected["status"].to_numpy() == "ok")[ok].all()
    assert np.allclose(scores["logp"], expected["logp"], atol=1e-5, equal_nan=True)
    assert not out.with_name(out.name + ".parts").exists()
    assert json.loads(Path(f"{out}.summary.json").read_text())["rows"] == 400


def test_screen_and_predict_equal_the_predictions_made_during_test(trained, tmp_path):
    dm = trained["dm"]
    predictor = molml.load_model(trained["ckpt"])
    model = predictor.model
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.test(model, datamodule=dm)
    during_test = model.test_outputs[0][:, 0].numpy()
    test_smiles = dm.table["smiles"].iloc[dm.split_rows().test].tolist()
    assert np.allclose(predictor.predict(test_smiles)["logp"], during_test, atol=1e-5)

    library = tmp_path / "test_split.csv"
    pd.DataFrame({"smiles": test_smiles}).to_csv(library, index=False)
    screen([trained["ckpt"]], library, tmp_path / "out.parquet", batch_size=7)
    scores = pd.read_parquet(tmp_path / "out.parquet")
    assert np.allclose(scores["logp"], during_test, atol=1e-5)


def test_ensemble_gives_mean_and_std(trained, library, tmp_path):
    out = tmp_path / "ensemble.parquet"
    screen([trained["ckpt"], trained["ckpt2"]], library, out)
    scores = pd.read_parquet(out)
    assert list(scores.columns) == [
        "row",
        "id",
        "smiles",
        "logp",
        "logp_std",
        "status",
    ]
    smiles = scores["smiles"].tolist()
    members = np.stack(
        [
            molml.load_model(p).predict(smiles)["logp"].to_numpy()
            for p in (trained["ckpt"], trained["ckpt2"])
        ]
    )
    assert np.allclose(scores["logp"], members.mean(0), atol=1e-5, equal_nan=True)
    assert np.allclose(scores["logp_std"], members.std(0), atol=1e-5, equal_nan=True)
    assert (scores.loc[scores["status"] == "ok", "logp_std"] > 0).all()


def test_top_k_keeps_the_best_and_reports_failures_elsewhere(trained, library, tmp_path, capsys):
    full = tmp_path / "full.parquet"
    screen([trained["ckpt"]], library, full)
    everything = pd.read_parquet(full)
    ok = everything[everything["status"] == "ok"]
    failed_rows = everything.loc[everything["status"] != "ok", "row"].tolist()
    assert len(failed_rows) == 3

    # the command line, as the README shows it: the 25 highest predictions
    out = tmp_path / "top.csv"
    main(
        [
            "--model",
            str(trained["ckpt"]),
            "--input",
            str(library),
            "--output",
            str(out),
            "--top-k",
            "25",
            "--chunk-size",
            "64",
            "--num-workers",
            "1",
            "--accelerator",
            "cpu",
            "--precision",
            "32-true",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") :])
    top = pd.read_csv(out)
    expected = ok.nlargest(25, "logp")
    assert top["row"].tolist() == expected["row"].tolist()  # the k highest, best first
    assert np.allclose(top["logp"], expected["logp"])
    assert top["logp"].min() >= ok["logp"].nlargest(25).min()
    failed_file = tmp_path / "top.csv.failed.csv"
    assert summary["failed_rows"] == str(failed_file)
    failed = pd.read_csv(failed_file)
    assert failed["row"].tolist() == failed_rows and (failed["status"] != "ok").all()
    assert summary["rows"] == 400 and summary["failed"] == 3

    low = tmp_path / "low.csv"
    summary = screen([trained["ckpt"]], library, low, top_k=25, lowest=True)
    expected = ok.nsmallest(25, "logp")
    assert pd.read_csv(low)["row"].tolist() == expected["row"].tolist()
    assert pd.read_csv(summary["failed_rows"])["row"].tolist() == failed_rows


# ---------------------------------------------------------------------------- input formats


def test_csv_with_missing_smiles_sdf_with_a_broken_record_and_parquet(trained, tmp_path):
    smiles = [line.split()[0] for line in nci_lines(30)]
    csv = tmp_path / "lib.csv"
    pd.DataFrame(
        {
            "compound": [f"c{i}" for i in range(30)],
            "smiles": [None if i == 3 else s for i, s in enumerate(smiles)],
        }
    ).to_csv(csv, index=False)
    out = tmp_path / "from_csv.tsv"
    screen([trained["ckpt"]], csv, out, id_column="compound")
    scores = pd.read_csv(out, sep="\t")
    assert len(scores) == 30 and scores["compound"].tolist() == [f"c{i}" for i in range(30)]
    assert scores["status"][3].startswith("missing SMILES")
    # the separator follows how the name ends, not a '.tsv' inside it
    screen([trained["ckpt"]], csv, tmp_path / "from_csv.tsv.scores.csv", id_column="compound")
    header = (tmp_path / "from_csv.tsv.scores.csv").read_text().splitlines()[0]
    assert header.startswith("row,") and "\t" not in header

    mols = [Chem.MolFromSmiles(s) for s in smiles[:5]]
    for i, mol in enumerate(mols):
        mol.SetProp("_Name", f"m{i}")
    blocks = [Chem.MolToMolBlock(mol) for mol in mols]
    blocks[2] = "broken\n\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\nnonsense\nM  END\n"
    sdf = tmp_path / "lib.sdf"
    sdf.write_text("".join(f"{b}$$$$\n" for b in blocks))
    screen([trained["ckpt"]], sdf, tmp_path / "from_sdf.csv.gz")
    scores = pd.read_csv(tmp_path / "from_sdf.csv.gz")
    assert scores["row"].tolist() == [1, 2, 3, 4, 5]
    assert (
        scores["status"][2].startswith("missing SMILES") and (scores["status"] != "ok").sum() == 1
    )
    named = scores["_Name"].tolist()  # the record titles are the identifiers by default
    assert named[:2] + named[3:] == ["m0", "m1", "m3", "m4"] and pd.isna(named[2])

    parquet = tmp_path / "lib.parquet"
    # numeric compound ids, one missing (pandas stores the column as floats then)
    cids = [None if i == 7 else 1000 + i for i in range(30)]
    pd.DataFrame({"cid": cids, "smiles": smiles}).to_parquet(parquet)
    screen([trained["ckpt"]], parquet, tmp_path / "from_parquet.parquet", id_column="cid")
    scores = pd.read_parquet(tmp_path / "from_parquet.parquet")
    assert len(scores) == 30 and scores["cid"][0] == "1000" and scores["cid"][29] == "1029"
    assert pd.isna(scores["cid"][7]) and (scores["status"] == "ok").all()

    # a field over the csv module's default 128 KiB limit is one failed row, not a crash
    long_field = tmp_path / "long.csv"
    long_field.write_text("smiles,id\nCCO,a\n" + "C" * 200_000 + ",b\nCCN,c\n")
    screen([trained["ckpt"]], long_field, tmp_path / "long_scores.csv", id_column="id")
    scores = pd.read_csv(tmp_path / "long_scores.csv")
    assert scores["id"].tolist() == ["a", "b", "c"]
    assert scores["status"][[0, 2]].eq("ok").all() and "atoms" in scores["status"][1]
    # no id column at all: an empty name
    screen([trained["ckpt"]], long_field, tmp_path / "no_ids.csv", id_column="")
    assert pd.read_csv(tmp_path / "no_ids.csv").columns.tolist()[:2] == ["row", "smiles"]


def test_smi_with_and_without_header(trained, tmp_path):
    lines = nci_lines(20)
    plain, headed = tmp_path / "plain.smi", tmp_path / "headed.smi"
    plain.write_text("\n".join(lines) + "\n")
    headed.write_text("SMILES Name\n" + "\n".join(lines) + "\n")
    screen([trained["ckpt"]], plain, tmp_path / "plain.csv")
    screen([trained["ckpt"]], headed, tmp_path / "headed.csv")
    a, b = pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "headed.csv")
    assert len(a) == len(b) == 20
    assert a["id"].tolist() == b["Name"].tolist()
    assert np.allclose(a["logp"], b["logp"])
    # names first, SMILES second: the names are the ids, not the chosen SMILES column
    swapped = tmp_path / "swapped.smi"
    swapped.write_text("Name SMILES\n" + "\n".join(" ".join(line.split()[::-1]) for line in lines))
    screen([trained["ckpt"]], swapped, tmp_path / "swapped.csv", smiles_column="SMILES",
           has_header=True)  # fmt: skip
    c = pd.read_csv(tmp_path / "swapped.csv")
    assert c["Name"].tolist() == b["Name"].tolist() and np.allclose(c["logp"], b["logp"])


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("suffix", [".csv", ".smi"])
def test_bytes_that_are_not_utf8_fail_their_row_not_the_screen(trained, tmp_path, suffix):
    """One Latin-1 byte near the end of a library used to stop the screen there for good (the
    resumed run failed on it again): now that molecule gets a status, the rest is screened."""
    lines = nci_lines(150)
    header = b"smiles\n" if suffix == ".csv" else b""
    body = b"\n".join(line.split()[0].encode() for line in lines[:149])
    library = tmp_path / f"latin1{suffix}"
    library.write_bytes(header + body + b"\nC\xe9C\n")
    screen([trained["ckpt"]], library, tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 150 and (out["status"][:149] == "ok").all()
    assert "not valid UTF-8" in out["status"].iloc[-1] and np.isnan(out["logp"].iloc[-1])


def test_clear_errors_before_any_work(trained, library, tmp_path):
    csv = tmp_path / "lib.csv"
    pd.DataFrame({"smiles": ["CCO"], "name": ["x"]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"\['smiles', 'name'\]"):
        screen([trained["ckpt"]], csv, tmp_path / "o.csv", smiles_column="SMILES")
    with pytest.raises(DataError, match="does not exist"):
        screen([trained["ckpt"]], csv, tmp_path / "missing_dir" / "o.csv")
    with pytest.raises(DataError, match="output must end with"):
        screen([trained["ckpt"]], csv, tmp_path / "o.xlsx")
    not_a_checkpoint = tmp_path / "model.ckpt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(CheckpointError, match="not a molml checkpoint"):
        screen([not_a_checkpoint], csv, tmp_path / "o.csv")
    screen([trained["ckpt"]], csv, tmp_path / "o.csv")
    with pytest.raises(DataError, match="already exists"):
        screen([trained["ckpt"]], csv, tmp_path / "o.csv")
    screen([trained["ckpt"]], csv, tmp_path / "o.csv", overwrite=True)


def test_a_screen_without_one_valid_molecule_writes_its_rows_and_fails(trained, tmp_path):
    """Most often the wrong SMILES column: the command writes the rows with their reasons,
    then fails naming the file's columns (the Python API returns the counts). A column named
    like SMILES is found without being told."""
    csv = tmp_path / "lib.csv"
    frame = pd.DataFrame({"name": ["a", "b"], "Canonical SMILES": ["CCO", "c1ccccc1"]})
    frame.to_csv(csv, index=False)
    assert screen([trained["ckpt"]], csv, tmp_path / "o.csv")["ok"] == 2
    assert screen([trained["ckpt"]], csv, tmp_path / "api.csv", smiles_column="name")["ok"] == 0
    command = ["--model", str(trained["ckpt"]), "--input", str(csv), "--output",
               str(tmp_path / "bad.csv"), "--smiles-column", "name", "--num-workers", "1",
               "--accelerator", "cpu", "--no-progress"]  # fmt: skip
    with pytest.raises(DataError) as info:
        main(command)
    message = str(info.value)
    assert "none of the 2 molecules" in message and "invalid SMILES" in message
    assert "columns ['name', 'Canonical SMILES']" in message and "--overwrite" in message
    assert (pd.read_csv(tmp_path / "bad.csv")["status"] != "ok").all()
    library = tmp_path / "named.smi"
    library.write_text("CCO logp\n")  # a .smi file's names are its id column, here "logp"
    with pytest.raises(DataError, match="id column 'logp' has the name of an output column"):
        screen([trained["ckpt"]], library, tmp_path / "clash.csv", has_header=True)


def test_cli_reports_errors_without_a_traceback(trained, tmp_path):
    result = run_cli(
        "--model",
        str(trained["ckpt"]),
        "--input",
        str(tmp_path / "nope.smi"),
        "--output",
        str(tmp_path / "o.csv"),
    )
    assert result.returncode != 0
    assert "molml screen: error: file not found" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- resume and ranks


def _big_library(tmp_path: Path) -> Path:
    path = tmp_path / "big.smi"
    path.write_text("\n".join(nci_lines(5000) * 2) + "\n")
    return path


def test_resume_after_kill_gives_the_uninterrupted_output(trained, tmp_path):
    library = _big_library(tmp_path)
    reference = tmp_path / "reference.parquet"
    screen([trained["ckpt"]], library, reference, chunk_size=100)

    out = tmp_path / "resumed.parquet"
    args = [
        "--model",
        str(trained["ckpt"]),
        "--input",
        str(library),
        "--output",
        str(out),
        "--chunk-size",
        "100",
        "--num-workers",
        "1",
        "--precision",
        "32-true",
    ]
    command = [sys.executable, "-m", "molml.cli", "screen", *args, "--no-progress"]
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parts = out.with_name(out.name + ".parts")
    deadline = time.time() + 120
    while len(list(parts.glob("part-*.parquet"))) < 5 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list(parts.glob("part-*.parquet")))
    assert 5 <= done_before < 100 and not out.exists(), "the kill did not land mid-run"

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["resumed_chunks"] >= done_before
    assert summary["screened_this_run"] == summary["rows"] - 100 * summary["resumed_chunks"]
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(reference))


def test_resume_refuses_parts_from_a_different_command(trained, library, tmp_path):
    out = tmp_path / "o.csv"
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"chunk_size": 1}))
    (parts / "part-0000000.parquet").write_bytes(b"")  # a finished chunk of that other screen
    with pytest.raises(DataError, match="different screen .*chunk_size"):
        screen([trained["ckpt"]], library, out)
    (parts / "part-0000000.parquet").unlink()  # with nothing finished, nothing is lost
    assert screen([trained["ckpt"]], library, out)["resumed_chunks"] == 0


def test_resume_notices_an_edit_that_keeps_size_and_time(trained, tmp_path, monkeypatch):
    from molml.screen import run as screen_run

    library = tmp_path / "lib.smi"
    library.write_text("\n".join(nci_lines(300)) + "\n")
    out = tmp_path / "o.parquet"
    with monkeypatch.context() as patched:
        patched.setattr(screen_run, "merge_parts", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            screen([trained["ckpt"]], library, out, chunk_size=100)
    stat = library.stat()
    text = library.read_text()
    library.write_text(text.replace("C", "N", 1))  # same size
    os.utime(library, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match="different screen .*input_sha256"):
        screen([trained["ckpt"]], library, out, chunk_size=100)


def test_overwrite_resumes_its_own_parts_and_discards_another_commands(
    trained, tmp_path, monkeypatch
):
    """A requeued batch job reruns its command line, --overwrite included: its finished chunks
    are kept; parts of a different screen are discarded instead of refused."""
    from molml.screen import run as screen_run

    library = tmp_path / "lib.smi"
    library.write_text("\n".join(nci_lines(300)) + "\n")
    out = tmp_path / "o.parquet"
    with monkeypatch.context() as patched:  # every chunk done, then cut short before the merge
        patched.setattr(screen_run, "merge_parts", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            screen([trained["ckpt"]], library, out, chunk_size=100, overwrite=True)
    summary = screen(trained["ckpt"], library, out, chunk_size=100, overwrite=True)
    assert summary["resumed_chunks"] == 3 and summary["screened_this_run"] == 0
    with monkeypatch.context() as patched:
        patched.setattr(screen_run, "merge_parts", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            screen([trained["ckpt"]], library, out, chunk_size=100, overwrite=True)
    summary = screen([trained["ckpt"]], library, out, chunk_size=150, overwrite=True)
    assert summary["resumed_chunks"] == 0 and summary["screened_this_run"] == 300
    parts = out.with_name(out.name + ".parts")  # a manifest cut short matches no command
    parts.mkdir()
    (parts / "manifest.json").write_text('{"chunk_si')
    (parts / "part-0000000.parquet").write_bytes(b"")
    assert screen([trained["ckpt"]], library, out, overwrite=True)["resumed_chunks"] == 0


def test_options_that_need_another_are_refused_before_any_work(trained, library, tmp_path):
    with pytest.raises(DataError, match="give --top-k N too"):
        screen([trained["ckpt"]], library, tmp_path / "o.csv", top_k_by="logp")
    with pytest.raises(DataError, match="give --top-k N too"):
        screen([trained["ckpt"]], library, tmp_path / "o.csv", lowest=True)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="folder.csv is a folder"):
        screen([trained["ckpt"]], library, tmp_path / "folder.csv", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv"]


def test_a_screen_that_cannot_start_leaves_nothing_behind(trained, library, tmp_path):
    out = tmp_path / "o.csv"
    with pytest.raises(DataError, match="cannot run the screen as asked: .*foo"):
        screen([trained["ckpt"]], library, out, precision="foo")
    assert sorted(tmp_path.iterdir()) == []
    assert screen([trained["ckpt"]], library, out)["rows"] == 400


def test_two_processes_give_the_one_process_output(trained, tmp_path):
    library = tmp_path / "lib.smi"
    library.write_text("\n".join([*nci_lines(1500), "bad_smiles x"]) + "\n")
    single = tmp_path / "single.parquet"
    screen([trained["ckpt"]], library, single, chunk_size=200)
    double = tmp_path / "double.parquet"
    result = run_cli(
        "--model",
        str(trained["ckpt"]),
        "--input",
        str(library),
        "--output",
        str(double),
        "--chunk-size",
        "200",
        "--precision",
        "32-true",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--num-workers",
        "0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size: 2" in result.stderr or "distributed_backend=gloo" in result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(double), pd.read_parquet(single))


def test_bf16_mixed_precision_on_cpu_is_close_to_fp32(trained, library, tmp_path):
    screen([trained["ckpt"]], library, tmp_path / "fp32.parquet")
    summary = screen([trained["ckpt"]], library, tmp_path / "bf16.parquet", precision="bf16-mixed")
    assert summary["precision"] == "bf16-mixed"
    fp32 = pd.read_parquet(tmp_path / "fp32.parquet")
    bf16 = pd.read_parquet(tmp_path / "bf16.parquet")
    assert (fp32["status"] == bf16["status"]).all()
    difference = (fp32["logp"] - bf16["logp"]).abs()
    assert difference.max() < 0.1 and difference.max() > 0  # rounded, yet the same ranking
    assert fp32["logp"].corr(bf16["logp"], method="spearman") > 0.99
    # the head runs in fp32: scores are not rounded to bf16's 8 bits, so they rarely tie
    valid = bf16["logp"].dropna()
    assert valid.nunique() > 0.95 * fp32["logp"].dropna().nunique()
    # Lightning's *-true precisions would round the scores to bf16: refused before any work
    with pytest.raises(DataError, match="--precision bf16-true is not supported"):
        screen([trained["ckpt"]], library, tmp_path / "true.csv", precision="bf16-true")
    assert not list(tmp_path.glob("true.csv*"))


def test_default_precision_is_bf16_where_the_cpu_computes_it(trained, library, tmp_path):
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    summary = screen([trained["ckpt"]], library, tmp_path / "default.parquet", precision=None)
    assert summary["precision"] == ("bf16-mixed" if native else "32-true")
    explicit = screen([trained["ckpt"]], library, tmp_path / "fp32.parquet")
    assert explicit["precision"] == "32-true"


def test_baselines_screen_like_graph_models(trained, library, tmp_path):
    from molml.baselines.config import BaselineConfig, DataConfig, EstimatorConfig, FeaturesConfig
    from molml.baselines.run import fit_baseline

    config = BaselineConfig(
        data=DataConfig(path=str(trained["root"] / "logp150.csv"), split="scaffold"),
        features=FeaturesConfig(name="ecfp4", params={"n_bits": 512}, n_jobs=1),
        estimator=EstimatorConfig(params={"n_estimators": 20, "max_depth": 3}),
        tracking_uri=None,
    )
    fit_baseline(config).model.save(tmp_path / "xgb")
    baseline = molml.load_model(tmp_path / "xgb")
    out = tmp_path / "xgb.parquet"
    summary = screen([tmp_path / "xgb"], library, out, precision="bf16-mixed")
    assert summary["precision"] == "32-true"  # a baseline computes in fp32 whatever asked
    scores = pd.read_parquet(out)
    expected = baseline.predict([s if isinstance(s, str) else None for s in scores["smiles"]])
    assert len(scores) == 400
    assert ((scores["status"] == "ok") == (expected["status"] == "ok")).all()
    assert np.allclose(scores["logp"], expected["logp"], equal_nan=True)

    mixed = tmp_path / "mixed.parquet"
    screen([trained["ckpt"], tmp_path / "xgb"], library, mixed)
    both = pd.read_parquet(mixed)
    smiles = [s if isinstance(s, str) else None for s in scores["smiles"]]
    graph = molml.load_model(trained["ckpt"]).predict(smiles)["logp"]
    mean = (graph + expected["logp"]) / 2
    assert np.allclose(both["logp"], mean, atol=1e-5, equal_nan=True)
    assert (both["status"] == scores["status"]).all()


def test_bf16_model_threads_leave_the_featurization_workers_their_cores(
    trained, library, tmp_path, monkeypatch
):
    import torch

    from molml.screen import run as screen_run

    seen: list[int] = []
    original = screen_run.ScreeningModule.predict_step

    def recording(self, chunk, batch_idx):
        seen.append(torch.get_num_threads())
        return original(self, chunk, batch_idx)

    monkeypatch.setattr(screen_run.ScreeningModule, "predict_step", recording)
    monkeypatch.setattr(screen_run, "_cores", lambda: 4)
    before = torch.get_num_threads()
    screen([trained["ckpt"]], library, tmp_path / "bf16.parquet", precision="bf16-mixed")
    assert set(seen) == {3}  # 4 cores, 1 featurization worker
    assert torch.get_num_threads() == before
    seen.clear()
    screen([trained["ckpt"]], library, tmp_path / "fp32.parquet")  # fp32: torch's threads
    assert set(seen) == {before}


def test_resume_refuses_to_mix_precisions(trained, library, tmp_path, monkeypatch):
    from molml.screen import run as screen_run

    out = tmp_path / "o.parquet"

    def crash(*args, **kwargs):
        raise RuntimeError("killed while merging")

    with monkeypatch.context() as patched:
        patched.setattr(screen_run, "merge_parts", crash)
        with pytest.raises(RuntimeError, match="killed"):
            screen([trained["ckpt"]], library, out, precision="bf16-mixed")
    assert out.with_name(out.name + ".parts").is_dir()  # finished chunks kept for a resume
    with pytest.raises(DataError, match="different screen .*precision"):
        screen([trained["ckpt"]], library, out, precision="32-true")
    summary = screen([trained["ckpt"]], library, out, precision="bf16-mixed")  # same: resumes
    assert summary["resumed_chunks"] > 0 and summary["rows"] == 400
