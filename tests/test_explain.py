"""Explanations: Captum attributions of graph models, SHAP of fingerprint baselines, ensembles,
drawings, the HTML page and the ``molml explain`` command."""

from __future__ import annotations

import json
import logging
import math
import re
from functools import partial
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import shap
import torch
from conftest import INVALID_SMILES, nci_smiles
from PIL import Image
from rdkit import Chem

import molml
from molml.chem.featurizer import DEFAULT_ELEMENTS, MolGraphFeaturizer
from molml.cli import main
from molml.errors import DataError, PredictorError
from molml.explain import explain, explanations_frame, write_explanations
from molml.explain import run as explain_run
from molml.explain.baseline import environment_atoms
from molml.explain.drawing import missing_id, value_caption
from molml.explain.graph import chain_carbon
from molml.models import (
    DMPNN,
    GINE,
    GPS,
    PNA,
    AttentiveFP,
    GATv2,
    Graphormer,
    MoleculeModel,
)
from molml.predict import BaselinePredictor, EnsemblePredictor, GraphPredictor

ENCODERS = {
    "dmpnn": partial(DMPNN, hidden_dim=16, depth=2),
    "gine": partial(GINE, hidden_dim=16, depth=2),
    "gatv2": partial(GATv2, hidden_dim=16, depth=2, heads=2),
    "attentivefp": partial(AttentiveFP, hidden_dim=16, depth=2),
    "pna": partial(PNA, hidden_dim=16, depth=2, towers=4),
    "gps": partial(GPS, hidden_dim=16, depth=2, heads=2),
    "graphormer": partial(Graphormer, hidden_dim=16, depth=2, heads=2, ffn_dim=32),
}
MOLECULES = ["CC(=O)Nc1ccc(O)cc1", "C", "[Na+].[Cl-]", "c1ccncc1CCN", "O=C(O)c1ccccc1"]


def nitrogen_counter() -> GraphPredictor:
    """A D-MPNN whose prediction is the number of nitrogen atoms, set by hand: the atom
    embedding copies the nitrogen one-hot into channel 0, bonds are ignored, the encoder's output
    layer passes channel 0 through, the readout sums and the head reads channel 0."""
    hidden = 8
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=hidden, depth=2), readout="sum", ffn_num_layers=1
    )
    nitrogen = DEFAULT_ELEMENTS.index(7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.atom_embedding.weight[0, nitrogen] = 1.0
        model.encoder.W_o.weight[0, 0] = 1.0
        model.head[-1].weight[0, 0] = 1.0
    return GraphPredictor(model)


def nitrogen_classifier() -> GraphPredictor:
    """:func:`nitrogen_counter` as a binary classifier ``has_n``: its logit is the number of
    nitrogen atoms."""
    classifier = MoleculeModel(
        encoder=DMPNN(hidden_dim=8, depth=2),
        readout="sum",
        ffn_num_layers=1,
        tasks=["has_n"],
        task_type="classification",
    )
    classifier.load_state_dict(nitrogen_counter().model.state_dict(), strict=False)
    return GraphPredictor(classifier.eval())


@pytest.fixture(scope="module")
def trained(graph_run: dict) -> GraphPredictor:
    return molml.load_model(graph_run["ckpt"])


def test_integrated_gradients_is_complete_on_a_trained_model(trained: GraphPredictor) -> None:
    smiles = nci_smiles(20)
    result = explain(trained, smiles, task="tpsa", steps=50)
    prediction = trained.predict(smiles)["tpsa"].to_numpy()
    explained = np.array([r.explained_value for r in result])
    np.testing.assert_allclose(explained, prediction, rtol=1e-4, atol=1e-3)  # target units
    # completeness: sum of attributions = f(x) - f(0) within 1% of the output range
    gaps = np.abs([r.completeness_gap for r in result])
    assert gaps.max() < 0.01 * (np.ptp(prediction) + 1.0), gaps
    totals = np.array([r.atom_scores.sum() + r.bond_scores.sum() for r in result])
    assert np.abs(totals).max() > 1.0  # the attributions are not trivially zero


def test_atom_only_integrated_gradients_is_complete_and_leaves_bonds_unscored(
    trained: GraphPredictor,
) -> None:
    """With ``inputs="atoms"`` the bond features stay as they are along the path: the atom
    scores alone add up to f(x) - f(x with baseline atoms, real bonds), and they differ from
    the joint attribution from zeros, where bonds take a share."""
    smiles = nci_smiles(20)
    atoms_only = explain(trained, smiles, task="tpsa", steps=50, inputs="atoms", baseline="zeros")
    joint = explain(trained, smiles, task="tpsa", steps=50, baseline="zeros")
    prediction = trained.predict(smiles)["tpsa"].to_numpy()
    gaps = np.abs([r.completeness_gap for r in atoms_only])
    assert gaps.max() < 0.01 * (np.ptp(prediction) + 1.0), gaps
    for item, other in zip(atoms_only, joint, strict=True):
        assert np.isnan(item.bond_scores).all() and len(item.bond_scores) == item.mol.GetNumBonds()
        assert not np.allclose(item.atom_scores, other.atom_scores, atol=1e-3)
    with pytest.raises(DataError, match="gradient methods"):
        explain(trained, smiles[:2], method="occlusion", inputs="atoms")
    with pytest.raises(DataError, match="inputs must be one of"):
        explain(trained, smiles[:2], inputs="bonds")


def test_the_carbon_baseline_gives_chain_carbons_and_single_bonds_nothing(
    trained: GraphPredictor,
) -> None:
    """Integrated Gradients' default path starts from every atom a chain CH2 carbon and every
    bond a single bond: such atoms and bonds score exactly zero, the others do not, the scores
    add up to f(x) - f(baseline), and they differ from those of the all-zero baseline."""
    smiles = ["CCCCC(=O)NCCc1ccccc1", "OCCCCN", "CCOC(=O)c1ccc(N)cc1"]
    carbon = explain(trained, smiles, task="tpsa", baseline="carbon")
    zeros = explain(trained, smiles, task="tpsa")  # a regression model's default
    featurizer = trained.model.featurizer
    chain_atom, single_bond = chain_carbon(featurizer)
    prediction = trained.predict(smiles)["tpsa"].to_numpy()
    for item, other in zip(carbon, zeros, strict=True):
        graph = featurizer(item.smiles)
        plain = (graph.x == chain_atom).all(dim=1).numpy()
        assert plain.any() and not plain.all()
        np.testing.assert_allclose(item.atom_scores[plain], 0.0, atol=1e-6)
        assert np.abs(item.atom_scores[~plain]).max() > 1e-3
        single = (graph.edge_attr[0::2] == single_bond).all(dim=1).numpy()
        np.testing.assert_allclose(item.bond_scores[single], 0.0, atol=1e-6)
        assert abs(item.completeness_gap) < 0.01 * (np.ptp(prediction) + 1.0)
        assert not np.allclose(item.atom_scores, other.atom_scores, atol=1e-3)
        # the scores add up to the explained value minus the value at the baseline
        assert (item.baseline, other.baseline) == ("carbon", "zeros")
        total = item.atom_scores.sum() + item.bond_scores.sum()
        assert total == pytest.approx(
            item.explained_value - item.baseline_value + item.completeness_gap, abs=1e-4
        )
        assert item.baseline_value != pytest.approx(other.baseline_value, abs=1e-3)
    with pytest.raises(DataError, match="baseline must be one of"):
        explain(trained, smiles[:1], baseline="mean")


def test_atom_totals_share_each_bond_between_its_atoms(trained: GraphPredictor) -> None:
    (item,) = explain(trained, ["OC(=O)C=C"], task="tpsa", baseline="zeros")
    # O0-C1 (bond 0), C1=O2 (bond 1), C1-C3 (bond 2), C3=C4 (bond 3)
    atoms, bonds = item.atom_scores, item.bond_scores
    expected = (
        atoms
        + np.array(
            [bonds[0], bonds[0] + bonds[1] + bonds[2], bonds[1], bonds[2] + bonds[3], bonds[3]]
        )
        / 2
    )
    np.testing.assert_allclose(item.atom_totals, expected)
    assert item.atom_totals.sum() == pytest.approx(atoms.sum() + bonds.sum())
    frame = explanations_frame([item])
    np.testing.assert_allclose(frame.loc[frame["kind"] == "atom", "score_with_bonds"], expected)
    assert frame.loc[frame["kind"] == "bond", "score_with_bonds"].isna().all()
    (only_atoms,) = explain(trained, ["OC(=O)C=C"], task="tpsa", inputs="atoms")
    np.testing.assert_allclose(only_atoms.atom_totals, only_atoms.atom_scores)
    only_atoms.bond_scores = None  # an explanation made by hand, without bond scores
    np.testing.assert_allclose(only_atoms.atom_totals, only_atoms.atom_scores)


def test_the_atoms_a_model_counts_get_the_scores() -> None:
    predictor = nitrogen_counter()
    smiles = ["CC(=O)Nc1ccc(N)cc1", "c1ccncc1CCN", "CCOC"]
    assert predictor.predict(smiles)["target"].tolist() == [2.0, 2.0, 0.0]
    runs = [("integrated_gradients", "atoms_and_bonds", "carbon")]
    runs += [("integrated_gradients", "atoms_and_bonds", "zeros")]
    runs += [("input_x_gradient", "atoms_and_bonds", None)]
    runs += [
        ("occlusion", "atoms_and_bonds", None),
        ("integrated_gradients", "atoms", "carbon"),
    ]
    for method, inputs, baseline in runs:
        for item in explain(predictor, smiles, method=method, inputs=inputs, baseline=baseline):
            is_n = np.array([a.GetSymbol() == "N" for a in item.mol.GetAtoms()])
            np.testing.assert_allclose(item.atom_scores[is_n], 1.0, atol=1e-5)
            np.testing.assert_allclose(item.atom_scores[~is_n], 0.0, atol=1e-5)
            if inputs == "atoms_and_bonds":
                np.testing.assert_allclose(item.bond_scores, 0.0, atol=1e-5)


def test_random_walk_columns_are_kept_as_part_of_the_graph() -> None:
    """A model that reads only the random-walk encodings (structure) predicts non-zero values,
    yet no atom's chemistry changes it: every attribution is zero."""
    steps = 4
    featurizer = MolGraphFeaturizer(random_walk_steps=steps)
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=8, depth=2),
        readout="sum",
        ffn_num_layers=1,
        featurizer=featurizer.to_config(),
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.atom_embedding.weight[0, featurizer.atom_dim - steps + 1] = 1.0  # 2-step return
        model.encoder.W_o.weight[0, 0] = 1.0
        model.head[-1].weight[0, 0] = 1.0
    predictor = GraphPredictor(model)
    smiles = ["c1ccccc1O", "C1CC1CCN"]
    assert (predictor.predict(smiles)["target"].abs() > 0.1).all()
    for method in ("integrated_gradients", "input_x_gradient", "occlusion"):
        for item in explain(predictor, smiles, method=method):
            np.testing.assert_allclose(item.atom_scores, 0.0, atol=1e-6)
            np.testing.assert_allclose(item.bond_scores, 0.0, atol=1e-6)


def test_batched_and_single_molecule_explanations_agree(trained: GraphPredictor) -> None:
    smiles = nci_smiles(12)
    for method, steps in (("integrated_gradients", 20), ("occlusion", None)):
        together = explain(trained, smiles, method=method, steps=steps, batch_size=5)
        for item, smi in zip(together, smiles, strict=True):
            (alone,) = explain(trained, smi, method=method, steps=steps)
            np.testing.assert_allclose(item.atom_scores, alone.atom_scores, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(item.bond_scores, alone.bond_scores, rtol=1e-4, atol=1e-5)


def test_running_out_of_memory_retries_smaller_and_fails_only_a_molecule_too_large(
    trained: GraphPredictor, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A device that holds at most ``limit`` atoms in a pass with gradients: above it a hook
    asks for more memory than any machine has, so torch raises its own out-of-memory error.
    The chunk is retried in smaller passes, then fewer molecules; only the molecule larger
    than the limit fails, with a status saying so, and the others get the scores of a run
    with memory to spare."""
    smiles = nci_smiles(12)
    limit = max(Chem.MolFromSmiles(s).GetNumAtoms() for s in smiles) + 4
    smiles.insert(5, "C" * (limit + 6))
    spare = explain(trained, smiles, steps=20)

    def small_device(module: torch.nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled() and args[0].x.shape[0] > limit:
            torch.empty(2**62, dtype=torch.uint8)

    hook = trained.model.register_forward_pre_hook(small_device)
    try:
        with caplog.at_level(logging.WARNING, logger="molml"):
            tight = explain(trained, smiles, steps=20)
    finally:
        hook.remove()
    assert "out of memory explaining 13 molecules" in caplog.text
    assert tight[5].status == f"out of memory while explaining ({limit + 6} atoms)"
    assert tight[5].atom_scores is None and tight[5].prediction == spare[5].prediction
    for item, reference in zip(tight[:5] + tight[6:], spare[:5] + spare[6:], strict=True):
        assert item.ok
        np.testing.assert_allclose(item.atom_scores, reference.atom_scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(item.bond_scores, reference.bond_scores, rtol=1e-4, atol=1e-5)
    summary = write_explanations(tight, tmp_path, units="logS", jobs=1)
    assert summary["explained"] == 12
    rows = pd.read_csv(tmp_path / "attributions.csv")
    assert rows["status"].tolist().count(tight[5].status) == 1
    assert len(list((tmp_path / "molecules").glob("*.png"))) == 12


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_encoder_explains(encoder: str) -> None:
    torch.manual_seed(0)
    model = MoleculeModel(encoder=ENCODERS[encoder](), ffn_hidden_dim=16, tasks=["a", "b"])
    predictor = GraphPredictor(model)
    result = explain(predictor, MOLECULES, task="b", steps=16)
    assert [r.status for r in result] == ["ok"] * len(MOLECULES)
    for item in result:
        assert item.atom_scores.shape == (item.mol.GetNumAtoms(),)
        assert item.bond_scores.shape == (item.mol.GetNumBonds(),)
        assert np.isfinite(item.atom_scores).all() and np.isfinite(item.bond_scores).all()
        assert abs(item.completeness_gap) < 0.05 * (abs(item.explained_value) + 0.1)
    np.testing.assert_allclose(
        [r.prediction for r in result], predictor.predict(MOLECULES)["b"], rtol=1e-5
    )


def test_shap_of_xgboost_maps_on_bits_to_atoms(ecfp_baselines: dict[str, Path]) -> None:
    predictor = molml.load_model(ecfp_baselines["xgb"])
    smiles = nci_smiles(310)[300:]  # not seen in training
    result = explain(predictor, smiles)
    booster = predictor.model.task_models[0].booster
    explainer = shap.TreeExplainer(booster)
    X = predictor.embed(smiles)
    values = explainer.shap_values(X)
    prediction = predictor.predict(smiles)["logp"].to_numpy()
    for item, x, row, predicted in zip(result, X, values, prediction, strict=True):
        assert item.method == "shap" and item.ok
        on_bits = row[x > 0].sum()
        assert item.atom_scores.sum() == pytest.approx(on_bits, abs=1e-4)
        assert item.atom_scores.sum() + item.unmapped_score == pytest.approx(row.sum(), abs=1e-4)
        # the SHAP total is the prediction minus the expected value
        assert row.sum() == pytest.approx(predicted - explainer.expected_value, abs=1e-3)
        assert item.explained_value == pytest.approx(predicted, abs=1e-3)
        assert np.isnan(item.bond_scores).all()


def test_rdkit_molecules_are_explained_in_their_own_atom_order(
    trained: GraphPredictor, ecfp_baselines: dict[str, Path]
) -> None:
    """``predict`` takes RDKit molecules; ``explain`` parsed their printed form and failed the
    whole call (graph models and baselines)."""
    text = "OCc1ccccc1N"  # RDKit's canonical order differs from this one
    mol = Chem.MolFromSmiles(text)
    for predictor in (trained, molml.load_model(ecfp_baselines["xgb"])):
        by_mol, by_text, missing = explain(predictor, [mol, text, None])
        assert by_mol.ok and by_mol.smiles == text  # in the Mol's atom order, as the scores
        assert by_mol.mol.GetNumAtoms() == mol.GetNumAtoms()
        np.testing.assert_allclose(by_mol.atom_scores, by_text.atom_scores, atol=1e-5)
        assert by_mol.prediction == pytest.approx(by_text.prediction, abs=1e-5)
        assert not missing.ok and missing.smiles == ""


def test_shap_explains_in_chunks_of_the_batch_size(
    ecfp_baselines: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import molml.explain.baseline as baseline_module

    chunks: list[int] = []
    featurize = baseline_module.featurize

    def counted(featurizer, smiles):  # noqa: ANN001, ANN202
        chunks.append(len(smiles))
        return featurize(featurizer, smiles)

    monkeypatch.setattr(baseline_module, "featurize", counted)
    predictor = molml.load_model(ecfp_baselines["xgb"])
    smiles = nci_smiles(305)[300:]
    one_by_one = explain(predictor, smiles, batch_size=2)
    assert chunks == [2, 2, 1]
    together = explain(predictor, smiles)
    for a, b in zip(one_by_one, together, strict=True):
        np.testing.assert_allclose(a.atom_scores, b.atom_scores, atol=1e-6)
    # numpy integers are batch sizes too, as for graph models; bytes are not a path
    assert len(predictor.predict(smiles, batch_size=np.int64(2))) == 5
    with pytest.raises(DataError, match="got b'model'"):
        molml.load_model(b"model")
    with pytest.raises(DataError, match="threads must be an integer >= 1, got -3"):
        molml.load_model(ecfp_baselines["xgb"], threads=-3)


def test_occurrence_mapping_gives_each_environment_the_whole_bit(
    ecfp_baselines: dict[str, Path],
) -> None:
    predictor = molml.load_model(ecfp_baselines["xgb"])
    smiles = ["c1ccccc1CC(=O)NC", *nci_smiles(305)[300:]]
    shared = explain(predictor, smiles)
    whole = explain(predictor, smiles, shap_mapping="occurrence")
    fingerprint = predictor.model.featurizer
    values = shap.TreeExplainer(predictor.model.task_models[0].booster).shap_values(
        predictor.embed(smiles)
    )
    repeated = 0
    for a, b, row in zip(shared, whole, values, strict=True):
        environments = fingerprint.bit_environments(b.mol)
        expected = sum(row[bit] * len(envs) for bit, envs in environments.items())
        assert b.atom_scores.sum() == pytest.approx(expected, abs=1e-4)
        assert b.unmapped_score == pytest.approx(a.unmapped_score)
        repeated += any(len(envs) > 1 for envs in environments.values())
    assert repeated  # some bit is set by several environments: the two mappings differ
    assert not np.allclose(shared[0].atom_scores, whole[0].atom_scores)
    with pytest.raises(DataError, match="shap_mapping"):
        explain(predictor, smiles[:1], shap_mapping="even")


def test_environment_atoms_follow_the_bonds() -> None:
    mol = molml.chem.parsing.parse_smiles("CCOC(=O)N")
    assert environment_atoms(mol, 3, 0) == [3]
    assert environment_atoms(mol, 3, 1) == [2, 3, 4, 5]
    assert environment_atoms(mol, 0, 2) == [0, 1, 2]


def test_shap_of_a_random_forest_adds_up_to_its_probability(
    ecfp_baselines: dict[str, Path],
) -> None:
    predictor = molml.load_model(ecfp_baselines["forest"])
    smiles = ["c1ccncc1CCN", "CCCCCC", "CC(=O)Nc1ccc(O)cc1"]
    result = explain(predictor, smiles)
    probability = predictor.predict(smiles)["has_n"].to_numpy()
    for item, p in zip(result, probability, strict=True):
        assert item.explained_value == pytest.approx(p, abs=1e-6)  # interventional: exact
    nitrogen = [a.GetIdx() for a in result[0].mol.GetAtoms() if a.GetSymbol() == "N"]
    assert result[0].atom_scores[nitrogen].max() == pytest.approx(result[0].atom_scores.max())


def test_shap_of_a_forest_whose_splits_round_up_in_float32_still_adds_up(
    ecfp_baselines: dict[str, Path],
) -> None:
    """SHAP keeps thresholds as float32: a split just below a feature's value (as descriptors
    often lie) rounded up onto it and sent the molecule the other way, and the run stopped
    with SHAP's additivity error."""
    predictor = molml.load_model(ecfp_baselines["forest"])
    forest = predictor.model.task_models[0]
    inner = forest.left != np.arange(len(forest.left))
    # the same splits of whole counts (x <= 1.5 as x <= 2 - 1e-12): float32 rounds them to 2
    forest.threshold[inner] = np.floor(forest.threshold[inner]) + 1 - 1e-12
    smiles = ["c1ccncc1CCN", "CCCCCC", "CC(=O)Nc1ccc(O)cc1", "NCCN"]
    probability = predictor.predict(smiles)["has_n"].to_numpy()
    result = explain(predictor, smiles)
    assert [item.status for item in result] == ["ok"] * 4
    for item, p in zip(result, probability, strict=True):
        assert item.explained_value == pytest.approx(p, abs=1e-6)


def test_methods_that_do_not_apply_name_the_ones_that_do(
    trained: GraphPredictor, ecfp_baselines: dict[str, Path]
) -> None:
    with pytest.raises(PredictorError, match="integrated_gradients"):
        explain(trained, "CCO", method="shap")
    with pytest.raises(PredictorError, match="shap"):
        explain(molml.load_model(ecfp_baselines["xgb"]), "CCO", method="integrated_gradients")
    with pytest.raises(DataError, match=r"\['logp', 'tpsa'\]"):
        explain(trained, "CCO", task="solubility")
    with pytest.raises(DataError, match="steps"):
        explain(trained, "CCO", steps=0)
    with pytest.raises(DataError, match="method 'saliency' has none"):  # was ignored
        explain(trained, "CCO", method="saliency", baseline="carbon")
    with pytest.raises(DataError, match="method 'occlusion' takes none"):  # was ignored
        explain(trained, "CCO", method="occlusion", steps=20)
    baseline = molml.load_model(ecfp_baselines["xgb"])
    forest = molml.load_model(ecfp_baselines["forest"])  # a classifier
    for model, setting in (
        (baseline, {"inputs": "atoms"}),
        (baseline, {"precision": "bf16-mixed"}),
        (forest, {"explained": "probability"}),
    ):
        with pytest.raises(DataError, match="SHAP on a baseline has no such setting"):
            explain(model, "CCO", **setting)


def test_ensembles_give_the_mean_map_and_its_spread() -> None:
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(GraphPredictor(MoleculeModel(encoder=DMPNN(hidden_dim=16, depth=2))))
    ensemble = EnsemblePredictor(members)
    smiles = ["CC(=O)Nc1ccc(O)cc1", "bad smiles"]
    combined = explain(ensemble, smiles, method="saliency")
    singles = [explain(member, smiles, method="saliency")[0] for member in members]
    atoms = np.stack([s.atom_scores for s in singles])
    np.testing.assert_allclose(combined[0].atom_scores, atoms.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(combined[0].atom_std, atoms.std(axis=0), rtol=1e-6)
    assert combined[0].atom_std.max() > 0
    assert combined[1].status != "ok"
    frame = explanations_frame(combined)
    assert frame.loc[frame["kind"] == "atom", "score_std"].notna().all()

    def small_device(module: torch.nn.Module, args: tuple) -> None:  # one member, 10 atoms
        if torch.is_grad_enabled() and args[0].x.shape[0] > 10:
            torch.empty(2**62, dtype=torch.uint8)

    hook = members[1].model.register_forward_pre_hook(small_device)
    try:  # a molecule one member cannot explain keeps the ensemble's prediction
        failed, fitted = explain(ensemble, ["CC(=O)Nc1ccc(O)cc1", "CCO"], method="saliency")
    finally:
        hook.remove()
    assert failed.status == "out of memory while explaining (11 atoms)" and fitted.ok
    prediction = ensemble.predict(["CC(=O)Nc1ccc(O)cc1"])["target"].iloc[0]
    assert failed.prediction == pytest.approx(prediction, rel=1e-5)


def test_ensembles_whose_maps_would_not_line_up_are_refused(
    ecfp_baselines: dict[str, Path],
) -> None:
    """A logit map averaged with a probability map, or atoms of molecules drawn with and
    without hydrogens, mean nothing: refused with the reason."""
    import xgboost as xgb

    from molml.baselines.estimators import XGBoostTaskModel
    from molml.baselines.model import BaselineModel

    forest = molml.load_model(ecfp_baselines["forest"])
    smiles = nci_smiles(200)
    features, _ = forest.model.featurizer.transform(smiles)
    has_n = [int("N" in s or "n" in s) for s in smiles]
    booster = xgb.XGBClassifier(n_estimators=10, n_jobs=1).fit(features, has_n).get_booster()
    classifier = BaselineModel(
        forest.model.featurizer, ["has_n"], "classification", "xgboost", [XGBoostTaskModel(booster)]
    )
    mixed = EnsemblePredictor([BaselinePredictor(classifier), forest])
    with pytest.raises(PredictorError, match="explain different quantities"):
        explain(mixed, "c1ccncc1CCN")
    members = [
        GraphPredictor(
            MoleculeModel(
                encoder=DMPNN(hidden_dim=16, depth=2),
                featurizer=MolGraphFeaturizer(add_hydrogens=hydrogens).to_config(),
            )
        )
        for hydrogens in (False, True)
    ]
    with pytest.raises(PredictorError, match="draw molecules differently"):
        explain(EnsemblePredictor(members), "CCO", method="saliency")


def test_the_mapped_smiles_names_the_scored_atoms_of_a_standardized_molecule() -> None:
    featurizer = MolGraphFeaturizer(add_hydrogens=True, standardize=True)
    model = MoleculeModel(encoder=DMPNN(hidden_dim=16, depth=2), featurizer=featurizer.to_config())
    (item,) = explain(GraphPredictor(model), "[Na+].[O-]C(=O)c1ccccc1", method="saliency")
    mapped = Chem.MolFromSmiles(item.mapped_smiles, sanitize=False)
    # the scored molecule is benzoic acid with its hydrogens: not the input's atoms
    assert mapped.GetNumAtoms() == len(item.atom_scores) == 15
    table = explanations_frame([item])
    atoms = table[table["kind"] == "atom"]
    symbols = {a.GetAtomMapNum() - 1: a.GetSymbol() for a in mapped.GetAtoms()}
    assert [f"{symbols[i]}{i}" for i in atoms["index"]] == atoms["label"].tolist()
    assert (table["mapped_smiles"] == item.mapped_smiles).all()


def test_bad_single_atom_and_large_molecules(tmp_path: Path) -> None:
    predictor = nitrogen_counter()
    large = "C" * 120 + "N" + "C" * 100  # 221 heavy atoms
    smiles = ["C", "[Na+].[Cl-]", *INVALID_SMILES, large]
    result = explain(predictor, smiles, method="integrated_gradients", steps=8)
    assert [r.ok for r in result] == [True, True, False, False, False, True]
    assert result[0].bond_scores.shape == (0,) and result[1].bond_scores.shape == (0,)
    assert int(np.argmax(result[-1].atom_scores)) == 120
    summary = write_explanations(result, tmp_path, units="target units")
    assert summary["explained"] == 3 and summary["failed"] == 3
    assert sorted(p.name for p in (tmp_path / "molecules").iterdir()) == [
        f"{i:05d}.{suffix}" for i in (0, 1, 5) for suffix in ("png", "svg")
    ]
    with Image.open(tmp_path / "molecules" / "00005.png") as image:
        assert image.size[0] >= 800  # a large molecule gets a large canvas
    # a second run into the same folder leaves no drawing of the first behind
    (tmp_path / "molecules" / "notes.txt").write_text("mine")
    write_explanations(result[:1], tmp_path, units="target units")
    assert sorted(p.name for p in (tmp_path / "molecules").iterdir()) == [
        "00000.png", "00000.svg", "notes.txt"
    ]  # fmt: skip


def test_molecules_drawn_in_several_processes_are_the_ones_drawn_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import molml.explain.run as run

    smiles = [*nci_smiles(16), "not_a_smiles", "C/C=C/N", "CS(=O)(=O)O", "OC(=O)C=CC(=O)O"]
    result = explain(nitrogen_counter(), smiles, method="integrated_gradients", steps=4)
    write_explanations(result, tmp_path / "one", units="target units", jobs=1)
    pools: list[str] = []
    get_context = run.mp.get_context
    monkeypatch.setattr(run.mp, "get_context", lambda kind: pools.append(kind) or get_context(kind))
    write_explanations(result, tmp_path / "two", units="target units", jobs=2)
    assert pools == ["fork"]  # 19 drawings are enough for two processes
    drawn = sorted(p.name for p in (tmp_path / "one" / "molecules").iterdir())
    assert len(drawn) == 2 * 19 and "00016.svg" not in drawn
    assert drawn == sorted(p.name for p in (tmp_path / "two" / "molecules").iterdir())
    for name in drawn:  # the same pictures, in the same files (the stereo bond included)
        one = (tmp_path / "one" / "molecules" / name).read_bytes()
        assert one == (tmp_path / "two" / "molecules" / name).read_bytes(), name
    page = (tmp_path / "one" / "index.html").read_text().replace("/one/", "/two/")
    assert page == (tmp_path / "two" / "index.html").read_text()


def test_a_run_that_fails_while_explaining_leaves_no_empty_folder(
    graph_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import molml.explain.cli as cli

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(cli, "explain", out_of_memory)
    mols = tmp_path / "mols.smi"
    mols.write_text("CCO\n")
    args = ["explain", "--model", str(graph_run["ckpt"]), "--input", str(mols), "--output"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, str(tmp_path / "new")])
    assert exit_info.value.code == 1 and "CUDA out of memory" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"  # a folder that was there stays, with what it held
    (kept / "molecules").mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main([*args, str(kept)])
    assert (kept / "notes.txt").read_text() == "mine" and (kept / "molecules").is_dir()


def test_cli_writes_table_drawings_and_page(graph_run: dict, tmp_path: Path, capsys) -> None:
    mols = tmp_path / "mols.csv"
    smiles = [*nci_smiles(4), "not_a_smiles", "C"]
    names = [f"cpd-{i}" for i in range(len(smiles))]
    pd.DataFrame({"name": names, "smiles": smiles}).to_csv(mols, index=False)
    out = tmp_path / "explain"
    args = ["explain", "--model", str(graph_run["ckpt"]), "--input", str(mols)]
    main([*args, "--output", str(out), "--task", "logp", "--steps", "20", "--no-progress",
          "--id-column", "name"])  # fmt: skip
    printed = capsys.readouterr().out
    assert '"failed": 1' in printed and '"units": "target units"' in printed
    table = pd.read_csv(out / "attributions.csv")
    assert list(table.columns[:2]) == ["molecule", "name"]
    assert (table["name"] == "cpd-" + table["molecule"].astype(str)).all()
    bad = table[table["molecule"] == 4]
    assert len(bad) == 1 and bad["status"].iloc[0] != "ok" and bad["kind"].isna().all()
    atoms = table[table["kind"] == "atom"]
    assert atoms.groupby("molecule").size().to_dict()[5] == 1
    assert atoms["completeness_gap"].notna().all() and (atoms["task"] == "logp").all()
    assert atoms["score_with_bonds"].notna().all()
    for number in (0, 1, 2, 3, 5):
        svg = (out / "molecules" / f"{number:05d}.svg").read_text()
        assert ElementTree.fromstring(svg.encode()).tag.endswith("svg")  # well-formed SVG
        with Image.open(out / "molecules" / f"{number:05d}.png") as image:
            image.verify()
    page = (out / "index.html").read_text()
    links = re.findall(r"(?:src|href)='([^']+)'", page)
    assert len(links) == 10  # five drawings, each shown and linked
    assert all((out / link).is_file() for link in links)
    assert "attributions.csv" in page and page.count("logp = ") == 5
    assert all(f"#{i} cpd-{i}<" in page for i in range(len(smiles)))

    # parquet by suffix; atom features only: bonds listed without scores, drawings still made
    extra = ["--table", "scores.parquet", "--inputs", "atoms", "--steps", "20", "--no-progress"]
    main([*args, "--output", str(out / "atoms"), *extra])
    atom_only = pd.read_parquet(out / "atoms" / "scores.parquet")
    assert len(atom_only) == len(table)
    assert atom_only.loc[atom_only["kind"] == "bond", "score"].isna().all()
    assert atom_only.loc[atom_only["kind"] == "atom", "score"].notna().all()
    with Image.open(out / "atoms" / "molecules" / "00000.png") as image:
        image.verify()
    assert (atoms["baseline"] == "zeros").all()  # a regression model's default
    # Integrated Gradients from chain carbons instead of all-zero features
    capsys.readouterr()
    main([*args, "--output", str(out / "carbon"), "--baseline", "carbon", "--task", "logp",
          "--steps", "20"])  # fmt: skip
    bars = capsys.readouterr().err  # with progress: attributions, then drawings
    assert "explaining (integrated_gradients)" in bars and "drawing" in bars
    carbon = pd.read_csv(out / "carbon" / "attributions.csv")
    assert carbon["completeness_gap"].abs().max() < 0.05
    assert (carbon.loc[carbon["kind"] == "atom", "baseline"] == "carbon").all()
    assert not np.allclose(carbon["score"].fillna(0), table["score"].fillna(0), atol=1e-3)
    for extra, code, text in (
        (["--task", "nope"], 2, "['logp', 'tpsa']"),
        (["--steps", "0"], 2, "--steps"),
        (["--jobs", "0"], 2, "--jobs must be -1 (one process per CPU core) or an integer >= 1"),
        (["--method", "shap"], 2, "integrated_gradients"),
        (["--table", "scores.xlsx"], 2, "table must be a file name ending in"),
        (["--table", "shap_summary.csv"], 2, "another file of the run"),
        (["--inputs", "atoms", "--method", "occlusion"], 2, "inputs='atoms' applies"),
        (["--method", "saliency", "--steps", "20"], 2, "method 'saliency' takes none"),
        (["--device", "gpu0"], 2, "--device 'gpu0' is not a device"),
        (["--device", f"cuda:{torch.cuda.device_count()}"], 2, "--device 'cuda:"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--output", str(out), *extra])
        assert exit_info.value.code == code
        assert text in capsys.readouterr().err
    # a failed rerun leaves the last run's drawings in place
    with pytest.raises(SystemExit):
        main(["explain", "--model", "missing.ckpt", "--input", str(mols), "--output", str(out)])
    assert (out / "molecules" / "00000.png").is_file()
    # a run refused for its model, settings or input leaves no output folder behind
    for refused in (["--model", "missing.ckpt"], ["--method", "saliency", "--baseline", "carbon"]):
        with pytest.raises(SystemExit):
            main([*args, *refused, "--output", str(tmp_path / "never")])
        assert not (tmp_path / "never").exists()
    # an output that cannot be written is refused before any attribution
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--output", str(tmp_path / "a_file")])
    assert exit_info.value.code == 2
    assert "cannot write drawings to" in capsys.readouterr().err
    # SMILES read from the wrong column: nothing can be explained, which is an error (exit 2)
    # whose message names the column read and those the file has; the table says why per row
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame({"name": ["x", "y"], "structure": ["CCO", "CCN"]}).to_csv(wrong, index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", str(graph_run["ckpt"]), "--input", str(wrong), "--output",
              str(tmp_path / "wrong"), "--no-progress"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "['name', 'structure']" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "wrong" / "attributions.csv")) == 2


def test_baseline_cli_draws_atoms(
    ecfp_baselines: dict[str, Path], graph_run: dict, tmp_path: Path
) -> None:
    mols = tmp_path / "mols.smi"
    mols.write_text("smiles name\nCC(=O)Nc1ccc(O)cc1 paracetamol\nC methane\n")
    out = tmp_path / "explain"
    model = str(ecfp_baselines["xgb"])
    main(["explain", "--model", model, "--input", str(mols), "--output", str(out), "--no-progress"])
    table = pd.read_csv(out / "attributions.csv")
    assert table.groupby("molecule")["name"].first().tolist() == ["paracetamol", "methane"]
    assert (table["method"] == "shap").all()
    assert table.loc[table["kind"] == "atom", "score"].abs().sum() > 0
    assert (out / "molecules" / "00000.svg").is_file()
    assert (out / "shap_summary.png").is_file()
    # a graph model explained into the same folder: no stale SHAP summary of the baseline
    main(["explain", "--model", str(graph_run["ckpt"]), "--input", str(mols), "--output",
          str(out), "--no-progress", "--steps", "4"])  # fmt: skip
    assert not (out / "shap_summary.png").exists() and not (out / "shap_summary.csv").exists()
    # a .smi name column called like a column of the table keeps its ids under 'id'
    mols.write_text("smiles label\nCCO ethanol\n")
    main(["explain", "--model", model, "--input", str(mols), "--output", str(out), "--no-progress"])
    table = pd.read_csv(out / "attributions.csv")
    assert (table["id"] == "ethanol").all() and table["label"].tolist()[0] == "C0"


def test_baseline_shap_summary_ranks_the_feature_the_model_uses_first(
    ecfp_baselines: dict[str, Path], tmp_path: Path
) -> None:
    """A forest that predicts "has a nitrogen": over 40 unseen molecules the summary ranks a
    nitrogen fragment first, and a bit is named by a fragment found where the bit is on."""
    from rdkit import Chem

    predictor = molml.load_model(ecfp_baselines["forest"])
    result = explain(predictor, nci_smiles(340)[300:])
    written = write_explanations(result, tmp_path, units="probability")
    table = pd.read_csv(tmp_path / "shap_summary.csv")
    values = np.stack([item.shap_values for item in result if item.ok])
    assert len(table) == values.shape[1] == 1024
    expected = np.sort(np.abs(values).mean(axis=0))[::-1]
    np.testing.assert_allclose(table["mean_abs_shap"], expected, rtol=1e-5, atol=1e-9)
    name, fragment = table["feature"].iloc[0].split(": ")
    assert "N" in fragment.upper()
    column = predictor.model.featurizer.feature_names.index(name)
    first_on = next(item for item in result if item.ok and item.feature_values[column] > 0)
    assert first_on.mol.HasSubstructMatch(Chem.MolFromSmarts(fragment))
    assert Image.open(written["shap_summary"]).size[0] > 500
    assert "shap_summary.png" in (tmp_path / "index.html").read_text()


def test_descriptor_features_get_a_bar_plot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import xgboost as xgb
    from rdkit.Chem import Descriptors

    from molml.baselines.estimators import XGBoostTaskModel
    from molml.baselines.model import BaselineModel
    from molml.chem.fingerprints import RDKitDescriptors
    from molml.predict import BaselinePredictor

    names = ["MolWt", "TPSA", "NumHDonors", "RingCount"]
    smiles = nci_smiles(80)
    featurizer = RDKitDescriptors(names)
    X, _ = featurizer.transform(smiles)
    y = np.array([Descriptors.TPSA(molml.chem.parsing.parse_smiles(s)) for s in smiles])
    booster = xgb.XGBRegressor(n_estimators=20, max_depth=3, n_jobs=1).fit(X, y).get_booster()
    predictor = BaselinePredictor(
        BaselineModel(featurizer, ["tpsa"], "regression", "xgboost", [XGBoostTaskModel(booster)])
    )
    (item,) = explain(predictor, "CC(=O)Nc1ccc(O)cc1")
    assert set(item.feature_scores) <= set(names) and "TPSA" in item.feature_scores
    assert item.unmapped_score == pytest.approx(sum(item.feature_scores.values()), abs=1e-4)
    np.testing.assert_allclose(item.atom_scores, 0.0)
    write_explanations([item], tmp_path, units="target units")
    assert (tmp_path / "molecules" / "00000_features.png").is_file()
    assert "00000_features.png" in (tmp_path / "index.html").read_text()
    write_explanations([item], tmp_path / "odd", units="target units", table="a#b.csv")
    assert 'href="a%23b.csv"' in (tmp_path / "odd" / "index.html").read_text()
    # a rerun under another table name removes the earlier run's table, and only that
    (tmp_path / "odd" / "mine.csv").write_text("kept\n")
    write_explanations([item], tmp_path / "odd", units="target units", table="b.parquet")
    assert not (tmp_path / "odd" / "a#b.csv").exists()
    assert (tmp_path / "odd" / "b.parquet").is_file() and (tmp_path / "odd" / "mine.csv").exists()
    record = json.loads((tmp_path / "odd" / "explain.json").read_text())
    assert Path(record["table"]).name == "b.parquet" and record["units"] == "target units"
    # an ensemble keeps the features: their mean SHAP values and the data set's summary
    booster2 = xgb.XGBRegressor(n_estimators=20, max_depth=2, n_jobs=1).fit(X, y).get_booster()
    other = BaselinePredictor(
        BaselineModel(featurizer, ["tpsa"], "regression", "xgboost", [XGBoostTaskModel(booster2)])
    )
    (second,) = explain(other, "CC(=O)Nc1ccc(O)cc1")
    (mean,) = explain(EnsemblePredictor([predictor, other]), "CC(=O)Nc1ccc(O)cc1")
    for name, value in mean.feature_scores.items():
        both = item.feature_scores.get(name, 0.0), second.feature_scores.get(name, 0.0)
        assert value == pytest.approx(np.mean(both), abs=1e-5)
    np.testing.assert_allclose(mean.shap_values, (item.shap_values + second.shap_values) / 2)
    summary = write_explanations([mean], tmp_path / "ensemble", units="target units")
    assert "shap_summary" in summary
    assert (tmp_path / "ensemble" / "molecules" / "00000_features.png").is_file()
    # members on other features: no summary over the data set, and a warning says so
    fewer = RDKitDescriptors(names[:2])
    booster3 = xgb.XGBRegressor(n_estimators=5, n_jobs=1).fit(fewer.transform(smiles)[0], y)
    third = BaselinePredictor(
        BaselineModel(
            fewer, ["tpsa"], "regression", "xgboost", [XGBoostTaskModel(booster3.get_booster())]
        )
    )
    with caplog.at_level(logging.WARNING, logger="molml"):
        (apart,) = explain(EnsemblePredictor([predictor, third]), "CC(=O)Nc1ccc(O)cc1")
    assert "the members use different features: no SHAP summary" in caplog.text
    assert "shap_summary" not in write_explanations([apart], tmp_path / "apart", units="target")


def test_bf16_explanations_stay_close_to_fp32(
    trained: GraphPredictor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    smiles = nci_smiles(12)
    full = explain(trained, smiles, task="tpsa", steps=20)
    monkeypatch.setattr(explain_run, "native_bf16", lambda accelerator: False)
    with caplog.at_level(logging.WARNING, logger="molml"):
        half = explain(trained, smiles, task="tpsa", steps=20, precision="bf16-mixed")
    # bf16 on a CPU without AVX512-BF16 or AMX is emulated, ~10x slower than fp32: said
    assert "bf16-mixed on this CPU is emulated" in caplog.text
    errors = []
    for a, b in zip(full, half, strict=True):
        assert a.prediction == b.prediction  # the reported prediction stays fp32
        scale = np.abs(a.atom_scores).max()
        errors.append(np.abs(a.atom_scores - b.atom_scores).max() / scale)
        assert np.argmax(a.atom_scores) == np.argmax(b.atom_scores) or errors[-1] < 0.05
    assert np.mean(errors) < 0.05, errors
    pairs = zip(full, half, strict=True)
    assert any(not np.array_equal(a.atom_scores, b.atom_scores) for a, b in pairs)
    with pytest.raises(DataError, match="precision must be one of"):
        explain(trained, smiles[:1], precision="fp8")


def test_an_mc_dropout_predictor_is_explained_with_its_dropout_off() -> None:
    """The scores and the prediction are the model's own, whatever the batch size, not the
    mean of dropout passes that the scores do not explain."""
    torch.manual_seed(0)
    model = MoleculeModel(encoder=DMPNN(hidden_dim=16, depth=2), dropout=0.3).eval()
    smiles = ["CCO", "c1ccccc1N", "CC(=O)Nc1ccccc1", "CCCl"]
    plain, mc = GraphPredictor(model), GraphPredictor(model, mc_dropout=5)
    expected = plain.predict(smiles)["target"].to_numpy()
    assert not np.allclose(mc.predict(smiles)["target"], expected)  # the passes' mean differs
    for batch_size in (1, 4):
        explained = explain(mc, smiles, batch_size=batch_size, steps=16)
        np.testing.assert_allclose([e.prediction for e in explained], expected, rtol=1e-6)
        np.testing.assert_allclose([e.explained_value for e in explained], expected, rtol=1e-5)


def test_the_default_baseline_follows_the_task_type(trained: GraphPredictor) -> None:
    """Regression starts from zeros (a chain's carbons carry an additive property such as
    solubility); a classifier from chain carbons (what sets the molecule apart)."""
    from molml.explain.run import default_baseline

    classifier = GraphPredictor(
        MoleculeModel(
            encoder=DMPNN(hidden_dim=8, depth=1), tasks=["active"], task_type="classification"
        )
    )
    assert default_baseline(trained) == "zeros" and default_baseline(classifier) == "carbon"
    (item,) = explain(classifier, ["CCCC(=O)N"])
    assert item.baseline == "carbon"


def test_classifiers_can_be_explained_on_the_probability() -> None:
    """The hand-set nitrogen counter as a classifier (logit = number of N atoms): on the
    probability the scores add up to sigmoid(n) - sigmoid(0), the N atoms carry them, and a
    multiclass model's explained value is the class's softmax probability."""
    predictor = nitrogen_classifier()
    smiles = "NCCc1ccncc1"  # two nitrogens
    (item,) = explain(predictor, smiles, explained="probability", baseline="zeros", steps=64)
    expected = 1 / (1 + math.exp(-2.0))
    assert item.explained_value == pytest.approx(expected, abs=1e-5)
    assert item.prediction == pytest.approx(expected, abs=1e-5)
    assert item.atom_scores.sum() + np.nansum(item.bond_scores) == pytest.approx(
        expected - 0.5, abs=1e-3
    )
    nitrogens = [a.GetIdx() for a in item.mol.GetAtoms() if a.GetSymbol() == "N"]
    assert set(np.argsort(-item.atom_scores)[:2]) == set(nitrogens)
    (logit,) = explain(predictor, smiles, baseline="zeros", steps=64)
    assert logit.explained_value == pytest.approx(2.0, abs=1e-5)
    torch.manual_seed(0)
    multiclass = GraphPredictor(
        MoleculeModel(
            encoder=DMPNN(hidden_dim=8, depth=1),
            tasks=["kind"],
            task_type="multiclass",
            num_classes=3,
        ).eval()
    )
    (item,) = explain(multiclass, smiles, task="kind_class2", explained="probability")
    assert item.explained_value == pytest.approx(item.prediction, abs=1e-5)
    assert item.prediction == pytest.approx(
        float(multiclass.predict([smiles])["kind_class2"].iloc[0]), abs=1e-6
    )
    with pytest.raises(DataError, match=r"one class at a time: give one of \['kind_class0'"):
        explain(multiclass, smiles, task="kind")
    # a task with fewer classes than the model's: its missing class (probability 0) is refused
    torch.manual_seed(0)
    fewer = GraphPredictor(
        MoleculeModel(
            encoder=DMPNN(hidden_dim=8, depth=1),
            tasks=["kind", "pair"],
            task_type="multiclass",
            num_classes=3,
            task_classes=[3, 2],
        ).eval()
    )
    assert fewer.predict([smiles])["pair_class2"].iloc[0] == 0.0
    with pytest.raises(DataError, match=r"'pair_class2' is a class that task 'pair' does not "
                       r"have .*give one of \['pair_class0', 'pair_class1'\]"):  # fmt: skip
        explain(fewer, smiles, task="pair_class2")
    (item,) = explain(fewer, smiles, task="pair_class1", explained="probability")
    assert item.explained_value == pytest.approx(item.prediction, abs=1e-5)
    with pytest.raises(DataError, match="applies to classifiers"):
        explain(nitrogen_counter(), smiles, explained="probability")


def test_a_classifier_drawing_names_the_explained_logit_beside_the_probability(
    tmp_path: Path,
) -> None:
    """The legend's start value is a logit: the logit the scores lead to is shown beside the
    probability, with units, so the two are not read as one scale; a regression's is not."""
    predictor = nitrogen_classifier()
    (item,) = explain(predictor, "NCCc1ccncc1", baseline="zeros", steps=16)
    write_explanations([item], tmp_path / "cls", units="logit")
    page = (tmp_path / "cls" / "index.html").read_text()
    caption = f"has_n = {1 / (1 + math.exp(-2.0)):.4g} (logit 2)"
    assert value_caption(item, "logit") == caption  # the drawing's legend starts with it
    assert caption in page and "IG completeness gap: logit " in page
    # a probability that differs from the one explained (a calibrated model's) is shown too
    (prob,) = explain(predictor, "NCCc1ccncc1", baseline="zeros", steps=16, explained="probability")
    assert value_caption(prob, "probability") == f"has_n = {prob.prediction:.4g}"
    prob.prediction = 0.95
    assert value_caption(prob, "probability") == (
        f"has_n = 0.95 (explained: probability {prob.explained_value:.4g})"
    )
    (value,) = explain(nitrogen_counter(), "NCC", baseline="zeros", steps=16)
    write_explanations([value], tmp_path / "reg", units="target units")
    page = (tmp_path / "reg" / "index.html").read_text()
    assert f"{value.task} = {value.prediction:.4g}</div>" in page


def test_explain_never_writes_over_or_removes_its_input(graph_run: dict, tmp_path: Path) -> None:
    mols = tmp_path / "out" / "mols.csv"
    mols.parent.mkdir()
    pd.DataFrame({"smiles": nci_smiles(3)}).to_csv(mols, index=False)
    before = mols.read_bytes()
    args = ["explain", "--model", str(graph_run["ckpt"]), "--steps", "4", "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:  # the table named as the input
        main([*args, "--input", str(mols), "--output", str(mols.parent), "--table", "mols.csv"])
    assert exit_info.value.code == 2 and mols.read_bytes() == before
    # an earlier run's table, explained in turn into the same folder under another name
    main([*args, "--input", str(mols), "--output", str(tmp_path / "run")])
    earlier = tmp_path / "run" / "attributions.csv"
    table = earlier.read_bytes()
    with pytest.raises(SystemExit):
        main([*args, "--input", str(earlier), "--output", str(earlier.parent), "--table", "t.csv"])
    assert earlier.read_bytes() == table


def test_refused_ids_leave_the_earlier_results_whole(tmp_path: Path) -> None:
    items = explain(nitrogen_counter(), ["NCC", "CCO"], steps=4)
    write_explanations(items, tmp_path, units="target units", ids=["a", "b"])
    drawings = sorted((tmp_path / "molecules").iterdir())
    with pytest.raises(DataError, match="1 ids for 2 explanations"):
        write_explanations(items, tmp_path, units="target units", ids=["a"])
    assert sorted((tmp_path / "molecules").iterdir()) == drawings
    # ids of mixed types are written as text to Parquet; a missing id has no caption
    write_explanations(items, tmp_path, units="target units", ids=[7, "b"], table="s.parquet")
    ids = pd.read_parquet(tmp_path / "s.parquet")["id"].drop_duplicates().tolist()
    assert ids == ["7", "b"]
    write_explanations(items, tmp_path, units="target units", ids=["a", None])
    page = (tmp_path / "index.html").read_text()
    assert "#0 a<" in page and "#1<" in page and "None" not in page
    for missing in (None, float("nan"), np.float32("nan"), pd.NaT, pd.NA, ""):
        assert missing_id(missing)
    assert not any(missing_id(given) for given in (0, "0", "nan-1"))
    # integer ids with a gap stay integers (pandas alone would make 101.0 of them)
    write_explanations(items, tmp_path, units="target units", ids=[101, None], table="i.csv")
    assert (tmp_path / "i.csv").read_text().splitlines()[1].startswith("0,101,")


def test_names_of_smiles_files_and_sd_titles_become_ids(graph_run: dict, tmp_path: Path) -> None:
    args = ["explain", "--model", str(graph_run["ckpt"]), "--steps", "4", "--no-progress"]
    smiles_file = tmp_path / "mols.smiles"
    smiles_file.write_text("CCO ethanol\nc1ccccc1 benzene\n")
    main([*args, "--input", str(smiles_file), "--output", str(tmp_path / "smi")])
    table = pd.read_csv(tmp_path / "smi" / "attributions.csv")
    assert table.drop_duplicates("molecule")["id"].tolist() == ["ethanol", "benzene"]
    sdf = tmp_path / "mols.sdf"
    with Chem.SDWriter(str(sdf)) as writer:
        for smiles, title in (("CCN", "ethylamine"), ("CCCl", "chloroethane")):
            mol = Chem.MolFromSmiles(smiles)
            mol.SetProp("_Name", title)
            writer.write(mol)
    main([*args, "--input", str(sdf), "--output", str(tmp_path / "sdf")])
    table = pd.read_csv(tmp_path / "sdf" / "attributions.csv")
    assert table.drop_duplicates("molecule")["_Name"].tolist() == ["ethylamine", "chloroethane"]


def test_exported_models_and_baselines_are_not_offered_a_method_they_lack(
    graph_run: dict, ecfp_baselines: dict[str, Path], tmp_path: Path
) -> None:
    from molml.export import export_model

    baseline = molml.load_model(ecfp_baselines["xgb"])
    with pytest.raises(DataError, match="takes none: leave them out$"):
        explain(baseline, "CCO", steps=5)
    onnx_file = export_model(graph_run["ckpt"], tmp_path / "m.onnx", sample=None).path
    exported = molml.load_model(onnx_file)
    with pytest.raises(PredictorError, match="onnx models cannot be explained"):
        explain(exported, "CCO")
    with pytest.raises(PredictorError, match="onnx models cannot be explained"):
        explain(EnsemblePredictor([exported, molml.load_model(graph_run["ckpt"])]), "CCO")
