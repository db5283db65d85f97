"""Shared fixtures: ../shared (golden files, CamVid) beside the checkout; no leftover nodes."""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    """Return ../shared, or skip the test with a clear reason when it is absent."""
    if not (SHARED / 'golden').is_dir():
        pytest.skip(f'../shared (golden files, CamVid) is not beside the checkout: {SHARED}')
    return SHARED


@pytest.fixture(scope='session', autouse=True)
def no_leftover_nodes():
    """Kill, at the end of the session, any node process a failed test left running."""
    yield
    from test_node_harness import kill_leftovers
    kill_leftovers()
