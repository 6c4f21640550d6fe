"""Prometheus metrics of one service (their own registry, never the process-global one)."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SIMILARITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class ServiceMetrics:
    """The counters and histograms ``GET /metrics`` exposes.

    Args:
        with_domain: also track similarity to the training set (a reference set was given).
    """

    def __init__(self, with_domain: bool) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "molml_http_requests", "HTTP requests by endpoint and status code",
            ["endpoint", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "molml_http_request_duration_seconds", "Time to answer a request, by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.molecules = Counter(
            "molml_molecules", "Molecules predicted (valid or not)", ["model"], registry=r
        )
        self.invalid = Counter(
            "molml_invalid_molecules", "Molecules whose status is not ok", ["model"], registry=r
        )
        self.model_calls = Counter(
            "molml_model_calls", "Model calls (one per gathered batch)", ["model"], registry=r
        )
        self.batch_molecules = Histogram(
            "molml_model_batch_molecules", "Molecules per model call",
            ["model"], buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.similarity: Histogram | None = None
        self.far: Counter | None = None
        self.far_share: Gauge | None = None
        self._domain_counts: dict[str, tuple[int, int]] = {}  # model -> (checked, far)
        if with_domain:
            self.similarity = Histogram(
                "molml_training_similarity",
                "Maximum Tanimoto similarity (ECFP4) of a valid molecule to the reference set",
                ["model"], buckets=SIMILARITY_BUCKETS, registry=r,
            )  # fmt: skip
            self.far = Counter(
                "molml_far_from_training_molecules",
                "Valid molecules whose similarity to the reference set is below the threshold",
                ["model"], registry=r,
            )  # fmt: skip
            self.far_share = Gauge(
                "molml_far_from_training_share",
                "Share of the valid molecules so far that were far from the reference set",
                ["model"], registry=r,
            )  # fmt: skip

    def model_call(self, model: str, molecules: int) -> None:
        """One call of a model on ``molecules`` molecules."""
        self.model_calls.labels(model).inc()
        self.batch_molecules.labels(model).observe(molecules)

    def molecules_scored(
        self, model: str, status: list[str], similarity: np.ndarray | None, threshold: float
    ) -> None:
        """Count a request's molecules, its invalid ones and those far from the training set."""
        self.molecules.labels(model).inc(len(status))
        self.invalid.labels(model).inc(sum(s != "ok" for s in status))
        if similarity is None or self.similarity is None or self.far is None:
            return
        valid = similarity[~np.isnan(similarity)]
        histogram = self.similarity.labels(model)
        for value in valid:
            histogram.observe(float(value))
        far = int((valid < threshold).sum())
        self.far.labels(model).inc(far)
        checked, far_before = self._domain_counts.get(model, (0, 0))
        checked, far = checked + len(valid), far_before + far
        self._domain_counts[model] = (checked, far)
        if checked and self.far_share is not None:
            self.far_share.labels(model).set(far / checked)


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by route and status code, and
    refuses request bodies over ``max_body_bytes`` with 413 and bodies that are not declared
    JSON with 415, before they are parsed."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        received = 0
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_large = HTTPException(
            413,
            f"request body is larger than {limit} bytes; send fewer molecules per request",
        )

        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        media_type = content_type.split(";", 1)[0].strip().lower()

        async def limited_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > limit:
                raise too_large
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise HTTPException(
                    415,
                    "send the request body as JSON with the header 'Content-Type: "
                    f"application/json' (got {content_type or 'no Content-Type'!r})",
                )
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large
            return message

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
