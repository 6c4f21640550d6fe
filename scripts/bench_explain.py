"""Attribution faithfulness and speed of ``molml.explain``.

Faithfulness, after Sanchez-Lengeling et al. (2020), "Evaluating attribution for graph neural
networks": real molecules (RDKit's NCI sample) are labelled by substructure logic whose true
explanation is known, e.g. "benzene AND amide": the atoms of the matched benzene and amide are
the ones that make a molecule positive. One multitask classifier per graph encoder (D-MPNN,
GINE; hidden 64, depth 3) and one XGBoost ECFP4 classifier per task are trained on the first
80% of the molecules; on the held-out positives, each method's atom scores (on the logit) are
ranked against the true atoms: attribution ROC-AUC per molecule, averaged over the positive
held-out molecules.

Speed: molecules explained per second by Integrated Gradients (50 steps) for a D-MPNN of hidden
size 300, depth 3, batched (``molml.explain.explain``) and one molecule per call.

    python scripts/bench_explain.py                      # 2000 molecules, 15 epochs
    python scripts/bench_explain.py --molecules 1500 --epochs 10 --speed-molecules 200
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import xgboost as xgb
from rdkit import Chem, RDConfig
from sklearn.metrics import roc_auc_score

from molml.baselines.estimators import XGBoostTaskModel
from molml.baselines.model import BaselineModel
from molml.chem.fingerprints import MorganFingerprint
from molml.data.datamodule import MoleculeDataModule
from molml.explain import explain
from molml.models import DMPNN, GINE, MoleculeModel
from molml.predict import BaselinePredictor, GraphPredictor

RESULTS = Path(__file__).resolve().parent / "results"
NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
PATTERNS = {
    "benzene": "c1ccccc1",
    "amide": "C(=O)[NX3]",
    "fluoride": "[F]",
    "carbonyl": "[CX3]=[OX1]",
    "hydroxyl": "[OX2H][#6]",
}
# task -> (clauses that must match, clauses of which one must match, clauses that must not)
TASKS = {
    "benzene_and_amide": (["benzene", "amide"], [], []),
    "fluoride_or_carbonyl": ([], ["fluoride", "carbonyl"], []),
    "benzene_and_carbonyl_and_hydroxyl": (["benzene", "carbonyl", "hydroxyl"], [], []),
    "benzene_and_not_carbonyl": (["benzene"], [], ["carbonyl"]),
}
GRAPH_METHODS = ["integrated_gradients", "saliency", "input_x_gradient", "occlusion"]


def label(mol: Chem.Mol) -> tuple[dict[str, int], dict[str, set[int]]]:
    """Each task's label and, for positives, the atoms that explain it."""
    matches = {
        name: {a for m in mol.GetSubstructMatches(Chem.MolFromSmarts(s)) for a in m}
        for name, s in PATTERNS.items()
    }
    labels, truth = {}, {}
    for task, (all_of, any_of, none_of) in TASKS.items():
        positive = (
            all(matches[c] for c in all_of)
            and (not any_of or any(matches[c] for c in any_of))
            and not any(matches[c] for c in none_of)
        )
        labels[task] = int(positive)
        truth[task] = set().union(*(matches[c] for c in all_of + any_of)) if positive else set()
    return labels, truth


def attribution_auc(scores: np.ndarray, atoms: set[int]) -> float:
    truth = np.zeros(len(scores), dtype=int)
    truth[list(atoms)] = 1
    if truth.min() == truth.max():
        return float("nan")
    return float(roc_auc_score(truth, scores))


def train_graph(encoder: str, csv: Path, epochs: int, root: Path) -> GraphPredictor:
    L.seed_everything(0)
    dm = MoleculeDataModule(
        path=str(csv),
        target_columns=list(TASKS),
        task_type="classification",
        split="random",
        cache_dir=None,
        featurize_jobs=1,
        batch_size=64,
    )
    make = {"dmpnn": DMPNN, "gine": GINE}[encoder]
    model = MoleculeModel(
        encoder=make(hidden_dim=64, depth=3),
        ffn_hidden_dim=64,
        readout="sum",
        tasks=dm.tasks,
        task_type="classification",
        featurizer=dm.featurizer_config,
        lr=1e-3,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=dm)
    return GraphPredictor(model.eval())


def train_xgb(smiles: list[str], labels: pd.DataFrame) -> BaselinePredictor:
    fingerprint = MorganFingerprint(radius=2, n_bits=2048)
    X, _ = fingerprint.transform(smiles)
    models = []
    for task in TASKS:
        clf = xgb.XGBClassifier(n_estimators=200, max_depth=6, learning_rate=0.1, n_jobs=2)
        models.append(XGBoostTaskModel(clf.fit(X, labels[task]).get_booster()))
    model = BaselineModel(fingerprint, list(TASKS), "classification", "xgboost", models)
    return BaselinePredictor(model)


def faithfulness(predictor, name, methods, test, truths, labels, steps) -> list[dict]:
    rows = []
    predictions = predictor.predict(test)
    for task in TASKS:
        positives = [i for i in range(len(test)) if labels[task][i]]
        auc_model = roc_auc_score(labels[task], predictions[task])
        for method in methods:
            start = time.perf_counter()
            result = explain(predictor, [test[i] for i in positives], method, task, steps=steps)
            seconds = time.perf_counter() - start
            aucs = [
                attribution_auc(item.atom_scores, truths[task][i])
                for item, i in zip(result, positives, strict=True)
            ]
            rows.append(
                {
                    "model": name,
                    "task": task,
                    "method": method,
                    "model_test_auc": round(float(auc_model), 3),
                    "attribution_auc": round(float(np.nanmean(aucs)), 3),
                    "positives": len(positives),
                    "seconds": round(seconds, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def speed(smiles: list[str], single: int) -> dict:
    torch.manual_seed(0)
    predictor = GraphPredictor(MoleculeModel(encoder=DMPNN(hidden_dim=300, depth=3)))
    explain(predictor, smiles[:8])  # warm-up
    start = time.perf_counter()
    explain(predictor, smiles, "integrated_gradients", steps=50)
    batched = len(smiles) / (time.perf_counter() - start)
    start = time.perf_counter()
    for smi in smiles[:single]:
        explain(predictor, smi, "integrated_gradients", steps=50)
    one_by_one = single / (time.perf_counter() - start)
    return {
        "molecules": len(smiles),
        "batched_mol_per_s": round(batched, 1),
        "one_at_a_time_mol_per_s": round(one_by_one, 1),
        "torch_threads": torch.get_num_threads(),
    }


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--speed-molecules", type=int, default=100)
    parser.add_argument("--speed-single", type=int, default=15)
    parser.add_argument("--output", default=str(RESULTS / "explain.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    smiles, rows = [], []
    for line in NCI.read_text().splitlines():
        mol = Chem.MolFromSmiles(line.split()[0])
        if mol is None or mol.GetNumAtoms() < 2:
            continue
        labels, truth = label(mol)
        smiles.append(line.split()[0])
        rows.append((labels, truth))
        if len(smiles) == args.molecules:
            break
    labels = pd.DataFrame([r[0] for r in rows])
    cut = int(0.8 * len(smiles))
    train, test = smiles[:cut], smiles[cut:]
    test_labels = labels.iloc[cut:].reset_index(drop=True)
    truths = {task: [r[1][task] for r in rows[cut:]] for task in TASKS}
    print("positive rate:", labels.mean().round(3).to_dict(), flush=True)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "train.csv"
        pd.concat([pd.DataFrame({"smiles": train}), labels.iloc[:cut]], axis=1).to_csv(
            csv, index=False
        )
        for encoder in ("dmpnn", "gine"):
            start = time.perf_counter()
            predictor = train_graph(encoder, csv, args.epochs, Path(tmp))
            print(f"{encoder} trained in {time.perf_counter() - start:.0f} s", flush=True)
            results += faithfulness(
                predictor, encoder, GRAPH_METHODS, test, truths, test_labels, args.steps
            )
    xgb_predictor = train_xgb(train, labels.iloc[:cut])
    results += faithfulness(
        xgb_predictor, "xgb_ecfp4", ["shap"], test, truths, test_labels, args.steps
    )
    table = pd.DataFrame(results)
    pivot = table.pivot_table(
        index=["model", "method"], columns="task", values="attribution_auc"
    ).reset_index()
    pivot.columns.name = None
    speed_result = speed(smiles[: args.speed_molecules], args.speed_single)

    print("\n## Attribution ROC-AUC (mean over held-out positives)\n")
    print(markdown(pivot.round(3)))
    print("\n## Model test ROC-AUC\n")
    aucs = table.drop_duplicates(["model", "task"]).pivot(
        index="model", columns="task", values="model_test_auc"
    )
    aucs.columns.name = None
    print(markdown(aucs.reset_index()))
    print("\n## Integrated Gradients speed (D-MPNN hidden 300, depth 3, 50 steps)\n")
    print(markdown(pd.DataFrame([speed_result])))
    record = {
        "args": vars(args),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "positive_rate": labels.mean().round(4).to_dict(),
        "faithfulness": results,
        "speed": speed_result,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
