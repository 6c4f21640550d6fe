"""Fingerprint featurizers against RDKit's own generators, batching and config round trips."""

from __future__ import annotations

import json
import pickle
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import rdkit
from rdkit import Chem
from rdkit.Chem import Descriptors, MACCSkeys, rdFingerprintGenerator

from molml.chem.fingerprints import (
    FINGERPRINTS,
    AtomPairFingerprint,
    ConcatFingerprint,
    MACCSFingerprint,
    MorganFingerprint,
    RDKitDescriptors,
    fingerprint_from_config,
    make_fingerprint,
)
from molml.errors import DataError, InvalidMoleculeError

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
SMILES = [ASPIRIN, "c1ccccc1", "CCN(CC)CCOC(=O)c1ccc(N)cc1", "O=C(O)C[C@H](N)C(=O)O"]


@pytest.fixture(scope="module")
def nci_smiles() -> list[str]:
    path = Path(rdkit.__file__).parent / "Data/NCI/first_5K.smi"
    with path.open() as fh:
        return [line.split()[0] for line in islice(fh, 300)]


def small_featurizers() -> list:
    return [
        MorganFingerprint(radius=1, n_bits=64, counts=True),
        MACCSFingerprint(),
        AtomPairFingerprint(n_bits=128),
        RDKitDescriptors(names=["MolWt", "TPSA", "NumHDonors"]),
    ]


@pytest.mark.parametrize("smiles", SMILES)
def test_morgan_bits_match_rdkit_generator(smiles: str) -> None:
    mol = Chem.MolFromSmiles(smiles)
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    out = MorganFingerprint()(smiles)
    assert out.dtype == np.float32 and out.shape == (2048,)
    np.testing.assert_array_equal(out, gen.GetFingerprintAsNumPy(mol))
    np.testing.assert_array_equal(MorganFingerprint()(mol), out)


@pytest.mark.parametrize("smiles", SMILES)
def test_atom_pair_matches_rdkit_generator(smiles: str) -> None:
    mol = Chem.MolFromSmiles(smiles)
    default_gen = rdFingerprintGenerator.GetAtomPairGenerator(fpSize=1024)
    simulated = AtomPairFingerprint(n_bits=1024, count_simulation=True)(smiles)
    np.testing.assert_array_equal(simulated, default_gen.GetFingerprintAsNumPy(mol))
    gen = rdFingerprintGenerator.GetAtomPairGenerator(fpSize=1024, countSimulation=False)
    np.testing.assert_array_equal(
        AtomPairFingerprint(n_bits=1024)(smiles), gen.GetFingerprintAsNumPy(mol)
    )
    np.testing.assert_array_equal(
        AtomPairFingerprint(n_bits=1024, counts=True)(smiles), gen.GetCountFingerprintAsNumPy(mol)
    )


@pytest.mark.parametrize("cls", [MorganFingerprint, AtomPairFingerprint])
def test_counts_consistent_with_bits(cls: type) -> None:
    for smiles in SMILES:
        bits = cls(counts=False)(smiles)
        counts = cls(counts=True)(smiles)
        assert np.all(counts >= bits)
        np.testing.assert_array_equal(np.flatnonzero(counts), np.flatnonzero(bits))
        assert counts.sum() > bits.sum()


def test_fcfp_differs_from_ecfp() -> None:
    ecfp, fcfp = MorganFingerprint(), MorganFingerprint(features=True)
    assert fcfp.name == "fcfp4" and ecfp.name == "ecfp4"
    gen = rdFingerprintGenerator.GetMorganGenerator(
        radius=2, atomInvariantsGenerator=rdFingerprintGenerator.GetMorganFeatureAtomInvGen()
    )
    np.testing.assert_array_equal(
        fcfp(ASPIRIN), gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(ASPIRIN))
    )
    assert not np.array_equal(ecfp(ASPIRIN), fcfp(ASPIRIN))


def test_chirality_option_distinguishes_enantiomers() -> None:
    left, right = "C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"
    plain, chiral = MorganFingerprint(), MorganFingerprint(chirality=True)
    np.testing.assert_array_equal(plain(left), plain(right))
    assert not np.array_equal(chiral(left), chiral(right))
    assert not np.array_equal(chiral(left), plain(left))


def test_maccs() -> None:
    maccs = MACCSFingerprint()
    out = maccs(ASPIRIN)
    assert maccs.dim == 167 and out.shape == (167,)
    expected = np.array(list(MACCSkeys.GenMACCSKeys(Chem.MolFromSmiles(ASPIRIN))))
    np.testing.assert_array_equal(out, expected)


def test_descriptors_all_and_named() -> None:
    full = RDKitDescriptors()
    assert full.dim == len(Descriptors.descList) > 200
    assert full.feature_names == [name for name, _ in Descriptors.descList]
    values = full(ASPIRIN)
    assert values.dtype == np.float32 and np.isfinite(values).all()

    mol = Chem.MolFromSmiles(ASPIRIN)
    named = RDKitDescriptors(names=["MolWt", "TPSA", "MolLogP", "NumHDonors"])
    expected = [Descriptors.MolWt(mol), Descriptors.TPSA(mol), Descriptors.MolLogP(mol), 1.0]
    np.testing.assert_allclose(named(mol), expected, rtol=1e-6)
    np.testing.assert_array_equal(values[[full.names.index("MolWt")]], named(mol)[:1])
    with pytest.raises(ValueError, match="unknown"):
        RDKitDescriptors(names=["NotADescriptor"])


def test_descriptors_non_finite_becomes_nan() -> None:
    # Ipc of a long alkane (~1e56) is finite in float64 but overflows float32.
    mol = Chem.MolFromSmiles("C" * 200)
    assert np.isfinite(Descriptors.Ipc(mol)) and Descriptors.Ipc(mol) > 1e39
    out = RDKitDescriptors(names=["Ipc", "MolWt"])(mol)
    assert np.isnan(out[0])
    assert out[1] == pytest.approx(Descriptors.MolWt(mol))


def test_descriptors_of_a_large_molecule_skip_the_information_content() -> None:
    """Ipc and AvgIpc take seconds to minutes beyond a few hundred atoms (about 18 s at 500):
    NaN there, every other descriptor computed."""
    mol = Chem.MolFromSmiles("C" * 300 + "c1ccccc1C(=O)N")
    out = RDKitDescriptors(names=["Ipc", "AvgIpc", "MolWt"])(mol)
    assert np.isnan(out[:2]).all()
    assert out[2] == pytest.approx(Descriptors.MolWt(mol))
    small = RDKitDescriptors(names=["AvgIpc"])(Chem.MolFromSmiles("c1ccccc1C(=O)N"))
    assert np.isfinite(small).all()


def test_invalid_smiles_rows() -> None:
    fp = MorganFingerprint(n_bits=256)
    with pytest.raises(InvalidMoleculeError):
        fp("not a smiles")
    batch = [SMILES[0], "C1CC", "", SMILES[1], None, SMILES[2]]
    X, valid = fp.transform(batch)  # type: ignore[arg-type]
    assert X.dtype == np.float32 and X.shape == (6, 256)
    np.testing.assert_array_equal(valid, [True, False, False, True, False, True])
    assert np.isnan(X[~valid]).all()
    for row, smiles in zip(X[valid], SMILES[:3], strict=True):
        np.testing.assert_array_equal(row, fp(smiles))


def test_empty_batch() -> None:
    X, valid = MACCSFingerprint().transform([])
    assert X.shape == (0, 167) and valid.shape == (0,)


def test_parallel_matches_serial(nci_smiles: list[str]) -> None:
    fp = ConcatFingerprint(small_featurizers())
    batch = [*nci_smiles[:150], "C1CC", *nci_smiles[150:]]
    X1, valid1 = fp.transform(batch, n_jobs=1)
    X2, valid2 = fp.transform(batch, n_jobs=2, progress=True)
    np.testing.assert_array_equal(valid1, valid2)
    assert not valid1[150] and valid1.sum() >= 290
    np.testing.assert_array_equal(X1, X2)  # NaNs compare equal here
    X3, valid3 = fp.transform(batch, n_jobs=-1)
    np.testing.assert_array_equal(valid1, valid3)
    np.testing.assert_array_equal(X1, X3)
    with pytest.raises(ValueError, match="n_jobs"):
        fp.transform(batch, n_jobs=0)


@pytest.mark.parametrize(
    "fp",
    [
        MorganFingerprint(radius=3, n_bits=512, counts=True, features=True, chirality=True),
        MACCSFingerprint(),
        AtomPairFingerprint(n_bits=256, counts=True),
        RDKitDescriptors(names=["MolWt", "qed"]),
        RDKitDescriptors(),
        ConcatFingerprint(small_featurizers()),
    ],
    ids=lambda fp: fp.name,
)
def test_config_round_trip(fp) -> None:
    config = json.loads(json.dumps(fp.to_config()))
    assert config["class"] in FINGERPRINTS
    rebuilt = fingerprint_from_config(config)
    assert type(rebuilt) is type(fp)
    assert rebuilt.to_config() == config
    assert rebuilt.feature_names == fp.feature_names
    for smiles in SMILES:
        np.testing.assert_array_equal(rebuilt(smiles), fp(smiles))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fp))(ASPIRIN), fp(ASPIRIN))


def test_from_config_rejects_unknown_class() -> None:
    with pytest.raises(ValueError, match="unknown fingerprint class"):
        fingerprint_from_config({"class": "nope"})


def test_concat_dim_and_names() -> None:
    parts = small_featurizers()
    concat = ConcatFingerprint(parts)
    assert concat.dim == sum(p.dim for p in parts)
    names = concat.feature_names
    assert len(names) == concat.dim == len(set(names))
    out = concat(ASPIRIN)
    np.testing.assert_array_equal(out, np.concatenate([p(ASPIRIN) for p in parts]))
    # parts that need full perception (stereocentre counts) get it inside a concatenation too
    alanine = "C[C@H](N)C(=O)O"
    with_descriptors = [MorganFingerprint(n_bits=64), RDKitDescriptors()]
    np.testing.assert_array_equal(
        ConcatFingerprint(with_descriptors)(alanine),
        np.concatenate([p(alanine) for p in with_descriptors]),
    )
    with pytest.raises(ValueError, match="overlapping"):
        ConcatFingerprint([MorganFingerprint(n_bits=64), MorganFingerprint(n_bits=128)])


@pytest.mark.parametrize(
    ("alias", "cls", "params"),
    [
        ("ecfp4", MorganFingerprint, {"radius": 2, "features": False}),
        ("ecfp6", MorganFingerprint, {"radius": 3, "features": False}),
        ("fcfp4", MorganFingerprint, {"radius": 2, "features": True}),
        ("maccs", MACCSFingerprint, {}),
        ("atompair", AtomPairFingerprint, {}),
        ("rdkit2d", RDKitDescriptors, {}),
        ("morgan", MorganFingerprint, {"radius": 2}),
    ],
)
def test_make_fingerprint_aliases(alias: str, cls: type, params: dict) -> None:
    fp = make_fingerprint(alias)
    assert type(fp) is cls
    config = fp.to_config()
    assert all(config[k] == v for k, v in params.items())


def test_make_fingerprint_overrides_and_errors() -> None:
    fp = make_fingerprint("ECFP6", n_bits=1024, counts=True)
    assert isinstance(fp, MorganFingerprint)
    assert (fp.radius, fp.n_bits, fp.counts, fp.name) == (3, 1024, True, "ecfp6_count")
    with pytest.raises(DataError, match="unknown fingerprint"):  # bad input: exit code 2
        make_fingerprint("ecfp5")
    with pytest.raises(DataError, match="fingerprint 'morgan': .*nbits"):
        make_fingerprint("ecfp4", nbits=512)


@pytest.mark.parametrize(
    ("plain", "with_hydrogen"),
    [
        ("OC1(CN2CCC1CC2)C#Cc3ccc(cc3)c4ccccc4", "[H]OC1(CN2CCC1CC2)C#Cc3ccc(cc3)c4ccccc4"),
        ("C[C@H](N)C(=O)O", "[H]OC(=O)[C@@H](N)C"),
    ],
)
def test_descriptors_are_rdkits_however_the_molecule_is_written(
    plain: str, with_hydrogen: str
) -> None:
    """A bridged ring system's ring counts and a stereocentre count, which molml's fast
    parsing (no symmetrized SSSR) used to get wrong, and only for SMILES without [H]."""
    for featurizer in (RDKitDescriptors(), make_fingerprint("maccs"), make_fingerprint("ecfp4")):
        reference = featurizer._featurize(Chem.MolFromSmiles(plain))
        assert np.array_equal(featurizer(plain), reference, equal_nan=True)
        assert np.array_equal(featurizer(with_hydrogen), reference, equal_nan=True)


def test_concat_parts_may_be_named_by_alias() -> None:
    """``{class: ecfp4}`` inside a concat was refused by an error that offered ecfp4."""
    aliased = make_fingerprint("concat", parts=[{"class": "ecfp4"}, {"class": "maccs"}])
    spelled = make_fingerprint(
        "concat", parts=[{"class": "morgan", "radius": 2}, {"class": "maccs"}]
    )
    assert aliased.to_config() == spelled.to_config()
    mol = Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1")
    np.testing.assert_array_equal(aliased(mol), spelled(mol))
    with pytest.raises(DataError, match="unknown fingerprint class 'ecfp5'"):
        make_fingerprint("concat", parts=[{"class": "ecfp5"}])
