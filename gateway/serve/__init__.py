"""Serving: hypercorn under the gateway's own loop, strict framing, preflight, workers."""
