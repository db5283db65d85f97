"""Reuse the node's frame-sized buffers instead of mapping fresh pages for every frame.

glibc serves a request above its mmap threshold (128 KiB at first) with a mapping of its own,
unmapped on free; the next frame's buffer is a fresh mapping whose every page faults on first
touch. A 4K frame allocates tens of MB of such buffers (the message, the resized frame, the
8 MB mask, its message and rclpy's serialised copy), and with the threshold fixed at 4 MiB (this
module's setting before) the faults were most of the node's time on top of the network at 4K
(``bench_node``'s ``stage_ms_p50``: preprocessing, conversion and publishing). glibc also raises
the threshold by itself as blocks are freed and gives heap memory back above a trim threshold,
which makes the cost vary.

:func:`keep_frame_buffers` fixes both: buffers up to :data:`MMAP_THRESHOLD` come from the heap
and freed heap memory is kept up to :data:`TRIM_THRESHOLD`, so frame after frame reuses the same
pages. Memory then rises to a high-water mark in the first seconds of a stream and stays there
(``bench_node``'s overload rows, after their warm-up).
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ['keep_frame_buffers', 'MMAP_THRESHOLD', 'TRIM_THRESHOLD']

MMAP_THRESHOLD = 64 << 20  # bytes: a 4K frame (25 MB) and its buffers come from the heap
TRIM_THRESHOLD = 256 << 20  # bytes: freed heap memory kept for the next frames
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


def keep_frame_buffers(mmap_threshold: int = MMAP_THRESHOLD,
                       trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Fix glibc's mmap and trim thresholds (bytes); return False where that is not glibc."""
    name = ctypes.util.find_library('c')
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and \
        bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
