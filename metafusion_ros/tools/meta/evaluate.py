"""Evaluation of MetaFusion against the adjusted rules (§5, §6; Table 2, Fig. 4-6).

For every α of the grid the cached candidates (:mod:`.collect`) get meta scores, either
out-of-fold from :func:`.fit.cross_validate` (refit mode; stored next to the cache, so another τ
costs only the counting) or from a fixed :class:`.classifier.MetaBundle` (its member serving α;
any folder, one drive is enough). For each τ the kept candidates are fused into the Bayes mask
(eq. 14) and every rule is counted with :mod:`metafusion_ros.core.evaluation`: segment FP and FN
of class c, Δ (eq. 17), mIoU and per-class IoU, F1 and the share of ML's added true positives
that MetaFusion keeps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from scipy import ndimage

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.defaults import SUPPORT
from metafusion_ros.core.evaluation import (added_tp_share, confusion, delta, iou_per_class,
                                            mean_iou, SegmentCounts, segment_counts)
from metafusion_ros.core.files import load_npz, parse_json
from metafusion_ros.core.fusion import FUSION_MODES, fuse
from metafusion_ros.runtime.classifier import (check_training_set, MetaBundle, MetaParams,
                                               ModelContext)
from metafusion_ros.tools.meta.collect import (at_labels, CachedFrame, candidate_set,
                                               load_frames)
from metafusion_ros.tools.meta.fit import cross_validate, CrossValidation

__all__ = ['DEFAULT_ALPHAS', 'RuleResult', 'Scores', 'Evaluation', 'out_of_fold', 'evaluate',
           'results_table', 'rules_fp_at_fn']

DEFAULT_ALPHAS = (0.0, 0.9, 0.95, 0.975, 0.99, 0.995, 1.0)


@dataclass(frozen=True)
class RuleResult:
    """Counts of one decision rule over all frames (ML at α, or MetaFusion at α and τ)."""

    rule: str
    alpha: float
    tau: float
    counts: SegmentCounts
    conf: np.ndarray | None
    candidates: int = 0
    kept: int = 0
    note: str = ''
    candidate_tp: int = 0
    kept_tp: int = 0
    fusion: str | None = None
    changed: np.ndarray | None = None
    recovered: tuple[int, int, int] | None = None

    @property
    def miou(self) -> float:
        """Return the mean IoU over all classes (nan when not evaluated)."""
        return float('nan') if self.conf is None else mean_iou(self.conf)

    def class_iou(self) -> np.ndarray | None:
        """Return the pixel IoU per class (None when not evaluated)."""
        return None if self.conf is None else iou_per_class(self.conf)


@dataclass(frozen=True, eq=False)
class Scores:
    """Meta scores of one α's candidates with their eq. 13 labels, or why there are none.

    ``validation`` is the cross-validation (refit mode); ``member`` the α of the fixed bundle's
    member that produced them (fixed mode).
    """

    values: np.ndarray | None
    labels: np.ndarray
    note: str = ''
    validation: CrossValidation | None = None
    member: float | None = None


@dataclass(eq=False)
class Evaluation:
    """All results of one evaluation: Bayes, ML per α, MetaFusion per α and τ, CV details."""

    bayes: RuleResult
    table: ClassTable
    ml: dict[float, RuleResult] = field(default_factory=dict)
    fusion: dict[tuple[float, float, str], RuleResult] = field(default_factory=dict)
    scores: dict[float, Scores] = field(default_factory=dict)
    mode: str = 'out-of-fold'

    @property
    def validation(self) -> dict[float, CrossValidation]:
        """Return the cross-validation per α (refit mode; empty for a fixed bundle)."""
        return {a: s.validation for a, s in self.scores.items() if s.validation is not None}

    @property
    def notes(self) -> dict[float, str]:
        """Return why an α has no MetaFusion scores, or which member scored it."""
        return {a: s.note for a, s in self.scores.items() if s.note}

    def rows(self) -> list[dict[str, Any]]:
        """Return the table rows: Bayes, then per α the ML rule and MetaFusion per τ and fusion."""
        rows = [self._row(self.bayes, self.bayes)]
        for alpha, ml in sorted(self.ml.items()):
            rows.append(self._row(ml, ml))
            for (a, _, _), result in sorted(self.fusion.items()):
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
        ious = result.class_iou()
        scores = self.scores.get(result.alpha) if result.rule == 'MetaFusion' else None
        return {'rule': result.rule, 'alpha': result.alpha, 'tau': result.tau,
                'fusion': result.fusion, 'miou': result.miou, 'tp': c.tp, 'fp': c.fp, 'fn': c.fn,
                'delta': delta(c, self.bayes.counts) if counted else nan,
                'f1': c.f1 if counted else nan,
                'added_tp_kept': (added_tp_share(c, self.bayes.counts, ml.counts)
                                  if counted and adds else nan),
                'candidates': result.candidates, 'kept': result.kept, 'note': result.note,
                'candidate_tp': result.candidate_tp, 'kept_tp': result.kept_tp,
                'target_iou': nan if ious is None else float(ious[self.table.target]),
                'class_iou': None if ious is None else {
                    name: None if np.isnan(v) else float(v)
                    for name, v in zip(self.table.class_names, ious)},
                'meta_alpha': None if scores is None else scores.member,
                'fused_pixels': self._fused_pixels(result),
                'recovered': None if result.recovered is None else dict(
                    zip(('agreeing', 'candidates', 'both'), result.recovered))}

    def _fused_pixels(self, result: RuleResult) -> dict[str, dict[str, int]] | None:
        """Return the label pixels MetaFusion turns to c, by source and ground-truth class."""
        if result.changed is None:
            return None
        return {source: {name: int(n) for name, n in zip(self.table.class_names, counts) if n}
                for source, counts in zip(('agreeing', 'candidates'), result.changed)}


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
        data = load_npz(path, f'cache file {path}')
        return CrossValidation(data['scores'], data['fold_of'], list(data['auc']),
                               parse_json(str(data['test_drives']), f'cache file {path}'),
                               data['importances'], data['labels'])
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
    """Running segment counts and confusion matrix of one rule.

    For MetaFusion also where its class-c pixels come from (:class:`_Truth`): ``changed`` (2, C)
    counts the label pixels it turns to c that Bayes gave another class, by source (the agreeing
    segments' ML extent, the kept candidates) and ground-truth class; ``recovered`` the
    ground-truth c segments Bayes misses that it finds, through the agreeing segments only, the
    candidates only, or both.
    """

    counts: SegmentCounts = SegmentCounts()
    conf: np.ndarray | None = None
    kept: int = 0
    kept_tp: int = 0
    changed: np.ndarray | None = None
    recovered: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))

    def add(self, pred: np.ndarray, gt: np.ndarray, table: ClassTable) -> np.ndarray:
        """Add one frame (``pred`` enlarged to ``gt``'s size as the node publishes it).

        Return the enlarged mask.
        """
        pred = at_labels(pred, gt)
        self.counts = self.counts + segment_counts(pred, gt, table)
        frame_conf = confusion(pred, gt, table)
        self.conf = frame_conf if self.conf is None else self.conf + frame_conf
        return pred

    def add_changes(self, fused: np.ndarray, from_candidates: np.ndarray,
                    truth: '_Truth') -> None:
        """Add where the enlarged ``fused`` mask's new class-c pixels come from (one frame)."""
        changed = (fused == truth.target) & truth.not_c
        sources = (changed & ~from_candidates, changed & from_candidates)
        counts = np.stack([np.bincount(truth.gt[s].astype(np.int64), minlength=truth.classes)
                           for s in sources])
        self.changed = counts if self.changed is None else self.changed + counts
        if truth.missed.size:
            agree, cand = (np.isin(truth.missed, truth.segments[s]) for s in sources)
            self.recovered += [np.count_nonzero(agree & ~cand),
                               np.count_nonzero(cand & ~agree), np.count_nonzero(agree & cand)]


@dataclass(frozen=True, eq=False)
class _Truth:
    """One frame's ground truth as the decomposition of the fused pixels reads it.

    ``gt`` merged (rider read as person), ``not_c`` the valid label pixels Bayes gives another
    class than c, ``segments`` the ground-truth c segments (8-connected, ids) and ``missed``
    the ids of those without a Bayes-c pixel (spec §6: Bayes' false negatives).
    """

    gt: np.ndarray
    not_c: np.ndarray
    segments: np.ndarray
    missed: np.ndarray
    target: int
    classes: int

    @classmethod
    def of(cls, bayes: np.ndarray, gt: np.ndarray, table: ClassTable) -> '_Truth':
        """Return the truth of a frame from its enlarged Bayes mask and its labels."""
        gt = table.merge_labels(gt)
        c = table.target
        segments, n = ndimage.label(gt == c, structure=np.ones((3, 3), dtype=bool))
        found = np.zeros(n + 1, dtype=bool)
        found[segments[bayes == c]] = True
        missed = np.flatnonzero(~found[1:]) + 1
        return cls(gt, (bayes != c) & (gt != table.ignore_label), segments, missed, c,
                   table.num_classes)


def _evaluate_alpha(folder: Path, alpha: float, table: ClassTable,
                    scores: np.ndarray | None, settings: list[tuple[float, str]],
                    bayes: _Tally | None, support: float = SUPPORT
                    ) -> tuple[_Tally, dict[tuple[float, str], _Tally], int]:
    """Count ML and MetaFusion (per τ and fusion reading) at one α; fill ``bayes``."""
    ml, fused, offset = _Tally(), {key: _Tally() for key in settings}, 0
    for frame in load_frames(folder, alpha):
        if bayes is not None:
            bayes.add(frame.pred_bayes, frame.gt, table)
        ml.add(frame.pred_ml, frame.gt, table)
        n = frame.candidates.count
        truth = _Truth.of(at_labels(frame.pred_bayes, frame.gt), frame.gt, table) \
            if scores is not None and settings else None
        kept_at: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # per τ, for every reading
        for (tau, mode), tally in fused.items() if truth is not None else ():
            if tau not in kept_at:
                keep = scores[offset:offset + n] >= tau
                kept_at[tau] = keep, _kept_at_labels(frame, keep)
            keep, from_candidates = kept_at[tau]
            mask = tally.add(fuse(frame.pred_bayes, frame.candidates, keep, table.target, mode,
                                  frame.support, support), frame.gt, table)
            tally.add_changes(mask, from_candidates, truth)
            tally.kept += int(keep.sum())
            tally.kept_tp += int((keep & frame.labels).sum())
        offset += n
    return ml, fused, offset


def _kept_at_labels(frame: CachedFrame, keep: np.ndarray) -> np.ndarray:
    """Return where the ``keep`` candidates of ``frame`` lie, enlarged to its labels' size."""
    kept = np.zeros(frame.pred_bayes.size, dtype=np.uint8)
    kept[frame.candidates.pixels[keep[frame.candidates.pixel_ids - 1]]] = 1
    return at_labels(kept.reshape(frame.pred_bayes.shape), frame.gt) == 1


def out_of_fold_scores(folder: Path, context: ModelContext, params: MetaParams,
                       max_folds: int) -> Scores:
    """Return the out-of-fold scores at ``context.alpha``, or the reason there are none."""
    labels = candidate_set(folder, context.alpha, context.feature_names).labels
    try:
        validation = out_of_fold(folder, context, params, max_folds)
    except ValueError as exc:
        return Scores(None, labels, str(exc))
    return Scores(validation.scores, labels, validation=validation)


def bundle_scores(folder: Path, bundle: MetaBundle, alpha: float) -> Scores:
    """Return the scores of the bundle member serving ``alpha`` (``ValueError`` if none)."""
    choice = bundle.select(alpha)
    candidates = candidate_set(folder, alpha, bundle.context.feature_names)
    values = bundle.members[choice.alpha].predict_proba(candidates.features)
    note = '' if choice.exact else f'scored by the member of alpha {choice.alpha:g} (nearest)'
    return Scores(values, candidates.labels, note, member=choice.alpha)


def evaluate(folder: Path, table: ClassTable, feature_names: tuple[str, ...],
             priors_digest: str, alphas: Iterable[float] = DEFAULT_ALPHAS,
             taus: Iterable[float] = (0.5,), params: MetaParams = MetaParams(),
             max_folds: int = 5, progress: bool = False, bundle: MetaBundle | None = None,
             fusions: Iterable[str] = FUSION_MODES, support: float = SUPPORT) -> Evaluation:
    """Evaluate Bayes, ML and MetaFusion on a filled cache (Table 2).

    MetaFusion is out-of-fold (refit mode, drive-grouped CV) or, with ``bundle``, scored by its
    fixed members, for each τ and fusion reading (spec §5: ``reference``, ``literal``,
    ``support`` with the threshold ``support``). An α without candidates (e.g. α = 0, or a very
    confident network) keeps nothing: literal fusion is Bayes there; a single-class candidate
    set (refit mode) is reported in the notes and gets no MetaFusion row.
    """
    alphas, taus = [float(a) for a in alphas], [float(t) for t in taus]
    settings = [(tau, mode) for tau in taus for mode in fusions]
    if bundle is not None:
        for alpha in alphas:
            bundle.select(alpha)  # refuse an α the bundle cannot serve before any work
    if progress:
        from tqdm import tqdm
        alphas = tqdm(alphas, desc='evaluate', unit='alpha')
    result, bayes = None, _Tally()
    for alpha in alphas:
        scored = bundle_scores(folder, bundle, alpha) if bundle is not None else \
            out_of_fold_scores(folder, ModelContext(feature_names, table, alpha, priors_digest),
                               params, max_folds)
        values = scored.values if scored.labels.size else np.zeros(0)
        ml, fused, count = _evaluate_alpha(folder, alpha, table, values, settings,
                                           bayes if result is None else None, support)
        if result is None:
            result = Evaluation(RuleResult('Bayes', 0.0, float('nan'), bayes.counts, bayes.conf),
                                table, mode='out-of-fold' if bundle is None else
                                f'fixed bundle {bundle.path}')
        positives = int(scored.labels.sum())
        result.ml[alpha] = RuleResult('ML', alpha, float('nan'), ml.counts, ml.conf, count,
                                      count, candidate_tp=positives, kept_tp=positives)
        result.scores[alpha] = scored
        for tau, mode in settings:
            result.fusion[(alpha, tau, mode)] = _fusion_result(alpha, tau, mode,
                                                               fused[(tau, mode)], count, scored)
    return result


def _fusion_result(alpha: float, tau: float, mode: str, tally: _Tally, count: int,
                   scored: Scores) -> RuleResult:
    """Return MetaFusion's result (nothing kept without candidates), n/a when not trainable."""
    if count == 0:
        note = 'no candidates: ' + ('MetaFusion = Bayes' if mode == 'literal' else
                                    'only the agreeing ML segments are fused' if
                                    mode == 'reference' else
                                    'only the supported agreeing extent is fused')
        return RuleResult('MetaFusion', alpha, tau, tally.counts, tally.conf, 0, 0, note,
                          fusion=mode, changed=tally.changed,
                          recovered=tuple(int(v) for v in tally.recovered))
    positives = int(scored.labels.sum())
    if scored.values is None:
        return RuleResult('MetaFusion', alpha, tau, SegmentCounts(-1, -1, -1), None, count, 0,
                          f'not trained: {scored.note}', positives, fusion=mode)
    return RuleResult('MetaFusion', alpha, tau, tally.counts, tally.conf, count, tally.kept,
                      scored.note, positives, tally.kept_tp, mode, tally.changed,
                      tuple(int(v) for v in tally.recovered))


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    """Return Markdown lines in the layout of the paper's Table 2."""
    lines = ['| rule | fusion | α | τ | mIoU | FP | FN | Δ | F1 (c) | ML added TPs kept '
             '| candidates | kept | rules\' FP at this FN |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        head = f'| {r["rule"]} | {r["fusion"] or ""} | {r["alpha"]:g} | {_fmt(r["tau"], "g")}'
        if r['fp'] < 0:
            lines.append(f'{head} | – | – | – | – | – | – | {r["candidates"]} | – | – |')
            continue
        lines.append(
            f'{head} | {_fmt(r["miou"], ".3f")} '
            f'| {r["fp"]} | {r["fn"]} | {_fmt(r["delta"], ".2f")} | {_fmt(r["f1"], ".3f")} '
            f'| {_fmt(100 * r["added_tp_kept"], ".1f", "%")} | {r["candidates"]} '
            f'| {r["kept"]} | {_fmt(r["rules_fp_at_fn"], ".1f")} |')
    return lines


def _fmt(value: float, spec: str, suffix: str = '') -> str:
    """Format a number; nan as an en dash."""
    return '–' if value is None or np.isnan(value) else f'{value:{spec}}{suffix}'
