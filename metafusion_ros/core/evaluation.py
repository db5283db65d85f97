"""Evaluation with the reference semantics (spec §6): segment FP/FN for class c, Δ (eq. 17), mIoU.

The prediction is set to ignore wherever the ground truth is ignore, then segments are formed.
A false positive is a predicted class-c segment with ``S_in > 0`` and no ground-truth-c pixel; a
true positive one with such a pixel; a false negative is a ground-truth class-c segment with no
pixel predicted as c.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.segments import check_label_map

__all__ = ['SegmentCounts', 'segment_counts', 'delta', 'added_tp_share', 'confusion',
           'iou_per_class', 'group_iou', 'mean_iou']

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SegmentCounts:
    """Segment-wise TP, FP and FN for class c; add them up over frames with ``+``."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: 'SegmentCounts') -> 'SegmentCounts':
        return SegmentCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def f1(self) -> float:
        """Return ``F1 = 2TP / (2TP + FP + FN)`` for class c (nan when all are 0)."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else float('nan')


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    """Raise unless ``pred`` and ``gt`` are integer label maps of one size."""
    check_label_map(pred, 'prediction')
    check_label_map(gt, 'ground truth')
    if pred.shape != gt.shape:
        raise ValueError(f'prediction {pred.shape} and ground truth {gt.shape} differ in size')


def segment_counts(pred: np.ndarray, gt: np.ndarray, table: ClassTable) -> SegmentCounts:
    """Count segment-wise TP, FP, FN of the target class (spec §6).

    Ground-truth merged classes (rider) are read as their destination (person). A segment of
    class c is an 8-connected component of the class-c mask; its pixel is interior when its
    clipped 3x3 window is all class c (ignore pixels count as another label), so only the
    class-c masks are labelled, inside the box around them, never the whole frame.
    """
    _check_pair(pred, gt)
    table.check_labels(gt, 'ground truth')
    c, ignore = table.target, table.ignore_label
    gt = table.merge_labels(gt)
    truth = gt == c
    predicted = (pred == c) & (gt != ignore)
    box = _box(predicted | truth)
    truth, predicted = truth[box], predicted[box]
    components, n = ndimage.label(predicted, structure=_EIGHT)
    interior = ndimage.binary_erosion(predicted, structure=_EIGHT, border_value=1)
    counted = np.zeros(n + 1, dtype=bool)
    counted[components[interior]] = True
    hit = np.zeros(n + 1, dtype=bool)
    hit[components[predicted & truth]] = True
    tp = int(np.count_nonzero(hit[1:] & counted[1:]))
    gt_components, n_gt = ndimage.label(truth, structure=_EIGHT)
    found = np.zeros(n_gt + 1, dtype=bool)
    found[gt_components[predicted]] = True
    fn = int(n_gt - np.count_nonzero(found[1:]))
    return SegmentCounts(tp=tp, fp=int(np.count_nonzero(counted[1:])) - tp, fn=fn)


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    """Return the slices of the box around ``mask``'s pixels, one pixel wider where it can be.

    The margin keeps the erosion exact: inside the frame a window reaches one pixel out, and at
    the frame's edge the box's edge is the frame's, so the clipped window is the same.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))


def delta(rule: SegmentCounts, bayes: SegmentCounts) -> float:
    """Return ``Δ = (FP(d) - FP(Bayes)) / (FN(Bayes) - FN(d))`` (eq. 17); nan if undefined."""
    removed = bayes.fn - rule.fn
    return (rule.fp - bayes.fp) / removed if removed else float('nan')


def added_tp_share(fused: SegmentCounts, bayes: SegmentCounts, ml: SegmentCounts) -> float:
    """Return the share of ML's removed false negatives that fusion keeps (paper: 78.8 %).

    ``(Bayes FN - fused FN) / (Bayes FN - ML FN)``: the false negatives ML removes against
    Bayes, and of those, how many fusion removes too (``kept_share`` in reports). Not clamped:
    it exceeds 1 where the fused mask misses fewer segments than ML itself (fusion keeps the
    Bayes mask's class-c pixels that ML gives to another class, e.g. CamVid Pedestrian ->
    Bicyclist: ML 8 FN, MetaFusion 7, Bayes 15 gives 8/7 = 1.14) and is negative where fusion
    misses more than Bayes. NaN where ML removes none (Bayes FN <= ML FN): no share to keep.
    """
    added = bayes.fn - ml.fn
    return (bayes.fn - fused.fn) / added if added > 0 else float('nan')


def confusion(pred: np.ndarray, gt: np.ndarray, table: ClassTable) -> np.ndarray:
    """Return the ``(C, C)`` pixel confusion matrix (rows ground truth), ignore excluded."""
    _check_pair(pred, gt)
    table.check_labels(gt, 'ground truth')
    gt = table.merge_labels(gt)
    valid = gt != table.ignore_label
    n = table.num_classes
    p = pred[valid].astype(np.int64)
    if p.size and p.max() >= n:
        raise ValueError(f'prediction holds class {int(p.max())} outside 0..{n - 1}')
    return np.bincount(gt[valid].astype(np.int64) * n + p, minlength=n * n).reshape(n, n)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """Return pixel IoU per class from a confusion matrix (nan where a class never occurs)."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, tp / union, np.nan)


def group_iou(conf: np.ndarray, group: list[int]) -> float:
    """Return the IoU of a group of classes read as one (person + rider = human)."""
    inside = np.zeros(conf.shape[0], bool)
    inside[group] = True
    tp = conf[np.ix_(inside, inside)].sum()
    union = conf[:, inside].sum() + conf[inside, :].sum() - tp
    return float(tp / union) if union else float('nan')


def mean_iou(conf: np.ndarray) -> float:
    """Return the mean IoU over the classes that occur in prediction or ground truth."""
    return float(np.nanmean(iou_per_class(conf)))
