"""The canonical model's own invariants (the dialects' conversions are tested in tests/wire)."""

from __future__ import annotations

import pytest

from gateway.canonical import ToolChoice


@pytest.mark.parametrize("mode", ["auto", "none", "required"])
def test_only_a_tool_choice_of_one_tool_names_it(mode: str) -> None:
    assert ToolChoice("tool", "f").name == "f"
    with pytest.raises(ValueError, match="names a tool"):
        ToolChoice("tool")
    with pytest.raises(ValueError, match="names a tool"):
        ToolChoice(mode, "f")  # type: ignore[arg-type]
