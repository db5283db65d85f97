"""Out-of-fold evaluation of MetaFusion against the adjusted rules (§5, §6; Table 2, Fig. 4-6).

For every α of the grid the cached candidates (:mod:`.collect`) get out-of-fold scores from
:func:`.fit.cross_validate` (stored next to the cache, so another τ costs only the counting).
For each τ the kept candidates are fused into the Bayes mask (eq. 14) and every rule is counted
with :mod:`metafusion_ros.core.evaluation`: segment FP and FN of class c, Δ (eq. 17), mIoU, F1
and the share of ML's added true positives that MetaFusion keeps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..core.classes import ClassTable
from ..core.evaluation import (added_tp_share, confusion, delta, mean_iou, SegmentCounts,
                               segment_counts)
from ..core.fusion import fuse
from .classifier import check_training_set, MetaParams, ModelContext
from .collect import candidate_set, load_frames
from .fit import cross_validate, CrossValidation

__all__ = ['DEFAULT_ALPHAS', 'RuleResult', 'Evaluation', 'out_of_fold', 'evaluate',
           'results_table', 'rules_fp_at_fn']

DEFAULT_ALPHAS = (0.0, 0.9, 0.95, 0.975, 0.99, 0.995, 1.0)


@dataclass(frozen=True)
class RuleResult:
    """Counts of one decision rule over all frames (ML at α, or MetaFusion at α and τ)."""

    rule: str
    alpha: float
    tau: float
    counts: SegmentCounts
    miou: float
    candidates: int = 0
    kept: int = 0
    note: str = ''


@dataclass(eq=False)
class Evaluation:
    """All results of one evaluation: Bayes, ML per α, MetaFusion per α and τ, CV details."""

    bayes: RuleResult
    ml: dict[float, RuleResult] = field(default_factory=dict)
    fusion: dict[tuple[float, float], RuleResult] = field(default_factory=dict)
    validation: dict[float, CrossValidation] = field(default_factory=dict)
    notes: dict[float, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """Return the table rows: Bayes, then per α the ML rule and MetaFusion for each τ."""
        rows = [self._row(self.bayes, self.bayes)]
        for alpha, ml in sorted(self.ml.items()):
            rows.append(self._row(ml, ml))
            for (a, _), result in sorted(self.fusion.items()):
                if a == alpha:
                    rows.append(self._row(result, ml))
        curve = [(0.0, self.bayes.counts)] + sorted(
            (a, ml.counts) for a, ml in self.ml.items())
        for row in rows:
            row['rules_fp_at_fn'] = (rules_fp_at_fn([c for _, c in curve], row['fn'])
                                     if row['rule'] == 'MetaFusion' and row['fp'] >= 0
                                     else float('nan'))
        return rows

    def _row(self, result: RuleResult, ml: RuleResult) -> dict[str, Any]:
        """Return one row with Δ and the added-TP share (eq. 17).

        Rules that were not evaluated (counts -1) get nan; the added-TP share is nan where ML
        removes no Bayes false negative.
        """
        c, nan = result.counts, float('nan')
        counted = c.fp >= 0
        adds = ml.counts.fn < self.bayes.counts.fn
        return {'rule': result.rule, 'alpha': result.alpha, 'tau': result.tau,
                'miou': result.miou, 'tp': c.tp, 'fp': c.fp, 'fn': c.fn,
                'delta': delta(c, self.bayes.counts) if counted else nan,
                'f1': c.f1 if counted else nan,
                'added_tp_kept': (added_tp_share(c, self.bayes.counts, ml.counts)
                                  if counted and adds else nan),
                'candidates': result.candidates, 'kept': result.kept, 'note': result.note}


def rules_fp_at_fn(curve: list[SegmentCounts], fn: int) -> float:
    """Return the fewest FP the adjusted rules reach at ``fn`` false negatives.

    ``curve`` holds the rules' counts in α order (Bayes first); between neighbouring α the
    FP-vs-FN curve is taken as linear (Figures 4/5). nan where no rule reaches ``fn``.
    """
    best = float('nan')
    for a, b in zip(curve, curve[1:]):
        low, high = sorted((a.fn, b.fn))
        if not low <= fn <= high:
            continue
        if a.fn == b.fn:
            fp = min(a.fp, b.fp)
        else:
            fp = a.fp + (b.fp - a.fp) * (fn - a.fn) / (b.fn - a.fn)
        best = fp if np.isnan(best) else min(best, fp)
    return best


def _scores_path(folder: Path, alpha: float, params: MetaParams, max_folds: int) -> Path:
    """Return the file of cached out-of-fold scores for α and the CV settings."""
    key = hashlib.sha256(json.dumps([asdict(params), max_folds]).encode()).hexdigest()[:12]
    return folder / f'oof.a{alpha:.6f}.{key}.npz'


def out_of_fold(folder: Path, context: ModelContext, params: MetaParams = MetaParams(),
                max_folds: int = 5) -> CrossValidation:
    """Return (and cache) out-of-fold scores of the candidates at ``context.alpha``.

    A cross-validation that is impossible (a training fold with one label) is cached as its
    error message, raised again as ``ValueError``.
    """
    candidates = candidate_set(folder, context.alpha, context.feature_names)
    check_training_set(candidates.features, candidates.labels, 'candidate set')
    path = _scores_path(folder, context.alpha, params, max_folds)
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return CrossValidation(data['scores'], data['fold_of'], list(data['auc']),
                                   json.loads(str(data['test_drives'])), data['importances'],
                                   data['labels'])
    failed = path.with_suffix('.error.txt')
    if failed.is_file():
        raise ValueError(failed.read_text())
    try:
        validation = cross_validate(candidates, context, params, max_folds)
    except ValueError as exc:
        failed.write_text(str(exc))
        raise
    with open(path, 'wb') as fh:
        np.savez(fh, scores=validation.scores, fold_of=validation.fold_of,
                 auc=np.asarray(validation.auc), importances=validation.importances,
                 labels=validation.labels,
                 test_drives=np.array(json.dumps(validation.test_drives)))
    return validation


@dataclass
class _Tally:
    """Running segment counts and confusion matrix of one rule."""

    counts: SegmentCounts = SegmentCounts()
    conf: np.ndarray | None = None
    kept: int = 0

    def add(self, pred: np.ndarray, gt: np.ndarray, table: ClassTable) -> None:
        """Add one frame."""
        self.counts = self.counts + segment_counts(pred, gt, table)
        frame_conf = confusion(pred, gt, table)
        self.conf = frame_conf if self.conf is None else self.conf + frame_conf


def _evaluate_alpha(folder: Path, alpha: float, table: ClassTable,
                    scores: np.ndarray | None, taus: list[float],
                    bayes: _Tally | None) -> tuple[_Tally, dict[float, _Tally], int]:
    """Count ML and MetaFusion (per τ) at one α over the cached frames; fill ``bayes``."""
    ml, fused, offset = _Tally(), {tau: _Tally() for tau in taus}, 0
    for frame in load_frames(folder, alpha):
        if bayes is not None:
            bayes.add(frame.pred_bayes, frame.gt, table)
        ml.add(frame.pred_ml, frame.gt, table)
        n = frame.candidates.count
        for tau, tally in fused.items() if scores is not None else ():
            keep = scores[offset:offset + n] >= tau
            tally.add(fuse(frame.pred_bayes, frame.candidates, keep, table.target), frame.gt,
                      table)
            tally.kept += int(keep.sum())
        offset += n
    return ml, fused, offset


def evaluate(folder: Path, table: ClassTable, feature_names: tuple[str, ...],
             priors_digest: str, alphas: Iterable[float] = DEFAULT_ALPHAS,
             taus: Iterable[float] = (0.5,), params: MetaParams = MetaParams(),
             max_folds: int = 5, progress: bool = False) -> Evaluation:
    """Evaluate Bayes, ML and out-of-fold MetaFusion on a filled cache (Table 2).

    An α without candidates (e.g. α = 0, or a very confident network) gives MetaFusion = Bayes;
    a single-class candidate set is reported in the notes and gets no MetaFusion row.
    """
    alphas, taus = [float(a) for a in alphas], [float(t) for t in taus]
    if progress:
        from tqdm import tqdm
        alphas = tqdm(alphas, desc='evaluate', unit='alpha')
    result, bayes = None, _Tally()
    for alpha in alphas:
        context = ModelContext(feature_names, table, alpha, priors_digest)
        validation, note = _validate(folder, context, params, max_folds)
        scores = None if validation is None else validation.scores
        ml, fused, count = _evaluate_alpha(folder, alpha, table, scores, taus,
                                           bayes if result is None else None)
        if result is None:
            result = Evaluation(RuleResult('Bayes', 0.0, float('nan'), bayes.counts,
                                           mean_iou(bayes.conf)))
        result.ml[alpha] = RuleResult('ML', alpha, float('nan'), ml.counts, mean_iou(ml.conf),
                                      count, count)
        if validation is not None:
            result.validation[alpha] = validation
        if note:
            result.notes[alpha] = note
        for tau in taus:
            result.fusion[(alpha, tau)] = _fusion_result(alpha, tau, fused[tau], bayes, count,
                                                         scores, note)
    return result


def _validate(folder: Path, context: ModelContext, params: MetaParams, max_folds: int
              ) -> tuple[CrossValidation | None, str]:
    """Return the out-of-fold validation, or ``None`` and the reason it is impossible."""
    try:
        return out_of_fold(folder, context, params, max_folds), ''
    except ValueError as exc:
        return None, str(exc)


def _fusion_result(alpha: float, tau: float, tally: _Tally, bayes: _Tally, count: int,
                   scores: np.ndarray | None, note: str) -> RuleResult:
    """Return MetaFusion's result; Bayes when there is no candidate, n/a when not trainable."""
    if count == 0:
        return RuleResult('MetaFusion', alpha, tau, bayes.counts, mean_iou(bayes.conf), 0, 0,
                          'no candidates: MetaFusion = Bayes')
    if scores is None:
        nan = float('nan')
        return RuleResult('MetaFusion', alpha, tau, SegmentCounts(-1, -1, -1), nan, count, 0,
                          f'not trained: {note}')
    return RuleResult('MetaFusion', alpha, tau, tally.counts, mean_iou(tally.conf), count,
                      tally.kept)


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    """Return Markdown lines in the layout of the paper's Table 2."""
    lines = ['| rule | α | τ | mIoU | FP | FN | Δ | F1 (c) | ML added TPs kept | candidates '
             '| kept | rules\' FP at this FN |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        if r['fp'] < 0:
            lines.append(f'| {r["rule"]} | {r["alpha"]:g} | {_fmt(r["tau"], "g")} | – | – | – '
                         f'| – | – | – | {r["candidates"]} | – | – |')
            continue
        lines.append(
            f'| {r["rule"]} | {r["alpha"]:g} | {_fmt(r["tau"], "g")} | {_fmt(r["miou"], ".3f")} '
            f'| {r["fp"]} | {r["fn"]} | {_fmt(r["delta"], ".2f")} | {_fmt(r["f1"], ".3f")} '
            f'| {_fmt(100 * r["added_tp_kept"], ".1f", "%")} | {r["candidates"]} '
            f'| {r["kept"]} | {_fmt(r["rules_fp_at_fn"], ".1f")} |')
    return lines


def _fmt(value: float, spec: str, suffix: str = '') -> str:
    """Format a number; nan as an en dash."""
    return '–' if value is None or np.isnan(value) else f'{value:{spec}}{suffix}'
