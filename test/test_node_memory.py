"""The node's memory with large frames: freed frame-sized buffers are reused, not re-mapped."""
import platform
import subprocess
import sys

import pytest

PROBE = '''
import os, sys, time
import numpy as np
from metafusion_ros.runtime.memory import keep_frame_buffers
from metafusion_ros.ros.process import rss_kib
assert keep_frame_buffers() if sys.argv[1] == 'kept' else keep_frame_buffers(4 << 20)
pid = os.getpid()
base = rss_kib(pid)
frame = np.ones(25 << 20, np.uint8)  # a 4K frame's buffer, freed
del frame
kept = (rss_kib(pid) - base) / 1024
start = time.thread_time()
for _ in range(20):  # the next frames' buffers: fresh pages, or the freed ones again
    frame = np.ones(25 << 20, np.uint8)
    del frame
print(kept, (rss_kib(pid) - base) / 1024, (time.thread_time() - start) * 1e3)
'''


def _probe(mode: str) -> tuple[float, float, float]:
    """Return the RSS kept after the first frame and after 20 more (MiB), and their CPU (ms)."""
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True,
                         check=True).stdout
    first, last, cpu_ms = (float(v) for v in out.split()[-3:])
    return first, last, cpu_ms


def test_frame_buffers_stay_mapped_and_are_reused():
    """With the node's thresholds a freed 25 MB buffer stays in RSS and the next ones reuse it.

    With a 4 MiB mmap threshold (the node's setting before) the freed buffer is unmapped (RSS
    drops by it) and each new one faults in 6400 fresh pages, which costs more CPU than
    refilling pages that are there.
    """
    if platform.libc_ver()[0] != 'glibc':
        pytest.skip('the mmap and trim thresholds are glibc settings')
    kept = [_probe('kept') for _ in range(3)]
    mapped = [_probe('mapped') for _ in range(3)]
    for first, last, _ in kept:  # one frame's buffer stays, 20 more frames add nothing
        assert 20 < first < 30 and abs(last - first) < 5, kept
    for first, last, _ in mapped:
        assert first < 5 and last < 5, mapped
    assert min(cpu for *_, cpu in kept) < min(cpu for *_, cpu in mapped), (kept, mapped)
