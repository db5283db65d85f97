"""Compiled kernels of the hot path, each with the plain-numpy reference it must agree with.

- :func:`decision_rules`: one pass over the softmax giving the Bayes and ML masks (eq. 1, 16) and
  the softmax sanity checks, without temporaries the size of the softmax. Each pixel's classes
  are reduced as 8-lane vectors (:mod:`metafusion_ros.core.simd`, up to 64 classes): the class
  sum, the first argmax of ``p`` (Bayes) and of ``p / (p_α + 1e-5)`` (ML), from the reciprocal
  α-adjusted priors per class that the pipeline caches per α and size. Merged classes (rider)
  are excluded; renormalising rescales a pixel's scores by one positive factor, which leaves
  the argmax unchanged, so neither rule renormalises.
- :func:`disagreeing_pixels`: the disagreeing candidates of eq. 11 from a sparse scan of the
  target class's pixels (union-find), never labelling the whole frame.

The numba versions are used when numba is importable (``METAFUSION_DISABLE_NUMBA=1`` turns them
off); the numpy ones are the reference, and the tests check that both agree.
"""
from __future__ import annotations

from dataclasses import dataclass
import os

import numpy as np


__all__ = ['SoftmaxStats', 'decision_rules', 'decision_rules_numpy', 'disagreeing_pixels',
           'HAVE_NUMBA']

try:  # numba is optional: the numpy reference is always available
    if os.environ.get('METAFUSION_DISABLE_NUMBA'):
        raise ImportError('disabled by METAFUSION_DISABLE_NUMBA')
    from .jit import CACHE
    import numba
    from . import simd
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    HAVE_NUMBA = False


@dataclass(frozen=True)
class SoftmaxStats:
    """What the pass saw: pixels with a negative value, and the largest class-sum deviation.

    A NaN or Inf anywhere makes the deviation non-finite; :meth:`check` reports that first.
    """

    bad: int
    max_sum_error: float

    def check(self, atol: float = 1e-3) -> None:
        """Raise ``ValueError`` for NaN/Inf, negative or unnormalised probabilities."""
        if not np.isfinite(self.max_sum_error):
            raise ValueError('softmax contains NaN or Inf')
        if self.bad:
            raise ValueError(f'softmax contains {self.bad} negative probabilities')
        if self.max_sum_error > atol:
            raise ValueError(f'softmax is not normalised: a class sum is off by '
                             f'{self.max_sum_error:.4g}')


def decision_rules_numpy(probs: np.ndarray, inv_prior: np.ndarray | None,
                         channel_map: np.ndarray, merged: tuple[int, ...]
                         ) -> tuple[np.ndarray, np.ndarray, SoftmaxStats]:
    """Return Bayes and ML masks (eq. 1, 16) and softmax stats, in plain numpy.

    ``inv_prior`` (H, W, K) with ``channel_map`` (C,) class -> channel; None means α = 0: the
    ML mask is the Bayes mask.
    """
    sums = probs.sum(axis=2)
    stats = SoftmaxStats(int(np.count_nonzero(~(probs >= 0))),
                         float(np.nan_to_num(np.abs(sums - 1).max(), nan=np.inf, posinf=np.inf)))
    scores = probs.copy()
    scores[..., list(merged)] = -1
    pred_bayes = np.argmax(scores, axis=2).astype(np.uint8)
    if inv_prior is None:
        return pred_bayes, pred_bayes.copy(), stats
    scores = probs * np.take(inv_prior, channel_map, axis=2)
    scores[..., list(merged)] = -1
    return pred_bayes, np.argmax(scores, axis=2).astype(np.uint8), stats


if HAVE_NUMBA:
    @numba.njit(cache=CACHE, nogil=True)
    def _find_root(parent, k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    @numba.njit(cache=CACHE, nogil=True)
    def _union(parent, k, q):
        a, b = _find_root(parent, k), _find_root(parent, q)
        if a != b:
            parent[max(a, b)] = min(a, b)

    @numba.njit(cache=CACHE, nogil=True)
    def _pixels_of(flat, target):
        """Return the raster indices where ``flat == target``, eight pixels per word test."""
        words = flat[:flat.size // 8 * 8].view(np.uint64)
        found = np.empty(flat.size, dtype=np.int64)  # pages are touched only as filled
        n = 0
        ones = np.uint64(0x0101010101010101)
        pattern = ones * np.uint64(target)
        highs = ones * np.uint64(0x80)
        for q in range(words.size):  # a word holding no target byte is skipped in one test
            x = words[q] ^ pattern
            if (x - ones) & ~x & highs:
                for k in range(8 * q, 8 * q + 8):
                    if flat[k] == target:
                        found[n] = k
                        n += 1
        for k in range(8 * words.size, flat.size):
            if flat[k] == target:
                found[n] = k
                n += 1
        return found[:n].copy()

    @numba.njit(cache=CACHE, nogil=True)
    def _components_kernel(pred_ml, pred_bayes, target):
        h, w = pred_ml.shape
        pixels = _pixels_of(pred_ml.ravel(), target)
        n = pixels.size
        parent = np.arange(n)
        interior = np.ones(n, dtype=np.bool_)
        up = 0  # first pixel that may touch the row above (the pixels are in raster order)
        for k in range(n):
            p = pixels[k]
            i, j = divmod(p, w)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    ii, jj = i + di, j + dj
                    if (0 <= ii < h and 0 <= jj < w) and pred_ml[ii, jj] != target:
                        interior[k] = False
            if j > 0 and k > 0 and pixels[k - 1] == p - 1:
                _union(parent, k, k - 1)
            while pixels[up] < p - w - 1:
                up += 1
            for q in range(up, k):  # the up to three 8-neighbours in the row above
                if pixels[q] > p - w + 1:
                    break
                if pixels[q] >= (i - 1) * w and abs(pixels[q] % w - j) <= 1:  # not 2 rows up
                    _union(parent, k, q)
        roots = np.empty(n, dtype=np.int64)
        for k in range(n):
            roots[k] = _find_root(parent, k)
        agree = np.zeros(n, dtype=np.bool_)
        has_interior = np.zeros(n, dtype=np.bool_)
        flat_bayes = pred_bayes.ravel()
        for k in range(n):
            if flat_bayes[pixels[k]] == target:
                agree[roots[k]] = True
            if interior[k]:
                has_interior[roots[k]] = True
        return pixels, roots, agree, has_interior


def _components_numpy(pred_ml: np.ndarray, pred_bayes: np.ndarray, target: int):
    """Plain scipy/numpy twin of ``_components_kernel`` (same outputs)."""
    from scipy import ndimage

    eight = np.ones((3, 3), dtype=bool)
    mask = pred_ml == target
    components, _ = ndimage.label(mask, structure=eight)
    pixels = np.flatnonzero(mask)
    comp = components.ravel()[pixels]
    first = np.full(comp.max(initial=0) + 1, -1, dtype=np.int64)
    first[comp[::-1]] = np.arange(pixels.size)[::-1]
    roots = first[comp]
    agree = np.zeros(pixels.size, dtype=bool)
    agree[roots[pred_bayes.ravel()[pixels] == target]] = True
    interior = ndimage.binary_erosion(mask, structure=eight, border_value=1).ravel()[pixels]
    has_interior = np.zeros(pixels.size, dtype=bool)
    has_interior[roots[interior]] = True
    return pixels, roots, agree, has_interior


def disagreeing_pixels(pred_ml: np.ndarray, pred_bayes: np.ndarray, target: int
                       ) -> tuple[np.ndarray, np.ndarray, int]:
    """Return candidate pixels, their ids 1..n (raster order) and the S_in = 0 count (eq. 11).

    A candidate is an 8-connected component of ML class-c pixels with no Bayes-c pixel and at
    least one interior pixel.
    """
    kernel = _components_kernel if HAVE_NUMBA else _components_numpy
    pixels, roots, agree, has_interior = kernel(
        np.ascontiguousarray(pred_ml, dtype=np.uint8), np.ascontiguousarray(pred_bayes),
        int(target))
    is_root = roots == np.arange(roots.size)
    disagreeing = is_root & ~agree
    keep_root = disagreeing & has_interior
    new_id = np.cumsum(keep_root).astype(np.int32)
    selected = keep_root[roots]
    dropped = int(np.count_nonzero(disagreeing)) - int(np.count_nonzero(keep_root))
    return pixels[selected], new_id[roots[selected]], dropped


def decision_rules(probs: np.ndarray, inv_prior: np.ndarray | None, channel_map: np.ndarray,
                   merged: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, SoftmaxStats]:
    """Return Bayes and ML masks (eq. 1, 16) and softmax stats in one pass over ``probs``.

    ``probs`` (H, W, C); ``inv_prior`` (H, W, K) = ``1 / (p_α + 1e-5)`` per prior channel
    (classes or categories; the pipeline caches it per α and size), or None for α = 0;
    ``channel_map`` (C,) class -> channel; ``merged`` the classes excluded from both argmaxes.
    """
    if inv_prior is not None and inv_prior.shape[:2] != probs.shape[:2]:
        raise ValueError(f'priors {inv_prior.shape[:2]} and softmax {probs.shape[:2]} '
                         f'differ in size')
    h, w, c = probs.shape
    if not HAVE_NUMBA or c > simd.MAX_CLASSES:
        return decision_rules_numpy(probs, inv_prior, channel_map, merged)
    channels = c if inv_prior is None else inv_prior.shape[2]
    layout = simd.Layout.of(channels, channel_map, merged)
    if inv_prior is not None and channels > 2 * simd.LANES and not layout.per_class:
        inv_prior = np.take(inv_prior, channel_map, axis=2)  # > 16 categories: per class
        layout = simd.Layout.of(c, range(c), merged)
    pred_bayes = np.empty((h, w), dtype=np.uint8)
    pred_ml = np.empty((h, w), dtype=np.uint8)
    inverse = None if inv_prior is None else np.ascontiguousarray(inv_prior, np.float32).ravel()
    bad, max_err = simd.rules_kernel(layout.spell())(
        np.ascontiguousarray(probs, np.float32).ravel(), inverse, pred_bayes.ravel(),
        pred_ml.ravel())
    return pred_bayes, pred_ml, SoftmaxStats(int(bad), float(max_err))
