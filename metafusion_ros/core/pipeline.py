"""MetaFusion for one frame: softmax -> :class:`FrameResult`.

The steps follow the paper: Bayes and ML masks (eq. 1, 16), disagreeing candidates of class c with
``S_in > 0`` (eq. 11), their features (eq. 6-10) on the ML probabilities, the meta classifier's
``P(true positive)`` and the keep decision ``P >= τ`` (§4), and fusion (eq. 14). The same object
serves the node and the offline tools.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
import time
from typing import Callable

import numpy as np

from metafusion_ros.core import kernels
from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.defaults import ALPHA, FUSION, TAU
from metafusion_ros.core.features import feature_names, features_at
from metafusion_ros.core.fusion import check_fusion, fuse, support_at
from metafusion_ros.core.priors import check_alpha, interpolate, Priors, REFERENCE_EPS
from metafusion_ros.core.rules import check_probs
from metafusion_ros.core.segments import Candidates, disagreeing_candidates

__all__ = ['FrameResult', 'MetaFusion', 'ScoreFn', 'check_tau']

# Resized priors kept by MetaFusion.priors_at (least recently used sizes evicted).
PRIORS_CACHE = 4
# Maps candidate features (n, F) to P(true positive) (n,).
ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class FrameResult:
    """Everything MetaFusion decided for one frame."""

    pred_bayes: np.ndarray
    pred_ml: np.ndarray
    candidates: Candidates
    features: np.ndarray
    feature_names: tuple[str, ...]
    scores: np.ndarray
    keep: np.ndarray
    fused: np.ndarray


def check_tau(tau: float) -> float:
    """Return the threshold τ (§4) as a float, raising ``ValueError`` unless it lies in [0, 1]."""
    value = float(tau)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f'tau must lie in [0, 1], got {value}')
    return value


class MetaFusion:
    """MetaFusion with fixed priors, class table, α, τ and fusion reading (§5).

    α, τ and the fusion reading may change between frames.
    """

    def __init__(self, priors: Priors, table: ClassTable | None = None, alpha: float = ALPHA,
                 tau: float = TAU, fusion: str = FUSION) -> None:
        self.table = priors.table if table is None else table
        if self.table.num_classes != priors.table.num_classes or (
                self.table.class_names != priors.table.class_names):
            raise ValueError(f'priors are for classes {priors.table.class_names}, the model '
                             f'for {self.table.class_names}')
        self.priors = priors
        self.alpha = alpha
        self.tau = tau
        self.fusion = fusion
        self.feature_names = feature_names(self.table)
        self._cache: OrderedDict[tuple[int, int], Priors] = OrderedDict()
        self._inverse: tuple[tuple, np.ndarray | None] = ((), None)
        self.stage_ms: dict[str, float] = {}  # the last frame's stage times (diagnostics)
        self._lap_start = 0.0

    @property
    def alpha(self) -> float:
        """Return α of the interpolated priors (eq. 15)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = check_alpha(value)

    @property
    def tau(self) -> float:
        """Return the meta classifier's decision threshold τ."""
        return self._tau

    @tau.setter
    def tau(self, value: float) -> None:
        self._tau = check_tau(value)

    @property
    def fusion(self) -> str:
        """Return the fusion reading of spec §5, one of :data:`FUSION_MODES`."""
        return self._fusion

    @fusion.setter
    def fusion(self, value: str) -> None:
        self._fusion = check_fusion(value)

    def priors_at(self, size: tuple[int, int]) -> Priors:
        """Return the priors resized to ``size`` = ``(H, W)``.

        The last :data:`PRIORS_CACHE` sizes are kept (least recently used evicted), so frames of
        ever new sizes cannot grow memory without bound.
        """
        size = (int(size[0]), int(size[1]))
        if size in self._cache:
            self._cache.move_to_end(size)
        else:
            self._cache[size] = self.priors.resized(size)
            while len(self._cache) > PRIORS_CACHE:
                self._cache.popitem(last=False)
        return self._cache[size]

    def inverse_prior_alpha(self, size: tuple[int, int]) -> np.ndarray | None:
        """Return ``1 / (p_{z,α} + 1e-5)`` (H, W, K) at the priors' level (eq. 15, 16).

        None for α = 0. Cached for the current α and size, so a frame costs no prior arithmetic.
        """
        if self.alpha == 0.0:
            return None
        key = (tuple(size), self.alpha)
        if self._inverse[0] != key:
            self._inverse = ((), None)  # free the old array before building the new one
            prior_alpha = interpolate(self.priors_at(size).probs, self.alpha)
            self._inverse = (key, np.float32(1) / (prior_alpha + np.float32(REFERENCE_EPS)))
        return self._inverse[1]

    def process(self, probs: np.ndarray, score_fn: ScoreFn | None = None) -> FrameResult:
        """Run MetaFusion on a softmax ``(H, W, C)``; ``score_fn`` None keeps every candidate."""
        self._start_laps()
        check_probs(probs, self.table.num_classes)
        pred_bayes, pred_ml, stats = kernels.decision_rules(
            probs, self.inverse_prior_alpha(probs.shape[:2]),
            priors_channel_map(self.priors_at(probs.shape[:2])), self.table.merged_away)
        stats.check()
        self._lap('rules')
        return self.segment_stage(pred_bayes, pred_ml, probs, score_fn)

    def segment_stage(self, pred_bayes: np.ndarray, pred_ml: np.ndarray, probs: np.ndarray,
                      score_fn: ScoreFn | None = None) -> FrameResult:
        """Run candidates, features, decisions and fusion from the two masks and the softmax.

        The ML probabilities and heatmaps are computed at candidate pixels only, one pixel at a
        time (:func:`heatmaps_at`).
        """
        candidates = disagreeing_candidates(pred_ml, pred_bayes, self.table.target)
        self._lap('segments')
        heat = self.heatmaps_at(probs, candidates.pixels)
        return self._decide(pred_bayes, pred_ml, candidates, heat, score_fn, probs)

    def heatmaps_at(self, probs: np.ndarray, pixels: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return E, M, V (eq. 6-8) of the ML probabilities (eq. 16) of the softmax ``probs``.

        At flat ``pixels`` (the candidates'), or ``(H, W)`` maps of the whole frame when None;
        the priors are read at their level, no ``(H, W, C)`` array is built.
        """
        priors = self.priors_at(probs.shape[:2])
        return kernels.ml_heatmaps(probs, priors.probs, priors_channel_map(priors),
                                   self.table.merged_away, self.alpha, pixels)

    def confidence(self, probs: np.ndarray, result: FrameResult) -> np.ndarray:
        """Return the probability of each pixel's fused label under the rule that chose it.

        Where the fused mask keeps the Bayes label: its softmax probability with the merged
        classes zeroed and the rest renormalised, the distribution the Bayes rule maximises
        (eq. 1, spec §1). Where fusion (eq. 14) replaced it by class c: the ML probability of c
        (eq. 3, 16), which is the largest there, ``1 - V`` (eq. 8), read at those pixels only.
        So the label is always the most probable class of the reported distribution. float32
        ``(H, W)`` in [0, 1] at the softmax's size.
        """
        fused = result.fused
        label = np.take_along_axis(probs, fused[..., None].astype(np.intp), axis=2)[..., 0]
        merged = self.table.merged_away
        kept = probs[..., [y for y in range(probs.shape[2]) if y not in merged]].sum(axis=2) \
            if merged else np.float32(1)
        confidence = (label / np.maximum(kept, np.float32(1e-30))).astype(np.float32)
        replaced = np.flatnonzero(fused != result.pred_bayes)
        if replaced.size:
            confidence.flat[replaced] = 1 - self.heatmaps_at(probs, replaced)[2]
        return np.clip(confidence, 0, 1, out=confidence)

    def _decide(self, pred_bayes: np.ndarray, pred_ml: np.ndarray, candidates: Candidates,
                heat: tuple[np.ndarray, ...], score_fn: ScoreFn | None,
                probs: np.ndarray) -> FrameResult:
        """Compute candidate features, scores and keep decisions, and fuse (eq. 13, 14).

        The ``support`` reading also reads the softmax at the agreeing pixels (spec §5).
        """
        features = features_at(candidates.pixels, candidates.pixel_ids, pred_ml, heat, self.table)
        self._lap('features')
        if score_fn is None or candidates.count == 0:
            scores = np.ones(candidates.count, dtype=np.float64)
        else:
            scores = np.asarray(score_fn(features), dtype=np.float64).reshape(-1)
            if scores.shape != (candidates.count,) or not np.all(np.isfinite(scores)):
                raise ValueError(f'meta classifier returned {scores.shape} scores for '
                                 f'{candidates.count} candidates (or non-finite values)')
        self._lap('classifier')
        keep = scores >= self.tau
        support = None if self.fusion != 'support' else support_at(
            probs, candidates.agreeing, self.table.target, self.table.merged_away)
        fused = fuse(pred_bayes, candidates, keep, self.table.target, self.fusion, support)
        self._lap('fusion')
        return FrameResult(pred_bayes, pred_ml, candidates, features, self.feature_names,
                           scores, keep, fused)

    def _start_laps(self) -> None:
        """Start timing a frame's stages (``stage_ms``: rules, segments, features, ...)."""
        self.stage_ms = {}
        self._lap_start = time.perf_counter()

    def _lap(self, stage: str) -> None:
        """Record the milliseconds since the previous lap as ``stage``'s time."""
        now = time.perf_counter()
        self.stage_ms[stage] = (now - self._lap_start) * 1e3
        self._lap_start = now


def priors_channel_map(priors: Priors) -> np.ndarray:
    """Return, per class, the index of its channel in ``priors.probs`` (category or class)."""
    if priors.level == 'category':
        return np.asarray(priors.table.category_of_class, dtype=np.int64)
    return np.arange(priors.table.num_classes, dtype=np.int64)
