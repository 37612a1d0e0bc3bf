"""A `nobat serve` of its own for each probe, on the demo clinic and a fresh SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.wire import page_server
from tests.support.server import ServerProcess


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """nobat serve with the probes' token, as shipped otherwise."""
    async with page_server(tmp_path) as started:
        yield started
