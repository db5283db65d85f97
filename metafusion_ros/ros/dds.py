"""The Fast DDS profile for large camera frames that the package ships (``config/``).

Best-effort frames of about 1 MB and more rarely arrive through Fast DDS' default transports
(measured: 2 of 20 1920x1080 bgr8 frames at 10 Hz between two processes of one host);
``config/fastdds_large_frames.xml`` (shared memory with 32 MiB segments plus UDPv4, built-in
transports off) delivers them when the *publisher* uses it. :func:`use_large_frames_profile`
sets ``FASTDDS_DEFAULT_PROFILES_FILE`` for the processes the package starts (``metafusion bag
play``); a profile the user exported already is kept.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

from metafusion_ros.ros.process import package_file

__all__ = ['PROFILE_ENV', 'PROFILE_FILE', 'large_frames_profile', 'use_large_frames_profile']

PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
PROFILE_FILE = 'fastdds_large_frames.xml'


def large_frames_profile() -> Path:
    """Return the shipped profile (source tree first, else the installed share)."""
    return package_file('config', PROFILE_FILE)


def use_large_frames_profile(env: MutableMapping[str, str] = os.environ) -> str:
    """Point ``env`` at the shipped profile unless it names one already; return the one in use.

    Only Fast DDS reads it: with another ``RMW_IMPLEMENTATION`` nothing is set ('' returned).
    """
    if env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp') not in ('rmw_fastrtps_cpp',
                                                                 'rmw_fastrtps_dynamic_cpp'):
        return ''
    profile = large_frames_profile()
    if PROFILE_ENV not in env and profile.is_file():
        env[PROFILE_ENV] = str(profile.resolve())
    return env.get(PROFILE_ENV, '')
