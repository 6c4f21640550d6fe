"""Configuration of a baseline run: plain dataclasses, read from YAML by ``molml baseline``.

The ``data`` section takes the same options as :class:`~molml.data.datamodule.MoleculeDataModule`,
so a graph model and a baseline given the same values train and test on the same molecules.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

from molml.chem.fingerprints import FingerprintFeaturizer, make_fingerprint
from molml.errors import DataError
from molml.options import check_int, check_jobs
from molml.tracking import checked_tracking_uri

Estimator = Literal["xgboost", "random_forest"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)

_BOOSTERS = ("gbtree", "dart")
# XGBoost's own parameter names (https://xgboost.readthedocs.io/en/stable/parameter.html) that
# XGBRegressor / XGBClassifier pass on to the booster but do not list in get_params(): aliases
# and the tree, DART, linear and regression-objective parameters.
_XGBOOST_NATIVE_PARAMS = frozenset(
    {
        "eta",
        "min_split_loss",
        "lambda",
        "alpha",
        "nthread",
        "seed",
        "seed_per_iteration",
        "disable_default_eval_metric",
        "updater",
        "refresh_leaf",
        "process_type",
        "max_cached_hist_node",
        "sample_type",
        "normalize_type",
        "rate_drop",
        "one_drop",
        "skip_drop",
        "feature_selector",
        "top_k",
        "tweedie_variance_power",
        "huber_slope",
        "quantile_alpha",
    }
)


@cache
def estimator_params(name: str) -> frozenset[str]:
    """The parameter names ``estimator.params`` accepts for estimator ``name``.

    XGBoost: the scikit-learn API's ``get_params()`` plus booster parameters it passes on;
    random forest: scikit-learn's regressor and classifier parameters (``class_weight``).
    """
    if name == "xgboost":
        import xgboost as xgb

        return frozenset(xgb.XGBRegressor().get_params()) | _XGBOOST_NATIVE_PARAMS
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    return frozenset(RandomForestRegressor().get_params()) | set(
        RandomForestClassifier().get_params()
    )


@dataclass
class DataConfig:
    """Molecules, targets and split (the options of ``MoleculeDataModule``).

    Args:
        dataset: a registry name (``esol``, ``bbbp``, ...).
        path: or a CSV/TSV/Parquet/SMI/SDF file (gzip too).
        smiles_column: SMILES column (default: the card's, or ``smiles``).
        target_columns: target columns (default: the card's, or every other column); one may
            be named without a list.
        task_type: ``regression`` or ``classification``; inferred when not given.
        data_dir: directory holding registry CSVs (default: ``$MOLML_DATA_DIR``).
        split: ``scaffold``, ``scaffold_stratified``, ``random``, ``stratified`` or
            ``predefined`` (with ``split_file`` or ``split_column``).
        split_sizes: train/validation/test fractions.
        split_seed: seed of the split.
        split_file: chemprop-style split JSON (row positions), e.g. a graph run's ``split.json``.
        split_index: which entry of a split file with several splits (0-based).
        split_column: column holding train/val/test per row.
        strict: refuse the data if any SMILES is invalid instead of reporting and skipping it.
        standardize: group molecules for scaffold splits by their standardized form (largest
            fragment, neutralized), as a graph model whose featurizer has ``standardize: true``
            does; set it to the graph model's value to get its split.
        predict_path: file to predict on with ``molml baseline predict`` (default: test split).
        predict_smiles_column: the SMILES column of ``predict_path`` (default: ``smiles_column``
            when the file has one of that name, else ``smiles`` or the first).
    """

    dataset: str | None = None
    path: str | None = None
    smiles_column: str | None = None
    target_columns: list[str] | str | None = None
    task_type: str | None = None
    data_dir: str | None = None
    split: str = "scaffold"
    split_sizes: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    split_file: str | None = None
    split_column: str | None = None
    split_index: int = 0
    strict: bool = False
    standardize: bool = False
    predict_path: str | None = None
    predict_smiles_column: str | None = None

    def __post_init__(self) -> None:
        check_int(self.split_seed, "data.split_seed", minimum=0)
        check_int(self.split_index, "data.split_index", minimum=0)


@dataclass
class FeaturesConfig:
    """Fingerprint features, built by ``molml.chem.fingerprints.make_fingerprint(name, **params)``.

    Args:
        name: ``ecfp4``, ``ecfp6``, ``fcfp4``, ``fcfp6``, ``morgan``, ``atompair``, ``maccs``,
            ``rdkit2d``, ``pretrained`` (a graph encoder's embeddings,
            :class:`~molml.baselines.embeddings.PretrainedEmbedding`) or ``concat``
            (``params: {parts: [{class: morgan, ...}, {class: pretrained, model: ...}]}``).
        params: the fingerprint's parameters, e.g. ``{radius: 2, n_bits: 2048, counts: true}``
            or ``{model: zinc-dmpnn}`` (a shipped encoder or a molml checkpoint file).
        n_jobs: processes for featurizing the training data (-1: all cores).
    """

    name: str = "ecfp4"
    params: dict[str, Any] = field(default_factory=dict)
    n_jobs: int = -1

    def __post_init__(self) -> None:
        check_jobs(self.n_jobs, "features.n_jobs")

    def make(self) -> FingerprintFeaturizer:
        """The featurizer this section describes."""
        return make_fingerprint(self.name, **self.params)


@dataclass
class EstimatorConfig:
    """The model fitted per task.

    Args:
        name: ``xgboost`` (XGBRegressor / XGBClassifier) or ``random_forest`` (scikit-learn).
        params: keyword arguments of the estimator class, e.g. ``{n_estimators: 500,
            learning_rate: 0.05}``. For XGBoost classification, ``scale_pos_weight`` defaults
            to negatives / positives among each task's training labels.
        early_stopping_rounds: XGBoost stops when the validation loss has not improved for this
            many rounds and keeps the best iteration (null: no early stopping).
    """

    name: Estimator = "xgboost"
    params: dict[str, Any] = field(default_factory=dict)
    early_stopping_rounds: int | None = 50

    def __post_init__(self) -> None:
        """Refuse an unknown estimator or parameter name now, before any data is read."""
        check_int(self.early_stopping_rounds, "estimator.early_stopping_rounds", minimum=1,
                  allow_none=True)  # fmt: skip
        if self.name not in ESTIMATORS:
            raise DataError(f"estimator.name {self.name!r} is not one of {list(ESTIMATORS)}")
        if not isinstance(self.params, dict) or not all(isinstance(k, str) for k in self.params):
            raise DataError(f"estimator.params must map parameter names to values: {self.params!r}")
        if "early_stopping_rounds" in self.params:
            raise DataError(
                "estimator.params.early_stopping_rounds is set by estimator.early_stopping_rounds; "
                "give it there"
            )
        if self.name == "xgboost" and self.params.get("booster", "gbtree") not in _BOOSTERS:
            raise DataError(
                f"estimator.params.booster {self.params['booster']!r}: baselines take the tree "
                f"boosters {list(_BOOSTERS)} (gblinear has no in-place prediction)"
            )
        valid = estimator_params(self.name)
        unknown = [key for key in self.params if key not in valid]
        if unknown:
            hints = "; ".join(f"{key!r} ({_closest(key, valid)})" for key in unknown)
            raise DataError(f"estimator.params: unknown {self.name} parameter(s): {hints}")


def _closest(name: str, valid: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=3)
    return f"did you mean {' or '.join(map(repr, close))}?" if close else "no close match"


@dataclass
class BaselineConfig:
    """A fingerprint baseline run.

    Args:
        data: molecules, targets and split.
        features: the fingerprint.
        estimator: the model fitted per task.
        seed: random state of the estimator.
        name: run name; runs go to ``<output_dir>/<name>/version_<n>``
            (default: ``<dataset>_<fingerprint>_<estimator>``).
        output_dir: root of the run directories.
        tracking_uri: MLflow tracking URI (null or "none": no MLflow logging; a database or
            a tracking server, not MLflow's file store).
        artifact_location: where a new MLflow experiment stores its artifacts.
    """

    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    seed: int = 0
    name: str | None = None
    output_dir: str = "runs"
    tracking_uri: str | None = "sqlite:///runs/mlflow.db"
    artifact_location: str = "runs/mlartifacts"

    def __post_init__(self) -> None:
        self.tracking_uri = checked_tracking_uri(self.tracking_uri, "tracking_uri")

    @property
    def run_name(self) -> str:
        """``name``, or one made from the dataset, fingerprint and estimator."""
        if self.name:
            return self.name
        source = self.data.dataset or Path(self.data.path or "data").name.split(".")[0]
        return f"{source}_{self.features.name}_{self.estimator.name}"
