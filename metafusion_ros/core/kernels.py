"""Compiled (numba) kernels of the hot path.

- :func:`decision_rules`: one pass over the softmax giving the Bayes and ML masks (eq. 1, 16) and
  the softmax sanity checks, without temporaries the size of the softmax. Each pixel's classes
  are reduced as 8-lane vectors (:mod:`metafusion_ros.core.simd`, up to 64 classes): the class
  sum, the first argmax of ``p`` (Bayes) and of ``p / (p_α + 1e-5)`` (ML), from the reciprocal
  α-adjusted priors per class that the pipeline caches per α and size. Merged classes (rider)
  are excluded; renormalising rescales a pixel's scores by one positive factor, which leaves
  the argmax unchanged, so neither rule renormalises.
- :func:`disagreeing_pixels`: the disagreeing candidates of eq. 11 from a sparse scan of the
  target class's pixels, never labelling the whole frame: union-find over their horizontal
  runs (a run touches the runs of the row above that reach one column past it), and a run
  holds an interior pixel where its span meets the spans of runs above and below.
- :func:`support_ratios`: the softmax's odds ``p_c / max_{y != c} p_y`` at given pixels, one
  pixel at a time (no ``(P, C)`` gather).
- :func:`attached_pixels`: the pixels of a sparse set 8-connected (within it) to a Bayes-c pixel
  of it, with the same union-find over runs (the ``support`` fusion reading, spec §5).
- :func:`ml_heatmaps`: the ML probabilities (eq. 3, 16, rider merged) and their heatmaps E, M, V
  (eq. 6-8) at given pixels (the candidates') or the whole frame, one pixel at a time: no
  ``(P, C)`` stacks. The float32 operations are numpy's, in numpy's order (its pairwise class
  sums), so the values are the reference's.
- :func:`segment_sums`: per segment the sums of E, M, V and their squares over the segment, its
  interior and boundary, the sizes and centre sums, and the neighbourhood events (eq. 6-10), in
  one pass over the segments' pixels (in pixel order: the float64 sums are the reference's).

numba is a requirement (``requirements.txt``, ``package.xml``), so there is no numpy twin of each
kernel in production: the one numpy path is :func:`decision_rules_numpy`, for softmaxes of more
than 64 classes (the SIMD kernel's limit). The tests hold every kernel to a plain-numpy reference
(``test/oracle.py``, and :mod:`metafusion_ros.core.rules` for the rules).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from metafusion_ros.core import simd
from metafusion_ros.core.jit import CACHE

__all__ = ['SoftmaxStats', 'decision_rules', 'decision_rules_numpy', 'disagreeing_pixels',
           'attached_pixels', 'support_ratios', 'ml_heatmaps', 'segment_sums', 'SUM_COLUMNS']

# Columns of :func:`segment_sums`: per heatmap (E, M, V) the sums of h and h² over the segment,
# its interior and its boundary (6 each), then the sizes S, S_in, S_bd and the row and column sums.
SUM_COLUMNS = 23
# The 8 neighbours of a pixel (row, column offsets), in the reference's order.
_OFFSETS = np.array([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)],
                    dtype=np.int64)
# numpy's float32 machine epsilon (the heatmaps' eps, spec §3).
_EPS = np.float32(np.finfo(np.float32).eps)


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
    """Return Bayes and ML masks (eq. 1, 16) and softmax stats, in plain numpy (C > 64 classes).

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
def _runs_of(pixels, w):
    """Return the horizontal runs of raster-ordered ``pixels``: first pixel, row, columns.

    A run is a maximal row segment of consecutive pixels; ``first`` has one more entry (n).
    """
    n = pixels.size
    first = np.empty(n + 1, dtype=np.int64)
    row = np.empty(n, dtype=np.int64)
    c0 = np.empty(n, dtype=np.int64)
    c1 = np.empty(n, dtype=np.int64)
    runs = 0
    for k in range(n):
        i, j = divmod(pixels[k], w)
        if runs == 0 or j == 0 or pixels[k] != pixels[k - 1] + 1:
            first[runs], row[runs], c0[runs] = k, i, j
            runs += 1
        c1[runs - 1] = j
    first[runs] = n
    return first[:runs + 1], row[:runs], c0[:runs], c1[:runs]


@numba.njit(cache=CACHE, nogil=True)
def _span(c0, c1, w):
    """Return the columns of a run whose row neighbours (clipped at the border) are in it."""
    return c0 + (c0 > 0), c1 - (c1 < w - 1)


@numba.njit(cache=CACHE, nogil=True)
def _covered(lo, hi, q, end, row, c0, c1, w, i):
    """Return the first column of ``[lo, hi]`` spanned by a run ``q..`` of row ``i``, or -1."""
    while q < end and row[q] == i and c0[q] <= hi + 1:
        a, b = _span(c0[q], c1[q], w)
        if max(a, lo) <= min(b, hi):
            return max(a, lo)
        q += 1
    return -1


@numba.njit(cache=CACHE, nogil=True)
def _has_interior(lo, hi, above, below, nr, row, c0, c1, h, w, i):
    """Return whether a column of ``[lo, hi]`` has its 3x3 window (clipped) all in the class.

    ``above`` / ``below`` are the first runs of rows i - 1 / i + 1 that may touch ``[lo, hi]``.
    """
    while lo <= hi:
        top = lo if i == 0 else _covered(lo, hi, above, nr, row, c0, c1, w, i - 1)
        if top < 0:
            return False
        bottom = top if i == h - 1 else _covered(top, hi, below, nr, row, c0, c1, w, i + 1)
        if bottom < 0:
            return False
        if bottom == top:
            return True
        lo = bottom  # the rows disagree on the first column: start again from the later one
    return False


@numba.njit(cache=CACHE, nogil=True)
def _components_kernel(pred_ml, pred_bayes, target):
    h, w = pred_ml.shape
    pixels = _pixels_of(pred_ml.ravel(), target)
    n = pixels.size
    first, row, c0, c1 = _runs_of(pixels, w)
    nr = row.size
    parent = np.arange(nr)
    inner = np.zeros(nr, dtype=np.bool_)
    above = 0  # first run of the row above that may touch the current run
    below = 0  # first run of the row below that may touch it
    for r in range(nr):
        i = row[r]
        while row[above] < i - 1 or (row[above] == i - 1 and c1[above] < c0[r] - 1):
            above += 1
        q = above
        while q < r and row[q] == i - 1 and c0[q] <= c1[r] + 1:  # 8-connected: one further
            _union(parent, r, q)
            q += 1
        below = max(below, r + 1)
        while below < nr and (row[below] == i or (row[below] == i + 1
                                                  and c1[below] < c0[r] - 1)):
            below += 1
        lo, hi = _span(c0[r], c1[r], w)
        inner[r] = _has_interior(lo, hi, above, below, nr, row, c0, c1, h, w, i)
    roots = np.empty(n, dtype=np.int64)
    agree = np.zeros(n, dtype=np.bool_)
    has_interior = np.zeros(n, dtype=np.bool_)
    flat_bayes = pred_bayes.ravel()
    for r in range(nr):
        root = first[_find_root(parent, r)]  # the component's first pixel (raster order)
        has_interior[root] |= inner[r]
        for k in range(first[r], first[r + 1]):
            roots[k] = root
            if flat_bayes[pixels[k]] == target:
                agree[root] = True
    return pixels, roots, agree, has_interior


def disagreeing_pixels(pred_ml: np.ndarray, pred_bayes: np.ndarray, target: int
                       ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Return candidates (eq. 11): pixels, ids 1..n, the S_in = 0 count, agreeing pixels.

    A candidate is an 8-connected component of ML class-c pixels with no Bayes-c pixel and at
    least one interior pixel; ids follow the raster order of each one's first pixel. The
    agreeing pixels are those of the ML class-c segments with ``S_in > 0`` that hold a Bayes-c
    pixel (spec §5).
    """
    pixels, roots, agree, has_interior = _components_kernel(
        np.ascontiguousarray(pred_ml, dtype=np.uint8), np.ascontiguousarray(pred_bayes),
        int(target))
    is_root = roots == np.arange(roots.size)
    disagreeing = is_root & ~agree
    keep_root = disagreeing & has_interior
    new_id = np.cumsum(keep_root).astype(np.int32)
    selected = keep_root[roots]
    dropped = int(np.count_nonzero(disagreeing)) - int(np.count_nonzero(keep_root))
    agreeing = (is_root & agree & has_interior)[roots]
    return pixels[selected], new_id[roots[selected]], dropped, pixels[agreeing]


@numba.njit(cache=CACHE, nogil=True)
def _support_kernel(probs, pixels, target, rival, out):
    for k in range(pixels.size):
        row = probs[pixels[k]]
        best = np.float32(0)
        for y in range(row.size):
            if rival[y] and row[y] > best:
                best = row[y]
        out[k] = row[target] / best if best > 0 else np.float32(np.inf)


def support_ratios(probs: np.ndarray, pixels: np.ndarray, target: int,
                   merged: tuple[int, ...] = ()) -> np.ndarray:
    """Return float32 ``p_c / max_y p_y`` over rivals y (not c, not ``merged``) at ``pixels``.

    ``probs`` (H, W, C), ``pixels`` flat indices; inf where every rival has probability 0.
    """
    num_classes = probs.shape[-1]
    rival = np.ones(num_classes, dtype=np.bool_)
    rival[[target, *merged]] = False
    out = np.empty(len(pixels), dtype=np.float32)
    _support_kernel(np.ascontiguousarray(probs, np.float32).reshape(-1, num_classes),
                    np.asarray(pixels, dtype=np.int64), int(target), rival, out)
    return out


def attached_pixels(pixels: np.ndarray, pred_bayes: np.ndarray, target: int) -> np.ndarray:
    """Return the flat ``pixels`` 8-connected, through ``pixels``, to one of them that is Bayes c.

    ``pixels`` are flat indices into ``pred_bayes`` (any order); the result is in raster order.
    The set is labelled as the candidates are (:func:`disagreeing_pixels`: union-find over its
    horizontal runs), from a scan of a uint8 mask of the frame.
    """
    background = 1 if target == 0 else 0
    marked = np.full(pred_bayes.size, background, dtype=np.uint8)
    marked[pixels] = target
    found, roots, agree, _ = _components_kernel(marked.reshape(pred_bayes.shape),
                                                np.ascontiguousarray(pred_bayes), int(target))
    return found[agree[roots]]


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
    if c > simd.MAX_CLASSES:
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


@numba.njit(cache=True, nogil=True)
def _pairwise_sum(a, n):
    """Sum ``a[:n]`` (float32) as numpy's pairwise sum does for fewer than 128 values."""
    if n < 8:
        total = np.float32(0)
        for i in range(n):
            total += a[i]
        return total
    r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
    i = 8
    while i < n - n % 8:
        r0, r1, r2, r3 = r0 + a[i], r1 + a[i + 1], r2 + a[i + 2], r3 + a[i + 3]
        r4, r5, r6, r7 = r4 + a[i + 4], r5 + a[i + 5], r6 + a[i + 6], r7 + a[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += a[i]
        i += 1
    return total


@numba.njit(cache=True, nogil=True)
def _ml_heatmaps_kernel(probs, prior, channel_map, merged, alpha, pixels, out):
    num_classes = probs.shape[1]
    one_minus = np.float32(1.0 - alpha)
    weight = np.float32(alpha)
    eps_prior = np.float32(1e-5)
    log_c = np.log(np.float64(num_classes))
    ratio = np.empty(num_classes, dtype=np.float32)
    terms = np.empty(num_classes, dtype=np.float32)
    for k in range(pixels.size):
        p = pixels[k]
        for y in range(num_classes):
            if merged[y]:
                ratio[y] = np.float32(0)
            else:
                pa = one_minus + weight * prior[p, channel_map[y]]
                ratio[y] = probs[p, y] / (pa + eps_prior)
        total = max(_pairwise_sum(ratio, num_classes), np.float32(1e-30))
        first = -np.inf
        second = -np.inf
        for y in range(num_classes):
            q = ratio[y] / total
            terms[y] = q * np.log(q + _EPS)
            if q > first:
                second = first
                first = q
            elif q > second:
                second = q
        if num_classes == 1:
            second = first
        out[0, k] = np.float32(np.float64(-_pairwise_sum(terms, num_classes)) / log_c)
        out[1, k] = (np.float32(1) - np.float32(first)) + np.float32(second)
        out[2, k] = np.float32(1) - np.float32(first)


@numba.njit(cache=True, nogil=True)
def _segment_sums_kernel(pixels, sid, pred, heat, n, num_classes, offsets):
    h, w = pred.shape
    sums = np.zeros((n + 1, SUM_COLUMNS), dtype=np.float64)
    events = np.zeros((n + 1, num_classes + 1), dtype=np.float64)
    for k in range(pixels.size):
        p = pixels[k]
        s = sid[k]
        i, j = divmod(p, w)
        label = pred[i, j]
        boundary = False
        for o in range(8):
            ii, jj = i + offsets[o, 0], j + offsets[o, 1]
            if 0 <= ii < h and 0 <= jj < w and pred[ii, jj] != label:
                boundary = True
                other = np.int64(pred[ii, jj])
                events[s, num_classes if other < 0 or other > num_classes else other] += 1
        part = 2 if boundary else 1
        for m in range(3):
            v = np.float64(heat[m, k])
            sums[s, 6 * m] += v
            sums[s, 6 * m + part] += v
            sums[s, 6 * m + 3] += v * v
            sums[s, 6 * m + 3 + part] += v * v
        sums[s, 18] += 1.0
        sums[s, 18 + part] += 1.0
        sums[s, 21] += i
        sums[s, 22] += j
    return sums[1:], events[1:]


def ml_heatmaps(probs: np.ndarray, prior: np.ndarray, channel_map: np.ndarray,
                merged: tuple[int, ...], alpha: float, pixels: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return float32 E, M, V (eq. 6-8) of the ML probabilities (eq. 3, 16, spec §1).

    At flat ``pixels`` (``(P,)`` each), or over the whole frame (``(H, W)`` each) when
    ``pixels`` is None. ``prior`` (H, W, K) holds the priors at the priors' level,
    ``channel_map`` (C,) maps classes to its channels; ``merged`` classes are zeroed after the
    prior division, as in the reference.
    """
    h, w, num_classes = probs.shape
    if prior.shape[:2] != (h, w):
        raise ValueError(f'priors {prior.shape[:2]} and softmax {(h, w)} differ in size')
    flat = np.arange(h * w) if pixels is None else np.asarray(pixels, dtype=np.int64)
    out = np.empty((3, flat.size), dtype=np.float32)
    merged_mask = np.zeros(num_classes, dtype=np.bool_)
    merged_mask[list(merged)] = True
    _ml_heatmaps_kernel(np.ascontiguousarray(probs, np.float32).reshape(-1, num_classes),
                        np.ascontiguousarray(prior, np.float32).reshape(h * w, -1),
                        np.asarray(channel_map, np.int64), merged_mask, float(alpha),
                        flat, out)
    heat = tuple(out)
    return heat if pixels is not None else tuple(v.reshape(h, w) for v in heat)


def segment_sums(pixels: np.ndarray, sid: np.ndarray, pred: np.ndarray,
                 heat: tuple[np.ndarray, ...], n: int, num_classes: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-segment sums ``(n, SUM_COLUMNS)`` and events ``(n, C + 1)`` (eq. 6-10).

    ``pixels`` flat indices into ``pred`` (the label map the segments were formed on), ``sid``
    their segment ids 1..n, ``heat`` the (E, M, V) values there. An event is a valid neighbour
    with another label than the pixel; its bin is the neighbour's class, the last bin taking
    labels outside the table.
    """
    return _segment_sums_kernel(np.asarray(pixels, np.int64), np.asarray(sid, np.int64),
                                np.ascontiguousarray(pred), np.stack(heat), n, num_classes,
                                _OFFSETS)
