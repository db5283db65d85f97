"""The paper's §5 protocol for image classification (Z = {1}), on scikit-learn's digits.

For every class c: remove 90 % of c from the training half, train a small classifier, decide the
test half with the Bayes rule (eq. 1) and the ML rule (eq. 3) whose priors are the class
frequencies of the reduced training set, and fuse them (eq. 14) with a meta classifier on the
entropy, margin and variation ratio of the ML probabilities (eq. 6-8; 15 stages of depth 3 as for
CIFAR-10), evaluated out-of-fold with stratified k-fold over the disagreeing images. An image is a
one-pixel frame, so FP, FN and Δ are the segment counts of :mod:`metafusion_ros.core.evaluation`.
The result is the layout of the paper's Table 1.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.evaluation import SegmentCounts, delta, segment_counts
from metafusion_ros.core.heatmaps import heatmaps
from metafusion_ros.core.priors import interpolate
from metafusion_ros.core.rules import bayes_rule, ml_probabilities
from metafusion_ros.runtime.classifier import MetaClassifier, MetaParams, ModelContext

__all__ = ['DigitsSetup', 'DigitsRow', 'digits_table', 'image_counts', 'run_class', 'run_digits',
           'write_table', 'FEATURES']

FEATURES = ('E', 'M', 'V')
DIGITS_PARAMS = MetaParams(n_estimators=15, max_depth=3, features_per_split=len(FEATURES))


@dataclass(frozen=True)
class DigitsSetup:
    """Protocol settings: share of c left out, test share, folds, τ, seed, classifier strength."""

    left_out: float = 0.9
    test_size: float = 0.5
    folds: int = 5
    tau: float = 0.5
    seed: int = 0
    regularisation: float = 1.0


@dataclass(frozen=True)
class DigitsRow:
    """One row of Table 1: counts of the three decision rules for minority class ``c``."""

    target: int
    bayes: SegmentCounts
    ml: SegmentCounts
    fusion: SegmentCounts | None
    candidates: int
    note: str = ''

    def values(self) -> dict[str, float | int | str]:
        """Return the row as named columns (Δ is nan when undefined)."""
        fusion = self.fusion
        return {'class': str(self.target), 'bayes_fp': self.bayes.fp, 'bayes_fn': self.bayes.fn,
                'ml_fp': self.ml.fp, 'ml_fn': self.ml.fn, 'ml_delta': delta(self.ml, self.bayes),
                'fusion_fp': fusion.fp if fusion else float('nan'),
                'fusion_fn': fusion.fn if fusion else float('nan'),
                'fusion_delta': delta(fusion, self.bayes) if fusion else float('nan'),
                'candidates': self.candidates, 'test_images_c': self.bayes.tp + self.bayes.fn,
                'note': self.note}


def digits_table(target: int) -> ClassTable:
    """Return the 10-class table of the digits with minority class ``target``."""
    grey = tuple((25 * k, 25 * k, 25 * k) for k in range(10))
    return ClassTable(name='digits', class_names=tuple(str(k) for k in range(10)),
                      ignore_label=255, target=target, palette=grey)


def image_counts(pred: np.ndarray, gt: np.ndarray, table: ClassTable) -> SegmentCounts:
    """Sum segment TP/FP/FN of class c over images, each a one-pixel frame (§5, Z = {1})."""
    total = SegmentCounts()
    for p, g in zip(np.asarray(pred, dtype=np.uint8), np.asarray(gt, dtype=np.uint8)):
        total = total + segment_counts(p.reshape(1, 1), g.reshape(1, 1), table)
    return total


def _split(setup: DigitsSetup, target: int) -> tuple[np.ndarray, ...]:
    """Return train/test arrays with ``left_out`` of the target class removed from training."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x / 16.0, y, test_size=setup.test_size, stratify=y, random_state=setup.seed)
    rng = np.random.default_rng(setup.seed + target)
    minority = np.flatnonzero(y_train == target)
    drop = rng.choice(minority, int(round(setup.left_out * minority.size)), replace=False)
    keep = np.setdiff1d(np.arange(y_train.size), drop)
    return x_train[keep], y_train[keep], x_test, y_test


def _out_of_fold_keep(features: np.ndarray, labels: np.ndarray, table: ClassTable,
                      setup: DigitsSetup) -> tuple[np.ndarray | None, str]:
    """Return the out-of-fold keep decision per candidate, or ``None`` and why not."""
    from sklearn.model_selection import StratifiedKFold

    minority = int(min(labels.sum(), labels.size - labels.sum()))
    if minority < 2:
        return None, (f'{labels.size} candidates, {int(labels.sum())} true positives: '
                      f'single-class or too few for k-fold, meta classifier not trained')
    folds = StratifiedKFold(min(setup.folds, minority), shuffle=True, random_state=setup.seed)
    context = ModelContext(FEATURES, table, 1.0)
    scores = np.zeros(labels.size)
    for train, test in folds.split(features, labels):
        model = MetaClassifier.fit(features[train], labels[train], context, DIGITS_PARAMS)
        scores[test] = model.predict_proba(features[test])
    return scores >= setup.tau, ''


def run_class(target: int, setup: DigitsSetup = DigitsSetup()) -> DigitsRow:
    """Run the protocol for minority class ``target`` and return its Table 1 row."""
    from sklearn.linear_model import LogisticRegression

    table = digits_table(target)
    x_train, y_train, x_test, y_test = _split(setup, target)
    network = LogisticRegression(C=setup.regularisation, max_iter=2000)
    probs = network.fit(x_train, y_train).predict_proba(x_test).astype(np.float32)
    priors = np.bincount(y_train, minlength=10).astype(np.float32) / y_train.size
    prior_alpha = np.broadcast_to(interpolate(priors, 1.0), probs.shape)
    probs_ml = ml_probabilities(probs, np.ascontiguousarray(prior_alpha))
    pred_bayes, pred_ml = bayes_rule(probs), bayes_rule(probs_ml)
    candidate = (pred_ml == target) & (pred_bayes != target)
    features = np.stack(heatmaps(probs_ml[candidate]), axis=1).astype(np.float64)
    labels = y_test[candidate] == target
    keep, note = _out_of_fold_keep(features, labels, table, setup)
    bayes = image_counts(pred_bayes, y_test, table)
    ml = image_counts(pred_ml, y_test, table)
    fusion = None
    if keep is not None:
        fused = pred_bayes.copy()
        fused[np.flatnonzero(candidate)[keep]] = target
        fusion = image_counts(fused, y_test, table)
    return DigitsRow(target, bayes, ml, fusion, int(candidate.sum()), note)


def run_digits(setup: DigitsSetup = DigitsSetup(), classes: Iterable[int] = range(10),
               progress: bool = False) -> list[DigitsRow]:
    """Run :func:`run_class` for each class (Table 1)."""
    classes = list(classes)
    if progress:
        from tqdm import tqdm
        classes = tqdm(classes, desc='digits', unit='class')
    return [run_class(c, setup) for c in classes]


def _mean_row(rows: list[DigitsRow]) -> dict[str, float | str]:
    """Return the column means over the classes (Δ from the mean counts, as in Table 1)."""
    values = [r.values() for r in rows]
    mean = {k: float(np.nanmean([v[k] for v in values]))
            for k in values[0] if k not in ('class', 'note')}
    for rule in ('ml', 'fusion'):
        removed = mean['bayes_fn'] - mean[f'{rule}_fn']
        mean[f'{rule}_delta'] = ((mean[f'{rule}_fp'] - mean['bayes_fp']) / removed
                                 if removed else float('nan'))
    return {'class': 'mean', **mean, 'note': ''}


def _cell(value: float | int | str, digits: int = 2) -> str:
    """Format a table cell: integers as such, floats rounded, nan as an en dash."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return '–' if np.isnan(value) else f'{value:.{digits}f}'
    return str(int(value))


def write_table(rows: list[DigitsRow], out_dir: str | Path, command: str,
                setup: DigitsSetup) -> tuple[Path, Path]:
    """Write ``digits.md`` and ``digits.csv`` (Table 1 layout) and return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = [r.values() for r in rows] + [_mean_row(rows)]
    csv_path = out_dir / 'digits.csv'
    with open(csv_path, 'w', newline='') as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    keys = ('bayes_fp', 'bayes_fn', 'ml_fp', 'ml_fn', 'ml_delta', 'fusion_fp', 'fusion_fn',
            'fusion_delta', 'candidates', 'test_images_c')
    lines = [
        '# Digits: the §5 protocol (Table 1 layout)', '',
        f'Command: `{command}`', '',
        f'scikit-learn digits, stratified {1 - setup.test_size:.0%}/{setup.test_size:.0%} '
        f'train/test split (seed {setup.seed}); for each class c, {setup.left_out:.0%} of c '
        f'removed from training; logistic regression (C = {setup.regularisation:g}); ML rule '
        f'with the class frequencies of the reduced training set as priors; meta classifier '
        f'(XGBoost, 15 stages, depth 3) on E, M, V of the ML probabilities, out-of-fold over '
        f'{setup.folds}-fold stratified CV of the disagreeing test images; keep if '
        f'P(TP) ≥ {setup.tau:g}. Each image is a one-pixel frame; Δ = (FP − FP_Bayes) / '
        f'(FN_Bayes − FN) (eq. 17); the mean row\'s Δ is computed from the mean counts.', '',
        '| c | Bayes FP | Bayes FN | ML FP | ML FN | ML Δ | MetaFusion FP | MetaFusion FN '
        '| MetaFusion Δ | candidates | test images of c |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for row in table:
        lines.append('| ' + ' | '.join([row['class']] + [_cell(row[k]) for k in keys]) + ' |')
    notes = [f'- class {r.target}: {r.note}' for r in rows if r.note]
    if notes:
        lines += ['', 'Notes:'] + notes
    md_path = out_dir / 'digits.md'
    md_path.write_text('\n'.join(lines) + '\n')
    return md_path, csv_path
