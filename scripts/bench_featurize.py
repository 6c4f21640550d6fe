"""Featurization throughput on the first 20,000 SMILES of HIV.

Measures, on the same SMILES and in this process unless stated:
  rdkit MolFromSmiles        parsing alone (reference floor)
  molml parse_smiles         molml's parser (same molecules, faster sanitization)
  molml featurizer -> Data   one torch_geometric Data per molecule (MolGraphFeaturizer.__call__)
  molml pipeline, 1 / N proc featurize_molecules: what training uses (a contiguous store of
                             feature-table rows, no Data objects), in one process / with
                             every core
  PyG from_smiles            torch_geometric.utils.from_smiles, for comparison
  chemprop MolGraph          with --chemprop PYTHON: chemprop 2.3.1's MoleculeDatapoint.from_smi
                             + SimpleMoleculeMolGraphFeaturizer on the same SMILES, one process,
                             run by that interpreter (scripts/peers/chemprop_peer.py)

After the rounds, a stage table says where one process spends its time per molecule: parsing,
RDKit's per-atom and per-bond accessors as the default featurizer calls them (timed one at a
time over all atoms / bonds), the rest of the featurizer's loop, and gathering rows into the
store.

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
from molml.data.graphs import featurize_molecules, featurize_rows
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


ATOM_ACCESSORS = (
    "GetAtomicNum",
    "GetTotalDegree",
    "GetFormalCharge",
    "GetTotalNumHs",
    "GetHybridization",
    "GetIsAromatic",
    "IsInRing",
)
BOND_ACCESSORS = ("GetBondType", "GetIsConjugated", "IsInRing", "GetBeginAtomIdx", "GetEndAtomIdx")


def _seconds(run: Callable[[], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def stage_profile(smiles: list[str]) -> list[dict]:
    """Microseconds per valid molecule of each featurization stage in one process (best of 3;
    a stage timed as the difference of two timings shows 0 where that is below the noise)."""
    mols = []
    for smi in smiles:
        try:
            mols.append(parse_smiles(smi))
        except InvalidMoleculeError:
            continue
    n = len(mols)
    featurizer = MolGraphFeaturizer()
    stages = {"parse (molml parse_smiles)": _seconds(lambda: _each(parse_smiles)(smiles))}

    def calls(kind: str, method: Callable | None) -> float:
        """Seconds to take every molecule's atoms or bonds (and call ``method`` on each),
        molecule by molecule as the featurizer does."""

        def run() -> None:
            for m in mols:
                count = m.GetNumAtoms() if kind == "Atom" else m.GetNumBonds()
                items = list(map(getattr(m, f"Get{kind}WithIdx"), range(count)))
                if method is not None:
                    list(map(method, items))

        return _seconds(run)

    stages["atom objects (GetAtomWithIdx)"] = atom_objects = calls("Atom", None)
    for name in ATOM_ACCESSORS:
        stages[f"atom {name}"] = max(0.0, calls("Atom", getattr(Chem.Atom, name)) - atom_objects)
    stages["bond objects (GetBondWithIdx)"] = bond_objects = calls("Bond", None)
    for name in BOND_ACCESSORS:
        stages[f"bond {name}"] = max(0.0, calls("Bond", getattr(Chem.Bond, name)) - bond_objects)
    rdkit_calls = sum(v for k, v in stages.items() if k.startswith(("atom", "bond")))
    rows_seconds = _seconds(lambda: featurize_rows(featurizer, smiles))
    pipeline_seconds = _seconds(lambda: _pipeline(1)(smiles))
    # these and the accessors' are differences of separate timings: 0 where the difference is
    # below the timings' noise (it can come out negative)
    stages["rest of the featurizer loop (keys, table lookups, lists)"] = max(
        0.0, rows_seconds - stages["parse (molml parse_smiles)"] - rdkit_calls
    )
    stages["assemble the store (merge row tables, edge index)"] = max(
        0.0, pipeline_seconds - rows_seconds
    )
    stages["total: molml pipeline, 1 process"] = pipeline_seconds
    per_atom = sum(m.GetNumAtoms() for m in mols) / n
    per_bond = sum(m.GetNumBonds() for m in mols) / n
    print(f"\nwhere the time goes, 1 process ({per_atom:.1f} atoms, {per_bond:.1f} bonds/molecule)")
    print("| stage | us per molecule | share |")
    print("| --- | ---: | ---: |")
    rows = []
    for name, seconds in stages.items():
        share = seconds / pipeline_seconds
        print(f"| {name} | {seconds / n * 1e6:.1f} | {share:.0%} |")
        rows.append({"stage": name, "us_per_molecule": seconds / n * 1e6, "share": share})
    return rows


def store_memory(smiles: list[str]) -> dict:
    """Featurize ``smiles`` into a store in one process: seconds, and the store's size next to
    the size of the same graphs as dense feature matrices."""
    start = time.perf_counter()
    store = featurize_molecules(smiles, MolGraphFeaturizer(), n_jobs=1, progress=False).graphs
    seconds = time.perf_counter() - start

    def mib(*tensors: object) -> float:
        return sum(t.numel() * t.element_size() for t in tensors if t is not None) / 2**20

    fields = [getattr(store, name) for name in store.__dataclass_fields__]
    shared = (store.edge_index, store.atom_ptr, store.edge_ptr, store.rows)
    result = {
        "molecules": len(store),
        "seconds": seconds,
        "store_mib": mib(*fields),
        "dense_mib": mib(store.x, store.edge_attr, *shared),
        "distinct_atom_rows": len(store.atom_table),
        "distinct_bond_rows": len(store.bond_table),
    }
    print(
        f"\nall {len(store):,} hiv molecules, 1 process, with scaffolds: {seconds:.1f} s; "
        f"store {result['store_mib']:.0f} MiB ({result['distinct_atom_rows']} distinct atom rows, "
        f"{result['distinct_bond_rows']} bond rows), {result['dense_mib']:.0f} MiB as dense "
        "matrices"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=20000, help="HIV SMILES timed (the store's memory: all of HIV)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--chemprop", help="python of a venv with chemprop 2.3.1 (the peer)")
    parser.add_argument("--out", default="runs/bench/featurize.json")
    args = parser.parse_args()
    if args.n < 1 or args.repeats < 1:
        parser.error(f"--n and --repeats must be positive, got {args.n} and {args.repeats}")

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
    stages = stage_profile(smiles)
    memory = store_memory(read_molecules(dataset_path("hiv"))["smiles"].tolist())
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
    out.write_text(
        json.dumps({"meta": meta, "results": rows, "stages": stages, "store": memory}, indent=2)
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
