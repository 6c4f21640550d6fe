"""Fingerprint baselines: ECFP/FCFP, MACCS, atom pairs, RDKit descriptors or a pretrained graph
encoder's embeddings with XGBoost or a scikit-learn random forest, on the graph models' data,
splits and metrics.

``molml baseline fit --config configs/esol_xgb.yaml`` trains one from the command line;
``molml.load_model(run_dir / "model")`` loads a saved one for ``predict``.
"""

from molml.baselines.config import BaselineConfig, DataConfig, EstimatorConfig, FeaturesConfig
from molml.baselines.embeddings import PretrainedEmbedding
from molml.baselines.model import BaselineModel, load_baseline
from molml.baselines.run import FitResult, evaluate, fit_baseline

__all__ = [
    "BaselineConfig",
    "BaselineModel",
    "DataConfig",
    "EstimatorConfig",
    "FeaturesConfig",
    "FitResult",
    "PretrainedEmbedding",
    "evaluate",
    "fit_baseline",
    "load_baseline",
]
