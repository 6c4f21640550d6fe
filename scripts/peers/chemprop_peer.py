"""chemprop 2.3.1 side of molml's benchmarks; run by chemprop's own interpreter, not molml's.

The benchmark scripts (``bench_featurize.py``, ``bench_train.py``) start this file with the
interpreter given as ``--chemprop /path/to/venv/bin/python`` and read one JSON object from
the last line of its stdout. It imports only chemprop and its dependencies, never molml.

    python chemprop_peer.py featurize --smiles smiles.txt --repeats 3
    python chemprop_peer.py epoch --data esol.csv --splits-file split.json --epochs 4

``featurize``: SMILES -> ``MoleculeDatapoint.from_smi`` -> ``SimpleMoleculeMolGraphFeaturizer``
(chemprop's default ``MolGraph``), one process, best of N.
``epoch``: ``chemprop train``'s default D-MPNN (``BondMessagePassing`` hidden 300, depth 3,
``NormAggregation``, ``RegressionFFN`` with one hidden layer of 300, targets scaled as ``chemprop
train`` scales them, graphs cached as ``chemprop train`` caches them) trained with a Lightning
``Trainer`` on the given split; seconds of each training epoch and of each validation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
from chemprop import data, featurizers, models, nn


def featurize(args: argparse.Namespace) -> dict:
    smiles = [s for s in Path(args.smiles).read_text(encoding="utf-8").split("\n") if s.strip()]
    featurizer = featurizers.SimpleMoleculeMolGraphFeaturizer()
    best, failed = float("inf"), 0
    for _ in range(args.repeats):
        failed = 0
        start = time.perf_counter()
        for smi in smiles:
            try:
                point = data.MoleculeDatapoint.from_smi(smi)
            except (RuntimeError, ValueError):
                failed += 1
                continue
            featurizer(point.mol)
        best = min(best, time.perf_counter() - start)
    return {
        "n_smiles": len(smiles),
        "seconds": best,
        "mol_per_s": len(smiles) / best,
        "failed": failed,
        "atom_dim": featurizer.atom_fdim,
        "bond_dim": featurizer.bond_fdim,
    }


class EpochTimer(pl.Callback):
    """Seconds of each training epoch (up to its validation) and of each validation."""

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self.val_seconds: list[float] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        now = time.perf_counter()
        self.train_seconds.append(now - self._started)
        self._started = now

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_seconds.append(time.perf_counter() - self._started)


def epoch(args: argparse.Namespace) -> dict:
    pl.seed_everything(0, verbose=False)
    table = pd.read_csv(args.data)
    smiles_column = args.smiles_column or table.columns[0]
    targets = args.target_columns or [c for c in table.columns if c != smiles_column]
    split = json.loads(Path(args.splits_file).read_text(encoding="utf-8"))[args.split_index]
    points = [
        data.MoleculeDatapoint.from_smi(smi, y)
        for smi, y in zip(table[smiles_column], table[targets].to_numpy(dtype=float), strict=True)
    ]
    featurizer = featurizers.SimpleMoleculeMolGraphFeaturizer()
    train = data.MoleculeDataset([points[i] for i in split["train"]], featurizer)
    val = data.MoleculeDataset([points[i] for i in split["val"]], featurizer)
    scaler = train.normalize_targets()
    val.normalize_targets(scaler)
    started = time.perf_counter()
    train.cache = True  # as `chemprop train` does unless --no-cache
    val.cache = True
    cache_seconds = time.perf_counter() - started
    train_loader = data.build_dataloader(train, args.batch_size, num_workers=0, seed=0)
    val_loader = data.build_dataloader(val, args.batch_size, num_workers=0, shuffle=False)
    model = models.MPNN(
        nn.BondMessagePassing(d_h=args.hidden, depth=args.depth),
        nn.NormAggregation(),  # `chemprop train`'s default aggregation
        nn.RegressionFFN(
            n_tasks=len(targets),
            input_dim=args.hidden,
            hidden_dim=args.hidden,
            n_layers=1,
            output_transform=nn.UnscaleTransform.from_standard_scaler(scaler),
        ),
        batch_norm=False,
    )
    timer = EpochTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(model, train_loader, val_loader)
    epoch_seconds = statistics.median(timer.train_seconds[1:])
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_molecules": len(train),
        "val_molecules": len(val),
        "epoch_seconds": epoch_seconds,
        "epoch_seconds_all": timer.train_seconds,
        "val_seconds": statistics.median(timer.val_seconds[1:]),
        "val_seconds_all": timer.val_seconds,
        "molecules_per_second": len(train) / epoch_seconds,
        "cache_seconds": cache_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    sub = parser.add_subparsers(dest="command", required=True)
    feat = sub.add_parser("featurize")
    feat.add_argument("--smiles", required=True, help="a text file, one SMILES per line")
    feat.add_argument("--repeats", type=int, default=3)
    ep = sub.add_parser("epoch")
    ep.add_argument("--data", required=True, help="CSV: SMILES column, then targets")
    ep.add_argument("--smiles-column")
    ep.add_argument("--target-columns", nargs="+")
    ep.add_argument("--splits-file", required=True)
    ep.add_argument("--split-index", type=int, default=0)
    ep.add_argument("--epochs", type=int, default=4)
    ep.add_argument("--batch-size", type=int, default=64)
    ep.add_argument("--hidden", type=int, default=300)
    ep.add_argument("--depth", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import chemprop

    result = {"featurize": featurize, "epoch": epoch}[args.command](args)
    result.update(
        chemprop=chemprop.__version__,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        python=sys.version.split()[0],
    )
    from rdkit import rdBase

    result["rdkit"] = rdBase.rdkitVersion
    print(json.dumps(result))


if __name__ == "__main__":
    main()
