"""The Anthropic Messages dialect: ``request`` (client bodies into the canonical model),
``render`` (what an Anthropic client receives), ``upstream`` (toward an Anthropic provider
and back) and ``common`` (what two of them share). Import the module you use; nothing is
re-exported."""
