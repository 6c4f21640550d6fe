"""scripts/bench_explain.py: the ground truth of its substructure tasks and both attribution
ROC-AUC metrics (against every matched atom, and against the best valid explanation);
scripts/bench_deletion.py: its atom masking."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from sklearn.metrics import roc_auc_score

from molml.explain import explain
from molml.models import DMPNN, MoleculeModel
from molml.predict import GraphPredictor

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_explain.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("molml_bench_explain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def matches_of(bench, smiles: str) -> dict:
    mol = Chem.MolFromSmiles(smiles)
    return {
        name: tuple(dict.fromkeys(map(frozenset, mol.GetSubstructMatches(Chem.MolFromSmarts(p)))))
        for name, p in bench.PATTERNS.items()
    }


def rows(masks: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(m).tolist()) for m in masks}


def test_and_task_explanations_are_one_or_more_matches_of_each_fragment(bench) -> None:
    # two benzene rings (atoms 0-5 and 11-16) and one amide (C6, O7, N8)
    smiles = "c1ccccc1C(=O)NCCc1ccccc1"
    matches = matches_of(bench, smiles)
    assert len(matches["benzene"]) == 2 and len(matches["amide"]) == 1
    label, truth = bench.label(matches, "benzene_and_amide")
    assert label == 1 and truth == set(range(9)) | set(range(11, 17))
    masks = bench.valid_explanations(matches, "benzene_and_amide", 17)
    amide = {6, 7, 8}
    first, second = frozenset(range(6)), frozenset(range(11, 17))
    assert rows(masks) == {first | amide, second | amide, first | second | amide}


def test_or_task_explanations_take_either_fragment_or_both(bench) -> None:
    smiles = "FCC(=O)C"  # F0, carbonyl C2=O3
    matches = matches_of(bench, smiles)
    masks = bench.valid_explanations(matches, "fluoride_or_carbonyl", 5)
    assert rows(masks) == {frozenset({0}), frozenset({2, 3}), frozenset({0, 2, 3})}


def test_many_matches_offer_each_alone_or_all(bench) -> None:
    found = tuple(frozenset({k}) for k in range(bench.MAX_MATCHES_COMBINED + 2))
    matches = {name: () for name in bench.PATTERNS} | {"fluoride": found}
    masks = bench.valid_explanations(matches, "fluoride_or_carbonyl", 12)
    assert len(masks) == len(found) + 1


def test_best_attribution_auc_is_the_maximum_of_roc_auc_over_explanations(bench) -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=12), 1)  # ties, to check they count half
    masks = rng.random((20, 12)) < 0.4
    masks[0] = True  # no negative atom: skipped
    expected = max(roc_auc_score(m, scores) for m in masks[1:] if 0 < m.sum() < 12)
    assert bench.best_attribution_auc(scores, masks) == pytest.approx(expected)
    # one explanation: the same as the ROC-AUC against its atoms
    truth = {1, 4, 5}
    one = np.zeros((1, 12), dtype=bool)
    one[0, list(truth)] = True
    assert bench.best_attribution_auc(scores, one) == pytest.approx(
        bench.attribution_auc(scores, truth)
    )


def test_random_control_is_chance_against_every_matched_atom(bench) -> None:
    truths, valid = [], []
    for _ in range(300):
        masks = np.zeros((3, 20), dtype=bool)
        masks[0, :4], masks[1, 10:14], masks[2, :4] = True, True, True
        masks[2, 10:14] = True
        truths.append(set(range(4)) | set(range(10, 14)))
        valid.append(masks)
    row = bench.random_control(np.ones(300, dtype=int), truths, valid, seed=0)
    assert row["attribution_auc"] == pytest.approx(0.5, abs=0.03)
    # the best of three explanations is better than chance even for random scores
    assert row["attribution_auc_any_valid"] > row["attribution_auc"] + 0.03


@pytest.fixture(scope="module")
def deletion():
    sys.path.insert(0, str(SCRIPT.parent))  # bench_deletion imports its sibling bench_explain
    path = SCRIPT.with_name("bench_deletion.py")
    spec = importlib.util.spec_from_file_location("molml_bench_deletion", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(SCRIPT.parent))


def test_deletion_masks_atoms_as_occlusion_does(deletion) -> None:
    """Masking one atom changes the prediction by minus its occlusion score; masking nothing
    reproduces the prediction."""
    torch.manual_seed(0)
    predictor = GraphPredictor(MoleculeModel(encoder=DMPNN(hidden_dim=16, depth=2)).eval())
    smiles = "CC(=O)Nc1ccc(O)cc1"
    (item,) = explain(predictor, [smiles], "occlusion", progress=False)
    sets = [np.array([], dtype=int), *(np.array([a]) for a in range(len(item.atom_scores)))]
    masked = deletion.masked_predictions(predictor, smiles, sets)
    assert masked[0] == pytest.approx(item.prediction, abs=1e-5)
    np.testing.assert_allclose(item.prediction - masked[1:], item.atom_scores, atol=1e-5)
    assert [deletion.size_of(s, 11) for s in deletion.SIZES] == [1, 1, 3]


def test_decoy_scores_split_positives_by_the_decoy_and_count_decoys_on_top(bench) -> None:
    # test molecules 0-3; 0, 1 and 3 are positives; 0 and 3 carry the decoy (atom 5)
    positives = np.array([0, 1, 3])
    truths = [{0, 1}, {0, 1}, set(), {0, 1}]
    decoys = [{5}, set(), set(), {5}]
    scores = [
        np.array([1.0, 0.9, 0, 0, 0, 2.0]),  # the decoy above every true atom
        np.array([1.0, 0.9, 0, 0, 0, 0.0]),
        np.array([1.0, 0.9, 0, 0, 0, 0.5]),  # the decoy below the true atoms
    ]
    best = [0.8, 1.0, 0.9]
    row = bench.decoy_scores(scores, positives, best, truths, decoys)
    assert row["attribution_auc_any_valid_with_decoy"] == pytest.approx(0.85)
    assert row["attribution_auc_any_valid_without_decoy"] == pytest.approx(1.0)
    assert row["decoy_above_truth"] == pytest.approx(0.5)


@pytest.mark.parametrize("rate", [0.9, 0.7])
def test_decoy_rate_sets_the_share_of_training_positives_with_the_decoy(bench, rate) -> None:
    rng = np.random.default_rng(1)
    atom = (frozenset({0}),)
    pool = []  # every combination of benzene, amide and chlorine, 200 molecules each
    for flags in range(8):
        for _ in range(200):
            found = {name: () for name in bench.PATTERNS}
            for bit, name in enumerate(("benzene", "amide", "chlorine")):
                if flags >> bit & 1:
                    found[name] = atom
            pool.append(found)
    rng.shuffle(pool)
    task = "benzene_and_amide_chlorine_decoy"
    train, test = bench.sample_task(pool, task, 100, seed=0, decoy_rate=rate)
    label = {i: bench.label(pool[i], task)[0] for i in train + test}
    has = {i: bool(pool[i]["chlorine"]) for i in train + test}
    positives = [i for i in train if label[i]]
    negatives = [i for i in train if not label[i]]
    assert len(positives) == len(negatives) == 80
    assert sum(has[i] for i in positives) == round(rate * 80)
    assert sum(has[i] for i in negatives) == round((1 - rate) * 80)
    held_out = [i for i in test if label[i]]
    assert sum(has[i] for i in held_out) == len(held_out) // 2


def test_drawing_speed_times_one_process_and_one_per_core(bench, monkeypatch) -> None:
    monkeypatch.setattr(bench, "cpu_cores", lambda: 2)
    model = MoleculeModel(encoder=DMPNN(hidden_dim=8, depth=1))
    explanations = explain(GraphPredictor(model), ["CCO", "c1ccccc1N", "CC(=O)O"], progress=False)
    timings = bench.drawing_speed(explanations)
    assert set(timings) == {
        "drawing_ms_per_molecule_1_processes",
        "drawing_ms_per_molecule_2_processes",
    }
    assert all(value > 0 for value in timings.values())
