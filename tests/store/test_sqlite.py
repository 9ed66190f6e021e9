"""The embedded store's failures, as clients and operators read them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.errors import StoreUnavailable
from gateway.store.sqlite import SqliteStore

CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]+(Error|Exception)\b")


async def test_a_database_that_cannot_be_opened_says_why_in_words(tmp_path: Path) -> None:
    folder = tmp_path / "is-a-folder.db"
    folder.mkdir()
    with pytest.raises(StoreUnavailable) as info:
        await SqliteStore(folder).open()
    assert str(folder) in info.value.message
    assert "the database file cannot be opened" in info.value.message
    assert not CLASS_NAME.search(info.value.message)


async def test_a_file_that_is_not_a_database_says_so(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, it is a shopping list " * 100)
    with pytest.raises(StoreUnavailable) as info:
        await SqliteStore(path).open()
    assert "not a database" in info.value.message
    assert not CLASS_NAME.search(info.value.message)
