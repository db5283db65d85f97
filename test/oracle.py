"""Plain-numpy references that only the tests use, each the equation it checks.

The production code computes these another way (the compiled kernels of
:mod:`metafusion_ros.core.kernels`, the sparse :func:`~metafusion_ros.core.features.features_at`,
the whole triple at once in :func:`~metafusion_ros.core.heatmaps.heatmaps`); the tests hold it
to these readable forms and to the reference's golden outputs. The rules' reference is
:mod:`metafusion_ros.core.rules` (the §5 digits protocol uses it too).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import label

from metafusion_ros.core import segments
from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.features import features_at
from metafusion_ros.core.heatmaps import heatmaps
from metafusion_ros.core.kernels import SUM_COLUMNS
from metafusion_ros.core.rules import bayes_rule, ml_probabilities

__all__ = ['merge_classes', 'ml_rule', 'margin', 'variation', 'Segments', 'boundary_mask',
           'label_segments', 'segment_features', 'components', 'ml_heatmaps', 'segment_sums',
           'support', 'supported_fusion']

_EIGHT = np.ones((3, 3), dtype=bool)

# The 8 neighbours of a pixel (row, column offsets), in the reference's order.
OFFSETS = np.array([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)],
                   dtype=np.int64)


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


@dataclass(frozen=True, eq=False)
class Segments:
    """All segments of a label map: ``labels`` int32 (0 = none), ``boundary`` bool."""

    labels: np.ndarray
    boundary: np.ndarray

    @property
    def count(self) -> int:
        """Return the number of segments ``n``."""
        return int(self.labels.max(initial=0))

    def signed(self) -> np.ndarray:
        """Return the reference's encoding: ``+id`` interior, ``-id`` boundary pixels."""
        return np.where(self.boundary, -self.labels, self.labels)


def boundary_mask(pred: np.ndarray) -> np.ndarray:
    """Return pixels whose clipped 3x3 window holds a different label (boundary pixels)."""
    high = ndimage.maximum_filter(pred, footprint=_EIGHT, mode='nearest')
    low = ndimage.minimum_filter(pred, footprint=_EIGHT, mode='nearest')
    return (high != pred) | (low != pred)


def label_segments(pred: np.ndarray, ignore_label: int | None = None) -> Segments:
    """Label the 8-connected same-class components of ``pred`` (ignore pixels get id 0)."""
    segments.check_label_map(pred, 'prediction')
    values = pred.astype(np.int32) + 1
    if ignore_label is not None:
        values[pred == ignore_label] = 0
    labels = label(values, background=0, connectivity=2).astype(np.int32)
    return Segments(labels, boundary_mask(pred) & (labels > 0))


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


def components(pred_ml: np.ndarray, pred_bayes: np.ndarray, target: int):
    """Return what ``kernels._components_kernel`` returns, from scipy's labelling (eq. 11)."""
    eight = np.ones((3, 3), dtype=bool)
    mask = pred_ml == target
    components, _ = ndimage.label(mask, structure=eight)
    pixels = np.flatnonzero(mask)
    comp = components.ravel()[pixels]
    first = np.full(comp.max(initial=0) + 1, -1, dtype=np.int64)
    first[comp[::-1]] = np.arange(pixels.size)[::-1]
    roots = first[comp]
    agree = np.zeros(pixels.size, dtype=bool)
    agree[roots[pred_bayes.ravel()[pixels] == target]] = True
    interior = ndimage.binary_erosion(mask, structure=eight, border_value=1).ravel()[pixels]
    has_interior = np.zeros(pixels.size, dtype=bool)
    has_interior[roots[interior]] = True
    return pixels, roots, agree, has_interior


def ml_heatmaps(probs: np.ndarray, prior: np.ndarray, channel_map: np.ndarray,
                merged: tuple[int, ...], alpha: float, pixels: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return E, M, V (eq. 6-8) of the ML probabilities (eq. 3, 16) at flat ``pixels``.

    ``probs`` (H, W, C), ``prior`` (H, W, K) the priors at the priors' level with ``channel_map``
    (C,) class -> channel; ``merged`` classes are zeroed after the division (spec §1).
    """
    num_classes = probs.shape[2]
    channels = prior.reshape(-1, prior.shape[2])[pixels]
    class_prior = np.take(channels, np.asarray(channel_map), axis=1)
    prior_alpha = (np.float32(1.0 - alpha) + np.float32(alpha) * class_prior).astype(np.float32)
    ratio = probs.reshape(-1, num_classes)[pixels] / (prior_alpha + np.float32(1e-5))
    ratio[:, list(merged)] = 0
    ratio /= np.maximum(ratio.sum(axis=-1, keepdims=True), np.float32(1e-30))
    return heatmaps(ratio)


def segment_sums(pixels: np.ndarray, sid: np.ndarray, pred: np.ndarray,
                 heat: tuple[np.ndarray, ...], n: int, num_classes: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Return :func:`metafusion_ros.core.kernels.segment_sums`' sums and events, vectorised."""
    h, w = pred.shape
    flat_pred = pred.ravel()
    rows, cols = np.divmod(pixels, w)
    r2, c2 = rows + OFFSETS[:, :1], cols + OFFSETS[:, 1:]
    valid = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
    other = flat_pred[np.where(valid, r2 * w + c2, pixels)]
    differs = valid & (other != flat_pred[pixels])
    bd = differs.any(axis=0)
    width = num_classes + 1
    other_class = np.where(other < 0, num_classes, np.minimum(other.astype(np.int64),
                                                              num_classes))
    events = np.bincount((sid * width + other_class)[differs],
                         minlength=(n + 1) * width).reshape(n + 1, width).astype(np.float64)
    masks = (np.ones(pixels.size), ~bd, bd)  # segment, interior, boundary
    values = [np.asarray(v, np.float64) for v in heat]
    columns = np.stack([power * m for v in values for power in (v, v * v) for m in masks]
                       + list(masks) + [rows, cols], axis=1)
    bins = (sid[:, None] * SUM_COLUMNS + np.arange(SUM_COLUMNS)).ravel()
    sums = np.bincount(bins, columns.ravel(), minlength=(n + 1) * SUM_COLUMNS)
    return sums.reshape(n + 1, SUM_COLUMNS)[1:], events[1:]


def support(probs: np.ndarray, target: int, merged: tuple[int, ...] = ()) -> np.ndarray:
    """Return ``p_c / max_{y != c, y not merged} p_y`` per pixel (inf where that max is 0)."""
    rivals = np.delete(probs, [target, *merged], axis=-1)
    best = rivals.max(axis=-1) if rivals.shape[-1] else np.zeros(probs.shape[:-1])
    with np.errstate(divide='ignore'):
        return np.where(best > 0, probs[..., target] / np.where(best > 0, best, 1), np.inf)


def supported_fusion(pred_bayes: np.ndarray, pred_ml: np.ndarray, support_map: np.ndarray,
                     target: int, threshold: float) -> np.ndarray:
    """Return the ``support`` reading of eq. 14 with no candidate kept (spec §5), from scipy.

    Every ML class-c segment (8-connected) that holds a Bayes-c pixel and an interior pixel is
    agreeing; inside it, the pixels 8-connected to its Bayes-c pixels through pixels that are
    Bayes c or have ``support_map >= threshold`` take class c; everything else stays Bayes.
    """
    mask = pred_ml == target
    segments_ml, n = ndimage.label(mask, structure=_EIGHT)
    interior = ndimage.binary_erosion(mask, structure=_EIGHT, border_value=1)
    agreeing = np.zeros(n + 1, dtype=bool)
    agreeing[np.intersect1d(segments_ml[pred_bayes == target],
                            segments_ml[interior])] = True
    agreeing[0] = False
    bayes_c = pred_bayes == target
    grow = agreeing[segments_ml] & (bayes_c | (support_map >= threshold))
    parts, _ = ndimage.label(grow, structure=_EIGHT)
    attached = np.unique(parts[grow & bayes_c])
    fused = pred_bayes.copy()
    fused[np.isin(parts, attached[attached > 0])] = target
    return fused
