"""Shared fixtures: ../shared beside the checkout; package logs reach caplog; no leftover nodes."""
import logging
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
PACKAGE_LOGGER = 'metafusion_ros'


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    """Return ../shared, or skip the test with a clear reason when it is absent."""
    if not (SHARED / 'golden').is_dir():
        pytest.skip(f'../shared (golden files, CamVid) is not beside the checkout: {SHARED}')
    return SHARED


@pytest.fixture(autouse=True)
def package_logs_propagate():
    """Route the package's own loggers to the root logger (caplog's handler) for each test.

    Importing ``launch`` (a ROS install's launch_testing plugin does so at collection) sets
    ``logging.setLoggerClass(LaunchLogger)``, whose loggers have ``propagate = False``: a
    module imported afterwards logs past caplog. For the test's duration every existing
    ``metafusion_ros`` logger propagates and loggers created meanwhile are plain ones.
    """
    manager = logging.Logger.manager
    loggers = [logger for name, logger in list(manager.loggerDict.items())
               if isinstance(logger, logging.Logger)
               and (name == PACKAGE_LOGGER or name.startswith(PACKAGE_LOGGER + '.'))]
    saved = [(logger, logger.propagate) for logger in loggers]
    logger_class = logging.getLoggerClass()
    logging.setLoggerClass(logging.Logger)
    for logger in loggers:
        logger.propagate = True
    try:
        yield
    finally:
        logging.setLoggerClass(logger_class)
        for logger, propagate in saved:
            logger.propagate = propagate


@pytest.fixture(scope='session', autouse=True)
def no_leftover_nodes():
    """Kill, at the end of the session, any node process a failed test left running."""
    yield
    from test_node_harness import kill_leftovers
    kill_leftovers()
