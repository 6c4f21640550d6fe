"""Attributions of graph models on their atom and bond feature inputs (Captum).

The explained quantity is one prediction column: the value in the target's units for
regression, the logit for classification (a class logit for multiclass) or, with
``explained="probability"``, the predicted probability (a class's softmax probability for
multiclass): its scores add up to a change of probability and give most credit to what moves
the prediction where the model decides, rather than to what adds most to an already certain
logit. Attributions are taken with respect to the raw atom features ``x`` and bond features
``edge_attr`` (before the model's ``atom_embedding`` / ``bond_embedding``), then reduced: an
atom's score is the sum over its features; a bond's score is the sum over its features of both
of its directed edges.

Random-walk structural encodings (the last columns of ``x`` with
``MolGraphFeaturizer(random_walk_steps=K)``) describe the graph, not the atom: baselines and
occlusion keep them as they are, and scores sum over the atoms' chemistry columns only.

- ``integrated_gradients``: Captum's ``IntegratedGradients``, ``steps`` Gauss-Legendre points
  (50 by default), from a baseline with the molecule's graph structure: with
  ``baseline="carbon"`` every atom has the features of an aliphatic CH2 carbon (the middle
  atom of propane) and every bond those of a single, non-ring C-C bond, so a score says how
  much an atom's or bond's being what it is, rather than a plain chain carbon or bond, moves
  the prediction (a chain CH2 and its single bonds score zero); ``baseline="zeros"`` starts
  from all-zero feature vectors. :func:`molml.explain.run.default_baseline` picks carbon
  for classifiers and zeros for regression. On substructure classification tasks the carbon
  baseline, with each bond's score shared by its two atoms
  (:attr:`~molml.explain.core.MoleculeExplanation.atom_totals`), ranks the true atoms higher
  than zeros for GINE, AttentiveFP and GPS, and about as well for D-MPNN
  (``scripts/bench_explain.py``). Molecules and interpolation steps are batched together: a
  chunk of molecules is replicated once per step into one large graph batch
  (``internal_batch_size`` bounds the atoms per forward pass). The completeness gap, sum of
  attributions minus ``f(x) - f(baseline)``, is reported per molecule.
- ``saliency``: Captum's ``Saliency``, the absolute gradient (never negative).
- ``input_x_gradient``: Captum's ``InputXGradient``.
- ``inputs="atoms"`` (gradient methods): attribute to the atom features only, the bond
  features kept as they are (Integrated Gradients moves only ``x`` from its baseline, as PyG's
  ``CaptumExplainer`` with node attributes does); bond scores are NaN. For GINE, whose messages
  add bond embeddings to atom states, this ranks the true atoms of substructure tasks clearly
  better (``scripts/bench_explain.py --methods integrated_gradients_atoms``).
- ``occlusion``: model-agnostic reference; an atom's score is ``f(x)`` minus the prediction
  with that atom's features and all its bonds' features set to zero; a bond's score masks only
  that bond's two directed edges. All perturbed copies of a molecule run as one batch.

Molecule-level features given to the model's head (descriptors) are held fixed. A predictor
with MC dropout is explained with its dropout off: the scores and the ``prediction`` are the
model's own, not the mean of its dropout passes.

``precision="bf16-mixed"`` runs the attribution passes under bf16 autocast (with bucketed
linear-layer rows on a CPU, see :mod:`molml.models.precision`): about 3x faster on CPUs with
native bf16, scores within a few percent of fp32 (measured by ``scripts/bench_explain.py``).
The reported prediction stays fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor
from torch_geometric.data import Batch
from tqdm.auto import tqdm

from molml.data.graphs import GraphStore
from molml.explain.core import MoleculeExplanation, shown_smiles
from molml.explain.options import IG_STEPS
from molml.models.precision import bucketed_rows
from molml.predict import GraphPredictor

# atoms (over molecules and interpolation steps) per forward pass, and molecules per chunk of
# work: large passes fill a GPU (on an H200, 131072 atoms and 256 molecules explained 1.6x as
# many molecules/s as 16384 and 32); a GPU of less than SMALL_GPU_BYTES memory keeps 16384;
# on a CPU, passes that keep activations in cache are ~1.7x faster (scripts/bench_explain.py)
ATOMS_PER_PASS = {"cpu": 2048, "small_gpu": 16384, "other": 131072}
SMALL_GPU_BYTES = 40 * 2**30
BATCH_SIZE = {"cpu": 32, "other": 256}
PASSES = ("integrated_gradients", "occlusion")  # methods whose chunks run in several passes
CPU_OUT_OF_MEMORY = "DefaultCPUAllocator: can't allocate memory"  # torch's RuntimeError

log = logging.getLogger("molml")


def explain_graph(
    predictor: GraphPredictor,
    smiles: list[Any],
    method: str,
    column: str,
    *,
    steps: int = IG_STEPS,
    batch_size: int = 32,
    precision: str = "32",
    inputs: str = "atoms_and_bonds",
    baseline: str = "zeros",
    explained: str = "logit",
    progress: bool = True,
) -> list[MoleculeExplanation]:
    """Attributions of ``column`` for each molecule (see the module docstring)."""
    model = predictor.model
    store, positions, status = predictor._featurize(smiles)
    store = store.to(model.device)
    explanations = [
        MoleculeExplanation(smiles=shown_smiles(s), status=st, task=column, method=method)
        for s, st in zip(smiles, status, strict=True)
    ]
    target = _target(predictor, column, explained)
    pass_atoms, most = atoms_per_pass(model.device), batch_size
    # chunks to explain, each with the settings the run had before it first ran out of memory
    pending: list[tuple[int, int, tuple[int, int] | None]] = [
        (start, stop, None) for start, stop in _chunks(store, batch_size, pass_atoms)
    ][::-1]
    with tqdm(
        total=len(store), desc=f"explaining ({method})", unit="mol", disable=not progress
    ) as bar:
        while pending:
            start, stop, before = pending.pop()
            if stop - start > most:  # chunks made before memory ran out
                pieces = [(i, min(i + most, stop), before) for i in range(start, stop, most)]
                pending += pieces[::-1]
                continue
            batch = store.batch(start, stop)
            options = (method, steps, precision, inputs, baseline, pass_atoms)
            results = _attribute(model, target, batch, *options)
            if results is None:  # out of memory: smaller passes, then fewer molecules
                before = before or (pass_atoms, most)
                # Integrated Gradients passes copies of the whole chunk, occlusion of one molecule
                copied = batch.num_nodes if method != "occlusion" else int(batch.ptr.diff().max())
                if method in PASSES and pass_atoms > copied:
                    pass_atoms //= 2
                elif stop - start > 1:
                    most = (stop - start) // 2
                else:  # this molecule alone does not fit: the others go on as before
                    item = explanations[int(positions[start])]
                    item.status = f"out of memory while explaining ({batch.num_nodes} atoms)"
                    pass_atoms, most = before
                    bar.update(1)
                    continue
                log.warning(
                    "out of memory explaining %d molecules (%d atoms) at once; trying at most "
                    "%d molecules, %d atoms per pass (a smaller --batch-size avoids the retry)",
                    stop - start, batch.num_nodes, most, pass_atoms,
                )  # fmt: skip
                pending.append((start, stop, before))
                continue
            for offset, (atoms, bonds, value, gap, reference) in enumerate(results):
                position = int(positions[start + offset])
                item = explanations[position]
                item.mol = model.featurizer.mol(smiles[position])  # a Mol as given
                item.atom_scores, item.bond_scores = atoms, bonds
                item.explained_value, item.completeness_gap = value, gap
                if method == "integrated_gradients":
                    item.baseline, item.baseline_value = baseline, reference
            bar.update(stop - start)
    # predictions from the same featurized molecules (invalid ones keep NaN), by the model as
    # explained: an MC-dropout predictor's dropout stays off
    plain = GraphPredictor(model, predictor.spec, predictor.source)
    index = plain.prediction_columns().index(column)
    predictions = plain.predict_store(store, min(batch_size, most))[:, index]
    for position, prediction in zip(positions, predictions, strict=True):
        explanations[int(position)].prediction = float(prediction)
    return explanations


def _attribute(
    model: Any,
    target: Callable[[Tensor], Tensor],
    batch: Batch,
    method: str,
    steps: int,
    precision: str,
    inputs: str,
    baseline: str,
    pass_atoms: int,
) -> list[tuple[np.ndarray, np.ndarray, float, float, float]] | None:
    """One chunk's attributions, ``pass_atoms`` atoms per forward pass (one copy of the chunk
    at least), or ``None`` when the device ran out of memory (its cache emptied, so that
    smaller passes or chunks can be tried)."""
    try:
        with _precision(model, precision):
            if method == "occlusion":
                return _occlusion(model, target, batch, pass_atoms)
            return _gradient_method(
                model, target, batch, method, steps, bonds=inputs == "atoms_and_bonds",
                baseline=baseline, pass_atoms=pass_atoms,
            )  # fmt: skip
    except torch.cuda.OutOfMemoryError:
        pass
    except RuntimeError as error:
        if CPU_OUT_OF_MEMORY not in str(error):
            raise
    if model.device.type == "cuda":  # the failed pass's tensors went with its traceback
        torch.cuda.empty_cache()
    return None


def _precision(model: Any, precision: str) -> ExitStack:
    """bf16 autocast on the model's device with bucketed linear-layer rows, or nothing."""
    stack = ExitStack()
    if precision == "bf16-mixed":
        stack.enter_context(torch.autocast(model.device.type, dtype=torch.bfloat16))
        stack.enter_context(bucketed_rows(model))
    return stack


def atoms_per_pass(device: torch.device) -> int:
    """Atoms per forward pass on ``device`` (see ``ATOMS_PER_PASS``)."""
    if device.type == "cpu":
        return ATOMS_PER_PASS["cpu"]
    if device.type == "cuda" and (
        torch.cuda.get_device_properties(device).total_memory < SMALL_GPU_BYTES
    ):
        return ATOMS_PER_PASS["small_gpu"]
    return ATOMS_PER_PASS["other"]


def _chunks(store: GraphStore, batch_size: int, limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive molecules, at most ``batch_size`` and (unless one alone is larger)
    ``limit`` atoms per chunk."""
    sizes = store.atom_ptr.diff().tolist()
    start = 0
    while start < len(sizes):
        stop, atoms = start + 1, sizes[start]
        while stop < len(sizes) and stop - start < batch_size and atoms + sizes[stop] <= limit:
            atoms += sizes[stop]
            stop += 1
        yield start, stop
        start = stop


def _target(
    predictor: GraphPredictor, column: str, explained: str = "logit"
) -> Callable[[Tensor], Tensor]:
    """Raw model outputs -> the explained value of ``column`` per molecule: target units for
    regression; for classifiers the logit or (``explained="probability"``) the probability."""
    model = predictor.model
    index = predictor.prediction_columns().index(column)
    probability = explained == "probability"

    def select(out: Tensor) -> Tensor:
        if probability and model.task_type == "multiclass":
            out = out.float().softmax(dim=-1)  # over the classes of each task
        value = out.reshape(out.shape[0], -1)[:, index]
        if model.task_type == "regression":
            value = value * model.target_std[index] + model.target_mean[index]
        elif probability and model.task_type == "classification":
            value = torch.sigmoid(value.float())
        return value

    return select


def _forward(model: Any, target: Callable[[Tensor], Tensor], batch: Batch) -> Callable:
    """``f(x, edge_attr)`` for the molecules of ``batch``, where ``x`` and ``edge_attr`` may hold
    ``k`` stacked copies of the batch's features (as Captum passes interpolation steps): the
    graph structure is replicated ``k`` times and one value per copy and molecule is returned."""
    n_atoms, n_edges, n_graphs = batch.num_nodes, batch.edge_index.shape[1], batch.num_graphs
    replicas: dict[int, Batch] = {}

    def forward(x: Tensor, edge_attr: Tensor) -> Tensor:
        k = x.shape[0] // n_atoms if n_atoms else 1
        if k not in replicas:
            copies = torch.arange(k, device=x.device)
            edge_index = batch.edge_index.repeat(1, k) + (copies * n_atoms).repeat_interleave(
                n_edges
            )
            graph = batch.batch.repeat(k) + (copies * n_graphs).repeat_interleave(n_atoms)
            counts = batch.ptr.diff().repeat(k)
            ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            replicas[k] = Batch(edge_index=edge_index, batch=graph, ptr=ptr)
            if getattr(batch, "features", None) is not None:
                replicas[k].features = batch.features.repeat(k, 1)
        replica = replicas[k]
        replica.x, replica.edge_attr = x, edge_attr
        return target(model(replica))

    return forward


def _gradient_method(
    model: Any,
    target: Callable[[Tensor], Tensor],
    batch: Batch,
    method: str,
    steps: int,
    *,
    bonds: bool = True,
    baseline: str = "zeros",
    pass_atoms: int,
) -> list[tuple[np.ndarray, np.ndarray, float, float, float]]:
    """Gradient attributions of ``batch``'s molecules; with ``bonds=False`` only the atom
    features are attributed (Integrated Gradients keeps the bond features along its path);
    ``baseline`` is Integrated Gradients' start (see the module docstring); ``pass_atoms``
    bounds its atoms per forward pass (one step of the whole batch at least)."""
    forward = _forward(model, target, batch)
    inputs = tuple(t.float().detach().requires_grad_() for t in (batch.x, batch.edge_attr))
    with torch.no_grad():
        value = forward(*inputs)
    chemistry = inputs[0].shape[1] - model.featurizer.random_walk_steps
    if method == "integrated_gradients":
        baselines = tuple(torch.zeros_like(t) for t in inputs)
        if baseline == "carbon":
            atom, bond = chain_carbon(model.featurizer)
            baselines[0][:, :chemistry] = atom[:chemistry].to(inputs[0])
            baselines[1][:] = bond.to(inputs[1])
        baselines[0][:, chemistry:] = inputs[0][:, chemistry:].detach()
        if not bonds:  # zero attribution to the bonds: their path stays at the input
            baselines[1][:] = inputs[1].detach()
        attributions = _summing(IntegratedGradients(forward)).attribute(
            inputs,
            baselines=baselines,
            n_steps=steps,
            internal_batch_size=max(pass_atoms, batch.num_nodes),
        )
        with torch.no_grad():
            start = forward(*baselines)
    elif method == "saliency":
        attributions = _summing(Saliency(forward)).attribute(inputs, abs=True)
    else:
        attributions = _summing(InputXGradient(forward)).attribute(inputs)
    atom_scores = attributions[0][:, :chemistry].sum(dim=1)
    edge_scores = attributions[1].sum(dim=1)
    results = []
    for i in range(batch.num_graphs):
        a0, a1 = int(batch.ptr[i]), int(batch.ptr[i + 1])
        # edges of molecule i: those whose source atom belongs to it (contiguous in the batch)
        edges = (batch.edge_index[0] >= a0) & (batch.edge_index[0] < a1)
        atoms = atom_scores[a0:a1].detach().cpu().double().numpy()
        directed = edge_scores[edges].detach().cpu().double().numpy()
        bond_scores = directed[0::2] + directed[1::2]
        if not bonds:
            bond_scores = np.full_like(bond_scores, np.nan)
        gap = reference = float("nan")
        if method == "integrated_gradients":
            reference = float(start[i])
            gap = float(atoms.sum() + np.nansum(bond_scores) - (value[i].item() - reference))
        results.append((atoms, bond_scores, float(value[i]), gap, reference))
    return results


def _summing(method: Any) -> Any:
    """``method`` (a Captum gradient attribution) taking the gradient of the sum of the
    per-molecule outputs in one backward pass. Each output depends on its own molecule's
    inputs alone, so the gradients are the same as Captum's own, which unbinds the outputs
    into one scalar per molecule and interpolation step (a Python-level cost per scalar that
    dominates a GPU's time)."""

    def summed_gradients(
        forward_fn: Callable, inputs: tuple[Tensor, ...], *_: Any, **__: Any
    ) -> tuple[Tensor, ...]:
        with torch.enable_grad():
            return torch.autograd.grad(forward_fn(*inputs).sum(), inputs)

    method.gradient_func = summed_gradients
    return method


def chain_carbon(featurizer: Any) -> tuple[Tensor, Tensor]:
    """Features of an aliphatic CH2 carbon (propane's middle atom) and of a single C-C bond
    under ``featurizer``: the atom and bond of Integrated Gradients' carbon baseline."""
    propane = featurizer("CCC")
    return propane.x[1].float(), propane.edge_attr[0].float()


@torch.no_grad()
def _occlusion(
    model: Any, target: Callable[[Tensor], Tensor], batch: Batch, pass_atoms: int
) -> list[tuple[np.ndarray, np.ndarray, float, float, float]]:
    results = []
    for i in range(batch.num_graphs):
        a0, a1 = int(batch.ptr[i]), int(batch.ptr[i + 1])
        edges = (batch.edge_index[0] >= a0) & (batch.edge_index[0] < a1)
        x, edge_attr = batch.x[a0:a1], batch.edge_attr[edges]
        edge_index = batch.edge_index[:, edges] - a0
        n, n_bonds = len(x), edge_attr.shape[0] // 2
        single = Batch(
            x=x,
            edge_index=edge_index,
            edge_attr=edge_attr,
            batch=torch.zeros(n, dtype=torch.long, device=x.device),
            ptr=torch.tensor([0, n], device=x.device),
        )
        if getattr(batch, "features", None) is not None:
            single.features = batch.features[i : i + 1]
        forward = _forward(model, target, single)
        value = forward(x, edge_attr)[0]
        chemistry = x.shape[1] - model.featurizer.random_walk_steps
        # perturbation p keeps atoms where atom_keep[p] and edges where edge_keep[p]
        atom_keep = torch.ones(n + n_bonds, n, dtype=torch.bool, device=x.device)
        atom_keep[torch.arange(n), torch.arange(n)] = False
        edge_keep = torch.ones(n + n_bonds, 2 * n_bonds, dtype=torch.bool, device=x.device)
        edge_keep[:n] = atom_keep[:n][:, edge_index[0]] & atom_keep[:n][:, edge_index[1]]
        bond_of_edge = torch.arange(2 * n_bonds, device=x.device) // 2
        edge_keep[n:] = bond_of_edge[None, :] != torch.arange(n_bonds, device=x.device)[:, None]
        masked = torch.empty(n + n_bonds, dtype=torch.float64)
        per_pass = max(1, pass_atoms // max(n, 1))
        for p0 in range(0, n + n_bonds, per_pass):
            p1 = min(p0 + per_pass, n + n_bonds)
            xs = x[None].repeat(p1 - p0, 1, 1)
            xs[..., :chemistry] *= atom_keep[p0:p1, :, None]
            xs = xs.reshape(-1, x.shape[1])
            es = (edge_attr[None] * edge_keep[p0:p1, :, None]).reshape(-1, edge_attr.shape[1])
            masked[p0:p1] = forward(xs, es).double().cpu()
        scores = (value.double().cpu() - masked).numpy()
        results.append((scores[:n], scores[n:], float(value), float("nan"), float("nan")))
    return results
