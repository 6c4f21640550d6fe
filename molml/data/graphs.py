"""Featurize many molecules into one contiguous graph store, in parallel, cached on disk.

A :class:`GraphStore` keeps all atoms, edges and targets of a dataset in a few large tensors
plus offsets, so it loads from the cache in one ``torch.load(weights_only=True)`` and yields a
``torch_geometric.data.Data`` per molecule by slicing (no copies).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from molml.chem.featurizer import (
    MolGraphFeaturizer,
    directed_edges,
    gather_rows,
    random_walk_encoding,
)
from molml.chem.fingerprints import FingerprintFeaturizer, fingerprint_from_config
from molml.data.splits import split_keys
from molml.errors import InvalidMoleculeError
from molml.options import cpu_cores, writable_directory

log = logging.getLogger("molml")

# 2: split keys ignore explicit hydrogens; 3: feature rows stored once; 4: molecule features
# computed with full ring and stereo perception
CACHE_FORMAT = 4


@dataclass
class GraphStore(Dataset):
    """Graphs of ``n`` molecules in contiguous tensors.

    Atom and bond features are kept as rows of small tables: ``atom_table[atom_rows]`` is the
    feature matrix ``x`` of all atoms (with ``atom_extra``, per-atom columns that no table
    holds such as random-walk encodings, appended), ``bond_table[bond_rows]`` the edge
    features; a few hundred distinct rows cover most drug-like molecules, so a store takes
    about a tenth of the memory of the dense matrices, which are built per batch.
    ``x[atom_ptr[i]:atom_ptr[i+1]]`` are molecule ``i``'s atoms; its edges (with atom indices
    local to the molecule) are ``edge_index[:, edge_ptr[i]:edge_ptr[i+1]]``. ``y`` holds targets
    with NaN for a missing label; ``rows`` the molecule's row in the source table; ``features``
    optional molecule-level features ``[n, d]`` (e.g. RDKit descriptors) for the model's head.
    """

    atom_rows: torch.Tensor
    atom_table: torch.Tensor
    edge_index: torch.Tensor
    bond_rows: torch.Tensor
    bond_table: torch.Tensor
    atom_ptr: torch.Tensor
    edge_ptr: torch.Tensor
    rows: torch.Tensor
    y: torch.Tensor | None = None
    features: torch.Tensor | None = None
    atom_extra: torch.Tensor | None = None

    @classmethod
    def dense(
        cls,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        atom_ptr: torch.Tensor,
        edge_ptr: torch.Tensor,
        rows: torch.Tensor,
        **optional: torch.Tensor | None,
    ) -> GraphStore:
        """A store over dense feature matrices (each atom and edge its own table row)."""
        return cls(
            atom_rows=torch.arange(len(x)),
            atom_table=x,
            edge_index=edge_index,
            bond_rows=torch.arange(len(edge_attr)),
            bond_table=edge_attr,
            atom_ptr=atom_ptr,
            edge_ptr=edge_ptr,
            rows=rows,
            **optional,
        )

    @property
    def x(self) -> torch.Tensor:
        """Dense atom features of every molecule ``[atoms, atom_dim]``."""
        return self._atoms(slice(None))

    @property
    def edge_attr(self) -> torch.Tensor:
        """Dense edge features of every molecule ``[edges, bond_dim]``."""
        return self.bond_table[self.bond_rows]

    def _atoms(self, index: slice | torch.Tensor) -> torch.Tensor:
        x = self.atom_table[self.atom_rows[index]]
        if self.atom_extra is not None:
            x = torch.cat([x, self.atom_extra[index]], dim=1)
        return x

    def __len__(self) -> int:
        return len(self.atom_ptr) - 1

    def __getitem__(self, i: int) -> Data:
        a0, a1 = int(self.atom_ptr[i]), int(self.atom_ptr[i + 1])
        e0, e1 = int(self.edge_ptr[i]), int(self.edge_ptr[i + 1])
        data = Data(
            x=self._atoms(slice(a0, a1)),
            edge_index=self.edge_index[:, e0:e1],
            edge_attr=self.bond_table[self.bond_rows[e0:e1]],
            row=self.rows[i : i + 1],
        )
        if self.features is not None:
            data.features = self.features[i : i + 1]
        if self.y is not None:
            target = self.y[i : i + 1]
            data.y_mask = ~torch.isnan(target)
            data.y = torch.nan_to_num(target, nan=0.0)
        return data

    def with_targets(self, y: np.ndarray | torch.Tensor) -> GraphStore:
        """The same graphs with a target matrix ``[n, n_tasks]`` attached (NaN = missing)."""
        y = torch.as_tensor(y, dtype=torch.float32).reshape(len(self), -1)
        return dataclasses.replace(self, y=y)

    def select(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> GraphStore:
        """A new store with molecules ``indices`` (in that order), copied out of this one
        (the feature tables are shared)."""
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        atom_take, atom_ptr = _gather_ranges(self.atom_ptr, index)
        edge_take, edge_ptr = _gather_ranges(self.edge_ptr, index)
        return dataclasses.replace(
            self,
            atom_rows=self.atom_rows[atom_take],
            edge_index=self.edge_index[:, edge_take],
            bond_rows=self.bond_rows[edge_take],
            atom_ptr=atom_ptr,
            edge_ptr=edge_ptr,
            rows=self.rows[index],
            y=None if self.y is None else self.y[index],
            features=None if self.features is None else self.features[index],
            atom_extra=None if self.atom_extra is None else self.atom_extra[atom_take],
        )

    def batch(self, start: int, stop: int) -> Batch:
        """Molecules ``start..stop-1`` as one PyG ``Batch`` (no per-graph ``Data`` objects),
        on the store's device."""
        atom_ptr = self.atom_ptr[start : stop + 1]
        edge_ptr = self.edge_ptr[start : stop + 1]
        a0, e0 = int(atom_ptr[0]), int(edge_ptr[0])
        a1, e1 = int(atom_ptr[-1]), int(edge_ptr[-1])
        graph_ids = torch.arange(stop - start, device=atom_ptr.device)
        atom_offsets = torch.repeat_interleave(atom_ptr[:-1] - a0, edge_ptr.diff())
        batch = Batch(
            x=self._atoms(slice(a0, a1)),
            edge_index=self.edge_index[:, e0:e1] + atom_offsets,
            edge_attr=self.bond_table[self.bond_rows[e0:e1]],
            batch=torch.repeat_interleave(graph_ids, atom_ptr.diff()),
            ptr=atom_ptr - a0,
            row=self.rows[start:stop],
        )
        if self.features is not None:
            batch.features = self.features[start:stop]
        if self.y is not None:
            target = self.y[start:stop]
            batch.y_mask = ~torch.isnan(target)
            batch.y = torch.nan_to_num(target, nan=0.0)
        return batch

    def to(self, device: torch.device | str) -> GraphStore:
        """The same store with every tensor on ``device``."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return GraphStore(**{k: v if v is None else v.to(device) for k, v in fields.items()})

    @classmethod
    def from_arrays(cls, parts: Sequence[dict[str, np.ndarray]]) -> GraphStore:
        """Concatenate the array dicts of :func:`featurize_block` into one store (the arrays of
        a single dict are used as they are, not copied)."""

        def joined(key: str, axis: int = 0) -> torch.Tensor:
            arrays = [p[key] for p in parts]
            return torch.from_numpy(
                arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=axis)
            )

        return cls.dense(
            x=joined("x"),
            edge_index=joined("edge_index", axis=1),
            edge_attr=joined("edge_attr"),
            atom_ptr=_pointers(joined("n_atoms")),
            edge_ptr=_pointers(joined("n_edges")),
            rows=joined("positions"),
            features=joined("features") if "features" in parts[0] else None,
        )

    def save(self, path: str | Path) -> None:
        """Write the store with ``torch.save`` (tensors only, loadable with weights_only).

        Atom and bond feature rows are stored once each, with an index per atom / edge, and
        local atom indices as int32; :meth:`load` restores the same graphs.
        """
        tensors = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.atom_extra is None:
            atoms = _distinct_rows(self.atom_table, self.atom_rows)
        else:  # the extra columns make most atoms distinct
            atoms = _distinct_rows(self.x, torch.arange(len(self.atom_rows)))
        for name, (rows, index) in (
            ("x", atoms),
            ("edge_attr", _distinct_rows(self.bond_table, self.bond_rows)),
        ):
            tensors[f"{name}_rows"], tensors[f"{name}_index"] = rows, index.to(torch.int32)
        for name in ("atom_rows", "atom_table", "bond_rows", "bond_table", "atom_extra"):
            del tensors[name]
        tensors["edge_index"] = tensors["edge_index"].to(torch.int32)
        torch.save({"format": CACHE_FORMAT, **tensors}, path)

    @classmethod
    def load(cls, path: str | Path) -> GraphStore:
        """Read a store written by :meth:`save`."""
        blob = torch.load(path, weights_only=True)
        if blob.pop("format", None) != CACHE_FORMAT:
            raise ValueError(f"{path} has an old cache format")
        blob["atom_table"], blob["atom_rows"] = blob.pop("x_rows"), blob.pop("x_index").long()
        blob["bond_table"] = blob.pop("edge_attr_rows")
        blob["bond_rows"] = blob.pop("edge_attr_index").long()
        blob["edge_index"] = blob["edge_index"].long()
        return cls(**blob)


def _distinct_rows(table: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``table[rows]`` as its distinct rows (sorted) and an index into them."""
    distinct, inverse = torch.unique(table, dim=0, return_inverse=True)
    return distinct, inverse[rows]


def _pointers(counts: torch.Tensor) -> torch.Tensor:
    """``[0, c0, c0 + c1, ...]``: where each molecule's atoms or edges start."""
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.long().cumsum(0)])


class GraphBatches(Dataset):
    """Molecules ``indices`` of a store, for a ``DataLoader`` that assembles each batch in one
    step: the loader's sampler picks positions, :meth:`__getitems__` gathers them out of the
    store into one PyG ``Batch`` (no per-molecule ``Data`` objects, no ``Batch.from_data_list``),
    and :func:`as_batch` passes it through as the loader's ``collate_fn``."""

    def __init__(self, store: GraphStore, indices: Sequence[int] | np.ndarray) -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Data:
        return self.store[int(self.indices[position])]

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        chosen = self.indices[np.asarray(positions, dtype=np.int64)]
        return self.store.select(chosen).batch(0, len(chosen))


def as_batch(batch: Batch) -> Batch:
    """``collate_fn`` for :class:`GraphBatches`: the batch is already assembled."""
    return batch


def _gather_ranges(ptr: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the ranges ``ptr[i]:ptr[i+1]`` for each ``i`` in ``index``, concatenated,
    and the offsets of the new ranges."""
    starts, counts = ptr[index], ptr[index + 1] - ptr[index]
    new_ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    shift = torch.repeat_interleave(starts - new_ptr[:-1], counts)
    return torch.arange(int(new_ptr[-1])) + shift, new_ptr


@dataclass
class FeaturizedMolecules:
    """Result of featurizing a list of SMILES: graphs for the valid ones, reasons for the rest."""

    graphs: GraphStore
    valid: np.ndarray  # bool [n_input]
    errors: dict[int, str] = field(default_factory=dict)  # input position -> reason
    scaffolds: list[str] | None = None  # per valid molecule
    canonical_smiles: list[str] | None = None  # per valid molecule


def featurize_rows(
    featurizer: MolGraphFeaturizer,
    smiles: Sequence[str | None],
    *,
    start: int = 0,
    with_scaffolds: bool = False,
    molecule_features: FingerprintFeaturizer | None = None,
) -> tuple[dict[str, np.ndarray], dict[int, str], list[str], list[str]]:
    """:func:`featurize_block` before the feature rows are gathered: per valid molecule its
    rows of the featurizer's :meth:`~MolGraphFeaturizer.tables` (``atom_rows``, ``bond_rows``),
    ``ends`` (bond ends, molecule-local), ``walks`` (random-walk columns, when the featurizer
    has them), ``n_atoms``, ``n_edges``, ``positions`` and ``features``; a tenth of the size of
    the gathered arrays, so worker processes send these."""
    atom_ids: list[int] = []
    bond_ids: list[int] = []
    ends: list[int] = []
    walks: list[np.ndarray] = []
    n_atoms, n_edges, positions, features = [], [], [], []
    errors: dict[int, str] = {}
    scaffolds: list[str] = []
    canonical: list[str] = []
    steps = featurizer.random_walk_steps
    parse, row_ids = featurizer.parse, featurizer.row_ids
    for offset, smi in enumerate(smiles):
        try:
            mol, flags = parse(smi)
            atoms, bonds, bond_ends = row_ids(mol, **flags)
            if steps:
                walks.append(random_walk_encoding(mol, steps))
            if molecule_features is not None:
                features.append(molecule_features(mol))
            if with_scaffolds:
                canonical_smiles, scaffold = split_keys(mol)
                canonical.append(canonical_smiles)
                scaffolds.append(scaffold)
        except InvalidMoleculeError as exc:
            errors[start + offset] = str(exc)
            _drop_partial(len(positions), walks, features, canonical, scaffolds)
            continue
        except Exception as exc:  # an RDKit failure on one molecule never loses the batch
            errors[start + offset] = f"featurization failed: {exc}"
            _drop_partial(len(positions), walks, features, canonical, scaffolds)
            continue
        atom_ids += atoms
        bond_ids += bonds
        ends += bond_ends  # molecule-local atom indices
        n_atoms.append(len(atoms))
        n_edges.append(len(bonds))
        positions.append(start + offset)
    rows = {
        "atom_rows": np.asarray(atom_ids, dtype=np.int32),
        "bond_rows": np.asarray(bond_ids, dtype=np.int32),
        "ends": np.asarray(ends, dtype=np.int32),
        "n_atoms": np.asarray(n_atoms, dtype=np.int64),
        "n_edges": 2 * np.asarray(n_edges, dtype=np.int64),
        "positions": np.asarray(positions, dtype=np.int64),
    }
    if steps:
        rows["walks"] = np.concatenate(walks) if walks else np.zeros((0, steps), np.float32)
    if molecule_features is not None:
        rows["features"] = (
            np.stack(features) if features else np.zeros((0, molecule_features.dim), np.float32)
        )
    return rows, errors, scaffolds, canonical


def featurize_block(
    featurizer: MolGraphFeaturizer,
    smiles: Sequence[str | None],
    *,
    start: int = 0,
    with_scaffolds: bool = False,
    molecule_features: FingerprintFeaturizer | None = None,
) -> tuple[dict[str, np.ndarray], dict[int, str], list[str], list[str]]:
    """Featurize a list of SMILES in this process, never failing on one molecule.

    Returns the concatenated arrays (``x``, ``edge_index`` with molecule-local atom indices,
    ``edge_attr``, ``n_atoms``, ``n_edges``, ``positions`` = ``start`` + index of each valid
    molecule, and ``features`` when ``molecule_features`` is given), the reasons for the
    invalid ones by position, and (``with_scaffolds``) the canonical SMILES and Murcko
    scaffold of each valid molecule, as :func:`~molml.data.splits.split_keys` gives them.
    """
    rows, errors, scaffolds, canonical = featurize_rows(
        featurizer,
        smiles,
        start=start,
        with_scaffolds=with_scaffolds,
        molecule_features=molecule_features,
    )
    return _dense_arrays(featurizer.tables(), rows), errors, scaffolds, canonical


def _dense_arrays(tables: tuple[np.ndarray, np.ndarray], rows: dict[str, np.ndarray]) -> dict:
    """The arrays of :func:`featurize_block` from one :func:`featurize_rows` block and the
    tables its rows index."""
    x, edge_index, edge_attr = gather_rows(
        tables, rows["atom_rows"], rows["bond_rows"], rows["ends"]
    )
    if "walks" in rows:
        x = np.hstack([x, rows["walks"]])
    arrays = {"x": x, "edge_index": edge_index, "edge_attr": edge_attr}
    for key in ("n_atoms", "n_edges", "positions", "features"):
        if key in rows:
            arrays[key] = rows[key]
    return arrays


def _drop_partial(kept: int, *per_molecule: list) -> None:
    """Remove what a failed molecule appended to the per-molecule lists before it failed."""
    for values in per_molecule:
        del values[kept:]


def _featurize_chunk(
    args: tuple[dict, dict | None, int, Sequence[str], bool],
) -> tuple[int, dict[str, np.ndarray], dict[int, str], list[str], list[str]]:
    config, features_config, start, smiles, with_scaffolds = args
    featurizer = worker_featurizer(config)
    rows, errors, scaffolds, canonical = featurize_rows(
        featurizer,
        smiles,
        start=start,
        with_scaffolds=with_scaffolds,
        molecule_features=fingerprint_from_config(features_config) if features_config else None,
    )
    # a copy of the tables as they are now: the rows index them, and later chunks add rows
    tables = tuple(table.copy() for table in featurizer.tables())
    return start, (tables, rows), errors, scaffolds, canonical


_WORKER_FEATURIZERS: dict[str, MolGraphFeaturizer] = {}


def worker_featurizer(config: dict) -> MolGraphFeaturizer:
    """One featurizer per process and config, so its row cache stays warm across chunks."""
    config_key = json.dumps(config, sort_keys=True)
    if config_key not in _WORKER_FEATURIZERS:
        _WORKER_FEATURIZERS[config_key] = MolGraphFeaturizer.from_config(json.loads(config_key))
    return _WORKER_FEATURIZERS[config_key]


def _chunks(smiles: Sequence[str], size: int) -> Iterator[tuple[int, Sequence[str]]]:
    for start in range(0, len(smiles), size):
        yield start, smiles[start : start + size]


def featurize_molecules(
    smiles: Sequence[str],
    featurizer: MolGraphFeaturizer,
    *,
    n_jobs: int = -1,
    chunk_size: int = 1000,
    with_scaffolds: bool = True,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    molecule_features: FingerprintFeaturizer | None = None,
) -> FeaturizedMolecules:
    """Featurize ``smiles`` with all cores (``n_jobs=-1``), never failing on one molecule.

    Invalid SMILES end up in ``errors`` (input position -> reason). With ``cache_dir``, the
    result is stored under a key hashed from the SMILES and the featurizer config, so a second
    call with the same inputs loads it instead of featurizing again. ``molecule_features``
    adds a molecule-level feature vector per graph (``GraphStore.features``).
    """
    smiles = [None if s is None or (isinstance(s, float) and np.isnan(s)) else s for s in smiles]
    config = featurizer.to_config()
    features_config = molecule_features.to_config() if molecule_features is not None else None
    if features_config is not None:
        config_for_key = {**config, "molecule_features": features_config}
    else:
        config_for_key = config
    cache_path = None
    if cache_dir is not None:
        # checked before any featurizing (a read-only folder or a file there used to fail
        # only once every molecule was done)
        directory = writable_directory(
            cache_dir,
            f"data.cache_dir {cache_dir}: cannot write the featurization cache there",
            advice="; choose another folder, or null for no cache",
        )
        cache_path = directory / (f"graphs-{_cache_key(smiles, config_for_key, with_scaffolds)}.pt")
        if cache_path.exists():
            try:
                return _load_cached(cache_path, len(smiles))
            except Exception as exc:  # noqa: BLE001 - a damaged entry is featurized again
                log.warning(
                    "featurization cache %s cannot be read (%s: %s); featurizing again",
                    cache_path,
                    type(exc).__name__,
                    exc,
                )

    jobs = cpu_cores() if n_jobs in (-1, None) else max(1, n_jobs)
    tasks = [
        (config, features_config, start, chunk, with_scaffolds)
        for start, chunk in _chunks(smiles, chunk_size)
    ]
    bar = tqdm(total=len(smiles), desc="featurizing", unit="mol", disable=not progress)
    results = []
    if jobs == 1 or len(tasks) == 1:
        for task in tasks:
            results.append(_featurize_chunk(task))
            bar.update(len(task[3]))
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(min(jobs, len(tasks))) as pool:
            for result in pool.imap(_featurize_chunk, tasks):
                results.append(result)
                bar.update(len(tasks[len(results) - 1][3]))
    bar.close()
    result = _assemble(results, len(smiles), with_scaffolds)
    if cache_path is not None:
        _save_cached(result, cache_path)
    return result


def _assemble(results: list, n: int, with_scaffolds: bool) -> FeaturizedMolecules:
    store = _store_from_rows([r[1] for r in results])
    valid = np.zeros(n, dtype=bool)
    valid[store.rows.numpy()] = True
    errors = {k: v for r in results for k, v in r[2].items()}
    scaffolds = [s for r in results for s in r[3]] if with_scaffolds else None
    canonical = [s for r in results for s in r[4]] if with_scaffolds else None
    return FeaturizedMolecules(store, valid, errors, scaffolds, canonical)


def _store_from_rows(
    parts: Sequence[tuple[tuple[np.ndarray, np.ndarray], dict[str, np.ndarray]]],
) -> GraphStore:
    """One store from :func:`featurize_rows` blocks, each with the tables its rows index (the
    tables of different worker processes differ; their rows are merged, each kept once)."""
    atom_table, atom_remaps = _merge_tables([tables[0] for tables, _ in parts])
    bond_table, bond_remaps = _merge_tables([tables[1] for tables, _ in parts])
    blocks = [rows for _, rows in parts]
    atom_rows = np.concatenate(
        [m[b["atom_rows"]] for m, b in zip(atom_remaps, blocks, strict=True)]
    )
    bond_rows = np.concatenate(
        [m[b["bond_rows"]] for m, b in zip(bond_remaps, blocks, strict=True)]
    )
    edge_index = directed_edges(np.concatenate([r["ends"] for _, r in parts]))

    def joined(key: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([rows[key] for _, rows in parts]))

    first = parts[0][1]
    return GraphStore(
        atom_rows=torch.from_numpy(atom_rows),
        atom_table=torch.from_numpy(atom_table),
        edge_index=torch.from_numpy(edge_index),
        bond_rows=torch.from_numpy(np.repeat(bond_rows, 2)),
        bond_table=torch.from_numpy(bond_table),
        atom_ptr=_pointers(joined("n_atoms")),
        edge_ptr=_pointers(joined("n_edges")),
        rows=joined("positions"),
        features=joined("features") if "features" in first else None,
        atom_extra=joined("walks") if "walks" in first else None,
    )


def _merge_tables(tables: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct rows of ``tables`` in order of first appearance, and for each table the
    merged row of each of its rows."""
    merged: dict[bytes, int] = {}
    remaps = []
    for table in tables:
        remap = np.empty(len(table), dtype=np.int64)
        for i, row in enumerate(table):
            remap[i] = merged.setdefault(row.tobytes(), len(merged))
        remaps.append(remap)
    width = tables[0].shape[1]
    rows = np.frombuffer(b"".join(merged), dtype=np.float32).reshape(len(merged), width)
    return rows.copy(), remaps


def _cache_key(smiles: Sequence[str], config: dict, with_scaffolds: bool) -> str:
    digest = hashlib.sha256()
    meta = {"featurizer": config, "scaffolds": with_scaffolds, "format": CACHE_FORMAT}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for smi in smiles:
        digest.update(
            b"\0" if smi is None else smi.encode() if isinstance(smi, str) else repr(smi).encode()
        )
        digest.update(b"\n")
    return digest.hexdigest()[:24]


def _save_cached(result: FeaturizedMolecules, path: Path) -> None:
    """Write the cache atomically: concurrent runs featurizing the same data never collide."""
    partial = f".{os.getpid()}.tmp"
    sidecar = {
        "errors": {str(k): v for k, v in result.errors.items()},
        "scaffolds": result.scaffolds,
        "canonical_smiles": result.canonical_smiles,
    }
    sidecar_tmp = path.with_suffix(".json" + partial)
    sidecar_tmp.write_text(json.dumps(sidecar))
    os.replace(sidecar_tmp, path.with_suffix(".json"))
    graphs_tmp = path.with_suffix(partial)
    result.graphs.save(graphs_tmp)
    os.replace(graphs_tmp, path)


def _load_cached(path: Path, n: int) -> FeaturizedMolecules:
    graphs = GraphStore.load(path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    valid = np.zeros(n, dtype=bool)
    valid[graphs.rows.numpy()] = True
    errors = {int(k): v for k, v in sidecar["errors"].items()}
    return FeaturizedMolecules(
        graphs, valid, errors, sidecar["scaffolds"], sidecar["canonical_smiles"]
    )
