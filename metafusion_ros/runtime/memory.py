"""Reuse the node's frame-sized buffers instead of mapping fresh pages for every frame.

glibc serves a request above its mmap threshold (128 KiB at first) with a mapping of its own,
unmapped on free; the next frame's buffer is a fresh mapping whose every page faults on first
touch. Each 4K frame allocates about 100 MB of such buffers (the message, the network's input,
the 8 MB mask, its message and rclpy's serialised copy), and the faults cost about 20 ms a frame
on top of the network (measured with ``bench_node``: 45 ms of overhead at 3840x2160 with the
threshold at 4 MiB, 23 ms with it at 64 MiB). glibc also raises the threshold by itself as
blocks are freed and gives heap memory back above a trim threshold, which makes the cost vary.

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
