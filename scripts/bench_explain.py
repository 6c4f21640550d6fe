"""Attribution faithfulness and speed of ``molml.explain``.

Faithfulness, after Sanchez-Lengeling et al. (2020), "Evaluating attribution for graph neural
networks": real molecules (the SMILES of the HIV data set, through the dataset registry) are
labelled by substructure logic whose true explanation is known, e.g. "benzene AND amide": the
atoms of the matched benzene and amide are the ones that make a molecule positive. For each
task and seed, a balanced sample (``--per-class`` positives and as many negatives) is split
80/20 at random; one single-task classifier per graph encoder (D-MPNN, GINE, AttentiveFP, GPS)
and an XGBoost classifier on ECFP4 bits are trained on the 80%; on the held-out positives each
method's atom scores (on the logit) are ranked against the true atoms: attribution ROC-AUC per
molecule, averaged over the held-out positives, then over seeds. A graph model's atom score is
its total (``MoleculeExplanation.atom_totals``: its own score plus half of each of its bonds');
the ``*_own`` fields rank the atoms' own scores alone. Two sets of true atoms are
scored: every atom of every match of the task's fragments (``attribution_auc``), and, as in
Sanchez-Lengeling et al., the best of the valid explanations (``attribution_auc_any_valid``: one
or more matches of each required fragment; for an OR, of one or more of the fragments present),
since one benzene ring explains "benzene AND amide" as well as all four of a molecule's rings.
A control row scores uniform random atom scores under both.

Tasks: an AND, a three-fragment AND, an AND with a NOT, an OR, and a decoy: "benzene AND amide"
where 90% of training positives and 10% of training negatives also have a chlorine (a shortcut
that is right 90% of the time in training only); its held-out molecules have a chlorine at
random (half of positives and of negatives). The chlorine atoms are not part of the true
explanation: a model that learned the shortcut puts credit on them. How much each model leans
on the decoy is measured on the molecules too: its logit on the held-out positives with the
decoy, as they are and with the decoy's atoms deleted.

Speed: molecules explained per second by Integrated Gradients (50 steps) for a D-MPNN of hidden
size 300, depth 3, batched (``molml.explain.explain``, fp32 and bf16) and one molecule per call,
beside a plain PyTorch Geometric + Captum loop run in the same process on the same random HIV
molecules (a 3-layer GINE of hidden size 64, ``torch_geometric.explain.Explainer`` with
``CaptumExplainer``, one molecule at a time). Beside them, the ceiling the hardware sets: the
matrix-product FLOPs of explaining one molecule, counted, divided by the measured throughput of
a matrix product of the model's layer shape (fp32 and bf16), as molecules/s and as a multiple
of the loop's rate. Then the time to write those molecules'
explanations (``write_explanations``: table, SVG and PNG drawings, page) in one process and in
one per CPU core.

    python scripts/bench_explain.py                               # 3 seeds, every model
    python scripts/bench_explain.py --seeds 0 --encoders dmpnn --tasks benzene_and_amide
    python scripts/bench_explain.py --encoders dmpnn --members 3 --methods integrated_gradients

``--methods integrated_gradients_atoms`` is Integrated Gradients on the atom features only,
the bond features kept along the path (``explain(..., inputs="atoms")``);
``integrated_gradients_zeros`` starts its path from all-zero features instead of the default
chain-carbon baseline (``explain(..., baseline="zeros")``); ``integrated_gradients_probability``
explains the predicted probability instead of the logit (``explain(..., explained=
"probability")``).

``--members N`` explains each graph encoder as an ensemble of N models (seeds S, S + 1000, ...;
the mean of their attributions), reported as its own model beside the single ones.

Rows are written to ``--output`` as each finishes; rerunning skips the rows already there.
"""

from __future__ import annotations

import argparse
import itertools
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
import xgboost as xgb
from rdkit import Chem, RDLogger
from scipy import special
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from torch.utils.flop_counter import FlopCounterMode

from molml.baselines.estimators import XGBoostTaskModel
from molml.baselines.model import BaselineModel
from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.fingerprints import MorganFingerprint
from molml.data.datamodule import MoleculeDataModule
from molml.data.registry import dataset_path
from molml.explain import explain, write_explanations
from molml.explain.graph import ATOMS_PER_PASS
from molml.models import DMPNN, GINE, GPS, AttentiveFP, MoleculeModel
from molml.options import cpu_cores
from molml.predict import BaselinePredictor, EnsemblePredictor, GraphPredictor, Predictor

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
PATTERNS = {
    "benzene": "c1ccccc1",
    "amide": "C(=O)[NX3]",
    "fluoride": "[F]",
    "carbonyl": "[CX3]=[OX1]",
    "hydroxyl": "[OX2H][#6]",
    "chlorine": "[Cl]",
}
# task -> (clauses that must match, clauses of which one must match, clauses that must not)
TASKS = {
    "benzene_and_amide": (["benzene", "amide"], [], []),
    "benzene_and_carbonyl_and_hydroxyl": (["benzene", "carbonyl", "hydroxyl"], [], []),
    "benzene_and_not_carbonyl": (["benzene"], [], ["carbonyl"]),
    "fluoride_or_carbonyl": ([], ["fluoride", "carbonyl"], []),
    "benzene_and_amide_chlorine_decoy": (["benzene", "amide"], [], []),
}
DECOYS = {"benzene_and_amide_chlorine_decoy": "chlorine"}
DECOY_RATE = 0.9  # training positives with the decoy; training negatives have it at 1 - this
ENCODERS = ("dmpnn", "gine", "attentivefp", "gps")
GRAPH_METHODS = (
    "integrated_gradients",
    "integrated_gradients_zeros",
    "integrated_gradients_probability",
    "saliency",
    "input_x_gradient",
    "occlusion",
)
# Integrated Gradients on the atom features only, bond features kept (explain(inputs="atoms"))
ATOM_ONLY_METHODS = ("integrated_gradients_atoms",)
XGB_METHODS = ("shap", "shap_occurrence")  # Morgan bits to atoms: shared / whole per occurrence
MAX_MATCHES_COMBINED = 6  # a fragment with more matches offers each alone or all of them
RANDOM = "random"  # the control: uniform random atom scores


Matches = dict[str, tuple[frozenset[int], ...]]  # pattern -> the atoms of each of its matches


def read_molecules(limit: int | None) -> tuple[list[str], list[Matches]]:
    """The HIV SMILES that RDKit parses, with each pattern's matches (their atoms)."""
    RDLogger.DisableLog("rdApp.*")
    frame = pd.read_csv(dataset_path("hiv"), usecols=["smiles"], nrows=limit)
    patterns = {name: Chem.MolFromSmarts(s) for name, s in PATTERNS.items()}
    smiles, matches = [], []
    for smi in frame["smiles"]:
        mol = Chem.MolFromSmiles(smi)
        if mol is None or mol.GetNumAtoms() < 2:
            continue
        smiles.append(smi)
        matches.append(
            {
                name: tuple(dict.fromkeys(map(frozenset, mol.GetSubstructMatches(p))))
                for name, p in patterns.items()
            }
        )
    return smiles, matches


def label(matches: Matches, task: str) -> tuple[int, set[int]]:
    """A molecule's label for ``task`` and, for a positive, the atoms of every match of its
    fragments (all that could explain it)."""
    all_of, any_of, none_of = TASKS[task]
    positive = (
        all(matches[c] for c in all_of)
        and (not any_of or any(matches[c] for c in any_of))
        and not any(matches[c] for c in none_of)
    )
    truth = set().union(*(m for c in all_of + any_of for m in matches[c])) if positive else set()
    return int(positive), truth


def valid_explanations(matches: Matches, task: str, n_atoms: int) -> np.ndarray:
    """Every atom set that explains a positive on its own, as rows of a boolean matrix: as in
    Sanchez-Lengeling et al., one or more matches of each required fragment (for an OR, of one
    or more of the fragments present), united. With many matches a fragment offers each match
    alone or all of them, so that the rows stay few."""
    all_of, any_of, _ = TASKS[task]

    def unions(found: tuple[frozenset[int], ...]) -> set[frozenset[int]]:
        sizes = range(1, len(found) + 1) if len(found) <= MAX_MATCHES_COMBINED else (1, len(found))
        return {frozenset().union(*c) for r in sizes for c in itertools.combinations(found, r)}

    choices = [unions(matches[c]) for c in all_of]
    present = [c for c in any_of if matches[c]]
    if present:
        either = set()
        for r in range(1, len(present) + 1):
            for names in itertools.combinations(present, r):
                for combo in itertools.product(*(unions(matches[c]) for c in names)):
                    either.add(frozenset().union(*combo))
        choices.append(either)
    rows = {frozenset().union(*combo) for combo in itertools.product(*choices)}
    masks = np.zeros((len(rows), n_atoms), dtype=bool)
    for k, atoms in enumerate(rows):
        masks[k, list(atoms)] = True
    return masks


def sample_task(
    matches: list[Matches], task: str, per_class: int, seed: int, decoy_rate: float = DECOY_RATE
) -> tuple[list[int], list[int]]:
    """Training and held-out molecule indices: ``per_class`` positives and as many negatives,
    split 80/20. Negatives are drawn evenly from each combination of the task's fragments that
    is not positive (for "A AND B": A without B, B without A, neither), so a model must see
    every fragment to separate the classes. With a decoy, ``decoy_rate`` of the training
    positives and ``1 - decoy_rate`` of the training negatives have it; held-out molecules
    have it in half of each class."""
    rng = np.random.default_rng(seed)
    all_of, any_of, none_of = TASKS[task]
    clauses = all_of + any_of + none_of
    labels = np.array([label(m, task)[0] for m in matches])
    signature = np.array([sum(1 << k for k, c in enumerate(clauses) if m[c]) for m in matches])
    decoy = DECOYS.get(task)
    has = np.array([bool(m[decoy]) for m in matches]) if decoy else None
    n_train = int(0.8 * per_class)
    train, test = [], []
    for cls in (1, 0):
        if has is None:
            picked = _even_draw(rng, signature, labels == cls, per_class)
            train += picked[:n_train]
            test += picked[n_train:]
            continue
        n_with = round((decoy_rate if cls == 1 else 1 - decoy_rate) * n_train)
        n_test = per_class - n_train
        fit = _even_draw(rng, signature, (labels == cls) & has, n_with + n_test // 2)
        rest = _even_draw(rng, signature, (labels == cls) & ~has, n_train - n_with + n_test // 2)
        train += fit[:n_with] + rest[: n_train - n_with]
        test += fit[n_with:] + rest[n_train - n_with :]
    return train, test


def _even_draw(rng: np.random.Generator, groups: np.ndarray, pool: np.ndarray, n: int) -> list[int]:
    """``n`` indices of ``pool``, drawn as evenly as the groups' sizes allow, in random order."""
    members = [
        rng.permutation(np.flatnonzero(pool & (groups == g))) for g in np.unique(groups[pool])
    ]
    picked: list[int] = []
    while len(picked) < n and any(len(m) for m in members):
        quota = max(1, (n - len(picked)) // sum(1 for m in members if len(m)))
        for k, m in enumerate(members):
            take = m[: min(quota, n - len(picked))]
            picked += take.tolist()
            members[k] = m[len(take) :]
    return rng.permutation(picked).tolist()


def train_graph(
    encoder: str, csv: Path, args: argparse.Namespace, seed: int, root: Path
) -> GraphPredictor:
    L.seed_everything(seed, workers=True)
    dm = MoleculeDataModule(
        path=str(csv),
        target_columns=["label"],
        task_type="classification",
        featurizer=featurizer_for(encoder),
        split="random",
        split_sizes=(0.85, 0.1, 0.05),
        split_seed=seed,
        cache_dir=None,
        featurize_jobs=1,
        batch_size=64,
    )
    return fit_graph_model(encoder, dm, args.hidden, args.epochs, root)


def featurizer_for(encoder: str) -> MolGraphFeaturizer:
    """The default featurizer, with random-walk encodings for GPS."""
    return MolGraphFeaturizer(random_walk_steps=16 if encoder == "gps" else 0)


def fit_graph_model(
    encoder: str, dm: MoleculeDataModule, hidden: int, epochs: int, root: Path
) -> GraphPredictor:
    """Train one ``encoder`` model (depth 3, sum readout) on ``dm``'s task for ``epochs`` on
    the CPU, without logger or checkpoints; run files go to ``root``."""
    make = {
        "dmpnn": lambda: DMPNN(hidden_dim=hidden, depth=3),
        "gine": lambda: GINE(hidden_dim=hidden, depth=3),
        "attentivefp": lambda: AttentiveFP(hidden_dim=hidden, depth=3),
        "gps": lambda: GPS(hidden_dim=hidden, depth=3, heads=4),
    }[encoder]
    model = MoleculeModel(
        encoder=make(),
        ffn_hidden_dim=hidden,
        readout="sum",
        tasks=dm.tasks,
        task_type=dm.molecules.task_type,
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


def model_name(encoder: str, members: int) -> str:
    """``dmpnn`` for one model, ``dmpnn_x3`` for an ensemble of three."""
    return encoder if members == 1 else f"{encoder}_x{members}"


def train_members(
    encoder: str, csv: Path, args: argparse.Namespace, seed: int, root: Path
) -> Predictor:
    """One model, or with ``--members N`` an ensemble of N trained with seeds ``seed``,
    ``seed + 1000``, ... (the first is the single model of the same seed)."""
    if args.members == 1:
        return train_graph(encoder, csv, args, seed, root)
    return EnsemblePredictor(
        [train_graph(encoder, csv, args, seed + 1000 * k, root) for k in range(args.members)]
    )


def train_xgb(smiles: list[str], labels: np.ndarray) -> BaselinePredictor:
    fingerprint = MorganFingerprint(radius=2, n_bits=2048)
    X, _ = fingerprint.transform(smiles)
    clf = xgb.XGBClassifier(n_estimators=200, max_depth=6, learning_rate=0.1, n_jobs=1)
    booster = clf.fit(X, labels).get_booster()
    task_models = [XGBoostTaskModel(booster)]
    model = BaselineModel(fingerprint, ["label"], "classification", "xgboost", task_models)
    return BaselinePredictor(model)


def best_attribution_auc(scores: np.ndarray, masks: np.ndarray) -> float:
    """The highest attribution ROC-AUC over the valid explanations (rows of ``masks``), from
    the rank-sum form of ROC-AUC (ties count half, as ``roc_auc_score``)."""
    ranks = rankdata(scores)
    positives = masks.sum(axis=1)
    negatives = masks.shape[1] - positives
    usable = (positives > 0) & (negatives > 0)
    if not usable.any():
        return float("nan")
    pos, neg = positives[usable], negatives[usable]
    auc = (masks[usable] @ ranks - pos * (pos + 1) / 2) / (pos * neg)
    return float(auc.max())


def attribution_auc(scores: np.ndarray, atoms: set[int]) -> float:
    truth = np.zeros(len(scores), dtype=int)
    truth[list(atoms)] = 1
    if truth.min() == truth.max():
        return float("nan")
    return float(roc_auc_score(truth, scores))


def score_model(
    predictor: Any,
    name: str,
    methods: list[str],
    test: list[str],
    labels: np.ndarray,
    truths: list[set[int]],
    valid: list[np.ndarray],
    steps: int,
    decoys: list[set[int]] | None = None,
    decoy_smarts: str | None = None,
) -> list[dict[str, Any]]:
    """Model test ROC-AUC and, per method, attribution ROC-AUC on the held-out positives; with
    ``decoys`` (each test molecule's decoy atoms), also split by whether a positive has the decoy,
    and how often a decoy atom outscores every true atom; with ``decoy_smarts`` too, how much
    the model leans on the decoy (:func:`decoy_reliance`)."""
    model_auc = roc_auc_score(labels, predictor.predict(test)["label"])
    reliance = {}
    if decoys is not None and decoy_smarts is not None:
        reliance = decoy_reliance(predictor, test, labels, decoys, decoy_smarts)
    positives = np.flatnonzero(labels == 1)
    rows = []
    for method in methods:
        start = time.perf_counter()
        mapping = "occurrence" if method == "shap_occurrence" else "shared"
        base = method
        for variant in ("_occurrence", "_atoms", "_zeros", "_probability"):
            base = base.removesuffix(variant)
        baseline = "zeros" if method.endswith("_zeros") else "carbon"
        result = explain(
            predictor,
            [test[i] for i in positives],
            base,
            steps=steps if base == "integrated_gradients" else None,
            shap_mapping=mapping,
            inputs="atoms" if method in ATOM_ONLY_METHODS else "atoms_and_bonds",
            baseline=baseline if base == "integrated_gradients" else None,
            explained="probability" if method.endswith("_probability") else "logit",
        )
        seconds = time.perf_counter() - start
        pairs = list(zip(result, positives, strict=True))
        scores = [r.atom_totals for r in result]
        atoms = [attribution_auc(s, truths[i]) for s, i in zip(scores, positives, strict=True)]
        best = [best_attribution_auc(s, valid[i]) for s, i in zip(scores, positives, strict=True)]
        row = {
            "model": name,
            "method": method,
            "model_test_auc": round(float(model_auc), 4),
            "attribution_auc": round(float(np.nanmean(atoms)), 4),
            "attribution_auc_any_valid": round(float(np.nanmean(best)), 4),
            "positives": len(positives),
            "seconds": round(seconds, 1),
        }
        if decoys is not None:
            row.update(decoy_scores(scores, positives, best, truths, decoys))
            row.update(reliance)
        if name != "xgb_ecfp4" and method not in ATOM_ONLY_METHODS:
            own = [attribution_auc(r.atom_scores, truths[i]) for r, i in pairs]
            best_own = [best_attribution_auc(r.atom_scores, valid[i]) for r, i in pairs]
            row["attribution_auc_own"] = round(float(np.nanmean(own)), 4)
            row["attribution_auc_any_valid_own"] = round(float(np.nanmean(best_own)), 4)
        rows.append(row)
    return rows


def decoy_scores(
    scores: list[np.ndarray],
    positives: np.ndarray,
    best: list[float],
    truths: list[set[int]],
    decoys: list[set[int]],
) -> dict[str, float]:
    """The best-valid-explanation ROC-AUC of the positives with and without the decoy, and the
    share of those with it where a decoy atom scores above every true atom."""
    has = np.array([bool(decoys[i]) for i in positives])
    best_array = np.array(best)
    above = [
        max(s[list(decoys[i])]) > max(s[list(truths[i])])
        for s, i in zip(scores, positives, strict=True)
        if decoys[i]
    ]
    return {
        "attribution_auc_any_valid_with_decoy": round(float(np.nanmean(best_array[has])), 4),
        "attribution_auc_any_valid_without_decoy": round(float(np.nanmean(best_array[~has])), 4),
        "decoy_above_truth": round(float(np.mean(above)), 4),
    }


def decoy_reliance(
    predictor: Any, test: list[str], labels: np.ndarray, decoys: list[set[int]], smarts: str
) -> dict[str, float]:
    """How much the model leans on the decoy, measured on the molecules themselves: its mean
    logit on the held-out positives that carry the decoy, as they are and with the decoy's atoms
    deleted (RDKit fills in the hydrogens), and the share of them it still calls positive
    without it. Where the logit falls by a large part of its value, an explanation faithful to
    the model has to give the decoy a large part of the credit."""
    pattern = Chem.MolFromSmarts(smarts)
    kept, removed = [], []
    for i in np.flatnonzero(labels == 1):
        if not decoys[i]:
            continue
        mol = Chem.DeleteSubstructs(Chem.MolFromSmiles(test[i]), pattern)
        if Chem.SanitizeMol(mol, catchErrors=True) == Chem.SanitizeFlags.SANITIZE_NONE:
            kept.append(test[i])
            removed.append(Chem.MolToSmiles(mol))

    def logits(smiles: list[str]) -> np.ndarray:
        probability = predictor.predict(smiles)["label"].to_numpy(dtype=np.float64)
        return special.logit(np.clip(probability, 1e-7, 1 - 1e-7))

    with_decoy, without = logits(kept), logits(removed)
    return {
        "decoy_logit_with": round(float(with_decoy.mean()), 3),
        "decoy_logit_removed": round(float(without.mean()), 3),
        "decoy_called_positive_removed": round(float(np.mean(without > 0)), 4),
    }


def random_control(
    labels: np.ndarray, truths: list[set[int]], valid: list[np.ndarray], seed: int
) -> dict[str, Any]:
    """Both attribution ROC-AUCs of uniform random atom scores: what each metric gives for
    no information (0.5 against all matched atoms; more for the best valid explanation)."""
    rng = np.random.default_rng(seed)
    positives = np.flatnonzero(labels == 1)
    draws = [rng.random(valid[i].shape[1]) for i in positives]
    atoms = [attribution_auc(d, truths[i]) for d, i in zip(draws, positives, strict=True)]
    best = [best_attribution_auc(d, valid[i]) for d, i in zip(draws, positives, strict=True)]
    return {
        "model": RANDOM,
        "method": RANDOM,
        "model_test_auc": float("nan"),
        "attribution_auc": round(float(np.nanmean(atoms)), 4),
        "attribution_auc_any_valid": round(float(np.nanmean(best)), 4),
        "positives": len(positives),
    }


def faithfulness(args: argparse.Namespace, record: dict[str, Any], save: Any) -> None:
    smiles, matches = read_molecules(args.limit)
    print(f"{len(smiles)} HIV molecules", flush=True)
    done = {(r["seed"], r["task"], r["model"], r["method"]) for r in record["faithfulness"]}
    graph_models = {model_name(encoder, args.members): encoder for encoder in args.encoders}
    methods_of = {
        RANDOM: (RANDOM,),
        "xgb_ecfp4": XGB_METHODS,
        **{name: tuple(args.methods) for name in graph_models},
    }
    for seed in args.seeds:
        for task in args.tasks:
            todo = [
                m
                for m, methods in methods_of.items()
                if any((seed, task, m, method) not in done for method in methods)
            ]
            if not todo:
                continue
            train, test = sample_task(matches, task, args.per_class, seed, args.decoy_rate)
            train_labels = np.array([label(matches[i], task)[0] for i in train])
            test_labels = np.array([label(matches[i], task)[0] for i in test])
            truths = [label(matches[i], task)[1] for i in test]
            train_smiles, test_smiles = [smiles[i] for i in train], [smiles[i] for i in test]
            valid = [
                valid_explanations(matches[i], task, Chem.MolFromSmiles(smiles[i]).GetNumAtoms())
                if y
                else np.zeros((0, 0), dtype=bool)
                for i, y in zip(test, test_labels, strict=True)
            ]
            decoy = DECOYS.get(task)
            decoys = [set().union(*matches[i][decoy]) for i in test] if decoy else None
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "train.csv"
                pd.DataFrame({"smiles": train_smiles, "label": train_labels}).to_csv(
                    csv, index=False
                )
                for name in todo:
                    start = time.perf_counter()
                    if name == RANDOM:
                        row = random_control(test_labels, truths, valid, seed)
                        record["faithfulness"].append({"seed": seed, "task": task, **row})
                        print(record["faithfulness"][-1], flush=True)
                        continue
                    if name == "xgb_ecfp4":
                        predictor = train_xgb(train_smiles, train_labels)
                    else:
                        predictor = train_members(graph_models[name], csv, args, seed, Path(tmp))
                    methods = [m for m in methods_of[name] if (seed, task, name, m) not in done]
                    fit_seconds = time.perf_counter() - start
                    for row in score_model(
                        predictor,
                        name,
                        methods,
                        test_smiles,
                        test_labels,
                        truths,
                        valid,
                        args.steps,
                        decoys,
                        PATTERNS[decoy] if decoy else None,
                    ):
                        row = {"seed": seed, "task": task, **row}
                        row["fit_seconds"] = round(fit_seconds, 1)
                        record["faithfulness"].append(row)
                        print(row, flush=True)
                    save()


def reference_loop(smiles: list[str], steps: int) -> float:
    """Molecules/s of plain PyG + Captum: a 3-layer GINE (hidden 64) explained one molecule at a
    time with ``Explainer(algorithm=CaptumExplainer("IntegratedGradients"))`` on node features."""
    from torch_geometric.explain import CaptumExplainer, Explainer
    from torch_geometric.nn import GINEConv, global_add_pool
    from torch_geometric.utils import from_smiles

    class Gine(torch.nn.Module):
        def __init__(self, atoms: int, bonds: int, hidden: int = 64) -> None:
            super().__init__()
            self.atom, self.bond = torch.nn.Linear(atoms, hidden), torch.nn.Linear(bonds, hidden)
            self.convs = torch.nn.ModuleList(
                GINEConv(torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU()))
                for _ in range(3)
            )
            self.out = torch.nn.Linear(hidden, 1)

        def forward(self, x, edge_index, edge_attr, batch):  # noqa: ANN001, ANN201
            h, e = self.atom(x), self.bond(edge_attr)
            for conv in self.convs:
                h = conv(h, edge_index, e).relu()
            return self.out(global_add_pool(h, batch))

    graphs = [from_smiles(s) for s in smiles]
    for g in graphs:
        g.x, g.edge_attr = g.x.float(), g.edge_attr.float()
    torch.manual_seed(0)
    model = Gine(graphs[0].x.shape[1], graphs[0].edge_attr.shape[1]).eval()
    explainer = Explainer(
        model,
        algorithm=CaptumExplainer("IntegratedGradients", n_steps=steps),
        explanation_type="model",
        node_mask_type="attributes",
        edge_mask_type=None,
        model_config={"mode": "regression", "task_level": "graph", "return_type": "raw"},
    )

    def run(g: Any) -> None:
        batch = torch.zeros(g.num_nodes, dtype=torch.long)
        explainer(g.x, g.edge_index, edge_attr=g.edge_attr, batch=batch)

    for g in graphs[:3]:  # warm-up
        run(g)
    start = time.perf_counter()
    for g in graphs:
        run(g)
    return len(graphs) / (time.perf_counter() - start)


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Molecules/s of Integrated Gradients on the same random HIV molecules: molml batched (fp32
    and bf16) on ``--device``, molml one molecule per call, and the plain PyG + Captum loop (on
    the CPU, as the reference was measured). ``--batch-sizes`` and ``--atoms-per-pass`` also
    time the batched run at other chunk sizes (rows of ``sweep``)."""
    smiles, _ = read_molecules(args.speed_molecules * 4)
    rng = np.random.default_rng(0)
    smiles = [smiles[i] for i in rng.permutation(len(smiles))[: args.speed_molecules]]
    looped = smiles[: args.loop_molecules]
    torch.manual_seed(0)
    model = MoleculeModel(encoder=DMPNN(hidden_dim=300, depth=3)).to(args.device)
    predictor = GraphPredictor(model)
    device = torch.device(args.device)
    result: dict[str, Any] = {
        "molecules": len(smiles),
        "loop_molecules": len(looped),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
    }

    def rate(run: Any, count: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return round(count / (time.perf_counter() - start), 1)

    def batched(precision: str, batch_size: int | None) -> float:
        explain(predictor, smiles[:8], precision=precision)  # warm-up
        return rate(
            lambda: explain(
                predictor, smiles, steps=args.steps, precision=precision, batch_size=batch_size
            ),
            len(smiles),
        )

    for precision in ("32", "bf16-mixed"):
        result[f"molml_batched_{precision}"] = batched(precision, None)  # the defaults
    default_atoms = ATOMS_PER_PASS.copy()
    sweep = []
    for batch_size, atoms in itertools.product(args.batch_sizes, args.atoms_per_pass):
        ATOMS_PER_PASS["cpu" if device.type == "cpu" else "other"] = atoms
        for precision in ("32", "bf16-mixed"):
            sweep.append(
                {
                    "batch_size": batch_size,
                    "atoms_per_pass": atoms,
                    "precision": precision,
                    "molecules_per_second": batched(precision, batch_size),
                }
            )
            print(sweep[-1], flush=True)
        ATOMS_PER_PASS.update(default_atoms)
    result["molml_one_at_a_time_32"] = rate(
        lambda: [explain(predictor, smi, steps=args.steps) for smi in looped], len(looped)
    )
    reference = reference_loop(looped, args.steps)
    result["pyg_captum_gine64_one_at_a_time"] = round(reference, 1)
    for precision in ("32", "bf16-mixed"):
        result[f"ratio_batched_{precision}"] = round(
            result[f"molml_batched_{precision}"] / reference, 2
        )
    if sweep:
        result["sweep"] = sweep
    result.update(ceiling(predictor, smiles, args.steps, device, reference))
    result.update(drawing_speed(explain(predictor, smiles, steps=args.steps, progress=False)))
    return result


def ceiling(
    predictor: GraphPredictor, smiles: list[str], steps: int, device: torch.device, loop: float
) -> dict[str, float]:
    """The rate no implementation of these ``steps`` passes can beat on ``device``: the matrix
    products one ``explain`` call runs per molecule (``FlopCounterMode``: forward and backward),
    against the throughput of one matrix product at the D-MPNN's layer shape (4,096 rows of
    300 by 300), fp32 and bf16, with as many threads as the timed runs."""
    with FlopCounterMode(display=False) as counter:
        explain(predictor, smiles, steps=steps, progress=False)
    flops = counter.get_total_flops() / len(smiles)
    result = {"gflop_per_molecule": round(flops / 1e9, 3)}
    for name, dtype in (("32", torch.float32), ("bf16-mixed", torch.bfloat16)):
        rows = torch.randn(4096, 300, dtype=dtype, device=device)
        weight = torch.randn(300, 300, dtype=dtype, device=device)
        for _ in range(10):  # warm-up
            rows @ weight
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        repeats, start = 200, time.perf_counter()
        for _ in range(repeats):
            rows @ weight
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peak = 2 * 4096 * 300 * 300 * repeats / (time.perf_counter() - start)
        result[f"matmul_gflops_{name}"] = round(peak / 1e9, 1)
        result[f"ceiling_{name}"] = round(peak / flops, 1)
        result[f"ceiling_ratio_{name}"] = round(peak / flops / loop, 2)
    return result


def drawing_speed(explanations: list[Any]) -> dict[str, float]:
    """Milliseconds per molecule of ``write_explanations`` (table, SVG and PNG per molecule,
    page) in one process and in one per core this process may use."""
    timings = {}
    for jobs in dict.fromkeys((1, cpu_cores())):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            write_explanations(explanations, folder, units="target units", jobs=jobs)
            seconds = time.perf_counter() - start
        timings[f"drawing_ms_per_molecule_{jobs}_processes"] = round(
            1000 * seconds / len(explanations), 1
        )
    return timings


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


TITLES = {
    "benzene_and_amide": "benzene AND amide",
    "benzene_and_carbonyl_and_hydroxyl": "benzene AND carbonyl AND hydroxyl",
    "benzene_and_not_carbonyl": "benzene AND NOT carbonyl",
    "fluoride_or_carbonyl": "fluoride OR carbonyl",
    "benzene_and_amide_chlorine_decoy": "benzene AND amide, chlorine decoy",
}
MODEL_TITLES = {
    "dmpnn": "D-MPNN",
    "gine": "GINE",
    "attentivefp": "AttentiveFP",
    "gps": "GPS",
    "xgb_ecfp4": "XGBoost ECFP4",
    RANDOM: "random scores (control)",
}


def model_title(name: str) -> str:
    encoder, _, members = name.partition("_x")
    title = MODEL_TITLES[encoder]
    return f"{title}, ensemble of {members}" if members else title


METRICS = {
    "attribution_auc": "Attribution ROC-AUC against every matched atom",
    "attribution_auc_any_valid": "Attribution ROC-AUC against the best valid explanation",
    "attribution_auc_any_valid_own": "The same, atoms' own scores without their bonds' shares",
}


def summary(record: dict[str, Any]) -> None:
    """Attribution ROC-AUC per model and method, under each metric the rows have (mean over
    seeds; the lowest task beside), and each model's test ROC-AUC per task."""
    table = pd.DataFrame(record["faithfulness"])
    if table.empty:
        return
    tasks = [t for t in TASKS if t in set(table["task"])]
    order = {name: k for k, name in enumerate(MODEL_TITLES)}
    table = table.sort_values(
        "model", key=lambda c: c.map(lambda m: (order[m.split("_x")[0]], m)), kind="stable"
    )
    for metric, title in METRICS.items():
        if metric not in table:
            continue
        rows = table.dropna(subset=[metric])
        pivot = rows.pivot_table(
            index=["model", "method"], columns="task", values=metric, sort=False
        ).reindex(columns=tasks)
        pivot["lowest"] = pivot.min(axis=1)
        pivot["seeds"] = rows.groupby(["model", "method"])["seed"].nunique()
        out = pivot.round(3).reset_index().rename(columns=TITLES)
        out["model"] = out["model"].map(model_title)
        print(f"\n## {title} (held-out positives, mean over seeds)\n")
        print(markdown(out))
    if "decoy_above_truth" in table:
        columns = {
            "attribution_auc_any_valid_with_decoy": "positives with the decoy",
            "attribution_auc_any_valid_without_decoy": "positives without it",
            "decoy_above_truth": "decoy above every true atom",
        }
        decoy = table.dropna(subset=["decoy_above_truth"])
        out = decoy.groupby(["task", "model", "method"], sort=False)[list(columns)].mean()
        out = out.round(3).reset_index().rename(columns={**TITLES, **columns})
        out["model"] = out["model"].map(model_title)
        out["task"] = out["task"].map(TITLES)
        print("\n## Decoy tasks: best-valid ROC-AUC by whether a positive has the decoy\n")
        print(markdown(out))
    if "decoy_logit_with" in table:
        columns = {
            "decoy_logit_with": "logit, positives with the decoy",
            "decoy_logit_removed": "logit, decoy deleted",
            "decoy_called_positive_removed": "still called positive",
        }
        reliance = table.dropna(subset=["decoy_logit_with"]).drop_duplicates(
            ["seed", "task", "model"]
        )
        out = reliance.groupby(["task", "model"], sort=False)[list(columns)].mean()
        out = out.round(3).reset_index().rename(columns={**TITLES, **columns})
        out["model"] = out["model"].map(model_title)
        out["task"] = out["task"].map(TITLES)
        print("\n## Decoy tasks: how much each model leans on the decoy\n")
        print(markdown(out))
    trained = table[table["model"] != RANDOM]
    models = trained.drop_duplicates(["seed", "task", "model"]).pivot_table(
        index="model", columns="task", values="model_test_auc", sort=False
    )[tasks]
    models = models.round(3).reset_index().rename(columns=TITLES)
    models["model"] = models["model"].map(model_title)
    print("\n## Model test ROC-AUC (mean over seeds)\n")
    print(markdown(models))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--encoders", nargs="*", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=GRAPH_METHODS + ATOM_ONLY_METHODS,
        default=GRAPH_METHODS + ATOM_ONLY_METHODS,
    )
    parser.add_argument(
        "--members",
        type=int,
        default=1,
        help="explain each graph encoder as an ensemble of this many models (mean map)",
    )
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument(
        "--decoy-rate",
        type=float,
        default=DECOY_RATE,
        help="share of training positives with the decoy (negatives: 1 - this); give another "
        "rate its own --output",
    )
    parser.add_argument("--limit", type=int, default=None, help="read only this many HIV rows")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--speed-molecules", type=int, default=100)
    parser.add_argument(
        "--loop-molecules", type=int, default=None, help="molecules for the one-at-a-time rates"
    )
    parser.add_argument("--device", default="cpu", help="the D-MPNN's device for speed: cpu, cuda")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="*", default=[], help="speed sweep: molecules per chunk"
    )
    parser.add_argument(
        "--atoms-per-pass", type=int, nargs="*", default=[], help="speed sweep: atoms per pass"
    )
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-faithfulness", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS / "explain.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MOLML_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
    if args.threads:
        torch.set_num_threads(args.threads)
    record = {"faithfulness": [], "speed": None}
    if args.output.exists():
        record.update(json.loads(args.output.read_text()))
    record["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    settings = {k: str(v) for k, v in vars(args).items()}

    def save() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({**record, "args": settings}, indent=2))

    if not args.no_faithfulness:
        faithfulness(args, record, save)
    if not args.no_speed:
        record["speed"] = speed(args)
        save()
    summary(record)
    if record["speed"]:
        print("\n## Integrated Gradients speed (D-MPNN hidden 300, depth 3)\n")
        rates = {k: v for k, v in record["speed"].items() if k != "sweep"}
        print(markdown(pd.DataFrame([rates])))
        if record["speed"].get("sweep"):
            print("\n## Batched Integrated Gradients by chunk size (molecules/s)\n")
            print(markdown(pd.DataFrame(record["speed"]["sweep"])))


if __name__ == "__main__":
    main()
