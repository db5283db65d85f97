"""Readers of the node's float images that only the tests use (the node only writes them)."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from metafusion_ros.ros.conversions import BadDataLength, BadStep, UnsupportedEncoding, \
    ZeroSizeImage

__all__ = ['image_to_float']


def image_to_float(msg: Image) -> np.ndarray:
    """Return a 32FC1 Image as ``(H, W)`` float32 (either byte order)."""
    if msg.encoding != '32FC1':
        raise UnsupportedEncoding(f'expected 32FC1, got {msg.encoding!r}')
    if msg.height == 0 or msg.width == 0:
        raise ZeroSizeImage(f'zero-size image {msg.width}x{msg.height}')
    if msg.step < msg.width * 4:
        raise BadStep(f'step {msg.step} is shorter than a row of {msg.width} 32FC1 pixels')
    if len(msg.data) != msg.height * msg.step:
        raise BadDataLength(f'data has {len(msg.data)} bytes, height*step = '
                            f'{msg.height * msg.step}')
    dtype = np.dtype('>f4' if msg.is_bigendian else '<f4')
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, :msg.width * 4].copy().view(dtype).reshape(msg.height, msg.width).astype(
        np.float32)
