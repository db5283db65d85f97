"""Fusion of the Bayes and ML masks from the meta classifier's decisions (eq. 14, spec §5)."""
from __future__ import annotations

import numpy as np

from metafusion_ros.core.defaults import FUSION, FUSION_MODES
from metafusion_ros.core.segments import Candidates

__all__ = ['FUSION_MODES', 'check_fusion', 'fuse']


def check_fusion(mode: str) -> str:
    """Return ``mode`` if it is a fusion reading of :data:`FUSION_MODES`, else raise."""
    if mode not in FUSION_MODES:
        raise ValueError(f'fusion must be one of {", ".join(FUSION_MODES)}, got {mode!r}')
    return mode


def fuse(pred_bayes: np.ndarray, candidates: Candidates, keep: np.ndarray, target: int,
         mode: str = FUSION) -> np.ndarray:
    """Return the Bayes mask with the kept ML class-c segments set to class c (eq. 14, §5).

    ``keep`` is a boolean per candidate (ids 1..n in order). Kept candidates take class c in
    both modes; ``mode='reference'`` also gives class c to the ML extent of every agreeing
    segment with ``S_in > 0`` (it holds a Bayes-c pixel, so it is never a candidate and never
    dropped), as the authors' code does. Everything else stays Bayes.
    """
    check_fusion(mode)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (candidates.count,):
        raise ValueError(f'keep has shape {keep.shape}, expected ({candidates.count},)')
    if pred_bayes.shape != tuple(candidates.shape):
        raise ValueError(f'Bayes mask {pred_bayes.shape} and candidates '
                         f'{tuple(candidates.shape)} differ in size')
    fused = pred_bayes.copy()
    flat = fused.ravel()
    if keep.any():
        flat[candidates.pixels[keep[candidates.pixel_ids - 1]]] = target
    if mode == 'reference':
        flat[candidates.agreeing] = target
    return fused
