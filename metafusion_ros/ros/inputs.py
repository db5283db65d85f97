"""The node's input side without node state: QoS profiles, decoding a frame, skip reasons."""
from __future__ import annotations

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from metafusion_ros.ros.conversions import (check_compressed, compressed_to_rgb, ImageError,
                                            image_to_rgb)

__all__ = ['Message', 'ProcessingError', 'CameraInfoMismatch', 'input_qos', 'LATCHED', 'to_rgb']

Message = Image | CompressedImage
RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
               'reliable': ReliabilityPolicy.RELIABLE}
# Published once, kept for late subscribers (the class table).
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class ProcessingError(RuntimeError):
    """An unexpected failure while processing one frame (counted, logged, node stays up)."""

    reason = 'processing_error'


class CameraInfoMismatch(ImageError):
    """A compressed frame decodes to another size than the camera info declares."""

    reason = 'camera_info_mismatch'


def input_qos(reliability: str, depth: int) -> QoSProfile:
    """Return the QoS of the input subscriptions (``qos.reliability``, ``qos.depth``)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=RELIABILITY[reliability])


def to_rgb(msg: Message, info: CameraInfo | None) -> np.ndarray:
    """Return the frame as RGB; a compressed one is decoded and checked against ``info``."""
    if not isinstance(msg, CompressedImage):
        return image_to_rgb(msg)
    rgb = compressed_to_rgb(msg)
    if info is not None and info.width and info.height and \
            rgb.shape[:2] != (info.height, info.width):
        raise CameraInfoMismatch(
            f'{check_compressed(msg)} decodes to {rgb.shape[1]}x{rgb.shape[0]}, the camera '
            f'info says {info.width}x{info.height}')
    return rgb
