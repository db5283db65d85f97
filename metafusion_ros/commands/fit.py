"""``metafusion fit``: collect candidates, cross-validate by drive and save the meta classifier."""
from __future__ import annotations

import argparse

from ..meta.classifier import ModelContext
from ..meta.collect import candidate_set, collect
from ..meta.fit import fit_meta
from ..meta.sources import add_params_arguments, add_source_arguments, build_setup, describe


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` subcommand."""
    parser = subparsers.add_parser(
        'fit', help='train the meta classifier (eq. 13) on labelled frames',
        description='Run MetaFusion with every candidate kept over labelled frames, label each '
                    'disagreeing candidate (1 iff a pixel has ground truth c), report '
                    'out-of-fold ROC AUC with folds grouped by drive, fit on all candidates '
                    'and save the XGBoost model with its manifest.')
    add_source_arguments(parser)
    add_params_arguments(parser)
    parser.add_argument('--alpha', type=float, default=1.0,
                        help='prior interpolation α the model is fitted for (default 1)')
    parser.add_argument('--out', required=True,
                        help='model file (.json or .ubj); the manifest goes beside it')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit and save the meta classifier; print the cross-validation."""
    setup = build_setup(args)
    folder = collect(setup.source, setup.priors, setup.table, [args.alpha], setup.cache,
                     progress=True)
    candidates = candidate_set(folder, args.alpha, setup.feature_names)
    context = ModelContext(setup.feature_names, setup.table, args.alpha, setup.priors.digest)
    model, validation = fit_meta(candidates, context, setup.params, setup.folds)
    model.info['training']['source'] = describe(args)
    summary = candidates.summary()
    print(f'{summary["candidates"]} candidates ({summary["true_positives"]} true positives) in '
          f'{summary["frames"]} frames of {len(summary["drives"])} drives')
    metrics = validation.metrics()
    print(f'cross-validation: {metrics["cv"]}')
    for auc, drives in zip(metrics['auc_per_fold'], metrics['test_drives_per_fold']):
        shown = 'undefined (one label only)' if auc is None else f'{auc:.3f}'
        print(f'  test drives {", ".join(drives)}: ROC AUC {shown}')
    model_path, manifest = model.save(args.out)
    print(f'wrote {model_path} and {manifest}')
    return 0
