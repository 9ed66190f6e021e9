"""Fixtures for the upstream client's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.config import Deadlines
from gateway.providers.http import ClientPool


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    clients = ClientPool(Deadlines(connect=2.0))
    yield clients
    await clients.aclose()
