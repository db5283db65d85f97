"""Plain-numpy references that only the tests use, each the equation it checks.

The production code computes these another way (the compiled kernels of
:mod:`metafusion_ros.core.kernels`, the sparse :func:`~metafusion_ros.core.features.features_at`,
the whole triple at once in :func:`~metafusion_ros.core.heatmaps.heatmaps`); the tests hold it
to these readable forms and to the reference's golden outputs.
"""
from __future__ import annotations

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.features import features_at
from metafusion_ros.core.rules import bayes_rule, ml_probabilities

__all__ = ['merge_classes', 'ml_rule', 'margin', 'variation', 'segment_features']


def merge_classes(probs: np.ndarray, table: ClassTable) -> np.ndarray:
    """Set merged classes' probabilities to 0 and renormalise (reference rider -> person)."""
    if not table.merge:
        return probs
    out = probs.astype(np.float32, copy=True)
    out[..., list(table.merged_away)] = 0
    out /= np.maximum(out.sum(axis=-1, keepdims=True), np.float32(1e-30))
    return out


def ml_rule(probs: np.ndarray, prior_alpha: np.ndarray,
            table: ClassTable | None = None) -> np.ndarray:
    """Return ``argmax_y p_z(y|x) / p_{z,α}(y)`` (eq. 3 for α = 1, eq. 16) as uint8."""
    return bayes_rule(ml_probabilities(probs, prior_alpha, table))


def margin(p: np.ndarray) -> np.ndarray:
    """Return the probability margin ``M = 1 - p_(1) + p_(2)`` (eq. 7)."""
    part = np.partition(np.asarray(p, dtype=np.float32), p.shape[-1] - 2, axis=-1)
    return (1 - part[..., -1] + part[..., -2]).astype(np.float32)


def variation(p: np.ndarray) -> np.ndarray:
    """Return the variation ratio ``V = 1 - p_(1)`` (eq. 8)."""
    return (1 - np.asarray(p, dtype=np.float32).max(axis=-1)).astype(np.float32)


def segment_features(seg_labels: np.ndarray, pred: np.ndarray,
                     heat: tuple[np.ndarray, np.ndarray, np.ndarray],
                     table: ClassTable) -> np.ndarray:
    """Return the ``(n, F)`` features of segments ``1..n`` of the map ``seg_labels`` (spec §3).

    ``seg_labels`` holds the segments to describe (ids 1..n, 0 elsewhere); ``pred`` is the label
    map they were formed on; ``heat`` is ``(E, M, V)`` as ``(H, W)`` maps.
    """
    pixels = np.flatnonzero(seg_labels)
    values = tuple(h.ravel()[pixels] for h in heat)
    return features_at(pixels, seg_labels.ravel()[pixels], pred, values, table)
