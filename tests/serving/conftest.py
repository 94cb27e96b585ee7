"""The service tests' published index."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.shop import PublishedShop, publish_shop


@pytest.fixture
def shop(tmp_path: Path) -> PublishedShop:
    """One published version of a small catalogue (80 items, 120 users with 3-12 items each)."""
    return publish_shop(tmp_path)
