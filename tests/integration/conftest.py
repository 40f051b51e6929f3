from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callstack import Stack, build_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Control plane + call worker + fake xAI on loopback, with signed phone webhooks."""
    yield from build_stack(tmp_path)
