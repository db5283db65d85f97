"""One pass over the softmax: Bayes and ML masks (eq. 1, 16) plus the softmax sanity checks.

Two implementations that must agree bit for bit: a plain-numpy reference and a numba kernel that
reads each probability once (no temporaries the size of the softmax). The kernel is used when
numba is importable. Both take the priors at their stored level (classes or categories) with a
per-class channel map, so that category priors are never expanded to ``(H, W, C)``.

Masks are the argmax of the unnormalised scores (``p`` for Bayes, ``p / (p_α + 1e-5)`` for ML)
with merged classes (rider) excluded: renormalising rescales a pixel's scores by one positive
factor, which leaves the argmax unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
import os

import numpy as np

from .priors import REFERENCE_EPS

__all__ = ['SoftmaxStats', 'decision_rules', 'decision_rules_numpy', 'HAVE_NUMBA']

try:  # numba is optional: the numpy reference is always available
    if os.environ.get('METAFUSION_DISABLE_NUMBA'):
        raise ImportError('disabled by METAFUSION_DISABLE_NUMBA')
    import numba
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    HAVE_NUMBA = False


@dataclass(frozen=True)
class SoftmaxStats:
    """What the pass saw: non-finite and negative values, largest deviation of a class sum."""

    nonfinite: int
    negative: int
    max_sum_error: float

    def check(self, atol: float = 1e-3) -> None:
        """Raise ``ValueError`` for NaN/Inf, negative or unnormalised probabilities."""
        if self.nonfinite:
            raise ValueError(f'softmax contains {self.nonfinite} NaN or Inf values')
        if self.negative:
            raise ValueError(f'softmax contains {self.negative} negative probabilities')
        if self.max_sum_error > atol:
            raise ValueError(f'softmax is not normalised: a class sum is off by '
                             f'{self.max_sum_error:.4g}')


def decision_rules_numpy(probs: np.ndarray, priors: np.ndarray, channel_map: np.ndarray,
                         alpha: float, merged: tuple[int, ...]
                         ) -> tuple[np.ndarray, np.ndarray, SoftmaxStats]:
    """Return Bayes and ML masks (eq. 1, 16) and softmax stats, in plain numpy."""
    stats = SoftmaxStats(int(np.count_nonzero(~np.isfinite(probs))),
                         int(np.count_nonzero(probs < 0)),
                         float(np.nan_to_num(np.abs(probs.sum(axis=2) - 1).max(), nan=np.inf)))
    scores = probs.copy()
    scores[..., list(merged)] = -1
    pred_bayes = np.argmax(scores, axis=2).astype(np.uint8)
    if alpha == 0.0:
        return pred_bayes, pred_bayes.copy(), stats
    prior_alpha = np.float32(1.0 - alpha) + np.float32(alpha) * priors[:, :, channel_map]
    scores /= prior_alpha + np.float32(REFERENCE_EPS)
    scores[..., list(merged)] = -1
    return pred_bayes, np.argmax(scores, axis=2).astype(np.uint8), stats


if HAVE_NUMBA:
    @numba.njit(cache=True, nogil=True)
    def _rules_kernel(probs, priors, channel_map, alpha, merged, pred_bayes, pred_ml):
        h, w, c = probs.shape
        a1 = np.float32(1.0 - alpha)
        a = np.float32(alpha)
        eps = np.float32(REFERENCE_EPS)
        nonfinite = 0
        negative = 0
        max_err = 0.0
        for i in range(h):
            for j in range(w):
                best_b = -1.0
                best_m = -1.0
                arg_b = 0
                arg_m = 0
                total = 0.0
                for y in range(c):
                    p = probs[i, j, y]
                    total += p
                    if not np.isfinite(p):
                        nonfinite += 1
                    elif p < 0:
                        negative += 1
                    if merged[y]:
                        continue
                    if p > best_b:
                        best_b = p
                        arg_b = y
                    ratio = p / (a1 + a * priors[i, j, channel_map[y]] + eps)
                    if ratio > best_m:
                        best_m = ratio
                        arg_m = y
                err = abs(total - 1.0)
                if not err <= max_err:
                    max_err = err if np.isfinite(err) else np.inf
                pred_bayes[i, j] = arg_b
                pred_ml[i, j] = arg_m
        return nonfinite, negative, max_err


def decision_rules(probs: np.ndarray, priors: np.ndarray, channel_map: np.ndarray,
                   alpha: float, merged: tuple[int, ...]
                   ) -> tuple[np.ndarray, np.ndarray, SoftmaxStats]:
    """Return Bayes and ML masks (eq. 1, 16) and softmax stats in one pass over ``probs``.

    ``probs`` (H, W, C), ``priors`` (H, W, K) at the same size, ``channel_map`` (C,) class ->
    prior channel, ``merged`` the classes excluded from both argmaxes.
    """
    if priors.shape[:2] != probs.shape[:2]:
        raise ValueError(f'priors {priors.shape[:2]} and softmax {probs.shape[:2]} differ in size')
    if not HAVE_NUMBA or alpha == 0.0:
        return decision_rules_numpy(probs, priors, channel_map, alpha, merged)
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    is_merged = np.zeros(probs.shape[2], dtype=np.bool_)
    is_merged[list(merged)] = True
    pred_bayes = np.empty(probs.shape[:2], dtype=np.uint8)
    pred_ml = np.empty(probs.shape[:2], dtype=np.uint8)
    nonfinite, negative, max_err = _rules_kernel(
        probs, np.ascontiguousarray(priors, dtype=np.float32), channel_map.astype(np.int64),
        float(alpha), is_merged, pred_bayes, pred_ml)
    return pred_bayes, pred_ml, SoftmaxStats(int(nonfinite), int(negative), float(max_err))
