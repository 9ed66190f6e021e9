"""The Gemini ``generateContent`` dialect: ``request`` (client bodies into the canonical
model), ``render`` (what a Gemini client receives), ``upstream`` (toward a Gemini provider
and back) and ``common`` (what more than one of them needs). Import the module you use;
nothing is re-exported."""
