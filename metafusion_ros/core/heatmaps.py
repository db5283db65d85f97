"""Pixel-wise uncertainty heatmaps (eq. 6-8), computed on the ML probabilities.

Each function takes probabilities with classes on the last axis (``(..., C)``) and returns the
heatmap with that axis removed, in [0, 1], as float32.
"""
from __future__ import annotations

import numpy as np

__all__ = ['entropy', 'heatmaps', 'HEATMAPS', 'EPS']

# The reference's eps: float32 machine epsilon (spec §3).
EPS = np.finfo(np.float32).eps
# Heatmap names in feature order: entropy, probability margin (the reference's ``D``), variation.
HEATMAPS = ('E', 'M', 'V')


def entropy(p: np.ndarray) -> np.ndarray:
    """Return ``E = -Σ_y p log(p + eps) / log(C)`` (eq. 6)."""
    p = np.asarray(p, dtype=np.float32)
    return (-(p * np.log(p + EPS)).sum(axis=-1) / np.log(p.shape[-1])).astype(np.float32)


def heatmaps(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return entropy, margin, variation ``(E, M, V)`` (eq. 6-8) of probabilities ``p``.

    ``M = 1 - p_(1) + p_(2)``, ``V = 1 - p_(1)``, from one partition of ``p``.
    """
    p = np.asarray(p, dtype=np.float32)
    part = np.partition(p, p.shape[-1] - 2, axis=-1)
    first, second = part[..., -1], part[..., -2]
    return entropy(p), (1 - first + second).astype(np.float32), (1 - first).astype(np.float32)
