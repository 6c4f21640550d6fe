"""ONNX export of every encoder: parity with PyTorch and onnxruntime vs PyTorch eager speed.

For each encoder (hidden 300, depth 3): train 1 epoch on Crippen logP of RDKit's NCI molecules
(parity and speed do not need a good model), export with ``molml export``'s own code, whose
parity check runs on ``--parity`` molecules, then time the forward pass alone (featurization
excluded) at batch 1 and batch 256, and the end-to-end ``predict`` from SMILES, with onnxruntime
and PyTorch eager each on ``--threads`` threads. Encoders that torch.export cannot trace are
listed with the reason. Prints a markdown table; writes JSON to ``scripts/results/``.

    python scripts/bench_export.py [--encoders dmpnn gine ...] [--parity 1000] [--batch1 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

import molml
from molml.chem.featurizer import MolGraphFeaturizer
from molml.data.datamodule import MoleculeDataModule
from molml.data.graphs import GraphStore, featurize_block
from molml.errors import ExportError
from molml.export import export_model
from molml.models import DMPNN, GINE, GPS, PNA, AttentiveFP, GATv2, Graphormer, MoleculeModel
from molml.predict import GraphPredictor, OnnxPredictor
from molml.predict.onnx import batch_arrays
from molml.quickstart import NCI_LIBRARY, write_logp_dataset

RESULTS = Path(__file__).parent / "results"
ENCODERS: dict[str, Callable[[], tuple[torch.nn.Module, str, dict]]] = {
    "dmpnn": lambda: (DMPNN(300, 3), "mean", {}),
    "gine": lambda: (GINE(300, 3), "mean", {}),
    "gatv2": lambda: (GATv2(300, 3), "mean", {}),
    "attentivefp": lambda: (AttentiveFP(300, 3), "attentivefp", {}),
    "pna": lambda: (PNA(300, 3), "mean", {}),
    "gps": lambda: (GPS(300, 3), "mean", {"random_walk_steps": 16}),
    "graphormer": lambda: (Graphormer(300, 3), "mean", {}),
}


def train_one_epoch(name: str, data_csv: Path, root: Path) -> Path:
    """A checkpoint after one epoch on the NCI logP data."""
    encoder, readout, featurizer = ENCODERS[name]()
    dm = MoleculeDataModule(
        path=str(data_csv),
        target_columns=["logp"],
        featurizer=MolGraphFeaturizer(**featurizer),
        cache_dir=None,
        featurize_jobs=1,
        batch_size=64,
    )
    model = MoleculeModel(
        encoder=encoder, readout=readout, tasks=dm.tasks, featurizer=dm.featurizer_config
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=dm)
    ckpt = root / f"{name}.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def forward_speeds(
    graph: GraphPredictor, onnx_model: OnnxPredictor, arrays: dict, batch1: int, repeats: int
) -> dict[str, float]:
    """Molecules per second of the forward pass alone (inputs prepared beforehand)."""
    n = len(arrays["n_atoms"])
    store = GraphStore.from_arrays([arrays])
    speeds = {}
    for batch_size, count in ((1, min(batch1, n)), (256, n)):
        slices = [(s, min(s + batch_size, count)) for s in range(0, count, batch_size)]
        feeds = [batch_arrays(arrays, s, e) for s, e in slices]
        names = [i.name for i in onnx_model.session.get_inputs()]
        feeds = [{k: f[k] for k in names} for f in feeds]
        batches = [store.batch(s, e) for s, e in slices]
        model = graph.model

        def run_torch(batches: list = batches, model: MoleculeModel = model) -> None:
            with torch.no_grad():
                for batch in batches:
                    model.to_prediction(model(batch))

        def run_onnx(feeds: list = feeds) -> None:
            for feed in feeds:
                onnx_model.session.run(None, feed)

        speeds[f"torch_b{batch_size}"] = count / best_of(repeats, run_torch)
        speeds[f"onnx_b{batch_size}"] = count / best_of(repeats, run_onnx)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--train", type=int, default=1000, help="NCI molecules to train on")
    parser.add_argument("--parity", type=int, default=1000, help="molecules of the parity check")
    parser.add_argument("--batch1", type=int, default=200, help="molecules timed at batch 1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    L.seed_everything(0)
    root = Path(tempfile.mkdtemp(prefix="bench_export_"))
    full_csv = root / "nci_logp.csv"
    write_logp_dataset(NCI_LIBRARY, full_csv)
    lines = full_csv.read_text().splitlines()
    train_csv = root / "train.csv"
    train_csv.write_text("\n".join(lines[: args.train + 1]) + "\n")
    smiles = [line.split(",")[0] for line in lines[-args.parity :]]  # not trained on
    sample = root / "sample.smi"
    sample.write_text("\n".join(smiles) + "\n")

    rows = []
    for name in args.encoders:
        ckpt = train_one_epoch(name, train_csv, root)
        try:
            result = export_model(ckpt, root / f"{name}.onnx", sample=sample, check=False)
        except ExportError as exc:
            rows.append({"encoder": name, "exported": False, "reason": str(exc)})
            print(f"{name}: {exc}")
            continue
        graph = molml.load_model(ckpt)
        onnx_model = OnnxPredictor(result.path, threads=args.threads)
        arrays, _, _, _ = featurize_block(graph.model.featurizer, smiles)
        row = {
            "encoder": name,
            "exported": True,
            "max_abs_diff": max(result.max_abs_diff.values()),
            "parity_molecules": result.molecules,
            **forward_speeds(graph, onnx_model, arrays, args.batch1, args.repeats),
            "torch_predict": len(smiles) / best_of(1, lambda g=graph: g.predict(smiles)),
            "onnx_predict": len(smiles) / best_of(1, lambda o=onnx_model: o.predict(smiles)),
        }
        rows.append(row)
        print(json.dumps(row))

    header = (
        "| encoder | max abs diff | forward b1 torch | b1 onnx | forward b256 torch | b256 onnx "
        "| predict torch | predict onnx |"
    )
    print("\nmolecules/s, 2 threads; forward excludes featurization; predict is from SMILES\n")
    print(header)
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        if not row["exported"]:
            print(f"| {row['encoder']} | not exportable (see JSON) | | | | | | |")
            continue
        cells = [f"{row['max_abs_diff']:.1e}"] + [
            f"{row[k]:,.0f}"
            for k in (
                "torch_b1",
                "onnx_b1",
                "torch_b256",
                "onnx_b256",
                "torch_predict",
                "onnx_predict",
            )
        ]
        print(f"| {row['encoder']} | " + " | ".join(cells) + " |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "export_onnx.json"
    runs = {row["encoder"]: {"args": vars(args), **row} for row in rows}
    if out.exists():  # a run over some encoders keeps the other encoders' rows
        earlier = json.loads(out.read_text())
        previous = earlier.get("by_encoder") or {
            row["encoder"]: {"args": earlier["args"], **row} for row in earlier["rows"]
        }
        runs = {**previous, **runs}
    out.write_text(json.dumps({"by_encoder": runs}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
