"""Training speed of every encoder at a comparable size: hidden 300, depth 3, batch 64.

Each encoder is trained as its ``configs/lipo_<name>.yaml`` describes it (encoder, readout,
featurizer; GPS with 16 random-walk columns) on a registry dataset (``--dataset``, default lipo;
balanced scaffold split, featurization cached in ``.molml_cache``), in a fresh process per
encoder and precision, with the Lightning Trainer. Reported per run:

- parameters of the whole model (embeddings, encoder, readout, head);
- seconds per training epoch: the median over the epochs after the first (warm-up), from the
  start of the epoch to the start of its validation (so validation is excluded), and
  separately the median validation time;
- molecules per second (training molecules / median epoch seconds);
- peak memory: the process's peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU.

``--profile`` also profiles one more training epoch of each run with ``torch.profiler`` (batch
collation, forward, backward, optimizer step, and the operators inside them), reports the
time the cached graphs took to load, and writes the tables next to the JSON.

    python scripts/bench_train.py                                   # every encoder, lipo, CPU
    python scripts/bench_train.py --dataset esol --encoders dmpnn --profile
    python scripts/bench_train.py --accelerator gpu                 # fp32 and bf16-mixed

``--chemprop PYTHON`` (the interpreter of a venv with chemprop 2.3.1, see
``scripts/setup_chemprop_venv.sh``) also trains chemprop's default D-MPNN (hidden 300, depth 3,
batch 64, its own ``MPNN`` and a Lightning ``Trainer``, ``scripts/peers/chemprop_peer.py``) on
exactly molml's split of the same CSV, with the same torch thread count, after each molml
D-MPNN run (``--rounds`` times, medians over rounds), and prints both and the ratio, for the
training epoch alone and with validation. Without it, no peer is run and no peer figure is
printed.

    python scripts/bench_train.py --dataset esol --encoders dmpnn --threads 1 --rounds 3 \
        --chemprop ../chemprop-venv/bin/python
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from torch.profiler import ProfilerActivity, profile, record_function

from molml.chem.featurizer import MolGraphFeaturizer
from molml.data.datamodule import MoleculeDataModule
from molml.data.registry import dataset_path
from molml.models import MoleculeModel

ENCODERS = ("dmpnn", "gine", "gatv2", "attentivefp", "pna", "gps", "graphormer")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PEER = Path(__file__).resolve().parent / "peers" / "chemprop_peer.py"


class EpochTimer(Callback):
    """Wall time of each training epoch (up to its validation) and of each validation."""

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self.val_seconds: list[float] = []
        self._started = 0.0

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = self._now(trainer)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = self._now(trainer)
        self.train_seconds.append(now - self._started)
        self._started = now

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_seconds.append(self._now(trainer) - self._started)


def load_recipe(name: str) -> dict[str, Any]:
    """Encoder, readout and featurizer of ``configs/lipo_<name>.yaml``."""
    config = yaml.safe_load((CONFIGS / f"lipo_{name}.yaml").read_text())
    model, data = config["model"], config["data"]
    featurizer = data.get("featurizer", {}).get("init_args", {})
    return {"encoder": model["encoder"], "readout": model["readout"], "featurizer": featurizer}


def build_encoder(spec: dict[str, Any]) -> torch.nn.Module:
    module_name, _, class_name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**spec["init_args"])


def make_datamodule(
    dataset: str, featurizer: dict[str, Any], batch_size: int
) -> MoleculeDataModule:
    return MoleculeDataModule(
        dataset=dataset,
        split="scaffold",
        batch_size=batch_size,
        featurizer=MolGraphFeaturizer(**featurizer),
    )


def run(job: dict[str, Any]) -> dict[str, Any]:
    """One encoder at one precision; runs in its own process so peak memory is its own."""
    recipe = load_recipe(job["encoder"])
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    L.seed_everything(0, verbose=False)
    dm = make_datamodule(job["dataset"], recipe["featurizer"], job["batch_size"])
    started = time.perf_counter()
    dm.setup("fit")  # loads the cached graphs (or featurizes them once)
    setup_seconds = time.perf_counter() - started
    model = MoleculeModel(
        encoder=build_encoder(recipe["encoder"]),
        readout=recipe["readout"],
        tasks=dm.tasks,
        task_type=dm.task_type,
        featurizer=dm.featurizer_config,
    )
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator=job["accelerator"],
        devices=1,
        precision=job["precision"],
        max_epochs=job["epochs"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    gpu = job["accelerator"] == "gpu"
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, datamodule=dm)
    if gpu:
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    epoch_seconds = statistics.median(timer.train_seconds[1:])
    n_train = len(dm.split.train)
    result = {
        **job,
        "readout": recipe["readout"],
        "random_walk_steps": dm.featurizer.random_walk_steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_molecules": n_train,
        "epoch_seconds": epoch_seconds,
        "epoch_seconds_all": timer.train_seconds,
        "val_seconds": statistics.median(timer.val_seconds[1:]),
        "molecules_per_second": n_train / epoch_seconds,
        "peak_memory_mib": peak_mib,
        "peak_memory_kind": "cuda max_memory_allocated" if gpu else "process peak RSS",
        "cache_load_seconds": setup_seconds,
        "torch_threads": torch.get_num_threads(),
    }
    if job["profile"]:
        result["profile_tables"] = profile_epoch(model, dm, trainer, job)
    return result


def profile_epoch(
    model: MoleculeModel, dm: MoleculeDataModule, trainer: L.Trainer, job: dict[str, Any]
) -> str:
    """One more training epoch under ``torch.profiler``: time per phase, then per operator."""
    device = trainer.strategy.root_device
    model.to(device).train()  # Lightning hands the model back on the CPU after fit
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if job["precision"] == "bf16-mixed" else None
    loader = dm.train_dataloader()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        batches = iter(loader)
        for _ in range(len(loader)):
            with record_function("## collate batch (DataLoader)"):
                batch = next(batches)
            with record_function("## move batch to device"):
                batch = batch.to(device)
            with (
                record_function("## forward + loss"),
                torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
            ):
                loss = model.loss(model(batch), batch)
            with record_function("## backward"):
                loss.backward()
            with record_function("## optimizer step"):
                optimizer.step()
                optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
    wall = time.perf_counter() - started
    averages = profiler.key_averages()
    lines = [f"one profiled epoch: {len(loader)} steps, {wall:.2f} s wall (with profiler overhead)"]
    for event in sorted(averages, key=lambda e: -e.cpu_time_total):
        if event.key.startswith("## "):
            seconds = event.cpu_time_total / 1e6
            lines.append(f"  {event.key[3:]:<30} {seconds:7.3f} s {seconds / wall:6.1%}")
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    lines += ["", "operators by self time:", averages.table(sort_by=sort_by, row_limit=20)]
    return "\n".join(lines)


def chemprop_epochs(python: str, dm: MoleculeDataModule, job: dict[str, Any], tmp: Path) -> dict:
    """chemprop's default D-MPNN for ``job["epochs"]`` epochs on molml's split of the same CSV."""
    split_file = tmp / "split.json"
    dm.split_rows().to_json(split_file)
    command = [
        python,
        str(PEER),
        *(["--threads", str(job["threads"])] if job["threads"] else []),
        "epoch",
        "--data",
        str(dataset_path(job["dataset"])),
        "--target-columns",
        *dm.tasks,
        "--splits-file",
        str(split_file),
        "--epochs",
        str(job["epochs"]),
        "--batch-size",
        str(job["batch_size"]),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"chemprop peer failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_table(molml: list[dict[str, Any]], chemprop: list[dict[str, Any]]) -> tuple[str, dict]:
    """Medians over rounds of molml's D-MPNN epochs (per precision) and chemprop's (fp32),
    and their ratios."""

    def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
        train = statistics.median(r["epoch_seconds"] for r in runs)
        val = statistics.median(r["val_seconds"] for r in runs)
        with_val = statistics.median(r["epoch_seconds"] + r["val_seconds"] for r in runs)
        return {"train": train, "val": val, "with_val": with_val}

    c = medians(chemprop)
    summary: dict[str, Any] = {
        "chemprop": c,
        "chemprop_parameters": chemprop[0]["parameters"],
        "molml_parameters": molml[0]["parameters"],
        "rounds": len(chemprop),
    }
    lines = [
        "| D-MPNN, hidden 300, depth 3, batch 64 | parameters | train s/epoch | val s "
        "| epoch + val s | chemprop / molml (epoch + val) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| chemprop 2.3.1, fp32 | {chemprop[0]['parameters']:,} | {c['train']:.2f} "
        f"| {c['val']:.2f} | {c['with_val']:.2f} | |",
    ]
    for precision in dict.fromkeys(r["precision"] for r in molml):
        m = medians([r for r in molml if r["precision"] == precision])
        ratio = c["with_val"] / m["with_val"]
        summary[precision] = {
            "molml": m,
            "ratio_train": c["train"] / m["train"],
            "ratio_with_val": ratio,
        }
        lines.append(
            f"| molml, {precision} | {molml[0]['parameters']:,} | {m['train']:.2f} "
            f"| {m['val']:.2f} | {m['with_val']:.2f} | {ratio:.2f}x |"
        )
    return "\n".join(lines), summary


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'encoder':<11} {'readout':<11} {'precision':<10} {'params':>9} {'s/epoch':>8} "
        f"{'val s':>6} {'mol/s':>7} {'peak MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['encoder']:<11} {r['readout']:<11} {r['precision']:<10} {r['parameters']:>9,} "
            f"{r['epoch_seconds']:>8.2f} {r['val_seconds']:>6.2f} "
            f"{r['molecules_per_second']:>7.0f} {r['peak_memory_mib']:>9.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument("--dataset", default="lipo", help="registry name, e.g. lipo or esol")
    parser.add_argument("--epochs", type=int, default=4, help="including the warm-up epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--precision",
        nargs="+",
        help="Lightning precisions (default: 32-true on CPU, 32-true and bf16-mixed on GPU)",
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler tables per run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run; medians")
    parser.add_argument("--chemprop", help="python of a venv with chemprop 2.3.1 (the peer)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/train.json"))
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first one is a warm-up)")
    if args.chemprop and "dmpnn" not in args.encoders:
        parser.error("--chemprop compares D-MPNNs: include dmpnn in --encoders")
    if args.chemprop and args.accelerator != "cpu":
        parser.error("--chemprop is measured on CPU only")
    precisions = args.precision or (
        ["32-true", "bf16-mixed"] if args.accelerator == "gpu" else ["32-true"]
    )

    for featurizer in {json.dumps(load_recipe(n)["featurizer"]) for n in args.encoders}:
        make_datamodule(args.dataset, json.loads(featurizer), args.batch_size).prepare_data()
    split_dm = None
    if args.chemprop:
        split_dm = make_datamodule(
            args.dataset, load_recipe("dmpnn")["featurizer"], args.batch_size
        )
        split_dm.setup("fit")

    rows, molml_peer_runs, chemprop_runs = [], [], []
    spawn = mp.get_context("spawn")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name in args.encoders:
                for precision in precisions:
                    job = {
                        "encoder": name,
                        "dataset": args.dataset,
                        "precision": precision,
                        "accelerator": args.accelerator,
                        "epochs": args.epochs,
                        "batch_size": args.batch_size,
                        "threads": args.threads,
                        "profile": args.profile and round_ == 0,
                    }
                    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                        row = pool.submit(run, job).result()
                    row["round"] = round_
                    rows.append(row)
                    print(
                        f"{name} {precision}: {row['epoch_seconds']:.2f} s/epoch "
                        f"({', '.join(f'{s:.2f}' for s in row['epoch_seconds_all'])})",
                        flush=True,
                    )
                    if args.chemprop and name == "dmpnn":
                        molml_peer_runs.append(row)
                    if args.chemprop and name == "dmpnn" and precision == precisions[-1]:
                        peer = chemprop_epochs(args.chemprop, split_dm, job, Path(tmp))
                        chemprop_runs.append(peer)
                        print(
                            f"chemprop 2.3.1 D-MPNN: {peer['epoch_seconds']:.2f} s/epoch "
                            f"({', '.join(f'{s:.2f}' for s in peer['epoch_seconds_all'])})",
                            flush=True,
                        )
    load_after = os.getloadavg()

    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else platform.processor()
    print(
        f"\n{args.dataset}, scaffold split, {rows[0]['train_molecules']} training molecules, "
        f"batch {args.batch_size}, median of epochs 2..{args.epochs}, validation excluded; "
        f"{args.accelerator} ({device or platform.machine()}, {os.cpu_count()} cores, "
        f"{rows[0]['torch_threads']} torch threads)"
    )
    print(format_table(rows))
    peer_summary = None
    if args.chemprop:
        table, peer_summary = peer_table(molml_peer_runs, chemprop_runs)
        print(
            f"\nmolml and chemprop {chemprop_runs[0]['chemprop']} side by side, same split and "
            f"threads, median of {args.rounds} round(s); load average "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after"
        )
        print(table)
    else:
        print("\nno peer was run (pass --chemprop PYTHON to train chemprop 2.3.1 side by side)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if "profile_tables" in row:
            path = args.out.with_name(
                f"{args.out.stem}_profile_{row['encoder']}_{row['precision']}.txt"
            )
            text = row.pop("profile_tables")
            path.write_text(f"cache load (dm.setup): {row['cache_load_seconds']:.2f} s\n{text}")
            print(f"profile written to {path}")
    report = {
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "runs": rows,
        "chemprop_runs": chemprop_runs,
        "chemprop_vs_molml": peer_summary,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
