"""The node's memory with large frames: freed frame-sized buffers go back to the OS."""
import platform
import subprocess
import sys

import pytest

PROBE = '''
import os, sys
import numpy as np
from metafusion_ros.runtime.memory import map_large_buffers
from metafusion_ros.ros.process import rss_kib
if sys.argv[1] == 'mapped':
    assert map_large_buffers()
frame = np.ones(25 << 20, np.uint8)  # a 4K frame, freed: glibc raises its threshold to 25 MB
del frame
base = rss_kib(os.getpid())
mask = np.ones(20 << 20, np.uint8)
small = np.ones(1 << 10, np.uint8)  # allocated after it: the heap cannot shrink past it
del mask
print((rss_kib(os.getpid()) - base) / 1024)
'''


@pytest.mark.parametrize('mode', ['mapped', 'default'])
def test_large_buffers_go_back_to_the_os(mode):
    """With the node's fixed mmap threshold a freed 20 MB buffer leaves RSS.

    With glibc's default (threshold raised by an earlier 25 MB block) it stays on the heap.
    """
    if platform.libc_ver()[0] != 'glibc':
        pytest.skip('the mmap threshold is a glibc setting')
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True,
                         check=True).stdout
    kept_mib = float(out.split()[-1])
    assert (kept_mib < 2) if mode == 'mapped' else (kept_mib > 15), out
