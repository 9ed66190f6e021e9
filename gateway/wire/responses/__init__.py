"""The OpenAI Responses API as a client dialect (``POST /v1/responses``): ``request.py``
reads a body into the canonical request, ``render.py`` writes the answer, streamed as
Responses events or whole as a ``response`` object."""
