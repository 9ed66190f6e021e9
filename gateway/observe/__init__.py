"""Observability: Prometheus metrics, JSON logs, and the one redactor every output uses."""
