"""Deletion test of molml's attributions on a real property: ESOL aqueous solubility.

A graph model (hidden 128, depth 3, sum readout, 50 epochs; D-MPNN, GINE, AttentiveFP, GPS)
is trained per seed on the training part of ESOL's scaffold split (through the dataset
registry). Each test molecule is explained (``molml.explain.explain``, on the predicted log
solubility) and then its atoms are masked, as ``explain``'s occlusion does (the atom's features
and those of all its bonds set to zero), in three ways with the same number k of atoms:

- top: the k atoms with the largest attributions (the ones said to raise solubility most);
- random: k atoms drawn at random (``--draws`` draws per molecule, averaged);
- bottom: the k atoms with the smallest attributions.

For faithful attributions, masking the top atoms lowers the prediction more than masking random
ones, and masking the bottom atoms raises it. Reported per model, method and k (k = 1, and
10 % / 25 % of the molecule's heavy atoms, at least 1): the mean change of the prediction
(masked minus original, log mol/L) for each of the three, the share of molecules whose top
deletion lowers the prediction more than the mean random one, and the Pearson correlation,
over random atom sets, between the sum of their attributions and the change that masking them
causes (the "faithfulness correlation" of Bhatt et al., IJCAI 2020), averaged over molecules.
Integrated Gradients starts from all-zero features here (``baseline="zeros"``), the state that
masking puts atoms in, and the atoms' own scores are ranked.

    python scripts/bench_deletion.py                        # 3 seeds, every encoder
    python scripts/bench_deletion.py --seeds 0 --encoders dmpnn --methods integrated_gradients

Prints a table and writes JSON (``--output``); rows already there are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from bench_explain import MODEL_TITLES, featurizer_for, fit_graph_model, markdown  # sibling
from torch_geometric.data import Batch

from molml.data.datamodule import MoleculeDataModule
from molml.data.registry import dataset_path
from molml.explain import explain
from molml.predict import GraphPredictor

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
ENCODERS = ("dmpnn", "gine", "attentivefp", "gps")
METHODS = ("integrated_gradients", "input_x_gradient", "saliency", "occlusion")
SIZES = ("1", "10%", "25%")  # atoms masked: one, or a share of the heavy atoms (at least one)


def train(
    encoder: str, args: argparse.Namespace, seed: int, root: Path
) -> tuple[GraphPredictor, list[str], np.ndarray]:
    """A regression model on ESOL's scaffold-split training part, and the test SMILES with
    their measured values (the split reports go to ``root``)."""
    L.seed_everything(seed, workers=True)
    dm = MoleculeDataModule(
        dataset="esol",
        featurizer=featurizer_for(encoder),
        split="scaffold",
        split_seed=seed,
        cache_dir=None,
        featurize_jobs=1,
        batch_size=64,
    )
    predictor = fit_graph_model(encoder, dm, args.hidden, args.epochs, root)
    test = pd.read_csv(dataset_path("esol")).iloc[dm.split_rows().test]
    return predictor, test["smiles"].tolist(), test.iloc[:, 1].to_numpy()


def masked_predictions(predictor: GraphPredictor, smiles: str, atom_sets: list[np.ndarray]):
    """Predictions (target units) of ``smiles`` with each set of atoms masked: their features
    and all their bonds' features zero (random-walk columns kept, as in occlusion)."""
    model = predictor.model
    graph = model.featurizer(smiles)
    chemistry = graph.x.shape[1] - model.featurizer.random_walk_steps
    copies = []
    for atoms in atom_sets:
        x, edge_attr = graph.x.clone(), graph.edge_attr.clone()
        x[atoms, :chemistry] = 0
        touched = np.isin(graph.edge_index.numpy(), atoms).any(axis=0)
        edge_attr[torch.from_numpy(touched)] = 0
        copy = graph.clone()
        copy.x, copy.edge_attr = x, edge_attr
        copies.append(copy)
    with torch.no_grad():
        out = model(Batch.from_data_list(copies).to(model.device))
        return model.to_prediction(out)[:, 0].double().cpu().numpy()


def size_of(label: str, n_atoms: int) -> int:
    if label.endswith("%"):
        return max(1, round(n_atoms * float(label[:-1]) / 100))
    return int(label)


def deletion_rows(
    predictor: GraphPredictor,
    smiles: list[str],
    method: str,
    draws: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Per masked size: mean changes for top / random / bottom atoms and the agreement stats."""
    # masking sets features to zero, so Integrated Gradients starts from zeros too
    start = "zeros" if method == "integrated_gradients" else None
    explained = explain(predictor, smiles, method, baseline=start, progress=False)
    stats: dict[str, dict[str, list[float]]] = {size: {} for size in SIZES}
    for item in explained:
        scores = item.atom_scores
        n = len(scores)
        if not item.ok or n < 2:
            continue
        order = np.argsort(-scores, kind="stable")
        for size in SIZES:
            k = size_of(size, n)
            if k >= n:
                continue
            randoms = [rng.choice(n, size=k, replace=False) for _ in range(draws)]
            sets = [order[:k], order[-k:], *randoms]
            change = masked_predictions(predictor, item.smiles, sets) - item.prediction
            random_change = change[2:]
            summed = np.array([scores[s].sum() for s in randoms])
            corr = (
                np.corrcoef(summed, -random_change)[0, 1]
                if summed.std() > 0 and random_change.std() > 0
                else np.nan
            )
            row = stats[size]
            row.setdefault("top", []).append(change[0])
            row.setdefault("bottom", []).append(change[1])
            row.setdefault("random", []).append(random_change.mean())
            row.setdefault("top_beats_random", []).append(float(change[0] < random_change.mean()))
            row.setdefault("correlation", []).append(corr)
    rows = []
    for size, row in stats.items():
        if not row:
            continue
        rows.append(
            {
                "atoms_masked": size,
                "molecules": len(row["top"]),
                "change_top": round(float(np.mean(row["top"])), 4),
                "change_random": round(float(np.mean(row["random"])), 4),
                "change_bottom": round(float(np.mean(row["bottom"])), 4),
                "top_below_random": round(float(np.mean(row["top_beats_random"])), 4),
                "faithfulness_correlation": round(float(np.nanmean(row["correlation"])), 4),
            }
        )
    return rows


def summary(record: dict[str, Any]) -> None:
    table = pd.DataFrame(record["rows"])
    if table.empty:
        return
    columns = [
        "change_top",
        "change_random",
        "change_bottom",
        "top_below_random",
        "faithfulness_correlation",
        "model_test_rmse",
    ]
    grouped = table.groupby(["model", "method", "atoms_masked"], sort=False)
    out = grouped[columns].mean().round(3)
    out["seeds"] = grouped["seed"].nunique()
    out = out.reset_index()
    out["model"] = out["model"].map(MODEL_TITLES)
    print("\n## Deletion test on ESOL test molecules (mean over seeds)\n")
    print(markdown(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=["integrated_gradients", "occlusion"],
    )
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--draws", type=int, default=20, help="random atom sets per molecule")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS / "explain_deletion.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MOLML_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    if args.threads:
        torch.set_num_threads(args.threads)
    record: dict[str, Any] = {"rows": []}
    if args.output.exists():
        record.update(json.loads(args.output.read_text()))
    record["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    done = {(r["seed"], r["model"], r["method"]) for r in record["rows"]}
    for seed in args.seeds:
        for encoder in args.encoders:
            methods = [m for m in args.methods if (seed, encoder, m) not in done]
            if not methods:
                continue
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                predictor, test, measured = train(encoder, args, seed, Path(tmp))
            fit_seconds = time.perf_counter() - start
            predicted = predictor.predict(test).iloc[:, 1].to_numpy()
            rmse = float(np.sqrt(np.mean((predicted - measured) ** 2)))
            for method in methods:
                rng = np.random.default_rng(seed)
                for row in deletion_rows(predictor, test, method, args.draws, rng):
                    row = {"seed": seed, "model": encoder, "method": method, **row}
                    row["model_test_rmse"] = round(rmse, 4)
                    row["fit_seconds"] = round(fit_seconds, 1)
                    record["rows"].append(row)
                    print(row, flush=True)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                settings = {k: str(v) for k, v in vars(args).items()}
                args.output.write_text(json.dumps({**record, "args": settings}, indent=2))
    summary(record)


if __name__ == "__main__":
    main()
