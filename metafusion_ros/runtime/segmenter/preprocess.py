"""Preprocessing and output resampling declared by configuration.

A network is described by its :class:`Preprocess`: the input size it was exported with, the
pixel scale, mean and standard deviation, the channel order (``RGB`` or ``BGR``) and the layout
(``NCHW`` or ``NHWC``). Camera images (RGB uint8, any size) are resized to the input size
(bilinear; see :data:`REDUCING_GAP`), normalised and laid out accordingly. Network outputs go
back to the camera resolution: label maps by nearest neighbour (:class:`Nearest`: pixel
centres, OpenCV's ``INTER_NEAREST_EXACT``; the same index maps give candidate boxes and areas in
camera pixels), probabilities and heatmaps bilinearly (PIL's bilinear filter; when enlarging,
OpenCV computes the same interpolation for all channels in one call, an order of magnitude
faster than PIL channel by channel).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import functools
from typing import Any

import cv2
import numpy as np
from PIL import Image

__all__ = ['Preprocess', 'Nearest', 'resize_image', 'resize_maps']

_LAYOUTS = ('NCHW', 'NHWC')
_ORDERS = ('RGB', 'BGR')
_CV_MAX_CHANNELS = 512  # OpenCV's CV_CN_MAX
# Camera images at least 3x the input size are first box-reduced by an integer factor (PIL's
# reducing_gap): a 4K frame to 512x256 in half the time, within a few grey levels of the exact
# filter (2 on a rendered street); smaller factors (1080p and below to 512x256, every dataset
# frame) are resized exactly.
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Preprocess:
    """Input size, normalisation ``(x * scale - mean) / std``, channel order and layout."""

    width: int
    height: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0
    channel_order: str = 'RGB'
    layout: str = 'NCHW'

    def __post_init__(self) -> None:
        if int(self.width) < 1 or int(self.height) < 1:
            raise ValueError(f'preprocess: input size must be positive, got '
                             f'{self.width}x{self.height}')
        if self.layout not in _LAYOUTS:
            raise ValueError(f'preprocess: layout must be one of {_LAYOUTS}, got {self.layout!r}')
        if self.channel_order not in _ORDERS:
            raise ValueError(f'preprocess: channel_order must be one of {_ORDERS}, '
                             f'got {self.channel_order!r}')
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError('preprocess: mean and std need 3 values each')
        if any(float(s) <= 0 for s in self.std):
            raise ValueError(f'preprocess: std must be positive, got {list(self.std)}')
        object.__setattr__(self, 'mean', tuple(float(v) for v in self.mean))
        object.__setattr__(self, 'std', tuple(float(v) for v in self.std))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Return the network input shape (batch 1) in the declared layout."""
        if self.layout == 'NCHW':
            return (1, 3, self.height, self.width)
        return (1, self.height, self.width, 3)

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        """Return the float32 network input for an RGB uint8 ``(H, W, 3)`` image."""
        if not isinstance(image_rgb, np.ndarray):
            raise TypeError(f'image must be a numpy array, got {type(image_rgb).__name__}')
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f'image must be RGB uint8 (H, W, 3), got {image_rgb.dtype} '
                             f'{image_rgb.shape}')
        if image_rgb.shape[:2] != (self.height, self.width):
            image_rgb = resize_image(image_rgb, (self.width, self.height))
        order = (2, 1, 0) if self.channel_order == 'BGR' else (0, 1, 2)
        x = np.empty(self.input_shape, dtype=np.float32)
        planes = x[0] if self.layout == 'NCHW' else x[0].transpose(2, 0, 1)
        for plane, channel in zip(planes, order):
            plane[...] = self._levels[channel][image_rgb[:, :, channel]]
        return x

    @functools.cached_property
    def _levels(self) -> np.ndarray:
        """Return ``(x * scale - mean) / std`` (float32) of each grey level, per channel (3, 256).

        A frame is normalised by one lookup per pixel and channel, with the same float32
        arithmetic per value as computing it pixel by pixel.
        """
        levels = np.arange(256, dtype=np.float32)[:, None] * np.float32(self.scale)
        return ((levels - np.asarray(self.mean, np.float32))
                / np.asarray(self.std, np.float32)).T.copy()

    def to_dict(self) -> dict[str, Any]:
        """Serialise to JSON-compatible data."""
        data = asdict(self)
        data['mean'], data['std'] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'Preprocess':
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ValueError(f'preprocess: expected a mapping, got {type(data).__name__}')
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f'preprocess: unknown keys {sorted(unknown)}')
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f'preprocess: {exc}') from exc


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to ``size`` = (W, H): PIL's bilinear with ``REDUCING_GAP``.

    PIL first box-reduces by integer factors. A 2x2 reduction of an even-sized frame (4K to a
    512x256 network) runs in OpenCV instead: ``INTER_AREA`` at exactly 2x2 is the same rounded
    box mean (other factors round differently), in a fraction of the time and without PIL's
    4-byte copy of the full frame. A channel-reversed view (a bgr8 camera frame read as RGB) is
    resized as the BGR frame it views, and reversed at the new size: the filters work channel
    by channel, so the result is the same, without a copy of the frame.
    """
    if rgb.strides[2] < 0:
        return resize_image(rgb[:, :, ::-1], size)[:, :, ::-1]
    height, width = rgb.shape[:2]
    fx = max(int(width / size[0] / REDUCING_GAP), 1)
    fy = max(int(height / size[1] / REDUCING_GAP), 1)
    if fx == fy == 2 and width % 2 == 0 and height % 2 == 0:
        rgb = cv2.resize(rgb, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR,
                                                  reducing_gap=REDUCING_GAP))


def _nearest_index(source: int, target: int) -> np.ndarray:
    """Return, for each of ``target`` pixels along an axis, its nearest of ``source`` pixels."""
    ramp = np.arange(source, dtype=np.int32)[:, None]
    return cv2.resize(ramp, (1, target), interpolation=cv2.INTER_NEAREST_EXACT).ravel()


@dataclass(frozen=True, eq=False)
class Nearest:
    """Nearest-neighbour resampling of ``(h, w)`` maps to ``(H, W)`` by pixel centres.

    ``rows`` (H,) and ``cols`` (W,) give each target pixel's source row and column (monotone).
    Label maps, candidate boxes and candidate areas all follow these maps, so a box or area
    in target pixels is exactly that of the candidate in the resampled label map.
    """

    source: tuple[int, int]
    target: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    @functools.lru_cache(maxsize=16)
    def between(cls, source: tuple[int, int], target: tuple[int, int]) -> 'Nearest':
        """Return the resampling from ``source`` = (h, w) to ``target`` = (H, W) (cached)."""
        (h, w), (height, width) = source, target
        return cls((h, w), (height, width), _nearest_index(h, height), _nearest_index(w, width))

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """Return the ``(h, w)`` uint8 label map resampled to ``(H, W)``."""
        if labels.shape[:2] == self.target:
            return labels
        return cv2.resize(np.ascontiguousarray(labels, np.uint8), self.target[::-1],
                          interpolation=cv2.INTER_NEAREST_EXACT)

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Return half-open ``(row0, col0, row1, col1)`` boxes in target pixels.

        A source box maps to the target pixels whose source lies in it: when enlarging that is
        exactly the box of the segment in the resampled map; when shrinking it holds the
        segment's sampled pixels, and is empty (``row0 == row1`` or ``col0 == col1``) when no
        target pixel samples the box.
        """
        boxes = np.asarray(boxes).reshape(-1, 4)
        rows = np.searchsorted(self.rows, boxes[:, [0, 2]])
        cols = np.searchsorted(self.cols, boxes[:, [1, 3]])
        return np.stack([rows[:, 0], cols[:, 0], rows[:, 1], cols[:, 1]], axis=1).astype(
            np.int32)

    def areas(self, pixels: np.ndarray, pixel_ids: np.ndarray, count: int) -> np.ndarray:
        """Return the target-pixel area of segments given sparsely (source flat indices, ids)."""
        row_weight = np.bincount(self.rows, minlength=self.source[0])
        col_weight = np.bincount(self.cols, minlength=self.source[1])
        rows, cols = np.divmod(pixels, self.source[1])
        weights = row_weight[rows] * col_weight[cols]
        return np.bincount(pixel_ids, weights, minlength=count + 1)[1:].astype(np.int64)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float maps ``(h, w)`` or ``(h, w, K)`` to ``size`` = (H, W) bilinearly.

    Enlarging (the usual case: network output to camera resolution) runs in OpenCV, which
    interpolates between the same pixel centres as PIL; shrinking stays with PIL, whose bilinear
    filter then averages over the footprint where OpenCV's would not.
    """
    if maps.shape[:2] == tuple(size):
        return maps
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    channels = maps.shape[2] if maps.ndim == 3 else 1
    if size[0] >= maps.shape[0] and size[1] >= maps.shape[1] and channels <= _CV_MAX_CHANNELS:
        out = cv2.resize(maps, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        return out.reshape(*size, channels) if maps.ndim == 3 else out
    return _resize_maps_pil(maps, size)


def _resize_maps_pil(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float32 maps with PIL's bilinear filter, one channel at a time."""
    if maps.ndim == 2:
        return np.asarray(Image.fromarray(maps).resize((size[1], size[0]), Image.BILINEAR))
    return np.stack([_resize_maps_pil(np.ascontiguousarray(maps[..., k]), size)
                     for k in range(maps.shape[2])], axis=-1)
