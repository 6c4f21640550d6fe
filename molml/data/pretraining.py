"""Unlabelled molecules for self-supervised pretraining, in bounded memory.

SMILES are streamed from the ZINC set that the ``molsets`` package ships (source ``zinc``) or
from the user's molecule files, featurized into graphs in shards with all RDKit 2D descriptors
as regression targets, and cached on disk shard by shard: an interrupted preparation resumes
at the first missing shard. Training reads one shard at a time, shuffled, so memory stays
bounded at millions of molecules; under DDP every rank reads every shard and takes its own
equal share of it.

Descriptor targets: a descriptor whose values span orders of magnitude on the reference set
(99.9th percentile of ``|x|`` above ``LOG_ABOVE``, e.g. ``Ipc``, ``BertzCT``) is learned as
``sign(x) log(1 + |x|)`` (named ``<name>_slog``); every target is clipped to the reference
set's mean +- ``CLIP_STD`` standard deviations, so that rare counts cannot dominate the loss, and
descriptors with one value on more than ``MOST_COMMON_AT_MOST`` of the reference set (rare
functional-group counts) are left out. The reference set is the validation set: the valid
molecules among the first ``val_size`` SMILES. Molecules that fail to parse, or for which any
descriptor fails or is not finite, are skipped and counted by reason.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, IterableDataset
from torch_geometric.data import Batch

from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.fingerprints import RDKitDescriptors
from molml.data.graphs import (
    CACHE_FORMAT,
    GraphBatches,
    GraphStore,
    as_batch,
    featurize_molecules,
)
from molml.data.readers import iter_molecule_chunks
from molml.data.registry import sha256_of
from molml.errors import DataError
from molml.options import check_int, check_jobs

log = logging.getLogger(__name__)

ZINC = "zinc"
ZINC_FILE = "moses/dataset/data/train.csv.gz"
ZINC_SETUP = "pip install --no-deps molsets==0.3.1"
LOG_ABOVE = 1000.0
MOST_COMMON_AT_MOST = 0.98  # descriptors with one value on more molecules are left out
CLIP_STD = 5.0  # targets are clipped to the reference mean +- this many standard deviations


def zinc_smiles_path() -> Path:
    """The 1.58 million ZINC SMILES (MOSES training set) inside the ``molsets`` wheel, located
    through the distribution's metadata without importing the package."""
    try:
        distribution = importlib.metadata.distribution("molsets")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the ZINC pretraining set comes with the molsets package, which is not installed: "
            f"run `{ZINC_SETUP}` (its own dependencies are not needed), or give SMILES files "
            "as data.sources"
        ) from None
    for file in distribution.files or []:
        if str(file).replace("\\", "/") == ZINC_FILE:
            path = Path(distribution.locate_file(file))
            if path.is_file():
                return path
    raise DataError(f"molsets is installed but {ZINC_FILE} is missing; reinstall: {ZINC_SETUP}")


def source_path(source: str) -> Path:
    """``zinc`` or a molecule file, as a path that exists."""
    if source == ZINC:
        return zinc_smiles_path()
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"pretraining source {source!r} is neither 'zinc' nor an existing file")
    return path


def stream_smiles(
    sources: Sequence[str], smiles_column: str | None = None, chunk_size: int = 10000
) -> Iterator[list[str]]:
    """SMILES of all sources in order, in lists of at most ``chunk_size``."""
    for source in sources:
        path = source_path(source)
        column = smiles_column if source != ZINC else "SMILES"
        for chunk in iter_molecule_chunks(path, chunk_size=chunk_size, smiles_column=column):
            yield chunk["smiles"].fillna("").astype(str).tolist()


def take_blocks(chunks: Iterator[list[str]], sizes: Iterator[int]) -> Iterator[list[str]]:
    """Regroup a stream of SMILES lists into blocks of the given sizes (the last may be short)."""
    buffer: list[str] = []
    size = next(sizes)
    for chunk in chunks:
        buffer.extend(chunk)
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
            size = next(sizes)
    if buffer:
        yield buffer


@dataclass
class DescriptorTargets:
    """Which RDKit descriptors are learned, and how they are transformed into targets."""

    names: list[str]  # RDKit descriptor names
    log_scaled: list[bool]
    lower: list[float]  # clip bounds after the log transform
    upper: list[float]

    @property
    def tasks(self) -> list[str]:
        """Target names: the descriptor name, ``<name>_slog`` where it is log-scaled."""
        return [f"{n}_slog" if s else n for n, s in zip(self.names, self.log_scaled, strict=True)]

    @classmethod
    def fit(cls, names: Sequence[str], values: np.ndarray) -> DescriptorTargets:
        """Choose the transform from reference values ``[n, len(names)]`` (finite)."""
        keep, log_scaled, lower, upper = [], [], [], []
        for j, name in enumerate(names):
            column = values[:, j].astype(np.float64)
            _, counts = np.unique(column, return_counts=True)
            if counts.max() > MOST_COMMON_AT_MOST * len(column):
                continue  # (nearly) constant: little to learn, and a tiny spread to divide by
            scaled = bool(np.quantile(np.abs(column), 0.999) > LOG_ABOVE)
            if scaled:
                column = _signed_log(column)
            mean, std = column.mean(), column.std()
            keep.append(name)
            log_scaled.append(scaled)
            lower.append(float(mean - CLIP_STD * std))
            upper.append(float(mean + CLIP_STD * std))
        dropped = [name for name in names if name not in keep]
        if not keep:
            raise DataError(
                f"every descriptor ({', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''})"
                f" takes one value on more than {MOST_COMMON_AT_MOST:.0%} of the "
                f"{len(values)} reference molecules: nothing to learn; choose other "
                "data.descriptors or more varied molecules"
            )
        if dropped:
            log.info("descriptors left out as (nearly) constant: %s", ", ".join(dropped))
        return cls(keep, log_scaled, lower, upper)

    def transform(self, values: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Targets ``[n, len(self.names)]`` from descriptor values whose columns are ``names``."""
        position = {n: j for j, n in enumerate(names)}
        columns = values[:, [position[n] for n in self.names]].astype(np.float64)
        scaled = np.asarray(self.log_scaled, dtype=bool)
        columns[:, scaled] = _signed_log(columns[:, scaled])
        return np.clip(columns, self.lower, self.upper).astype(np.float32)

    def to_config(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "log_scaled": self.log_scaled,
            "lower": self.lower,
            "upper": self.upper,
        }


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class ShardStream(IterableDataset):
    """Batches of the molecules of several shard files, one shard in memory at a time, in the
    random order of ``epoch`` (shard order and order within each shard). Rank ``rank`` of
    ``world_size`` takes an equal share of every shard, so every rank yields as many batches.
    Each batch is gathered out of the shard's store in one step (no per-molecule ``Data``);
    a shard's share is cut into ``ceil(share / batch_size)`` batches of near-equal size. The
    data module builds a new stream every epoch."""

    def __init__(
        self,
        shards: Sequence[Path],
        sizes: Sequence[int],
        targets: DescriptorTargets,
        descriptor_names: Sequence[str],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
    ) -> None:
        self.shards, self.sizes = list(shards), list(sizes)
        self.targets, self.descriptor_names = targets, list(descriptor_names)
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(-(-(size // self.world_size) // self.batch_size) for size in self.sizes)

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for k in rng.permutation(len(self.shards)):
            store = load_shard(self.shards[k], self.targets, self.descriptor_names)
            share = len(store) // self.world_size
            mine = rng.permutation(len(store))[self.rank :: self.world_size][:share]
            # near-equal batches, none a lone tail molecule (batch norm needs two rows)
            for chosen in np.array_split(mine, -(-share // self.batch_size)) if share else []:
                yield store.select(chosen).batch(0, len(chosen))


def load_shard(
    path: Path, targets: DescriptorTargets, descriptor_names: Sequence[str]
) -> GraphStore:
    """A cached shard with the descriptor targets attached."""
    return with_descriptor_targets(GraphStore.load(path), targets, descriptor_names)


def with_descriptor_targets(
    store: GraphStore, targets: DescriptorTargets, descriptor_names: Sequence[str]
) -> GraphStore:
    """``store`` with its raw descriptors (``features``) turned into targets (``y``)."""
    labelled = store.with_targets(targets.transform(store.features.numpy(), descriptor_names))
    labelled.features = None
    return labelled


class PretrainDataModule(L.LightningDataModule):
    """Unlabelled SMILES -> graphs with RDKit descriptor targets, for ``molml pretrain``.

    Args:
        sources: ``zinc`` (the molsets package's 1.58M ZINC SMILES) and/or molecule files.
        smiles_column: the SMILES column of the user's files (default: detected).
        max_molecules: read at most this many SMILES in total (default: all). Runs with
            different limits share the cache: raising the limit featurizes only the molecules
            not yet cached.
        val_size: the valid molecules among the first this many SMILES are the validation and
            reference set (at least 10 of them must be valid).
        shard_size: molecules per cached shard (memory holds one shard per loader worker).
        featurizer: graph featurizer (default ``MolGraphFeaturizer()``).
        descriptors: RDKit descriptor names to learn (default: all of RDKit's 2D descriptors).
        batch_size, num_workers: the training DataLoader's (0 or 1 worker).
        cache_dir: where shards are kept; a run over the same inputs reuses and completes them.
        featurize_jobs: processes for featurization and descriptors (-1: all cores).
        seed: seed of the shuffling.
    """

    task_type = "regression"
    num_classes = 2
    task_classes = None
    molecule_features_config = None

    def __init__(
        self,
        sources: list[str] | None = None,
        smiles_column: str | None = None,
        max_molecules: int | None = None,
        val_size: int = 2000,
        shard_size: int = 50000,
        featurizer: MolGraphFeaturizer | None = None,
        descriptors: list[str] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        cache_dir: str = ".molml_cache/pretrain",
        featurize_jobs: int = -1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int(max_molecules, "data.max_molecules", minimum=1, allow_none=True)
        check_int(val_size, "data.val_size", minimum=10)
        check_int(shard_size, "data.shard_size", minimum=1)
        check_int(batch_size, "data.batch_size", minimum=1)
        check_int(num_workers, "data.num_workers", minimum=0)
        if num_workers > 1:
            raise DataError(
                f"data.num_workers is {num_workers}; pretraining reads its shards with 0 or 1 "
                "worker (featurization, the expensive part, already runs in data.featurize_jobs "
                "processes)"
            )
        check_jobs(featurize_jobs, "data.featurize_jobs")
        self.save_hyperparameters(ignore=["featurizer"])
        self.sources = list(sources or [ZINC])
        self.paths = [source_path(s) for s in self.sources]  # fails early on a missing source
        self.source_sha256 = [sha256_of(p) for p in self.paths]
        self.featurizer = featurizer or MolGraphFeaturizer()
        self.descriptors = RDKitDescriptors(descriptors)
        self.directory = Path(cache_dir) / self._cache_key()
        self.skipped: dict[str, int] = {}
        self.examples: dict[str, str] = {}  # input position (0-based, over all sources) -> why
        self.val_store = self._prepare_val()
        self.targets = DescriptorTargets.fit(
            self.descriptors.names, self.val_store.features.numpy()
        )
        self.val_targets = with_descriptor_targets(
            self.val_store, self.targets, self.descriptors.names
        )
        self.shard_sizes: list[int] = []
        self.shard_paths: list[Path] = []

    @property
    def tasks(self) -> list[str]:
        """Target names, one per learned descriptor."""
        return self.targets.tasks

    @property
    def featurizer_config(self) -> dict[str, Any]:
        return self.featurizer.to_config()

    # ------------------------------------------------------------------ preparation
    def _cache_key(self) -> str:
        hp = self.hparams
        meta = {
            "format": CACHE_FORMAT,
            # the content, not the path or time stamp: a reinstalled or moved file keeps its
            # cache, an edit that keeps size and time stamp does not
            "sources": [
                {"bytes": p.stat().st_size, "sha256": digest}
                for p, digest in zip(self.paths, self.source_sha256, strict=True)
            ],
            "smiles_column": hp.smiles_column,
            # runs of every data.max_molecules share one directory (see _block_path); the
            # field stays, always null, so that caches of unlimited runs keep their key
            "max_molecules": None,
            "val_size": hp.val_size,
            "shard_size": hp.shard_size,
            "featurizer": self.featurizer.to_config(),
            "descriptors": self.descriptors.names,
        }
        return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]

    def _blocks(self) -> Iterator[list[str]]:
        """The input SMILES in blocks: the validation block, then one block per shard."""
        hp = self.hparams
        chunks = stream_smiles(self.sources, hp.smiles_column)
        if hp.max_molecules is not None:
            chunks = _limit(chunks, hp.max_molecules)

        def sizes() -> Iterator[int]:
            yield hp.val_size
            while True:
                yield hp.shard_size

        return take_blocks(chunks, sizes())

    def _block_path(self, stem: str, start: int, length: int, full: int) -> Path:
        """The cache file of a block of ``length`` SMILES from input position ``start``.

        Runs with any ``data.max_molecules`` share the cache: a block is the same SMILES
        whatever the limit, except the one the limit cuts short, which gets a file of its own
        (``shard_00011_first600000.pt``). Raising the limit therefore featurizes only the
        molecules not yet in the cache."""
        limit = self.hparams.max_molecules
        if limit is not None and length < full and start + length == limit:
            stem = f"{stem}_first{limit}"
        return self.directory / f"{stem}.pt"

    def _manifest_path(self) -> Path:
        limit = self.hparams.max_molecules
        name = "manifest.json" if limit is None else f"manifest_first{limit}.json"
        return self.directory / name

    def _featurize(
        self, smiles: list[str], start: int
    ) -> tuple[GraphStore, dict[str, int], dict[str, str]]:
        """Featurize a block; molecules without every descriptor are skipped and counted
        (returns the store, the skipped counts by reason and a few examples)."""
        result = featurize_molecules(
            smiles,
            self.featurizer,
            n_jobs=self.hparams.featurize_jobs,
            with_scaffolds=False,
            molecule_features=self.descriptors,
            progress=True,
        )
        reasons = dict(result.errors)
        store = result.graphs
        finite = np.isfinite(store.features.numpy()).all(axis=1)
        for i in np.flatnonzero(~finite):
            missing = np.flatnonzero(~np.isfinite(store.features[i].numpy()))
            names = ", ".join(self.descriptors.names[j] for j in missing[:3])
            reasons[int(store.rows[i])] = f"descriptors failed or not finite: {names}"
        store = store.select(np.flatnonzero(finite))
        store.rows += start
        counts = {
            "invalid molecule": len(result.errors),
            "descriptors failed": int((~finite).sum()),
        }
        examples = {str(start + p): r for p, r in sorted(reasons.items())[:5]}
        return store, counts, examples

    def _prepare_val(self) -> GraphStore:
        block = next(self._blocks(), None)
        if block is None:
            raise DataError(f"pretraining sources {self.sources} hold no SMILES")
        path = self.val_path = self._block_path("val", 0, len(block), self.hparams.val_size)
        if path.exists() and path.with_suffix(".json").exists():
            return GraphStore.load(path)
        store, counts, examples = self._featurize(block, 0)
        if len(store) < 10:
            shown = "; ".join(f"molecule {k}: {v}" for k, v in examples.items())
            why = f" (e.g. {shown})" if examples else ""
            raise DataError(
                f"the validation set needs at least 10 molecules with all descriptors; the "
                f"first {len(block)} pretraining SMILES (data.val_size "
                f"{self.hparams.val_size}) gave {len(store)}{why}"
            )
        _save_atomically(store, path, {"counts": counts, "examples": examples})
        return store

    def prepare_shards(self) -> None:
        """Featurize every shard not yet in the cache (resumes an interrupted preparation)."""
        manifest = self._manifest_path()
        if manifest.exists():
            saved = json.loads(manifest.read_text())
            self.shard_sizes = saved["sizes"]
            # manifests written before shards were shared name none: shard_00000.pt, ...
            names = saved.get("shards") or [
                f"shard_{k:05d}.pt" for k in range(len(self.shard_sizes))
            ]
            paths = [self.directory / name for name in names]
            files = [f for p in paths for f in (p, p.with_suffix(".json"))]
            if all(f.is_file() for f in files):
                self.shard_paths = paths
                self._read_counts()
                return
            # a shard of the cache was deleted: the missing ones are featurized again below
            log.warning("pretraining cache %s is missing shards; completing it", self.directory)
            manifest.unlink()
        hp = self.hparams
        for stale in self.directory.glob("*.tmp"):  # left by a run killed while saving
            stale.unlink(missing_ok=True)
        sizes, paths, read = [], [], 0
        blocks = self._blocks()
        n_validation = len(next(blocks))  # the validation block
        for k, block in enumerate(blocks):
            read += len(block)
            start = hp.val_size + k * hp.shard_size
            path = self._block_path(f"shard_{k:05d}", start, len(block), hp.shard_size)
            if not (path.exists() and path.with_suffix(".json").exists()):
                log.info("pretraining shard %d (%d SMILES)", k, len(block))
                store, counts, examples = self._featurize(block, start)
                _save_atomically(store, path, {"counts": counts, "examples": examples})
            sizes.append(json.loads(path.with_suffix(".json").read_text())["size"])
            paths.append(path)
        if not sizes:
            limit = hp.max_molecules
            if limit is not None and limit <= hp.val_size:
                raise DataError(
                    f"data.max_molecules {limit} leaves no training molecules beyond the "
                    f"{hp.val_size} validation molecules (data.val_size); raise it above that"
                )
            raise DataError(
                f"pretraining sources {self.sources} hold {n_validation} SMILES, all taken as "
                f"validation molecules (data.val_size {hp.val_size}) and none left to train "
                "on; lower data.val_size or add SMILES"
            )
        if not sum(sizes):  # SMILES beyond the validation ones, but not one usable molecule
            examples: dict[str, str] = {}
            for path in paths:
                examples.update(json.loads(path.with_suffix(".json").read_text())["examples"])
            shown = "; ".join(f"molecule {k}: {v}" for k, v in list(examples.items())[:3])
            raise DataError(
                f"none of the {read} pretraining SMILES after the {hp.val_size} validation "
                f"molecules gave a molecule with all descriptors"
                + (f" (e.g. {shown})" if shown else "")
                + f"; sources {self.sources}"
            )
        manifest.write_text(json.dumps({"sizes": sizes, "shards": [p.name for p in paths]}))
        self.shard_sizes, self.shard_paths = sizes, paths
        self._read_counts()

    def _read_counts(self) -> None:
        skipped: dict[str, int] = {}
        examples: dict[str, str] = {}
        for path in [self.val_path, *self.shard_paths]:  # this run's blocks, no others
            info = json.loads(path.with_suffix(".json").read_text())
            for reason, count in info["counts"].items():
                skipped[reason] = skipped.get(reason, 0) + count
            examples.update(info["examples"])
        self.skipped = skipped
        self.examples = {k: examples[k] for k in sorted(examples, key=int)[:5]}
        total = sum(skipped.values())
        if total:
            shown = "\n".join(f"  molecule {k}: {v}" for k, v in self.examples.items())
            log.warning(
                "pretraining data: %d molecules skipped (%s), e.g. (molecules counted from 0 "
                "over the sources in order, not file lines)\n%s",
                total,
                ", ".join(f"{k}: {v}" for k, v in skipped.items()),
                shown,
            )

    def prepare_data(self) -> None:
        if not self.shard_sizes:
            self.prepare_shards()

    def setup(self, stage: str | None = None) -> None:
        if not self.shard_sizes:
            self.prepare_shards()

    # ------------------------------------------------------------------ statistics + loaders
    def target_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each target on the reference (validation) set."""
        y = self.val_targets.y.numpy()
        return y.mean(axis=0), np.where(y.std(axis=0) > 0, y.std(axis=0), 1.0)

    def feature_statistics(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        """What the pretrained model saw (stored in its checkpoint)."""
        return {
            "name": "pretraining",
            "sources": [str(s) for s in self.sources],
            "source_bytes": [p.stat().st_size for p in self.paths],
            "source_sha256": self.source_sha256,
            "max_molecules": self.hparams.max_molecules,
            "train": int(sum(self.shard_sizes)),
            "val": len(self.val_store),
            "shards": len(self.shard_sizes),
            "skipped": self.skipped,
            "targets": self.targets.to_config(),
        }

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        stream = ShardStream(
            self.shard_paths,
            self.shard_sizes,
            self.targets,
            self.descriptors.names,
            batch_size=self.hparams.batch_size,
            seed=self.hparams.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            epoch=trainer.current_epoch if trainer else 0,
        )
        # the stream yields whole batches; one worker reads the shards in the background
        # (several would each read every shard)
        return DataLoader(stream, batch_size=None, num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        dataset = GraphBatches(self.val_targets, np.arange(len(self.val_targets)))
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            if len(dataset) < trainer.world_size:  # the sampler would fail with an assertion
                raise DataError(
                    f"the {len(dataset)} pretraining validation molecules are fewer than the "
                    f"{trainer.world_size} processes (--trainer.devices, --trainer.num_nodes) "
                    "they are divided over: raise data.val_size or run on fewer devices"
                )
            # each validation molecule on one rank only (Lightning's default sampler pads the
            # ranks by repeating molecules, counting them twice in val/loss)
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset, batch_size=self.hparams.batch_size, collate_fn=as_batch, sampler=sampler
        )


def _limit(chunks: Iterator[list[str]], n: int) -> Iterator[list[str]]:
    for chunk in chunks:
        if n <= 0:
            return
        yield chunk[:n]
        n -= len(chunk)


def _save_atomically(store: GraphStore, path: Path, info: dict[str, Any]) -> None:
    """Write a shard and its sidecar so that a killed run never leaves a half-written shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    path.with_suffix(".json").write_text(json.dumps({"size": len(store), **info}))
    store.save(partial)
    os.replace(partial, path)
