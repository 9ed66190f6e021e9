"""The wire formats, sans-I/O: SSE, strict JSON, and one package per dialect.

Each of ``openai``, ``anthropic`` and ``gemini`` holds ``request`` (client body to the
canonical model), ``render`` (canonical events to the client's stream) and ``upstream``
(the same dialect toward a provider). Rule: no module here imports I/O (checked by
``tests/test_layering.py``).
"""
