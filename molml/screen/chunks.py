"""Stream a compound library as featurized chunks, sharded over ranks and loader workers.

A library is read in chunks of ``chunk_size`` input rows. Chunk ``i`` belongs to shard
``i % n_shards`` where the shards are all (rank, DataLoader worker) pairs, so every process
featurizes a disjoint set of chunks while the main process of each rank runs the model.
Chunks whose result file already exists are skipped, which is how an interrupted screen
resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import pandas as pd
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from molml.chem.fingerprints import fingerprint_from_config
from molml.chem.parsing import MISSING_SMILES
from molml.data.graphs import GraphStore, featurize_block, worker_featurizer
from molml.data.readers import iter_molecule_chunks


@dataclass
class ScreenChunk:
    """One chunk of a library: its input rows and the graphs of its valid molecules.

    ``rows`` has the columns ``row`` (record number in the input), the identifier column if
    any, ``smiles`` and ``status`` (``ok`` or why the molecule could not be featurized).
    ``graphs`` maps a featurizer key to the graphs of the molecules that featurizer accepted,
    in row order, with ``GraphStore.rows`` holding their positions in ``rows``.
    """

    index: int
    rows: pd.DataFrame
    graphs: dict[str, GraphStore] = field(default_factory=dict)


def featurizer_key(config: dict[str, Any]) -> str:
    """A stable key for a featurizer config (models sharing a featurizer share graphs)."""
    return json.dumps(config, sort_keys=True)


def featurize_rows(index: int, rows: pd.DataFrame, featurizers: dict[str, dict]) -> ScreenChunk:
    """Featurize the SMILES of ``rows`` for every featurization config (``{"graph": ...,
    "molecule_features": ...}``); failures go to ``status``."""
    smiles = rows["smiles"].tolist()
    status = ["ok" if isinstance(s, str) else MISSING_SMILES for s in smiles]
    arrays_by_key = {}
    for key, config in featurizers.items():
        features = config["molecule_features"]
        arrays, errors, _, _ = featurize_block(
            worker_featurizer(config["graph"]),
            smiles,
            molecule_features=fingerprint_from_config(features) if features else None,
        )
        for position, reason in errors.items():
            if status[position] == "ok":
                status[position] = reason
        arrays_by_key[key] = arrays
    rows = rows.copy()
    rows["status"] = status
    graphs = {key: GraphStore.from_arrays([arrays]) for key, arrays in arrays_by_key.items()}
    return ScreenChunk(index, rows, graphs)


class LibraryChunks(IterableDataset):
    """Featurized chunks of a library file, for this rank and DataLoader worker only.

    Args:
        path: the library (any format :func:`molml.data.readers.iter_molecule_chunks` reads).
        featurizers: key -> featurization config (graph featurizer + molecule features) needed.
        chunk_size: input rows per chunk (the unit of work, of output files and of resuming).
        reader_options: ``smiles_column``, ``id_column``, ``has_header`` for the reader.
        is_done: tells whether a chunk index already has its result (skipped when true).
        rank, world_size: this process's place among all ranks.
    """

    def __init__(
        self,
        path: str,
        featurizers: dict[str, dict],
        chunk_size: int,
        reader_options: dict[str, Any],
        is_done: Callable[[int], bool],
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.path = path
        self.featurizers = featurizers
        self.chunk_size = chunk_size
        self.reader_options = reader_options
        self.is_done = is_done
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[ScreenChunk]:
        worker = get_worker_info()
        n_workers = worker.num_workers if worker else 1
        shard = self.rank * n_workers + (worker.id if worker else 0)
        n_shards = self.world_size * n_workers
        chunks = iter_molecule_chunks(
            self.path, chunk_size=self.chunk_size, columns=[], **self.reader_options
        )
        for index, rows in enumerate(chunks):
            if index % n_shards == shard and not self.is_done(index):
                yield featurize_rows(index, rows, self.featurizers)


class ScreenDataModule(L.LightningDataModule):
    """Hands each rank its shard of :class:`LibraryChunks` once the Trainer knows the ranks."""

    def __init__(self, num_workers: int, **library: Any) -> None:
        super().__init__()
        self.num_workers = num_workers
        self.library = library

    def predict_dataloader(self) -> DataLoader:
        dataset = LibraryChunks(
            **self.library, rank=self.trainer.global_rank, world_size=self.trainer.world_size
        )
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=2 if self.num_workers else None,
        )
