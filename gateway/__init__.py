"""arouter: a self-hosted LLM API gateway on Trio. See README.md and the module docstrings."""

__version__ = "0.1.0"
