"""The FastAPI application: ``create_app({name: predictor})``.

Endpoints: ``POST /predict`` (the only model) and ``POST /predict/{model}``, ``POST /explain``
and ``POST /explain/{model}`` (atom and bond attributions, for models that support them),
``GET /health``, ``GET /models``, ``GET /metrics`` (Prometheus) and the OpenAPI docs at
``/docs``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from molml._version import __version__
from molml.errors import DataError, MolmlError, error_message
from molml.explain import MoleculeExplanation, explain
from molml.explain.run import check_settings, score_units
from molml.options import check_int
from molml.predict import Predictor
from molml.predict.base import DEFAULT_BATCH_SIZE, without_surrogates
from molml.serve.batching import MicroBatcher, Overloaded, Scores
from molml.serve.domain import ReferenceSet
from molml.serve.metrics import RequestMetrics, ServiceMetrics

log = logging.getLogger("molml")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BYTES_PER_MOLECULE = 64  # JSON quotes, commas and a short id besides each SMILES


class PredictRequest(BaseModel):
    """Molecules to predict, with optional identifiers echoed back."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"smiles": ["CCO", "c1ccccc1O"], "ids": ["a", "b"]}]},
    )

    smiles: list[StrictStr] = Field(min_length=1, description="SMILES strings, one per molecule")
    ids: list[StrictStr | StrictInt] | None = Field(
        default=None, description="one identifier per SMILES (default: the position)"
    )

    @field_validator("smiles", "ids")
    @classmethod
    def _encodable(cls, values: list[Any] | None) -> list[Any] | None:
        """Lone surrogates (``"\\ud800"`` is valid JSON) cannot be written back: replaced,
        so that molecule is invalid and the rest of the request is answered."""
        if values is None:
            return None
        return [without_surrogates(v) if isinstance(v, str) else v for v in values]


class MoleculeResult(BaseModel):
    """The prediction for one molecule."""

    id: str | int
    smiles: str
    predictions: dict[str, float | None] = Field(
        description="one value per prediction column; null when the molecule failed"
    )
    status: str = Field(description="'ok' or why the molecule could not be predicted")
    training_similarity: float | None = Field(
        default=None,
        description="maximum Tanimoto similarity (ECFP4) to the reference set, when one is set",
    )
    far_from_training: bool | None = Field(
        default=None, description="training_similarity below the service's threshold"
    )


class PredictResponse(BaseModel):
    """One result per input molecule, in input order."""

    model: str
    columns: list[str]
    results: list[MoleculeResult]


class ExplainRequest(PredictRequest):
    """Molecules whose predictions to explain, and how."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"smiles": ["CCO", "c1ccccc1O"], "method": "saliency"}]},
    )

    method: StrictStr | None = Field(
        default=None,
        description="integrated_gradients (graph models' default), saliency, input_x_gradient, "
        "occlusion, or shap (fingerprint baselines' default)",
    )
    task: StrictStr | None = Field(
        default=None, description="the prediction column to explain (default: the first)"
    )
    steps: StrictInt | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Integrated Gradients interpolation steps (default 50; other methods take "
        "none)",
    )
    explained: Literal["logit", "probability"] = Field(
        default="logit",
        description="classifiers (graph models): explain the logit or the predicted probability",
    )


class AtomExplanation(BaseModel):
    """Attributions of one molecule's prediction, in RDKit's atom and bond order."""

    id: str | int
    smiles: str
    status: str = Field(description="'ok' or why the molecule could not be explained")
    mapped_smiles: str | None = Field(
        default=None,
        description="the scored molecule with atom map numbers = score index + 1 (after the "
        "model's standardization or added hydrogens)",
    )
    prediction: float | None = Field(description="in the model's units (or a probability)")
    explained_value: float | None = Field(
        description="what the scores explain: target units (regression) or the logit"
    )
    atom_scores: list[float | None] | None
    atom_totals: list[float | None] | None = Field(
        default=None, description="each atom's score plus half of each of its bonds' scores"
    )
    bond_scores: list[float | None] | None = Field(
        description="null entries where the method scores atoms only"
    )
    atom_std: list[float | None] | None = Field(
        default=None, description="spread over ensemble members"
    )
    baseline: str | None = Field(
        default=None, description="Integrated Gradients: where its path starts (carbon, zeros)"
    )
    baseline_value: float | None = Field(
        default=None, description="Integrated Gradients: the explained value at its baseline"
    )
    completeness_gap: float | None = Field(
        default=None, description="Integrated Gradients: sum of scores minus f(x) - f(baseline)"
    )
    unmapped_score: float | None = Field(
        default=None,
        description="SHAP: the part of the SHAP total carried by features that map to no atom "
        "(atom scores + unmapped score + expected value = explained value)",
    )
    feature_scores: dict[str, float | None] | None = Field(
        default=None,
        description="SHAP: every non-zero score of a feature that maps to no atom (descriptors, "
        "MACCS keys), largest first",
    )


class ExplainResponse(BaseModel):
    """One explanation per input molecule, in input order."""

    model: str
    method: str
    task: str
    explained: str = Field(
        description="what the scores add up to: target units, logit or probability"
    )
    results: list[AtomExplanation]


class HealthResponse(BaseModel):
    status: str
    molml_version: str
    models: list[str]


class ModelInfo(BaseModel):
    kind: str
    tasks: list[str]
    task_type: str
    prediction_columns: list[str]
    metadata: dict[str, Any] = Field(
        description="molml version, training data, test metrics, featurizer (Predictor.metadata)"
    )
    applicability_domain: dict[str, Any]


class ModelsResponse(BaseModel):
    default: str | None = Field(description="the model POST /predict uses (only one is served)")
    models: dict[str, ModelInfo]


@dataclass
class _Served:
    predictor: Predictor
    info: ModelInfo
    batcher: MicroBatcher | None = None


def create_app(
    predictors: Mapping[str, Predictor],
    *,
    max_molecules: int = 1000,
    max_smiles_length: int = 1000,
    reference: ReferenceSet | None = None,
    max_batch_size: int = 256,
    max_wait_ms: float = 2.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_pending: int = 20000,
    max_explain_molecules: int = 100,
) -> FastAPI:
    """A FastAPI app serving ``predictors`` by name.

    Args:
        predictors: name -> Predictor (graph checkpoint, baseline, ensemble, ...).
        max_molecules: most molecules per request (more: 413).
        max_smiles_length: longest SMILES accepted (longer: 422). Request bodies over
            ``max_molecules * (2 * max_smiles_length + 64)`` bytes are refused (413) unread.
        reference: training molecules for the applicability-domain metrics, if any.
        max_batch_size: most molecules of concurrent requests gathered into one model call
            (0: one model call per request).
        max_wait_ms: how long a request waits for others to join its model call.
        batch_size: molecules per forward pass inside one model call.
        max_pending: most molecules waiting for one model; beyond it requests get 503 with
            ``Retry-After`` at once instead of queueing without bound (0: no limit).
        max_explain_molecules: most molecules per ``/explain`` request (more: 413); an
            explanation costs many forward and backward passes.

    Run it under an ASGI server (``uvicorn``) or ``fastapi.testclient.TestClient`` used as a
    context manager, so the lifespan that starts the batching runs.
    """
    if not predictors:
        raise DataError("no model to serve")
    for name in predictors:
        if not MODEL_NAME.match(name):
            raise DataError(
                f"model name {name!r} must be letters, digits, '_', '.' or '-' (it is a URL part)"
            )
    for option, value in (
        ("max_molecules", max_molecules),
        ("max_smiles_length", max_smiles_length),
        ("batch_size", batch_size),
        ("max_explain_molecules", max_explain_molecules),
    ):
        check_int(value, option, minimum=1)
    check_int(max_pending, "max_pending", minimum=0)
    check_int(max_batch_size, "max_batch_size", minimum=0)
    if not (isinstance(max_wait_ms, (int, float)) and 0 <= max_wait_ms <= 1000):
        raise DataError(f"max_wait_ms must be a number within [0, 1000], got {max_wait_ms!r}")

    metrics = ServiceMetrics(with_domain=reference is not None)
    domain = (
        reference.describe()
        if reference is not None
        else {"reference": None, "note": "no reference set given: similarity is not computed"}
    )
    served = {
        name: _Served(predictor, _model_info(predictor, domain))
        for name, predictor in predictors.items()
    }
    default = next(iter(served)) if len(served) == 1 else None
    model_thread: dict[str, ThreadPoolExecutor] = {}
    explaining: list[str] = []  # the model of the explanation running (one at a time)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="molml-model")
        model_thread["executor"] = executor
        for name, model in served.items():
            model.batcher = MicroBatcher(
                _scorer(model.predictor, reference, batch_size),
                executor,
                max_batch_size=max_batch_size,
                max_wait_ms=max_wait_ms,
                on_batch=lambda n, name=name: metrics.model_call(name, n),
                max_pending=max_pending,
            )
            await model.batcher.start()
        try:
            yield
        finally:
            for model in served.values():
                if model.batcher is not None:
                    await model.batcher.stop()
            executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="molml",
        version=__version__,
        description="Molecular property predictions from trained molml models.",
        lifespan=lifespan,
    )
    max_body = max_molecules * (2 * max_smiles_length + _BYTES_PER_MOLECULE) + 65536
    app.add_middleware(RequestMetrics, metrics=metrics, max_body_bytes=max_body)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, also for input JSON cannot echo (``NaN``, ``Infinity``)."""
        return JSONResponse(status_code=422, content={"detail": _finite(exc.errors())})

    def checked(name: str, request: PredictRequest, limit: int, option: str) -> list[Any]:
        """The request's ids, once its model, size and SMILES lengths are checked."""
        if name not in served:
            raise HTTPException(404, f"no model named {name!r}; served: {', '.join(served)}")
        smiles = request.smiles
        if len(smiles) > limit:
            raise HTTPException(
                413,
                f"{len(smiles)} molecules in one request; the limit is {limit} "
                f"({option}): split the request",
            )
        ids = request.ids if request.ids is not None else list(range(len(smiles)))
        if len(ids) != len(smiles):
            raise HTTPException(422, f"{len(ids)} ids for {len(smiles)} SMILES: give one each")
        for i, text in enumerate(smiles):
            if len(text) > max_smiles_length:
                raise HTTPException(
                    422,
                    f"smiles[{i}] has {len(text)} characters; the limit is {max_smiles_length} "
                    "(--max-smiles-length)",
                )
        return ids

    async def predict(name: str, request: PredictRequest) -> PredictResponse:
        ids = checked(name, request, max_molecules, "--max-molecules")
        model, smiles = served[name], request.smiles
        assert model.batcher is not None, "the app's lifespan has not started"
        try:
            scores = await model.batcher.predict(smiles)
        except Overloaded as exc:
            raise HTTPException(
                503, f"model {name!r} is busy: {exc}; retry shortly", headers={"Retry-After": "1"}
            ) from exc
        except Exception as exc:  # noqa: BLE001 - a failing model is a 500 with its reason
            log.exception("model %s failed", name)
            raise HTTPException(500, f"model {name!r} failed: {error_message(exc)}") from exc
        threshold = reference.threshold if reference is not None else math.nan
        metrics.molecules_scored(name, scores.status, scores.similarity, threshold)
        return PredictResponse(
            model=name,
            columns=model.info.prediction_columns,
            results=_results(ids, smiles, scores, model.info.prediction_columns, threshold),
        )

    def only_model(route: str) -> str:
        """The served model, for the routes without a model name; 400 when there are several."""
        if default is None:
            raise HTTPException(
                400, f"several models are served ({', '.join(served)}): POST {route}/{{model}}"
            )
        return default

    @app.post("/predict", response_model=PredictResponse, tags=["predict"])
    async def predict_default(request: PredictRequest) -> PredictResponse:
        """Predict with the model, when only one is served."""
        return await predict(only_model("/predict"), request)

    @app.post("/predict/{model}", response_model=PredictResponse, tags=["predict"])
    async def predict_named(model: str, request: PredictRequest) -> PredictResponse:
        """Predict with the model of that name (see ``GET /models``)."""
        return await predict(model, request)

    async def explain_with(name: str, request: ExplainRequest) -> ExplainResponse:
        ids = checked(name, request, max_explain_molecules, "--max-explain-molecules")
        predictor = served[name].predictor
        try:
            method, _, task = check_settings(
                predictor,
                request.method,
                request.task,
                steps=request.steps,
                explained=request.explained,
            )
        except MolmlError as exc:
            raise HTTPException(422, f"model {name!r}: {error_message(exc)}") from exc

        if explaining:  # explanations are not micro-batched: one waits at most, not a queue
            raise HTTPException(
                503,
                f"an explanation with model {explaining[0]!r} is running and explanations run "
                "one at a time; retry shortly",
                headers={"Retry-After": "1"},
            )

        def run() -> list[MoleculeExplanation]:
            return explain(
                predictor,
                request.smiles,
                method,
                task,
                steps=request.steps,
                explained=request.explained,
            )

        explaining.append(name)
        try:  # in the model thread, so a model never runs two requests at once
            explanations = await asyncio.get_running_loop().run_in_executor(
                model_thread["executor"], run
            )
        except Exception as exc:  # noqa: BLE001 - a failing model is a 500 with its reason
            log.exception("explaining with model %s failed", name)
            raise HTTPException(500, f"model {name!r} failed: {error_message(exc)}") from exc
        finally:
            explaining.clear()
        return ExplainResponse(
            model=name,
            method=method,
            task=task,
            explained=score_units(predictor, method, request.explained),
            results=[_explained(i, e) for i, e in zip(ids, explanations, strict=True)],
        )

    @app.post("/explain", response_model=ExplainResponse, tags=["explain"])
    async def explain_default(request: ExplainRequest) -> ExplainResponse:
        """Atom and bond attributions of the model's predictions, when only one is served."""
        return await explain_with(only_model("/explain"), request)

    @app.post("/explain/{model}", response_model=ExplainResponse, tags=["explain"])
    async def explain_named(model: str, request: ExplainRequest) -> ExplainResponse:
        """Atom and bond attributions of the predictions of the model of that name."""
        return await explain_with(model, request)

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health() -> HealthResponse:
        """The service is up and its models are loaded."""
        return HealthResponse(status="ok", molml_version=__version__, models=list(served))

    @app.get("/models", response_model=ModelsResponse, tags=["service"])
    async def models() -> ModelsResponse:
        """Tasks, task type, prediction columns and metadata of every served model."""
        return ModelsResponse(default=default, models={name: m.info for name, m in served.items()})

    @app.get("/metrics", tags=["service"])
    async def prometheus_metrics() -> Response:
        """Prometheus metrics of this service."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _scorer(
    predictor: Predictor, reference: ReferenceSet | None, batch_size: int
) -> Callable[[list[str]], Scores]:
    """The function a model's batcher calls (in the model thread) on gathered SMILES."""

    def score(smiles: list[str]) -> Scores:
        frame = predictor.predict(smiles, batch_size=batch_size)
        values = frame[predictor.prediction_columns()].to_numpy(dtype=np.float64)
        status = frame["status"].tolist()
        similarity = None
        if reference is not None:
            similarity = np.full(len(smiles), np.nan)
            ok = [i for i, s in enumerate(status) if s == "ok"]
            similarity[ok] = reference.max_similarity([smiles[i] for i in ok])
        return Scores(values, status, similarity)

    return score


def _results(
    ids: list[Any], smiles: list[str], scores: Scores, columns: list[str], threshold: float
) -> list[MoleculeResult]:
    results = []
    for row, (id_, text, status) in enumerate(zip(ids, smiles, scores.status, strict=True)):
        values = scores.values[row]
        similarity = None
        if scores.similarity is not None and not np.isnan(scores.similarity[row]):
            similarity = float(scores.similarity[row])
        results.append(
            MoleculeResult(
                id=id_,
                smiles=text,
                predictions={
                    c: float(v) if math.isfinite(v) else None
                    for c, v in zip(columns, values, strict=True)
                },
                status=status,
                training_similarity=similarity,
                far_from_training=None if similarity is None else similarity < threshold,
            )
        )
    return results


def _explained(id_: Any, explanation: MoleculeExplanation) -> AtomExplanation:
    def values(array: np.ndarray | None) -> list[float | None] | None:
        return None if array is None else [_number(v) for v in array.tolist()]

    return AtomExplanation(
        id=id_,
        smiles=explanation.smiles,
        status=explanation.status,
        mapped_smiles=explanation.mapped_smiles if explanation.ok else None,
        prediction=_number(explanation.prediction),
        explained_value=_number(explanation.explained_value),
        atom_scores=values(explanation.atom_scores),
        atom_totals=values(explanation.atom_totals),
        bond_scores=values(explanation.bond_scores),
        atom_std=values(explanation.atom_std),
        baseline=explanation.baseline,
        baseline_value=_number(explanation.baseline_value),
        completeness_gap=_number(explanation.completeness_gap),
        unmapped_score=_number(explanation.unmapped_score),
        feature_scores={k: _number(v) for k, v in explanation.feature_scores.items()} or None,
    )


def _number(value: float) -> float | None:
    """A score as JSON: non-finite ones (a failed molecule, a method without a gap) as null."""
    return float(value) if math.isfinite(value) else None


def _model_info(predictor: Predictor, domain: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        kind=predictor.kind,
        tasks=predictor.tasks,
        task_type=predictor.task_type,
        prediction_columns=predictor.prediction_columns(),
        metadata=_plain(predictor.metadata),
        applicability_domain=domain,
    )


def _plain(value: Any) -> Any:
    """``value`` as JSON: numpy scalars as numbers, NaN/inf as null, other objects as text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _finite(value: Any) -> Any:
    """``value`` made JSON-safe, with non-finite floats written as text ("nan", "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return jsonable_encoder(value)
