"""Shared fixtures: the read-only ../shared folder (golden files, CamVid) beside the checkout."""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    """Return ../shared, or skip the test with a clear reason when it is absent."""
    if not (SHARED / 'golden').is_dir():
        pytest.skip(f'../shared (golden files, CamVid) is not beside the checkout: {SHARED}')
    return SHARED
