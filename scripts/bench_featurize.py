"""Featurization throughput on the first 20,000 SMILES of HIV.

Measures, on the same SMILES and in this process unless stated:
  rdkit MolFromSmiles        parsing alone (reference floor)
  molml parse_smiles         molml's parser (same molecules, faster sanitization)
  molml featurizer -> Data   one torch_geometric Data per molecule (MolGraphFeaturizer.__call__)
  molml pipeline, 1 / N proc featurize_molecules: what training uses (contiguous store, no Data
                             objects), with every core
  PyG from_smiles            torch_geometric.utils.from_smiles, for comparison
  chemprop MolGraph          with --chemprop PYTHON: chemprop 2.3.1's MoleculeDatapoint.from_smi
                             + SimpleMoleculeMolGraphFeaturizer on the same SMILES, one process,
                             run by that interpreter (scripts/peers/chemprop_peer.py)

Each round times every method once (chemprop included, in the same round), and the table
gives the median over the rounds; the ratio column is chemprop's seconds / the method's.
Without --chemprop no peer is run and the table says so.

Prints a table and writes JSON. Usage:
  python scripts/bench_featurize.py [--n 20000] [--repeats 3] [--out runs/bench/featurize.json]
  python scripts/bench_featurize.py --chemprop ../chemprop-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
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

PEER = Path(__file__).resolve().parent / "peers" / "chemprop_peer.py"


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


def chemprop_featurize(python: str, smiles_file: Path) -> dict:
    """One timed pass of chemprop's featurization in its own interpreter (imports untimed)."""
    command = [python, str(PEER), "featurize", "--smiles", str(smiles_file), "--repeats", "1"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"chemprop peer failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--chemprop", help="python of a venv with chemprop 2.3.1 (the peer)")
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
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    failures: dict[str, int] = {}
    peer: dict | None = None
    with tempfile.TemporaryDirectory() as tmp:
        smiles_file = Path(tmp) / "smiles.txt"
        smiles_file.write_text("\n".join(smiles) + "\n", encoding="utf-8")
        for round_ in range(args.repeats):
            for name, run in cases:
                start = time.perf_counter()
                failures[name] = run(smiles)
                times[name].append(time.perf_counter() - start)
            if args.chemprop:
                peer = chemprop_featurize(args.chemprop, smiles_file)
                times.setdefault("chemprop MolGraph, 1 process", []).append(peer["seconds"])
                failures["chemprop MolGraph, 1 process"] = peer["failed"]
            print(f"round {round_ + 1}/{args.repeats} done", flush=True)

    chemprop_seconds = (
        statistics.median(times["chemprop MolGraph, 1 process"]) if args.chemprop else None
    )
    rows = []
    print(f"\n{len(smiles)} SMILES from hiv, median of {args.repeats} rounds, {cores} cores")
    print("| method | mol/s | seconds | failed | vs chemprop |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        ratio = chemprop_seconds / median if chemprop_seconds else None
        rows.append(
            {
                "method": name,
                "mol_per_s": len(smiles) / median,
                "seconds": median,
                "seconds_all": seconds,
                "failed": failures[name],
                "ratio_vs_chemprop": ratio,
            }
        )
        shown = f"{ratio:.2f}x" if ratio else "-"
        print(
            f"| {name} | {len(smiles) / median:,.0f} | {median:.2f} | {failures[name]} | {shown} |"
        )
    if not args.chemprop:
        print("no peer was run (pass --chemprop PYTHON to run chemprop 2.3.1 side by side)")

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
        "load_average": os.getloadavg(),
        "chemprop": {k: v for k, v in peer.items() if k != "seconds"} if peer else None,
    }
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
