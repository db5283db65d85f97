"""Decision rules (§2) in plain numpy: Bayes (eq. 1), ML (eq. 3) and its interpolation (eq. 16).

Class merges follow the reference: a merged class (rider) gets probability 0 and the softmax is
renormalised, for Bayes and, after the prior division, for ML (spec §1). The readable reference
the tests hold the compiled kernel (:func:`metafusion_ros.core.kernels.decision_rules`) to; the
§5 digits protocol uses it directly.
"""
from __future__ import annotations

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.priors import REFERENCE_EPS

__all__ = ['check_probs', 'bayes_rule', 'ml_probabilities']


def check_probs(probs: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Validate a softmax's type, rank ``(H, W, C)``, class count and size.

    The values (NaN, Inf, negative, unnormalised) are checked by the one-pass kernel on its way
    (:class:`metafusion_ros.core.kernels.SoftmaxStats`), so they are not read twice.
    """
    if not isinstance(probs, np.ndarray):
        raise TypeError(f'softmax must be a numpy array, got {type(probs).__name__}')
    if probs.ndim != 3:
        raise ValueError(f'softmax must have rank 3 (H, W, C), got shape {probs.shape}')
    if not np.issubdtype(probs.dtype, np.floating):
        raise TypeError(f'softmax must be floating point, got {probs.dtype}')
    if num_classes is not None and probs.shape[2] != num_classes:
        raise ValueError(f'softmax has {probs.shape[2]} classes, the class table {num_classes}')
    if 0 in probs.shape:
        raise ValueError(f'softmax is empty: shape {probs.shape}')
    return probs


def bayes_rule(probs: np.ndarray) -> np.ndarray:
    """Return ``argmax_y p_z(y|x)`` (eq. 1) as uint8 ``(H, W)``."""
    return np.argmax(probs, axis=-1).astype(np.uint8)


def ml_probabilities(probs: np.ndarray, prior_alpha: np.ndarray,
                     table: ClassTable | None = None) -> np.ndarray:
    """Return ``p / (p_α + 1e-5)`` renormalised over classes (eq. 3, 16; spec §1).

    ``prior_alpha`` is ``(H, W, C)`` from :func:`metafusion_ros.core.priors.interpolate`; with a
    ``table`` its merged classes are zeroed after the division, as in the reference.
    """
    if prior_alpha.shape != probs.shape:
        raise ValueError(f'priors {prior_alpha.shape} do not match the softmax {probs.shape}')
    ratio = probs / (prior_alpha + np.float32(REFERENCE_EPS))
    if table is not None and table.merge:
        ratio[..., list(table.merged_away)] = 0
    ratio /= np.maximum(ratio.sum(axis=-1, keepdims=True), np.float32(1e-30))
    return ratio.astype(np.float32, copy=False)
