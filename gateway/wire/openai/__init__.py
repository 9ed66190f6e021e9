"""The OpenAI Chat Completions dialect: ``request`` (client bodies into the canonical
model), ``render`` (what an OpenAI client receives) and ``upstream`` (toward an
OpenAI-compatible provider and back). Import the module you use; nothing is re-exported."""
