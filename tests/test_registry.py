"""Dataset registry: cards against the real local files, checksums, cache and download."""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from molml import plots
from molml.data import registry
from molml.data.datamodule import MoleculeTable
from molml.data.readers import list_columns, read_molecules
from molml.data.registry import DatasetCard, dataset_path, get_card, list_datasets, sha256_of
from molml.errors import DataError

NAMES = ["bace", "bbbp", "clintox", "esol", "freesolv", "hiv", "lipo", "sider", "tox21"]
SHARED = Path(os.environ["MOLML_DATA_DIR"])  # set by conftest: the configured data directory


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local MoleculeNet copies, exported as MOLML_DATA_DIR (skips when absent)."""
    if not (SHARED / "esol.csv").is_file():
        pytest.skip(f"local datasets not found in {SHARED}")
    monkeypatch.setenv("MOLML_DATA_DIR", str(SHARED))
    monkeypatch.delenv("MOLML_SKIP_CHECKSUM", raising=False)
    return SHARED


@pytest.fixture
def no_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MOLML_DATA_DIR; a fresh cache directory; returns the cache directory."""
    for name in ("MOLML_DATA_DIR", "MOLML_SKIP_CHECKSUM", "MOLML_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def freesolv() -> Path:
    """The local freesolv.csv (skips when absent)."""
    path = SHARED / "freesolv.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def local_card(monkeypatch: pytest.MonkeyPatch, source: Path, **changes: str) -> DatasetCard:
    """freesolv's card pointing at a file:// URL; registry.get_card returns it."""
    card = dataclasses.replace(get_card("freesolv"), url=source.as_uri(), **changes)
    monkeypatch.setattr(registry, "get_card", lambda name: card)
    return card


def test_list_datasets() -> None:
    assert list_datasets() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_card_matches_local_file(data_dir: Path, name: str) -> None:
    card = get_card(name)
    assert card.name == name and card.filename == f"{name}.csv"
    assert card.smiles_column == "smiles"
    assert card.task_type == (
        "regression" if name in ("esol", "freesolv", "lipo") else "classification"
    )
    assert card.metric == ("rmse" if card.task_type == "regression" else "roc_auc")
    assert "MoleculeNet" in card.citation and card.url.startswith("https://")
    path = dataset_path(name)  # verifies the checksum
    assert path == data_dir / card.filename
    assert list_columns(path) == ["smiles", *card.target_columns]
    df = read_molecules(path, columns=list(card.target_columns))
    assert len(df) == card.n_molecules


def test_regression_targets_carry_their_units_to_the_parity_plot(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [get_card(name).units for name in ("esol", "freesolv", "bbbp")] == [
        "log10(mol/L)",
        "kcal/mol",
        None,
    ]
    assert MoleculeTable.read("esol").target_units == "log10(mol/L)"
    # units belong to the card's own targets: a file, or other columns, have none
    assert MoleculeTable.read(path=str(data_dir / "esol.csv")).target_units is None
    table = MoleculeTable.read("tox21", target_columns=["NR-AR"], task_type="regression")
    assert table.target_units is None
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    y = np.array([[0.0], [1.0], [2.0]])
    plots.parity_plot(y, y, y == y, ["logSolubility"], tmp_path / "p.png", "log10(mol/L)")
    plots.parity_plot(y, y, y == y, ["logSolubility"], tmp_path / "p.png")
    labels = [(ax.get_xlabel(), ax.get_ylabel()) for fig in figures for ax in fig.axes]
    assert labels == [
        ("measured (log10(mol/L))", "predicted (log10(mol/L))"),
        ("measured", "predicted"),
    ]


def test_sider_names_with_commas_survive_yaml() -> None:
    targets = get_card("sider").target_columns
    assert len(targets) == 27
    assert "Neoplasms_benign,_malignant_and_unspecified_(incl_cysts_and_polyps)" in targets


def test_tampered_copy_fails_checksum(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "esol.csv"
    copy.write_bytes((data_dir / "esol.csv").read_bytes().replace(b"-0.77", b"-0.78", 1))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        dataset_path("esol", data_dir=tmp_path)
    message = str(info.value)
    assert str(copy) in message and get_card("esol").sha256 in message
    assert sha256_of(copy) in message
    monkeypatch.setenv("MOLML_SKIP_CHECKSUM", "1")
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert dataset_path("esol", data_dir=tmp_path) == copy


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(DataError, match="unknown dataset 'qm7'.*bace, bbbp.*tox21"):
        get_card("qm7")
    with pytest.raises(DataError, match="unknown dataset '../datasets/esol'"):
        get_card("../datasets/esol")  # a name, not a path into the package


def test_missing_file_in_data_dir(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        dataset_path("bbbp", data_dir=tmp_path)
    assert "bbbp.csv" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        dataset_path("bbbp", data_dir=tmp_path / "nowhere")


def test_download_then_cache(
    no_data_dir: Path, freesolv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "remote.csv"
    shutil.copyfile(freesolv, source)
    card = local_card(monkeypatch, source)
    with pytest.raises(DataError, match="download=False"):
        dataset_path("freesolv", cache_dir=no_data_dir, download=False)
    path = dataset_path("freesolv", cache_dir=no_data_dir)
    assert path == no_data_dir / "freesolv.csv" and sha256_of(path) == card.sha256
    assert sorted(p.name for p in no_data_dir.iterdir()) == ["freesolv.csv"]
    source.unlink()  # the second call must not need the URL
    assert dataset_path("freesolv", cache_dir=no_data_dir) == path
    monkeypatch.setenv("MOLML_CACHE_DIR", str(no_data_dir))
    assert dataset_path("freesolv", download=False) == path


def test_download_gz_url_is_decompressed(
    no_data_dir: Path, freesolv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "freesolv.csv.gz"
    source.write_bytes(gzip.compress(freesolv.read_bytes()))
    local_card(monkeypatch, source)
    path = dataset_path("freesolv", cache_dir=no_data_dir)
    assert path.read_bytes() == freesolv.read_bytes()


def test_download_checksum_mismatch(
    no_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "wrong.csv"
    source.write_text("smiles,freesolv\nCCO,-5.0\n")
    card = local_card(monkeypatch, source)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        dataset_path("freesolv", cache_dir=no_data_dir)
    assert card.sha256 in str(info.value) and sha256_of(source) in str(info.value)
    assert list(no_data_dir.iterdir()) == []  # nothing half-written is left behind


def test_corrupt_cache_entry_is_downloaded_again(
    no_data_dir: Path, freesolv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_card(monkeypatch, freesolv)
    no_data_dir.mkdir()
    (no_data_dir / "freesolv.csv").write_text("truncated")
    with pytest.raises(DataError, match="checksum mismatch"):
        dataset_path("freesolv", cache_dir=no_data_dir, download=False)
    path = dataset_path("freesolv", cache_dir=no_data_dir)
    assert sha256_of(path) == get_card("freesolv").sha256


def test_network_failure_explains_data_dir(
    no_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_card(monkeypatch, tmp_path / "not-there.csv")
    with pytest.raises(DataError, match="could not download.*MOLML_DATA_DIR.*freesolv.csv"):
        dataset_path("freesolv", cache_dir=no_data_dir)


def test_invalid_card_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "CARDS_DIR", tmp_path)
    (tmp_path / "broken.yaml").write_text(
        (Path(__file__).parents[1] / "datasets" / "esol.yaml")
        .read_text()
        .replace("name: esol", "name: broken")
        .replace("task_type: regression", "task_type: ranking")
        .replace("metric: rmse", "metric: RMSE")
        .replace('units: "log10(mol/L)"', 'units: ""')
    )
    (tmp_path / "extra.yaml").write_text("name: extra\ncolour: blue\n")
    assert list_datasets() == ["broken", "extra"]
    with pytest.raises(DataError, match="broken.yaml.*task_type.*units.*metric must be lowercase"):
        get_card("broken")
    with pytest.raises(DataError, match=r"unknown keys \['colour'\].*'sha256'"):
        get_card("extra")


def test_missing_cards_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "CARDS_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="cards directory not found"):
        list_datasets()
