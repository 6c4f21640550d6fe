"""Screening throughput and memory: ``molml screen`` on libraries of growing size.

Builds a library from the MoleculeNet CSVs in ``$MOLML_DATA_DIR`` (all SMILES, repeated and
shuffled up to the largest size, invalid ones included), writes prefixes of it as ``.smi.gz``,
screens each with a D-MPNN checkpoint (hidden 300, depth 3; trained for one epoch on ESOL
unless ``--model`` is given) in a fresh ``molml screen`` process, and reports molecules per
second and peak memory: sampled over the whole process tree (the screening process plus its
featurization workers) as PSS, so pages shared by the forked workers count once, and as the
peak RSS of the screening process itself.

    python scripts/bench_screen.py                       # 50k and 200k molecules
    python scripts/bench_screen.py --sizes 50000 200000 1000000 --library zinc

``--library zinc`` screens the first N SMILES of the MOSES training set (1.58M ZINC molecules
from the ``molsets`` package) instead. ``molml screen`` runs with its defaults (bf16 where the
device computes it natively); ``--check-fp32`` also screens the smallest library with
``--precision 32-true`` and prints how far the default's predictions are from fp32.

``--chemprop PYTHON`` (a venv with chemprop 2.3.1, ``scripts/setup_chemprop_venv.sh``) also runs
``chemprop predict`` on the same library, right after molml, measured the same way, with a
chemprop model of the same size (``chemprop train`` defaults: D-MPNN hidden 300, depth 3, three
epochs on ESOL), and prints both and the ratio. ``chemprop predict`` stops at the first SMILES
RDKit cannot parse, so with ``--chemprop`` the library holds only SMILES that RDKit parses and is
written as a CSV (``smiles,id``) that both tools read. Each tool runs with its own defaults
(molml: batch 128, featurization workers = cores; chemprop: batch 64, no workers) unless the
options below set them. Without ``--chemprop`` no peer is run.

    python scripts/bench_screen.py --sizes 50000 200000 --chemprop ../chemprop-venv/bin/python
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import ModelCheckpoint
from rdkit import Chem, RDLogger

from molml.data.datamodule import MoleculeDataModule
from molml.data.pretraining import zinc_smiles_path
from molml.data.registry import dataset_path, list_datasets
from molml.models import DMPNN, MoleculeModel


def library_smiles(n: int, seed: int) -> list[str]:
    """``n`` SMILES drawn from every registry dataset, repeated and shuffled."""
    pool: list[str] = []
    for name in list_datasets():
        pool += pd.read_csv(dataset_path(name), usecols=[0]).iloc[:, 0].astype(str).tolist()
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        rng.shuffle(pool)
        out += pool
    return out[:n]


def zinc_smiles(n: int) -> list[str]:
    """The first ``n`` SMILES of the MOSES training set."""
    frame = pd.read_csv(zinc_smiles_path(), usecols=["SMILES"], nrows=n)
    return frame["SMILES"].tolist()


def precision_gap(default: Path, fp32: Path, columns: list[str]) -> dict[str, dict[str, float]]:
    """Per prediction column: max and 99.9th percentile of |default - fp32| and their
    Spearman correlation, over the molecules both scored."""
    a, b = pd.read_parquet(default), pd.read_parquet(fp32)
    ok = ((a["status"] == "ok") & (b["status"] == "ok")).to_numpy()
    gaps = {}
    for column in columns:
        gap = (a[column] - b[column]).abs().to_numpy()[ok]
        gaps[column] = {
            "max_abs": float(gap.max()),
            "p999_abs": float(pd.Series(gap).quantile(0.999)),
            "fp32_sd": float(b[column][ok].std()),
            "spearman": float(a[column][ok].corr(b[column][ok], method="spearman")),
        }
    return gaps


def parsable(smiles: list[str]) -> list[str]:
    """The SMILES that RDKit parses (chemprop predict aborts on any other)."""
    RDLogger.DisableLog("rdApp.*")
    seen: dict[str, bool] = {}
    for smi in smiles:
        if smi not in seen:
            seen[smi] = " " not in smi and Chem.MolFromSmiles(smi) is not None
    return [smi for smi in smiles if seen[smi]]


def chemprop_checkpoint(python: str, workdir: Path) -> Path:
    """A chemprop D-MPNN with ``chemprop train``'s defaults (hidden 300, depth 3), 3 epochs."""
    out = workdir / "chemprop_model"
    command = [
        str(Path(python).parent / "chemprop"),
        "train",
        "--data-path",
        str(dataset_path("esol")),
        "--task-type",
        "regression",
        "--epochs",
        "3",  # chemprop refuses fewer epochs than its 2 warm-up epochs
        "--output-dir",
        str(out),
        "--accelerator",
        "cpu",
        "--devices",
        "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"chemprop train failed:\n{done.stderr[-3000:]}")
    return next(out.rglob("best.pt"))


def chemprop_predict_command(
    python: str, model: Path, library: Path, output: Path, args: argparse.Namespace
) -> list[str]:
    command = [
        str(Path(python).parent / "chemprop"),
        "predict",
        "--test-path",
        str(library),
        "--smiles-columns",
        "smiles",
        "--model-paths",
        str(model),
        "--preds-path",
        str(output),
        "--accelerator",
        "cpu",
        "--devices",
        "1",
    ]
    if args.chemprop_batch_size:
        command += ["--batch-size", str(args.chemprop_batch_size)]
    if args.chemprop_num_workers is not None:
        command += ["--num-workers", str(args.chemprop_num_workers)]
    return command


def train_checkpoint(workdir: Path) -> Path:
    """A D-MPNN of the benchmark size, one epoch on ESOL (its weights do not matter here)."""
    L.seed_everything(0)
    dm = MoleculeDataModule(dataset="esol", split="scaffold", cache_dir=None)
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=300, depth=3),
        tasks=dm.tasks,
        task_type=dm.task_type,
        featurizer=dm.featurizer_config,
    )
    checkpoint = ModelCheckpoint(dirpath=workdir, filename="dmpnn", monitor="val/loss")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
        default_root_dir=str(workdir),
    )
    trainer.fit(model, datamodule=dm)
    return Path(checkpoint.best_model_path)


def _status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field in KiB (0 once the process is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith(field)).split()[1])
    except (OSError, StopIteration, ValueError):
        return 0


def _tree_memory_kib(pid: int) -> int:
    """Proportional set size (PSS) of ``pid`` and its descendants (KiB), from /proc.

    PSS splits pages shared between the forked workers and their parent, so the sum is the
    memory the screen really holds (plain RSS would count torch's shared pages per process).
    """
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            total += int(next(x for x in rollup.splitlines() if x.startswith("Pss:")).split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def run_screen(model: Path, library: Path, output: Path, extra: list[str]) -> dict:
    """One ``molml screen`` process; returns its summary plus wall time and peak memory."""
    command = molml_command(model, library, output, extra)
    wall, peak, stdout = run_measured(command)
    summary = json.loads(stdout[stdout.index("{") :])
    for temporary in ("input", "output"):  # files of a folder deleted when the run ends
        summary.pop(temporary, None)
    return {
        **summary,
        "wall_seconds": round(wall, 2),
        "peak_pss_all_processes_mib": round(peak[0] / 1024, 1),
        "peak_rss_main_process_mib": round(peak[1] / 1024, 1),
    }


def run_chemprop(command: list[str], size: int, output: Path) -> dict:
    """One ``chemprop predict`` process, measured as ``run_screen`` measures molml."""
    wall, peak, _ = run_measured(command)
    rows = len(pd.read_csv(output))
    if rows != size:
        raise SystemExit(f"chemprop predict wrote {rows} rows for {size} molecules")
    return {
        "rows": rows,
        "molecules_per_second": size / wall,
        "wall_seconds": round(wall, 2),
        "peak_pss_all_processes_mib": round(peak[0] / 1024, 1),
        "peak_rss_main_process_mib": round(peak[1] / 1024, 1),
    }


def molml_command(model: Path, library: Path, output: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "molml.cli",
        "screen",
        "--model",
        str(model),
        "--input",
        str(library),
        "--output",
        str(output),
        "--no-progress",
        "--overwrite",
        *extra,
    ]


def run_measured(command: list[str]) -> tuple[float, list[int], str]:
    """Run ``command``; wall seconds, peak [PSS of the tree, RSS of the process] (KiB), stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    peak = [0, 0]  # PSS of the tree, peak RSS (VmHWM) of the screening process

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_memory_kib(process.pid))
            peak[1] = max(peak[1], _status_kib(process.pid, "VmHWM"))
            time.sleep(1.0)  # reading smaps_rollup walks page tables: not too often

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(
            f"failed ({process.returncode}): {' '.join(command)}\n{stderr.strip()[-2000:]}"
        )
    return wall, peak, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--model", type=Path, help="checkpoint (default: train a D-MPNN)")
    parser.add_argument("--num-workers", type=int, help="passed to molml screen")
    parser.add_argument("--chunk-size", type=int, help="passed to molml screen")
    parser.add_argument("--batch-size", type=int, help="passed to molml screen")
    parser.add_argument("--precision", help="passed to molml screen, e.g. bf16-mixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--library", choices=["moleculenet", "zinc"], default="moleculenet")
    parser.add_argument(
        "--check-fp32", action="store_true", help="compare the default precision with 32-true"
    )
    parser.add_argument("--chemprop", help="python of a venv with chemprop 2.3.1 (the peer)")
    parser.add_argument("--chemprop-batch-size", type=int, help="chemprop predict --batch-size")
    parser.add_argument("--chemprop-num-workers", type=int, help="chemprop predict --num-workers")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/screen.json"))
    args = parser.parse_args()
    if min(args.sizes) < 1:
        parser.error(f"--sizes must be positive, got {args.sizes}")
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model}: no such checkpoint")

    extra = []
    for flag in ("num_workers", "chunk_size", "batch_size", "precision"):
        if getattr(args, flag) is not None:
            extra += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = args.model or train_checkpoint(workdir)
        peer_model = chemprop_checkpoint(args.chemprop, workdir) if args.chemprop else None
        if args.library == "zinc":
            smiles = zinc_smiles(max(args.sizes))
        else:
            smiles = library_smiles(max(args.sizes), args.seed)
        if args.chemprop:
            pool = parsable(smiles)
            smiles = (pool * (max(args.sizes) // len(pool) + 1))[: max(args.sizes)]
            extra += ["--smiles-column", "smiles", "--id-column", "id"]
        rows, peer_rows = [], []
        for size in sorted(args.sizes):
            if args.chemprop:
                library = workdir / f"library_{size}.csv"
                frame = pd.DataFrame({"smiles": smiles[:size], "id": range(size)})
                frame.to_csv(library, index=False)
            else:
                library = workdir / f"library_{size}.smi.gz"
                with gzip.open(library, "wt") as handle:
                    handle.writelines(f"{s} mol{i}\n" for i, s in enumerate(smiles[:size]))
            result = run_screen(model, library, workdir / f"scores_{size}.parquet", extra)
            rows.append({"size": size, **result})
            print(
                f"molml screened {size:,} molecules in {result['wall_seconds']} s "
                f"({result['precision']})",
                flush=True,
            )
            if args.check_fp32 and size == min(args.sizes):
                fp32 = workdir / "fp32.parquet"
                fp32_run = run_screen(model, library, fp32, [*extra, "--precision", "32-true"])
                rows[-1]["fp32_run"] = fp32_run
                print(f"and in fp32 in {fp32_run['wall_seconds']} s", flush=True)
                scored = pd.read_parquet(fp32)
                columns = [c for c in scored.columns if c not in ("row", "id", "smiles", "status")]
                gap = precision_gap(workdir / f"scores_{size}.parquet", fp32, columns)
                rows[-1]["gap_vs_fp32"] = gap
            if args.chemprop:
                output = workdir / f"chemprop_{size}.csv"
                command = chemprop_predict_command(args.chemprop, peer_model, library, output, args)
                peer = run_chemprop(command, size, output)
                peer_rows.append({"size": size, **peer})
                print(f"chemprop predicted {size:,} in {peer['wall_seconds']} s", flush=True)
    load_after = os.getloadavg()

    print(
        f"\nmolml screen, {args.model or 'D-MPNN hidden 300 depth 3'}, {os.cpu_count()} cores, "
        f"{platform.machine()}"
        f"; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(
        f"{'molecules':>10} {'failed':>7} {'mol/s':>8} {'wall s':>8} {'peak PSS all':>13} "
        f"{'peak RSS main':>14}"
    )
    for r in rows:
        print(
            f"{r['size']:>10,} {r['failed']:>7} {r['molecules_per_second']:>8.0f} "
            f"{r['wall_seconds']:>8.1f} {r['peak_pss_all_processes_mib']:>9.0f} MiB "
            f"{r['peak_rss_main_process_mib']:>10.0f} MiB"
        )
    for column, gap in rows[0].get("gap_vs_fp32", {}).items():
        print(
            f"{rows[0]['precision']} vs 32-true, {column}: max |diff| {gap['max_abs']:.4f}, "
            f"99.9th pct {gap['p999_abs']:.4f} (fp32 sd {gap['fp32_sd']:.3f}), "
            f"Spearman {gap['spearman']:.5f}"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = last["peak_pss_all_processes_mib"] / first["peak_pss_all_processes_mib"] - 1
        print(f"peak memory growth {first['size']:,} -> {last['size']:,}: {growth:+.1%}")
    if args.chemprop:
        print("\nprocess start to output written, both tools (mol/s = molecules / wall seconds)")
        print("| molecules | molml mol/s | chemprop mol/s | ratio | molml peak | chemprop peak |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for r, p in zip(rows, peer_rows, strict=True):
            molml_rate = r["size"] / r["wall_seconds"]
            ratio = molml_rate / p["molecules_per_second"]
            r["ratio_vs_chemprop_wall"] = ratio
            print(
                f"| {r['size']:,} | {molml_rate:,.0f} "
                f"| {p['molecules_per_second']:,.0f} | {ratio:.2f}x "
                f"| {r['peak_pss_all_processes_mib']:,.0f} MiB "
                f"| {p['peak_pss_all_processes_mib']:,.0f} MiB |"
            )
    else:
        print("\nno peer was run (pass --chemprop PYTHON to run chemprop predict side by side)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "options": extra,
                "library": args.library,
                "load_average_before": load_before,
                "load_average_after": load_after,
                "runs": rows,
                "chemprop_runs": peer_rows,
            },
            indent=2,
        )
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
