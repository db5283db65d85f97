"""Segments (§3, §4): 8-connected components, interior/boundary pixels, disagreeing candidates.

A segment is a connected component of pixels with the same predicted class under 8-connectivity.
A segment pixel is a *boundary* pixel if any pixel of its 3x3 window (clipped at the image border)
has a different label; otherwise it is *interior*. Ids are 1..n in raster order of each segment's
first pixel, as in the reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metafusion_ros.core import kernels

__all__ = ['Candidates', 'disagreeing_candidates', 'check_label_map']


@dataclass(frozen=True, eq=False)
class Candidates:
    """Disagreeing segments of class c (eq. 11) that go to the meta classifier (``S_in > 0``).

    Stored sparsely: ``pixels`` are the flat indices (raster order) of all candidate pixels and
    ``pixel_ids`` their candidate ids 1..n (raster order of each candidate's first pixel);
    ``boxes`` are ``(row0, col0, row1, col1)`` half-open; ``sizes`` are ``S``; ``dropped``
    counts disagreeing segments with ``S_in = 0``, which take the Bayes label. ``agreeing``
    are the flat indices of the ML class-c segments with ``S_in > 0`` that hold a Bayes-c
    pixel: never candidates, kept whole by the authors' fusion (spec §5).
    """

    pixels: np.ndarray
    pixel_ids: np.ndarray
    shape: tuple[int, int]
    boxes: np.ndarray
    sizes: np.ndarray
    dropped: int
    agreeing: np.ndarray

    @property
    def count(self) -> int:
        """Return the number of candidates ``n``."""
        return len(self.sizes)

    @property
    def ids(self) -> np.ndarray:
        """Return the candidate ids ``1..n``."""
        return np.arange(1, self.count + 1, dtype=np.int32)

    @property
    def labels(self) -> np.ndarray:
        """Return the ``(H, W)`` int32 map of candidate ids (0 elsewhere)."""
        labels = np.zeros(self.shape, dtype=np.int32)
        labels.ravel()[self.pixels] = self.pixel_ids
        return labels


def check_label_map(pred: np.ndarray, name: str = 'label map') -> np.ndarray:
    """Validate a 2-D integer label map; raise ``TypeError``/``ValueError`` naming ``name``."""
    if not isinstance(pred, np.ndarray):
        raise TypeError(f'{name} must be a numpy array, got {type(pred).__name__}')
    if pred.ndim != 2:
        raise ValueError(f'{name} must have rank 2 (H, W), got shape {pred.shape}')
    if not np.issubdtype(pred.dtype, np.integer):
        raise TypeError(f'{name} must be an integer array, got {pred.dtype}')
    return pred


def disagreeing_candidates(pred_ml: np.ndarray, pred_bayes: np.ndarray,
                           target: int) -> Candidates:
    """Return ML segments of class c with no Bayes-c pixel and ``S_in > 0`` (eq. 11).

    Only the ML mask's class-c pixels are visited (:func:`kernels.disagreeing_pixels`), so the
    cost follows the (small) area of the target class, not the frame.
    """
    check_label_map(pred_ml, 'ML prediction')
    check_label_map(pred_bayes, 'Bayes prediction')
    if pred_ml.shape != pred_bayes.shape:
        raise ValueError(f'ML {pred_ml.shape} and Bayes {pred_bayes.shape} masks differ in size')
    pixels, pixel_ids, dropped, agreeing = kernels.disagreeing_pixels(pred_ml, pred_bayes,
                                                                      target)
    n = int(pixel_ids.max(initial=0))
    boxes = _boxes(pixels, pixel_ids, n, pred_ml.shape[1])
    sizes = np.bincount(pixel_ids, minlength=n + 1)[1:].astype(np.int64)
    return Candidates(pixels, pixel_ids, pred_ml.shape, boxes, sizes, dropped, agreeing)


def _boxes(pixels: np.ndarray, pixel_ids: np.ndarray, n: int, width: int) -> np.ndarray:
    """Return the half-open ``(row0, col0, row1, col1)`` box of each id 1..n."""
    if n == 0:
        return np.zeros((0, 4), dtype=np.int32)
    order = np.argsort(pixel_ids, kind='stable')
    rows, cols = np.divmod(pixels[order], width)
    starts = np.searchsorted(pixel_ids[order], np.arange(1, n + 1))
    return np.stack([np.minimum.reduceat(rows, starts), np.minimum.reduceat(cols, starts),
                     np.maximum.reduceat(rows, starts) + 1,
                     np.maximum.reduceat(cols, starts) + 1], axis=1).astype(np.int32)
