"""Fusion of the Bayes and ML masks from the meta classifier's decisions (eq. 14, spec §5).

Three readings of eq. 14 (:data:`FUSION_MODES`). They agree on the candidates (eq. 11): a kept
one takes class c, a dropped one stays Bayes. They differ on the *agreeing* ML class-c segments
(those holding a Bayes-c pixel, never candidates): ``reference`` (the authors' code) gives them
their whole ML extent, ``literal`` leaves them Bayes, and ``support`` gives them their Bayes
extent grown into the ML extent only through pixels where the network's softmax itself supports
c (:func:`supported_extent`). The ML rule divides by the position-specific prior (eq. 3, 16),
which for a rare class is orders of magnitude below the others, so an agreeing segment's ML
extent spreads over road, sidewalk and facade around a found pedestrian; ``reference`` paints all
of it and loses 1.5-1.9 pp mIoU (docs/meta.md, "Where the mIoU goes").
"""
from __future__ import annotations

import numpy as np

from metafusion_ros.core import kernels
from metafusion_ros.core.defaults import FUSION, FUSION_MODES, SUPPORT
from metafusion_ros.core.segments import Candidates

__all__ = ['FUSION_MODES', 'check_fusion', 'fuse', 'support_at', 'supported_extent']


def check_fusion(mode: str) -> str:
    """Return ``mode`` if it is a fusion reading of :data:`FUSION_MODES`, else raise."""
    if mode not in FUSION_MODES:
        raise ValueError(f'fusion must be one of {", ".join(FUSION_MODES)}, got {mode!r}')
    return mode


def support_at(probs: np.ndarray, pixels: np.ndarray, target: int,
               merged: tuple[int, ...] = ()) -> np.ndarray:
    """Return ``p_c / max_{y != c} p_y`` of the softmax ``probs`` (H, W, C) at flat ``pixels``.

    The Bayes rule's own odds of c against its best rival (eq. 1): 1 or more where Bayes says c,
    inf where every rival has probability 0. ``merged`` classes (rider) are no rivals, as in the
    Bayes rule; renormalising after the merge would scale both terms alike.
    """
    return kernels.support_ratios(probs, pixels, target, merged)


def supported_extent(pred_bayes: np.ndarray, agreeing: np.ndarray, support: np.ndarray,
                     target: int, threshold: float = SUPPORT) -> np.ndarray:
    """Return the flat pixels the ``support`` reading gives class c in agreeing segments (§5).

    An agreeing segment keeps its Bayes-c pixels and the ML-only pixels 8-connected to them
    through ML-only pixels of the segment whose ``support`` (:func:`support_at`, aligned with
    ``agreeing``) is at least ``threshold``: the Bayes extent grows wherever the network gives c
    at least ``threshold`` of its winner's probability, and no further. Parts of the ML extent
    cut off from the Bayes extent by unsupported pixels stay Bayes, so this reading never adds a
    segment that holds no Bayes-c pixel (those are the classifier's, eq. 11-13).
    """
    if support.shape != agreeing.shape:
        raise ValueError(f'support has shape {support.shape}, expected {agreeing.shape} '
                         f'(one value per agreeing pixel)')
    grow = (pred_bayes.ravel()[agreeing] == target) | (support >= threshold)
    return kernels.attached_pixels(agreeing[grow], pred_bayes, target)


def fuse(pred_bayes: np.ndarray, candidates: Candidates, keep: np.ndarray, target: int,
         mode: str = FUSION, support: np.ndarray | None = None,
         threshold: float = SUPPORT) -> np.ndarray:
    """Return the Bayes mask with the kept ML class-c segments set to class c (eq. 14, §5).

    ``keep`` is a boolean per candidate (ids 1..n in order). Kept candidates take class c in
    every mode; ``mode='reference'`` also gives class c to the ML extent of every agreeing
    segment with ``S_in > 0`` (it holds a Bayes-c pixel, so it is never a candidate and never
    dropped), as the authors' code does; ``mode='support'`` gives class c to the part of that
    extent connected to the Bayes-c pixels through pixels whose ``support`` (one per agreeing
    pixel, :func:`support_at`) reaches ``threshold`` (:func:`supported_extent`). Everything
    else stays Bayes.
    """
    check_fusion(mode)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (candidates.count,):
        raise ValueError(f'keep has shape {keep.shape}, expected ({candidates.count},)')
    if pred_bayes.shape != tuple(candidates.shape):
        raise ValueError(f'Bayes mask {pred_bayes.shape} and candidates '
                         f'{tuple(candidates.shape)} differ in size')
    if mode == 'support' and support is None:
        raise ValueError("fusion 'support' needs the softmax support of the agreeing pixels")
    fused = pred_bayes.copy()
    flat = fused.ravel()
    if keep.any():
        flat[candidates.pixels[keep[candidates.pixel_ids - 1]]] = target
    if mode == 'reference':
        flat[candidates.agreeing] = target
    elif mode == 'support':
        flat[supported_extent(pred_bayes, candidates.agreeing, np.asarray(support), target,
                              threshold)] = target
    return fused
