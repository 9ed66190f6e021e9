"""The configuration reference (``docs/configuration.md``) is complete and current.

Complete: the keys it documents are exactly the keys the loader looks up, found by watching
the loader read (``config_reference.loader_keys``), and every environment variable the
loader reads is documented. Current: the committed page equals a fresh rendering.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway import config as config_mod
from gateway import config_reference
from gateway.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"


def test_the_committed_page_is_a_fresh_rendering() -> None:
    assert PAGE.read_text(encoding="utf-8") == config_reference.render(), (
        "docs/configuration.md is stale: arouter config reference > docs/configuration.md")


def test_arouter_config_reference_prints_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == PAGE.read_text(encoding="utf-8")


def test_every_key_the_loader_reads_is_documented_and_no_other() -> None:
    read, variables = config_reference.loader_keys()
    documented = config_reference.documented_keys()
    assert read - documented == set(), "keys the loader reads that the page does not document"
    assert documented - read == set(), "keys the page documents that the loader never reads"
    assert {"server.database", "server.workers_per_core", "models.<alias>.deployments[].weight",
            "<price>.cache_write"} <= documented
    assert variables - config_reference.documented_variables() == set()
    assert {"AROUTER_DATABASE_URL", "AROUTER_DATA_DIR", "OPENAI_BASE_URL"} <= variables


def test_a_key_added_to_the_loader_without_documentation_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above can fail: a loader that reads one more key, however it reads it."""
    original = config_mod._workers

    def reads_more(server: Any) -> int:
        server.raw.get("backlog")  # as a new key would be read (present or not)
        return original(server)

    monkeypatch.setattr(config_mod, "_workers", reads_more)
    read, _ = config_reference.loader_keys()
    assert read - config_reference.documented_keys() == {"server.backlog"}


def test_defaults_are_written_as_a_file_would_write_them() -> None:
    """Spot checks of the rendering: integers, whole and fractional seconds, strings."""
    page = PAGE.read_text(encoding="utf-8")
    assert "| `port` | integer, 0 to 65535 | `8080` |" in page
    assert "| `drain` | number > 0 (seconds) | `120` |" in page
    assert "| `backoff` | number > 0 (seconds) | `0.25` |" in page
    assert '| `strategy` | `"weighted"` or `"least_busy"` | `"weighted"` |' in page


def test_the_readme_links_the_page_and_the_example_names_every_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    configuration = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert "(docs/configuration.md)" in configuration
    example = (ROOT / "deploy" / "arouter.example.toml").read_text(encoding="utf-8")
    assert re.search(r"^# database = ", example, re.M)
    config_mod.load(ROOT / "deploy" / "arouter.example.toml", {})  # still loads
