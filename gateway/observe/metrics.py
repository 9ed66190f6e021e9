"""Prometheus metrics: everything the gateway counts, declared in one place.

Rules:
- One registry per ``Gateway`` (several gateways may share a process in tests), served as
  text at ``GET /metrics``. Under ``arouter serve --workers N`` the parent sets
  ``PROMETHEUS_MULTIPROC_DIR`` before the workers start; every worker then writes its
  values there and any worker's ``/metrics`` reports the sum over all of them.
- The hot path never touches a metric per chunk: requests are observed once, when they
  settle, from the same values the record holds; only the open-streams gauge moves at
  the start and end of a stream.
- Labels are bounded sets (routes, dialects, statuses, phases, configured deployments);
  never a key, a generation id or a free-text message.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.store.rows import RequestRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_PROPAGATION = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


MAX_MODEL_LABELS = 500


class Metrics:
    def __init__(self) -> None:
        self._seen: set[str] = set()
        registry = self.registry = CollectorRegistry()
        self.requests = Counter(
            "arouter_requests", "Generation requests by route, dialect and HTTP status.",
            ["route", "dialect", "status"], registry=registry,
        )
        self.outcomes = Counter(
            "arouter_request_outcomes", "Settled requests by outcome (the record's status).",
            ["outcome"], registry=registry,
        )
        self.ttft = Histogram(
            "arouter_time_to_first_token_seconds", "Request start to first upstream event.",
            ["route"], buckets=_LATENCY, registry=registry,
        )
        self.duration = Histogram(
            "arouter_request_duration_seconds", "Request start to settle.",
            ["route", "stream"], buckets=_LATENCY, registry=registry,
        )
        self.open_streams = Gauge(
            "arouter_open_streams", "Streams currently relayed.", registry=registry,
            multiprocess_mode="livesum",
        )
        self.cancellations = Counter(
            "arouter_cancellations",
            "Client disconnects by phase: upload, before_first_token, streaming, "
            "after_upstream_done.",
            ["phase"], registry=registry,
        )
        self.cancel_propagation = Histogram(
            "arouter_cancel_propagation_seconds",
            "Client disconnect seen -> upstream connection closed.",
            buckets=_PROPAGATION, registry=registry,
        )
        self.upstream_errors = Counter(
            "arouter_upstream_errors", "Upstream failures by deployment and error type.",
            ["deployment", "type"], registry=registry,
        )
        self.tokens = Counter(
            "arouter_tokens", "Tokens by model and kind (prompt, completion).",
            ["model", "kind"], registry=registry,
        )
        self.settle = Histogram(
            "arouter_settle_seconds", "Request end to its record committed (group commit).",
            buckets=(*_PROPAGATION[3:], 1, 2.5, 5), registry=registry,
        )
        self.cost = Counter(
            "arouter_cost_micro_usd", "Cost charged, in micro-dollars, by model.",
            ["model"], registry=registry,
        )
        self.overruns = Counter(
            "arouter_reservation_overruns",
            "Settlements whose real cost exceeded the credits reserved at admission.",
            registry=registry,
        )
        self.reconciled = Counter(
            "arouter_reservations_reconciled",
            "Reservations of dead gateway processes settled as interrupted.",
            registry=registry,
        )
        self.limiter_degraded = Gauge(
            "arouter_limiter_degraded",
            "1 while the shared (Redis) rate limiter is unreachable and limits are local.",
            registry=registry, multiprocess_mode="max",
        )
        self.store_errors = Counter(
            "arouter_store_errors", "Store failures by operation.", ["operation"],
            registry=registry,
        )
        self.attempts = Counter(
            "arouter_upstream_attempts",
            "Upstream calls by deployment and outcome (ok, hedge_lost, cancelled, error type).",
            ["deployment", "outcome"], registry=registry,
        )
        self.circuit = Gauge(
            "arouter_deployment_circuit",
            "Each deployment's circuit: 0 closed, 1 open, 2 half-open (per process).",
            ["deployment"], registry=registry, multiprocess_mode="max",
        )
        self.rejections = Counter(
            "arouter_rejections", "Requests refused before any upstream call, by status.",
            ["route", "status"], registry=registry,
        )

    def bounded(self, value: str) -> str:
        # Model names under a permissive provider come from clients: cap the label set.
        if value in self._seen or len(self._seen) < MAX_MODEL_LABELS:
            self._seen.add(value)
            return value
        return "other"

    def observe(self, record: RequestRecord, route: str, propagation: float | None) -> None:
        """One settled request."""
        self.requests.labels(route, record.client_dialect, str(record.http_status)).inc()
        self.outcomes.labels(record.status).inc()
        if record.ttft_ms is not None:
            self.ttft.labels(route).observe(record.ttft_ms / 1000)
        self.duration.labels(route, "true" if record.stream else "false").observe(
            record.duration_ms / 1000
        )
        deployment = self.bounded(record.deployment or "none")  # no call was made
        if record.error_type is not None and record.status in ("partial", "upstream_error"):
            self.upstream_errors.labels(deployment, record.error_type).inc()
        if propagation is not None:
            self.cancel_propagation.observe(propagation)
        model = self.bounded(record.model)
        self.tokens.labels(model, "prompt").inc(record.prompt_tokens)
        self.tokens.labels(model, "completion").inc(record.completion_tokens)
        self.cost.labels(model).inc(record.cost)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
