"""Serving throughput, latency and memory: ``molml serve`` under concurrent clients.

Starts the real server (``python -m molml.cli serve``) on 127.0.0.1 with a D-MPNN (hidden 300,
depth 3; one epoch on Crippen logP of RDKit's NCI molecules unless ``--model`` is given), once
with micro-batching and once without (``--max-batch-size 0``), and drives it with an async httpx
client: a fixed number of requests of 1 and of 100 molecules at 1, 8 and 32 concurrent clients
(NCI SMILES, about 1 in 50 of them invalid). Reports molecules per second, p50/p95/p99 latency,
error responses, and the server's RSS (peak, and after warm-up vs at the end: flat or not).

The client runs on the same machine as the server and takes CPU from it.

    python scripts/bench_serve.py
    python scripts/bench_serve.py --model best.ckpt --requests 400 40 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from prometheus_client.parser import text_string_to_metric_families

from molml.data.datamodule import MoleculeDataModule
from molml.models import DMPNN, MoleculeModel
from molml.quickstart import NCI_LIBRARY, write_logp_dataset
from molml.serve import ReferenceSet

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def train_checkpoint(workdir: Path) -> Path:
    """A D-MPNN of the benchmark size, one epoch on NCI logP (its weights do not matter here)."""
    data = workdir / "nci_logp.csv"
    write_logp_dataset(NCI_LIBRARY, data)
    L.seed_everything(0)
    dm = MoleculeDataModule(path=str(data), target_columns=["logp"], cache_dir=None)
    model = MoleculeModel(
        encoder=DMPNN(hidden_dim=300, depth=3), tasks=dm.tasks, featurizer=dm.featurizer_config
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


def request_smiles() -> list[str]:
    """NCI SMILES with an invalid one every 50th: what a real client sends."""
    smiles = [line.split()[0] for line in NCI_LIBRARY.read_text().splitlines() if line.strip()]
    return [s if i % 50 != 49 else "C1CC" for i, s in enumerate(smiles)]


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (psutil when installed, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss // 1024
    except ImportError:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def model_calls(url: str) -> tuple[float, float]:
    """(model calls, molecules in them) so far, from the server's ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return found["molml_model_batch_molecules_count"], found["molml_model_batch_molecules_sum"]


class MemorySampler(threading.Thread):
    """Samples a process's RSS every 50 ms; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, ValueError):
                return
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model: Path, batching: bool, args: argparse.Namespace
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "molml.cli", "serve", "--model", f"dmpnn={model}"]
    command += ["--port", str(port), "--threads", str(args.threads), "--log-level", "warning"]
    command += ["--max-wait-ms", str(args.max_wait_ms)] if batching else ["--max-batch-size", "0"]
    command += ["--reference", str(args.reference)] if args.reference else []
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])  # this checkout's molml
    env = {**os.environ, "PYTHONPATH": path}
    server = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"molml serve exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError("molml serve did not answer /health in 180 s")


async def drive(
    url: str, smiles: list[str], molecules: int, clients: int, requests: int
) -> dict[str, Any]:
    """Send ``requests`` requests of ``molecules`` SMILES from ``clients`` concurrent clients."""
    latencies: list[float] = []
    errors = 0
    done = 0
    sent = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one_client() -> None:
            nonlocal errors, done
            for i in sent:
                start = (i * molecules) % (len(smiles) - molecules)
                body = {"smiles": smiles[start : start + molecules]}
                t0 = time.perf_counter()
                response = await client.post("/predict", json=body)
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors += 1
                else:
                    done += len(response.json()["results"])

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        seconds = time.perf_counter() - t0
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return {
        "molecules_per_request": molecules,
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "molecules_per_s": round(done / seconds, 1),
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
    }


class Server:
    """A running ``molml serve`` with micro-batching on or off, and its memory."""

    def __init__(self, model: Path, batching: bool, args: argparse.Namespace) -> None:
        self.batching = batching
        self.process, self.url = start_server(model, batching, args)
        self.sampler = MemorySampler(self.process.pid)
        self.sampler.start()
        self.cells: list[dict[str, Any]] = []
        self.after_warmup = self.at_end = 0

    def warm_up(self, smiles: list[str]) -> None:
        """Every code path once, allocator pools filled; then the baseline RSS."""
        asyncio.run(drive(self.url, smiles, 100, 8, 20))
        asyncio.run(drive(self.url, smiles, 1, 8, 50))
        self.after_warmup = rss_kib(self.process.pid)

    def run(self, smiles: list[str], molecules: int, clients: int, requests: int) -> None:
        cpu, calls = cpu_seconds(self.process.pid), model_calls(self.url)
        cell = asyncio.run(drive(self.url, smiles, molecules, clients, requests))
        cpu = cpu_seconds(self.process.pid) - cpu
        calls = [after - before for before, after in zip(calls, model_calls(self.url), strict=True)]
        cell = {"batching": self.batching, **cell}
        cell["molecules_per_model_call"] = round(calls[1] / calls[0], 1)
        cell["server_cpu_ms_per_request"] = round(1000 * cpu / requests, 2)
        # what one free core would sustain: load-independent, unlike mol/s on a shared machine
        cell["molecules_per_server_cpu_s"] = round(molecules * requests / cpu, 1)
        self.cells.append(cell)
        print(json.dumps(cell), flush=True)

    def stop(self) -> dict[str, Any]:
        if self.process.poll() is None:
            self.at_end = rss_kib(self.process.pid)
        self.sampler.running = False
        self.process.terminate()
        self.process.wait(timeout=60)
        growth = (self.at_end - self.after_warmup) / max(self.after_warmup, 1)
        return {
            "batching": self.batching,
            "cells": self.cells,
            "rss_after_warmup_mib": round(self.after_warmup / 1024, 1),
            "rss_at_end_mib": round(self.at_end / 1024, 1),
            "peak_rss_mib": round(self.sampler.peak / 1024, 1),
            "rss_growth": round(growth, 4),
            "memory_flat": growth < 0.05,
        }


def run_all(model: Path, args: argparse.Namespace, smiles: list[str]) -> list[dict[str, Any]]:
    """Both servers side by side; each cell runs on one, then on the other, so a change in the
    shared machine's load hits both alike."""
    servers = [Server(model, batching, args) for batching in (True, False)]
    try:
        for server in servers:
            server.warm_up(smiles)
        for molecules, requests in ((1, args.requests[0]), (100, args.requests[1])):
            for clients in args.clients:
                for server in servers:
                    server.run(smiles, molecules, clients, requests)
    finally:
        records = [server.stop() for server in servers]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: train a D-MPNN)")
    parser.add_argument(
        "--requests",
        type=int,
        nargs=2,
        default=[600, 60],
        metavar=("ONE", "HUNDRED"),
        help="requests per cell with 1 and with 100 molecules (default 600 60)",
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="the batching server's --max-wait-ms"
    )
    parser.add_argument(
        "--reference", type=Path, help="training molecules for the applicability-domain metrics"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "serve.json")
    args = parser.parse_args()

    smiles = request_smiles()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or train_checkpoint(Path(tmp))
        servers = run_all(model, args, smiles)

    reference = f"; reference set {args.reference}" if args.reference else ""
    print(
        f"\n2-core x86-64 CPU, shared; server torch threads: {args.threads}; "
        f"--max-wait-ms {args.max_wait_ms}{reference}\n"
    )
    print(
        "| molecules/request | clients | micro-batching | mol/s | p50 ms | p95 ms | p99 ms "
        "| errors | mol per model call | server CPU ms/request | mol per server CPU-s |"
    )
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    cells = [c for server in servers for c in server["cells"]]
    cells.sort(key=lambda c: (c["molecules_per_request"], c["clients"], not c["batching"]))
    for c in cells:
        print(
            f"| {c['molecules_per_request']} | {c['clients']} | {'on' if c['batching'] else 'off'} "
            f"| {c['molecules_per_s']:,.0f} | {c['p50_ms']} | {c['p95_ms']} | {c['p99_ms']} "
            f"| {c['errors']} | {c['molecules_per_model_call']} | {c['server_cpu_ms_per_request']} "
            f"| {c['molecules_per_server_cpu_s']:,.0f} |"
        )
    print(f"\nload average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    print("\n| micro-batching | RSS after warm-up | RSS at end | peak RSS | flat (<5% growth) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for s in servers:
        print(
            f"| {'on' if s['batching'] else 'off'} | {s['rss_after_warmup_mib']} MiB "
            f"| {s['rss_at_end_mib']} MiB | {s['peak_rss_mib']} MiB | {s['memory_flat']} |"
        )
    timing = reference_timing(smiles)
    print(
        f"\n--reference: {timing['reference_molecules']:,} molecules built in "
        f"{timing['build_s']} s; {timing['ms_per_molecule']} ms per molecule compared"
    )
    goals = _goals(servers)
    print("\n" + "\n".join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in goals.items()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "threads": args.threads,
        "max_wait_ms": args.max_wait_ms,
        "reference": str(args.reference) if args.reference else None,
        "requests": args.requests,
        "servers": servers,
        "reference_set": timing,
        "goals": goals,
    }
    args.output.write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.output}")


def reference_timing(smiles: list[str]) -> dict[str, float]:
    """Seconds to build a 10,000-molecule reference set, and milliseconds per molecule to
    compare molecules with it (what ``--reference`` costs)."""
    references = [s for s in smiles if s != "C1CC"] * 2
    t0 = time.perf_counter()
    reference = ReferenceSet(references[:10_000])
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference.max_similarity(smiles[:500])
    return {
        "reference_molecules": len(reference.fingerprints),
        "build_s": round(built, 2),
        "ms_per_molecule": round((time.perf_counter() - t0) / 500 * 1000, 2),
    }


def _goals(servers: list[dict[str, Any]]) -> dict[str, bool]:
    """The service's goals, judged on the micro-batching server."""
    on = next(s for s in servers if s["batching"])
    cells = {(c["molecules_per_request"], c["clients"]): c for c in on["cells"]}
    best_100 = max(c["molecules_per_s"] for (m, _), c in cells.items() if m == 100)
    p99_1_8 = cells[(1, 8)]["p99_ms"] if (1, 8) in cells else float("inf")
    return {
        ">= 1,000 mol/s with 100-molecule requests": best_100 >= 1000,
        "p99 <= 50 ms for 1-molecule requests at 8 clients": p99_1_8 <= 50,
        "no error responses": all(c["errors"] == 0 for s in servers for c in s["cells"]),
        "memory flat": all(s["memory_flat"] for s in servers),
    }


if __name__ == "__main__":
    main()
