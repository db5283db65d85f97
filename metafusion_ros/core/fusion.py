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
    if pred_bayes.shape != candidates.labels.shape:
        raise ValueError(f'Bayes mask {pred_bayes.shape} and candidates '
                         f'{candidates.labels.shape} differ in size')
    fused = pred_bayes.copy()
    for cid in np.flatnonzero(keep) + 1:
        r0, c0, r1, c1 = candidates.boxes[cid - 1]
        window = fused[r0:r1, c0:c1]
        window[candidates.labels[r0:r1, c0:c1] == cid] = target
    return fused
