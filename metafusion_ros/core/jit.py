"""Where numba keeps compiled kernels: a writable per-user folder, or no cache at all.

numba's default places its cache beside the module (``install/`` of a colcon workspace, often
read-only) and then in the user's home; when neither is writable, a ``cache=True`` kernel fails
at import ("cannot cache function ...: no locator available"). The kernels therefore decorate
with ``cache=CACHE``, where the folder is chosen here, before any of them is compiled:
``NUMBA_CACHE_DIR`` if set and writable, else ``$ROS_HOME/metafusion_ros/numba`` when
``ROS_HOME`` is set, else ``$XDG_CACHE_HOME`` (default ``~/.cache``)
``/metafusion_ros/numba``. When none of them is writable the kernels compile on every start
without a cache (slower start-up, never a crash).
"""
from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Mapping

__all__ = ['candidate_dirs', 'writable', 'choose_cache_dir', 'CACHE', 'CACHE_DIR']


def candidate_dirs(env: Mapping[str, str]) -> list[Path]:
    """Return the cache folders to try, in order of preference."""
    found = []
    if env.get('NUMBA_CACHE_DIR'):
        found.append(Path(env['NUMBA_CACHE_DIR']))
    if env.get('ROS_HOME'):
        found.append(Path(env['ROS_HOME']) / 'metafusion_ros' / 'numba')
    xdg = env.get('XDG_CACHE_HOME') or (
        str(Path(env['HOME']) / '.cache') if env.get('HOME') else '')
    if xdg:
        found.append(Path(xdg) / 'metafusion_ros' / 'numba')
    return found


def writable(folder: Path) -> bool:
    """Return whether ``folder`` exists or can be created, and a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=folder, prefix='.probe-')
        os.close(handle)
        os.unlink(name)
        return True
    except OSError:
        return False


def choose_cache_dir(env: Mapping[str, str]) -> Path | None:
    """Return the first writable cache folder of :func:`candidate_dirs`, or None."""
    return next((folder for folder in candidate_dirs(env) if writable(folder)), None)


CACHE_DIR = choose_cache_dir(os.environ)
CACHE = CACHE_DIR is not None
if CACHE:
    os.environ['NUMBA_CACHE_DIR'] = str(CACHE_DIR)  # read by numba at import (and by children)
    try:
        from numba.core import config as _config
        _config.CACHE_DIR = str(CACHE_DIR)  # numba may have been imported before this module
    except ImportError:  # pragma: no cover - numba is optional
        pass
