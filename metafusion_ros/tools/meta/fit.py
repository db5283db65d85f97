"""Fitting the meta classifiers with cross-validation grouped by drive (§4, eq. 13).

Every reported number is out-of-fold, as in the paper. Folds never split a drive: with at least
``max_folds`` drives it is ``max_folds``-fold grouped CV, with fewer it is leave-one-drive-out.
The classifiers shipped for the node, one per α of the grid (:class:`.classifier.MetaBundle`),
are then fitted on all candidates of their α.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from metafusion_ros.runtime.classifier import (check_training_set, MetaBundle, MetaClassifier,
                                               MetaParams, ModelContext)
from metafusion_ros.tools.meta.collect import candidate_set, CandidateSet

__all__ = ['drive_folds', 'CrossValidation', 'cross_validate', 'fit_bundle', 'PAPER_ALPHAS',
           'ranking_metrics']

# The α grid of the paper's Table 2 (α = 0 is the Bayes rule: no candidates).
PAPER_ALPHAS = (0.9, 0.95, 0.975, 0.99, 0.995, 1.0)


def drive_folds(groups: np.ndarray, max_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``(train, test)`` index pairs with no drive in both (leave-one-drive-out if few).

    Raises ``ValueError`` with fewer than two drives: out-of-fold numbers need a drive to test on
    that the classifier has not seen.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    drives = np.unique(groups)
    if drives.size < 2:
        raise ValueError(f'cross-validation by drive needs at least 2 drives, got '
                         f'{drives.size} ({", ".join(map(str, drives)) or "none"})')
    splitter = GroupKFold(n_splits=min(max_folds, drives.size))
    index = np.arange(groups.size)
    return [(train, test) for train, test in splitter.split(index, groups=groups)]


@dataclass(frozen=True, eq=False)
class CrossValidation:
    """Out-of-fold scores (with the eq. 13 labels), ROC AUC and feature importances per fold."""

    scores: np.ndarray
    fold_of: np.ndarray
    auc: list[float]
    test_drives: list[list[str]]
    importances: np.ndarray
    labels: np.ndarray

    def metrics(self) -> dict[str, Any]:
        """Return JSON-friendly metrics; a nan AUC (single-label test fold) becomes None.

        ``auc_pooled`` / ``ap_pooled``: ROC AUC and average precision of all out-of-fold scores.
        """
        auc = [_rounded(a) for a in self.auc]
        valid = [a for a in self.auc if not np.isnan(a)]
        return {'cv': 'leave-one-drive-out' if all(len(d) == 1 for d in self.test_drives)
                else f'{len(self.auc)}-fold grouped by drive',
                'auc_per_fold': auc, 'test_drives_per_fold': self.test_drives,
                'auc_mean': round(float(np.mean(valid)), 4) if valid else None,
                **ranking_metrics(self.labels, self.scores)}


def _rounded(value: float) -> float | None:
    """Return ``value`` rounded to 4 digits, None for nan."""
    return None if np.isnan(value) else round(float(value), 4)


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """Return ROC AUC and average precision of ``scores`` (None where one label only)."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels, dtype=bool)
    single = labels.size == 0 or labels.all() or not labels.any()
    return {'auc_pooled': _rounded(_auc(labels, scores)),
            'ap_pooled': None if single else _rounded(average_precision_score(labels, scores))}


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the ROC AUC, nan when the fold holds a single label."""
    from sklearn.metrics import roc_auc_score

    if labels.size == 0 or labels.all() or not labels.any():
        return float('nan')
    return float(roc_auc_score(labels, scores))


def cross_validate(candidates: CandidateSet, context: ModelContext,
                   params: MetaParams = MetaParams(), max_folds: int = 5) -> CrossValidation:
    """Return out-of-fold ``P(true positive)`` for every candidate (folds grouped by drive)."""
    check_training_set(candidates.features, candidates.labels, 'candidate set')
    folds = drive_folds(candidates.groups, max_folds)
    scores = np.zeros(candidates.size)
    fold_of = np.zeros(candidates.size, dtype=np.int64)
    auc, drives, importances = [], [], []
    for k, (train, test) in enumerate(folds):
        test_drives = sorted(map(str, np.unique(candidates.groups[test])))
        try:
            model = MetaClassifier.fit(candidates.features[train], candidates.labels[train],
                                       context, params)
        except ValueError as exc:
            raise ValueError(f'fold {k + 1} (testing on {", ".join(test_drives)}): {exc}') \
                from exc
        scores[test] = model.predict_proba(candidates.features[test])
        fold_of[test] = k
        auc.append(_auc(candidates.labels[test], scores[test]))
        drives.append(test_drives)
        importances.append(model.importances())
    return CrossValidation(scores, fold_of, auc, drives, np.array(importances),
                           candidates.labels)


def _fit_alpha(candidates: CandidateSet, context: ModelContext, params: MetaParams,
               max_folds: int) -> tuple[MetaClassifier, CrossValidation | None]:
    """Fit one α on all its candidates; cross-validate when the folds allow it."""
    model = MetaClassifier.fit(candidates.features, candidates.labels, context, params)
    model.info['training'].update(candidates.summary())
    try:
        validation = cross_validate(candidates, context, params, max_folds)
    except ValueError as exc:
        model.info['metrics'] = {'cv': 'impossible', 'reason': str(exc)}
        return model, None
    model.info['metrics'] = validation.metrics()
    return model, validation


def fit_bundle(folder: Path, context: ModelContext, alphas: Iterable[float] = PAPER_ALPHAS,
               params: MetaParams = MetaParams(), max_folds: int = 5, source: str = '',
               progress: bool = False) -> tuple[MetaBundle, dict[float, CrossValidation]]:
    """Fit one classifier per α on the cached candidates of ``folder`` (filled by ``collect``).

    An α whose candidates are empty or of one label gets no member; the reason is kept in the
    bundle (``skipped``) and the nearest member serves it (:meth:`MetaBundle.select`). A member
    whose folds cannot all be trained carries the reason instead of out-of-fold metrics. Raise
    ``ValueError`` when no α can be fitted.
    """
    alphas = [float(a) for a in alphas]
    if progress:
        from tqdm import tqdm
        alphas = tqdm(alphas, desc='fit', unit='alpha')
    members, validations, skipped = {}, {}, {}
    for alpha in alphas:
        candidates = candidate_set(folder, alpha, context.feature_names)
        try:
            member, validation = _fit_alpha(candidates, replace(context, alpha=alpha), params,
                                            max_folds)
        except ValueError as exc:
            skipped[alpha] = str(exc)
            continue
        members[alpha] = member
        if validation is not None:
            validations[alpha] = validation
    if not members:
        raise ValueError('no alpha of the grid has candidates of both labels: ' + '; '.join(
            f'alpha {a:g}: {r}' for a, r in skipped.items()))
    return MetaBundle(members, skipped, source), validations
