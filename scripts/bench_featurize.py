"""Featurization throughput on the first 20,000 SMILES of HIV.

Measures, on the same SMILES and in this process unless stated:
  rdkit MolFromSmiles        parsing alone (reference floor)
  molml parse_smiles         molml's parser (same molecules, faster sanitization)
  molml featurizer -> Data   one torch_geometric Data per molecule (MolGraphFeaturizer.__call__)
  molml pipeline, 1 / N proc featurize_molecules: what training uses (contiguous store, no Data
                             objects), with every core
  PyG from_smiles            torch_geometric.utils.from_smiles, for comparison

Prints a table and writes JSON. Usage:
  python scripts/bench_featurize.py [--n 20000] [--repeats 3] [--out runs/bench/featurize.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from rdkit import Chem
from torch_geometric.utils import from_smiles

from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.parsing import parse_smiles
from molml.data.graphs import featurize_molecules
from molml.data.readers import read_molecules
from molml.data.registry import dataset_path
from molml.errors import InvalidMoleculeError


def _each(fn: Callable[[str], object]) -> Callable[[list[str]], int]:
    def run(smiles: list[str]) -> int:
        failed = 0
        for smi in smiles:
            try:
                if fn(smi) is None:
                    failed += 1
            except (InvalidMoleculeError, ValueError):
                failed += 1
        return failed

    return run


def _pipeline(n_jobs: int) -> Callable[[list[str]], int]:
    def run(smiles: list[str]) -> int:
        result = featurize_molecules(
            smiles,
            MolGraphFeaturizer(),
            n_jobs=n_jobs,
            with_scaffolds=False,
            progress=False,
        )
        return len(result.errors)

    return run


def _pyg(smi: str) -> object:
    return from_smiles(smi) if Chem.MolFromSmiles(smi) is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings")
    parser.add_argument("--out", default="runs/bench/featurize.json")
    args = parser.parse_args()

    smiles = read_molecules(dataset_path("hiv"))["smiles"].tolist()[: args.n]
    cores = os.cpu_count() or 1
    featurizer = MolGraphFeaturizer()
    cases: list[tuple[str, Callable[[list[str]], int]]] = [
        ("rdkit MolFromSmiles", _each(Chem.MolFromSmiles)),
        ("molml parse_smiles", _each(parse_smiles)),
        ("molml featurizer -> Data", _each(featurizer)),
        ("molml pipeline, 1 process", _pipeline(1)),
        (f"molml pipeline, {cores} processes", _pipeline(-1)),
        ("PyG from_smiles", _each(_pyg)),
    ]
    rows = []
    print(f"{len(smiles)} SMILES from hiv, best of {args.repeats}, {cores} cores")
    print(f"{'method':34s} {'mol/s':>9s} {'seconds':>8s} {'failed':>7s}")
    for name, run in cases:
        best, failed = float("inf"), 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            failed = run(smiles)
            best = min(best, time.perf_counter() - start)
        rate = len(smiles) / best
        rows.append({"method": name, "mol_per_s": rate, "seconds": best, "failed": failed})
        print(f"{name:34s} {rate:9.0f} {best:8.2f} {failed:7d}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "n_smiles": len(smiles),
        "dataset": "hiv",
        "cores": cores,
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "atom_dim": featurizer.atom_dim,
        "bond_dim": featurizer.bond_dim,
    }
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
