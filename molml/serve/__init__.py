"""``molml serve``: trained models behind an HTTP API (FastAPI) with Prometheus metrics.

``create_app({name: predictor})`` builds the app; concurrent requests to one model are gathered
into one model call (:class:`MicroBatcher`); a :class:`ReferenceSet` of training molecules adds
the applicability-domain metrics.
"""

from molml.serve.app import PredictRequest, PredictResponse, create_app
from molml.serve.batching import MicroBatcher
from molml.serve.domain import DEFAULT_SIMILARITY_THRESHOLD, ReferenceSet

__all__ = [
    "DEFAULT_SIMILARITY_THRESHOLD",
    "MicroBatcher",
    "PredictRequest",
    "PredictResponse",
    "ReferenceSet",
    "create_app",
]
