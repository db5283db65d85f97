"""Fitting the meta classifier with cross-validation grouped by drive (§4, eq. 13).

Every reported number is out-of-fold, as in the paper. Folds never split a drive: with at least
``max_folds`` drives it is ``max_folds``-fold grouped CV, with fewer it is leave-one-drive-out.
The model shipped for the node is then fitted on all candidates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .classifier import MetaClassifier, MetaParams, ModelContext, check_training_set
from .collect import CandidateSet

__all__ = ['drive_folds', 'CrossValidation', 'cross_validate', 'fit_meta']


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
        """Return JSON-friendly metrics; a nan AUC (single-label test fold) becomes None."""
        auc = [None if np.isnan(a) else round(float(a), 4) for a in self.auc]
        valid = [a for a in self.auc if not np.isnan(a)]
        return {'cv': 'leave-one-drive-out' if all(len(d) == 1 for d in self.test_drives)
                else f'{len(self.auc)}-fold grouped by drive',
                'auc_per_fold': auc, 'test_drives_per_fold': self.test_drives,
                'auc_mean': round(float(np.mean(valid)), 4) if valid else None}


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


def fit_meta(candidates: CandidateSet, context: ModelContext, params: MetaParams = MetaParams(),
             max_folds: int = 5) -> tuple[MetaClassifier, CrossValidation]:
    """Cross-validate, then fit on all candidates; the model carries the summary and metrics."""
    validation = cross_validate(candidates, context, params, max_folds)
    model = MetaClassifier.fit(candidates.features, candidates.labels, context, params)
    model.info['training'].update(candidates.summary())
    model.info['metrics'] = validation.metrics()
    return model, validation
