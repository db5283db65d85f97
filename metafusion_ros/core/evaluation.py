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

from .classes import ClassTable
from .segments import check_label_map, label_segments

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

    Ground-truth merged classes (rider) are read as their destination (person).
    """
    _check_pair(pred, gt)
    table.check_labels(gt, 'ground truth')
    c, ignore = table.target, table.ignore_label
    gt = table.merge_labels(gt)
    pred = np.where(gt == ignore, ignore, pred).astype(pred.dtype)
    segments = label_segments(pred, ignore_label=ignore)
    target_ids = np.unique(segments.labels[pred == c])
    interior = np.zeros(segments.count + 1, dtype=bool)
    interior[segments.labels[(pred == c) & ~segments.boundary]] = True
    hit = np.zeros(segments.count + 1, dtype=bool)
    hit[segments.labels[(pred == c) & (gt == c)]] = True
    counted = target_ids[interior[target_ids]]
    tp = int(np.count_nonzero(hit[counted]))
    gt_components, n_gt = ndimage.label(gt == c, structure=_EIGHT)
    found = np.zeros(n_gt + 1, dtype=bool)
    found[gt_components[pred == c]] = True
    fn = int(n_gt - np.count_nonzero(found[1:]))
    return SegmentCounts(tp=tp, fp=int(counted.size - tp), fn=fn)


def delta(rule: SegmentCounts, bayes: SegmentCounts) -> float:
    """Return ``Δ = (FP(d) - FP(Bayes)) / (FN(Bayes) - FN(d))`` (eq. 17); nan if undefined."""
    removed = bayes.fn - rule.fn
    return (rule.fp - bayes.fp) / removed if removed else float('nan')


def added_tp_share(fused: SegmentCounts, bayes: SegmentCounts, ml: SegmentCounts) -> float:
    """Return the share of ML's removed false negatives that fusion keeps (paper: 78.8 %)."""
    added = bayes.fn - ml.fn
    return (bayes.fn - fused.fn) / added if added else float('nan')


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
