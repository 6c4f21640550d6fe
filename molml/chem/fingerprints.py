"""Fixed-length molecular fingerprints and descriptor vectors for classical ML baselines.

Every featurizer is a small callable fully described by a JSON-able config dict
(``to_config`` / :func:`fingerprint_from_config`), so a fitted baseline can be saved and
rebuilt without pickle. RDKit fingerprint generators are not picklable; they are built lazily
and cached per process, which keeps the featurizers themselves picklable for multiprocessing.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import Descriptors, MACCSkeys, rdFingerprintGenerator
from tqdm.auto import tqdm

from molml.chem.parsing import fully_perceived, parse_smiles
from molml.errors import DataError, InvalidMoleculeError

_MAX_CHUNK = 1000


class FingerprintFeaturizer:
    """Base class: maps one molecule to a 1-D float32 feature vector of fixed length ``dim``."""

    config_name: ClassVar[str]
    name: str
    # features that read ring sizes or stereocentres, which parse_smiles's fast path leaves
    # out: computed on a copy with RDKit's full perception (see fully_perceived)
    full_perception: ClassVar[bool] = False

    def __call__(self, mol_or_smiles: Chem.Mol | str) -> np.ndarray:
        """Featurize one molecule (RDKit ``Mol`` or SMILES).

        Raises :class:`InvalidMoleculeError` for unparsable SMILES or when RDKit fails.
        """
        mol = mol_or_smiles if isinstance(mol_or_smiles, Chem.Mol) else parse_smiles(mol_or_smiles)
        try:
            # the same features however the molecule was written and parsed
            return self._featurize(fully_perceived(mol) if self.full_perception else mol)
        except Exception as exc:  # RDKit raises assorted C++ exceptions
            raise InvalidMoleculeError(f"{self.name} featurization failed: {exc}") from exc

    def _featurize(self, mol: Chem.Mol) -> np.ndarray:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Length of the feature vector."""
        raise NotImplementedError

    @property
    def feature_names(self) -> list[str]:
        """One unique name per feature column."""
        return [f"{self.name}_{i}" for i in range(self.dim)]

    @property
    def batched(self) -> bool:
        """True when :meth:`transform` featurizes whole batches at once (a neural encoder)
        rather than one molecule at a time."""
        return False

    def to_config(self) -> dict[str, Any]:
        """JSON-able description: ``{"class": <registry key>, **params}``."""
        return {"class": self.config_name, **self._params()}

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, params: dict[str, Any]) -> FingerprintFeaturizer:
        """Build from the parameters of a config (without the ``"class"`` key)."""
        return cls(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def transform(
        self, smiles: Sequence[str], *, n_jobs: int = 1, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Featurize many SMILES into ``(X, valid)``.

        ``X`` is float32 ``[n, dim]``; rows of invalid molecules are NaN and ``valid`` (bool
        ``[n]``) is False there, no exception is raised. ``n_jobs > 1`` (``-1``: all cores)
        featurizes chunks in worker processes; row order is always the input order.
        """
        smiles = list(smiles)
        n = len(smiles)
        workers = _resolve_n_jobs(n_jobs)
        chunk_size = max(1, min(_MAX_CHUNK, math.ceil(n / (4 * workers))))
        chunks = [smiles[i : i + chunk_size] for i in range(0, n, chunk_size)]
        X = np.full((n, self.dim), np.nan, dtype=np.float32)
        valid = np.zeros(n, dtype=bool)
        with tqdm(total=n, disable=not progress, desc=self.name, unit="mol") as bar:
            if workers == 1 or len(chunks) <= 1:
                results = map(self._transform_chunk, chunks)
                self._fill(results, X, valid, bar)
            else:
                with multiprocessing.Pool(min(workers, len(chunks))) as pool:
                    results = pool.imap(self._transform_chunk, chunks)
                    self._fill(results, X, valid, bar)
        return X, valid

    @staticmethod
    def _fill(
        results: Iterable[tuple[np.ndarray, np.ndarray]],
        X: np.ndarray,
        valid: np.ndarray,
        bar: tqdm,
    ) -> None:
        start = 0
        for chunk_X, chunk_valid in results:
            stop = start + len(chunk_valid)
            X[start:stop] = chunk_X
            valid[start:stop] = chunk_valid
            bar.update(len(chunk_valid))
            start = stop

    def _transform_chunk(self, smiles: list[str]) -> tuple[np.ndarray, np.ndarray]:
        X = np.full((len(smiles), self.dim), np.nan, dtype=np.float32)
        valid = np.zeros(len(smiles), dtype=bool)
        for i, smi in enumerate(smiles):
            try:
                X[i] = self(smi)
            except InvalidMoleculeError:
                continue
            valid[i] = True
        return X, valid


def _resolve_n_jobs(n_jobs: int) -> int:
    if n_jobs == -1:
        return os.cpu_count() or 1
    if n_jobs < 1:
        raise DataError(f"n_jobs must be a positive integer or -1, got {n_jobs}")
    return n_jobs


def _as_features(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


@lru_cache(maxsize=16)
def _morgan_generator(
    radius: int, n_bits: int, features: bool, chirality: bool
) -> rdFingerprintGenerator.FingerprintGenerator64:
    invariants = rdFingerprintGenerator.GetMorganFeatureAtomInvGen() if features else None
    return rdFingerprintGenerator.GetMorganGenerator(
        radius=radius,
        fpSize=n_bits,
        includeChirality=chirality,
        atomInvariantsGenerator=invariants,
    )


@lru_cache(maxsize=16)
def _atom_pair_generator(
    n_bits: int, count_simulation: bool
) -> rdFingerprintGenerator.FingerprintGenerator64:
    return rdFingerprintGenerator.GetAtomPairGenerator(
        fpSize=n_bits, countSimulation=count_simulation
    )


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise DataError(f"{key} must be an integer >= 1, got {value!r}")


class MorganFingerprint(FingerprintFeaturizer):
    """Morgan/ECFP fingerprint; ``features=True`` gives FCFP (pharmacophoric atom invariants).

    ``counts=True`` returns hashed environment counts instead of 0/1 bits.
    """

    config_name = "morgan"

    def __init__(
        self,
        radius: int = 2,
        n_bits: int = 2048,
        counts: bool = False,
        features: bool = False,
        chirality: bool = False,
    ) -> None:
        _check_positive(radius=radius, n_bits=n_bits)
        self.radius = radius
        self.n_bits = n_bits
        self.counts = counts
        self.features = features
        self.chirality = chirality
        self.name = (
            f"{'fcfp' if features else 'ecfp'}{2 * radius}"
            + ("_count" if counts else "")
            + ("_chiral" if chirality else "")
        )

    def _featurize(self, mol: Chem.Mol) -> np.ndarray:
        gen = _morgan_generator(self.radius, self.n_bits, self.features, self.chirality)
        if self.counts:
            return _as_features(gen.GetCountFingerprintAsNumPy(mol))
        return _as_features(gen.GetFingerprintAsNumPy(mol))

    def bit_environments(self, mol: Chem.Mol) -> dict[int, list[tuple[int, int]]]:
        """Each on-bit of ``mol`` -> the atom environments that set it, as ``(centre atom,
        radius)`` pairs (RDKit's bit info from the same generator)."""
        gen = _morgan_generator(self.radius, self.n_bits, self.features, self.chirality)
        output = rdFingerprintGenerator.AdditionalOutput()
        output.AllocateBitInfoMap()
        gen.GetFingerprint(mol, additionalOutput=output)
        return {bit: list(envs) for bit, envs in output.GetBitInfoMap().items()}

    @property
    def dim(self) -> int:
        return self.n_bits

    def _params(self) -> dict[str, Any]:
        return {
            "radius": self.radius,
            "n_bits": self.n_bits,
            "counts": self.counts,
            "features": self.features,
            "chirality": self.chirality,
        }


class AtomPairFingerprint(FingerprintFeaturizer):
    """Hashed topological atom-pair fingerprint (bits or counts).

    ``count_simulation`` only affects the bit version; RDKit's generator default is True,
    here it defaults to False so that bit positions equal the nonzero count positions.
    """

    config_name = "atompair"

    def __init__(
        self, n_bits: int = 2048, counts: bool = False, count_simulation: bool = False
    ) -> None:
        _check_positive(n_bits=n_bits)
        self.n_bits = n_bits
        self.counts = counts
        self.count_simulation = count_simulation
        self.name = "atompair_count" if counts else "atompair"

    def _featurize(self, mol: Chem.Mol) -> np.ndarray:
        gen = _atom_pair_generator(self.n_bits, self.count_simulation)
        if self.counts:
            return _as_features(gen.GetCountFingerprintAsNumPy(mol))
        return _as_features(gen.GetFingerprintAsNumPy(mol))

    @property
    def dim(self) -> int:
        return self.n_bits

    def _params(self) -> dict[str, Any]:
        return {
            "n_bits": self.n_bits,
            "counts": self.counts,
            "count_simulation": self.count_simulation,
        }


class MACCSFingerprint(FingerprintFeaturizer):
    """The 166 MACCS structural keys (167 bits; RDKit leaves bit 0 unused)."""

    config_name = "maccs"
    name = "maccs"
    full_perception = True  # ring-size keys

    def _featurize(self, mol: Chem.Mol) -> np.ndarray:
        out = np.zeros(self.dim, dtype=np.float32)
        DataStructs.ConvertToNumpyArray(MACCSkeys.GenMACCSKeys(mol), out)
        return out

    @property
    def dim(self) -> int:
        return 167

    def _params(self) -> dict[str, Any]:
        return {}


_DESCRIPTORS: dict[str, Callable[[Chem.Mol], float]] = dict(Descriptors.descList)
# RDKit's information content of the characteristic polynomial grows with about the fifth
# power of the size (0.6 s at 266 heavy atoms, 18 s at 496): NaN beyond this many heavy atoms
IPC_MAX_HEAVY_ATOMS = 200
_IPC = ("Ipc", "AvgIpc")


class RDKitDescriptors(FingerprintFeaturizer):
    """RDKit 2D descriptors (all of ``Descriptors.descList`` by default, or the given ``names``).

    Values are computed in float64 and cast to float32; descriptors that fail, are non-finite
    or overflow float32 become NaN, and so do ``Ipc`` and ``AvgIpc`` of molecules with more
    than :data:`IPC_MAX_HEAVY_ATOMS` heavy atoms (they would take minutes). The config always
    lists the names explicitly, so a saved featurizer keeps its columns even if a newer RDKit
    adds descriptors.
    """

    config_name = "rdkit2d"
    name = "rdkit2d"
    full_perception = True  # ring counts, stereocentre counts

    def __init__(self, names: Sequence[str] | None = None) -> None:
        self.names = list(_DESCRIPTORS) if names is None else list(names)
        unknown = [n for n in self.names if n not in _DESCRIPTORS]
        if unknown:
            raise DataError(f"unknown RDKit descriptors: {unknown}")
        if len(set(self.names)) != len(self.names):
            raise DataError("descriptor names must be unique")
        if not self.names:
            raise DataError("at least one descriptor name is required")

    def _featurize(self, mol: Chem.Mol) -> np.ndarray:
        large = mol.GetNumHeavyAtoms() > IPC_MAX_HEAVY_ATOMS
        values = np.array(
            [
                math.nan if large and n in _IPC else _safe_descriptor(_DESCRIPTORS[n], mol)
                for n in self.names
            ]
        )
        with np.errstate(over="ignore", invalid="ignore"):
            out = values.astype(np.float32)
        out[~np.isfinite(out)] = np.nan
        return out

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def feature_names(self) -> list[str]:
        return list(self.names)

    def _params(self) -> dict[str, Any]:
        return {"names": list(self.names)}


def _safe_descriptor(fn: Callable[[Chem.Mol], float], mol: Chem.Mol) -> float:
    try:
        return float(fn(mol))
    except Exception:  # a single failing descriptor must not drop the whole molecule
        return math.nan


class ConcatFingerprint(FingerprintFeaturizer):
    """Concatenation of several featurizers; the molecule is parsed once and shared."""

    config_name = "concat"

    def __init__(self, parts: Sequence[FingerprintFeaturizer]) -> None:
        if not parts:
            raise DataError("ConcatFingerprint needs at least one part")
        self.parts = list(parts)
        self.name = "+".join(part.name for part in self.parts)
        names = self.feature_names
        if len(set(names)) != len(names):
            raise DataError(f"parts of {self.name} have overlapping feature names")

    def _featurize(self, mol: Chem.Mol) -> np.ndarray:
        # each part sees the molecule as it would alone (some need full ring and stereo
        # perception, made once here)
        perceived = fully_perceived(mol) if any(p.full_perception for p in self.parts) else mol
        return np.concatenate(
            [part._featurize(perceived if part.full_perception else mol) for part in self.parts]
        )

    @property
    def dim(self) -> int:
        return sum(part.dim for part in self.parts)

    @property
    def feature_names(self) -> list[str]:
        return [name for part in self.parts for name in part.feature_names]

    @property
    def batched(self) -> bool:
        return any(part.batched for part in self.parts)

    def transform(
        self, smiles: Sequence[str], *, n_jobs: int = 1, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`FingerprintFeaturizer.transform`. Batched parts get all molecules at once;
        each run of consecutive per-molecule parts shares one parse. A row is valid where every
        part featurized it."""
        if not self.batched:
            return super().transform(smiles, n_jobs=n_jobs, progress=progress)
        smiles = list(smiles)
        blocks = []
        valid = np.ones(len(smiles), dtype=bool)
        for batched, group in itertools.groupby(self.parts, key=lambda part: part.batched):
            run = list(group)
            for featurizer in run if batched else [ConcatFingerprint(run)]:
                X, featurized = featurizer.transform(smiles, n_jobs=n_jobs, progress=progress)
                blocks.append(X)
                valid &= featurized
        X = np.concatenate(blocks, axis=1)
        X[~valid] = np.nan
        return X, valid

    def _params(self) -> dict[str, Any]:
        return {"parts": [part.to_config() for part in self.parts]}

    @classmethod
    def from_config(cls, params: dict[str, Any]) -> ConcatFingerprint:
        return cls([fingerprint_from_config(part) for part in params["parts"]])


FINGERPRINTS: dict[str, type[FingerprintFeaturizer]] = {
    cls.config_name: cls
    for cls in (
        MorganFingerprint,
        MACCSFingerprint,
        AtomPairFingerprint,
        RDKitDescriptors,
        ConcatFingerprint,
    )
}

FingerprintType = TypeVar("FingerprintType", bound=type[FingerprintFeaturizer])


def register_fingerprint(cls: FingerprintType) -> FingerprintType:
    """Make featurizer class ``cls`` buildable by its ``config_name`` (usable as a class
    decorator): in configs, concatenations and saved baselines."""
    if not (isinstance(cls, type) and issubclass(cls, FingerprintFeaturizer)) or not isinstance(
        getattr(cls, "config_name", None), str
    ):
        raise TypeError(f"{cls!r} is not a FingerprintFeaturizer subclass with a config_name")
    FINGERPRINTS[cls.config_name] = cls
    return cls


_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ecfp4": ("morgan", {"radius": 2}),
    "ecfp6": ("morgan", {"radius": 3}),
    "fcfp4": ("morgan", {"radius": 2, "features": True}),
    "fcfp6": ("morgan", {"radius": 3, "features": True}),
}


def fingerprint_from_config(config: dict[str, Any]) -> FingerprintFeaturizer:
    """Rebuild a featurizer from :meth:`FingerprintFeaturizer.to_config` output (an alias
    such as ``{"class": "ecfp4"}``, e.g. a part of a ``concat``, is taken too)."""
    params = dict(config)
    key = params.pop("class", None)
    key = key.lower() if isinstance(key, str) else key
    if key in _ALIASES:
        key, defaults = _ALIASES[key]
        params = {**defaults, **params}
    if key not in FINGERPRINTS:
        raise DataError(f"unknown fingerprint class {key!r}; {_choices(key)}")
    try:
        return FINGERPRINTS[key].from_config(params)
    except TypeError as exc:  # an option the fingerprint does not take
        raise DataError(f"fingerprint {key!r}: {exc}") from exc


def _choices(name: object) -> str:
    if name == "pretrained":  # registered by molml.baselines, which builds baselines' features
        return (
            "pretrained embeddings are features of fingerprint baselines (molml baseline, "
            "features: {name: pretrained}), not molecule features of a graph model"
        )
    return f"choose from {sorted({*FINGERPRINTS, *_ALIASES})}"


def make_fingerprint(name: str, **params: Any) -> FingerprintFeaturizer:
    """Build a featurizer by registry key or alias (``ecfp4``, ``ecfp6``, ``fcfp4``, ``fcfp6``).

    Extra ``params`` override the alias defaults, e.g. ``make_fingerprint("ecfp4", n_bits=1024)``.
    """
    if name.lower() not in FINGERPRINTS and name.lower() not in _ALIASES:
        raise DataError(f"unknown fingerprint {name!r}; {_choices(name.lower())}")
    return fingerprint_from_config({"class": name, **params})
