"""Fusion of the Bayes and ML masks from the meta classifier's decisions (eq. 14)."""
from __future__ import annotations

import numpy as np

from .segments import Candidates

__all__ = ['fuse']


def fuse(pred_bayes: np.ndarray, candidates: Candidates, keep: np.ndarray,
         target: int) -> np.ndarray:
    """Return the Bayes mask with every kept candidate's pixels set to class c (eq. 14).

    ``keep`` is a boolean per candidate (ids 1..n in order); everything else stays Bayes.
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (candidates.count,):
        raise ValueError(f'keep has shape {keep.shape}, expected ({candidates.count},)')
    if pred_bayes.shape != tuple(candidates.shape):
        raise ValueError(f'Bayes mask {pred_bayes.shape} and candidates '
                         f'{tuple(candidates.shape)} differ in size')
    fused = pred_bayes.copy()
    if keep.any():
        fused.ravel()[candidates.pixels[keep[candidates.pixel_ids - 1]]] = target
    return fused
