"""Keep the node's memory flat with large frames: big buffers go back to the OS when freed.

glibc serves a request above its mmap threshold with its own mapping, unmapped on free; but it
raises the threshold to the size of each such block freed (up to 32 MiB), so from then on the
per-frame arrays of a 4K stream (25 MB images, 8 MB masks) come from heap arenas, one per
thread, that fragment and grow under load (+100 MiB in 30 s measured with ``bench_node``). A
fixed threshold switches that adjustment off.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ['map_large_buffers', 'MMAP_THRESHOLD']

MMAP_THRESHOLD = 4 << 20  # bytes: every frame-sized buffer is mapped on its own
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def map_large_buffers(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; return False where that is not glibc."""
    name = ctypes.util.find_library('c')
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
