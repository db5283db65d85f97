"""Timing helper and camera frames shared by the benchmarks."""
from __future__ import annotations

from pathlib import Path
import statistics
import time
from typing import Callable

import cv2
import numpy as np

CAMVID = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'camvid'


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Return the median wall time of ``fn()`` in milliseconds over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def street_frames(size: tuple[int, int], count: int) -> tuple[list[np.ndarray], str]:
    """Return ``count`` RGB street frames of ``size`` (W, H) and where they come from.

    Real frames where ``../shared`` is beside the checkout: the first CamVid test frames (drive
    0001TP, 480x360) resized bilinearly to the camera size, so the network sees real streets and
    MetaFusion real candidates; else frames of the synthetic drive generator.
    """
    names = sorted((CAMVID / 'test').glob('*.png'))[:count]
    if len(names) == count:
        frames = [cv2.resize(cv2.imread(str(name))[:, :, ::-1], size,
                             interpolation=cv2.INTER_LINEAR) for name in names]
        return frames, f'CamVid test {names[0].stem}..{names[-1].stem} resized from 480x360'
    from metafusion_ros.tools.data.synth import render_drive

    drive = render_drive(0, 'test', 0, count, size=size)
    return ([np.ascontiguousarray(image) for _, image, _ in drive],
            'generated synthetic drive (../shared absent)')
