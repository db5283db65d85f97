"""``metafusion fit``: collect candidates, cross-validate by drive, save one classifier per α."""
from __future__ import annotations

import argparse

from metafusion_ros.tools.cli import add_force, CommandError, output_path
from metafusion_ros.tools.meta.collect import candidate_set, collect
from metafusion_ros.tools.meta.fit import fit_bundle, PAPER_ALPHAS
from metafusion_ros.tools.meta.sources import (add_params_arguments, add_source_arguments,
                                               build_setup, describe)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` subcommand."""
    parser = subparsers.add_parser(
        'fit', help='train the meta classifiers (eq. 13), one per α, on labelled frames',
        description='Run MetaFusion with every candidate kept over labelled frames at each α '
                    'of the grid, label each disagreeing candidate (1 iff a pixel has ground '
                    'truth c), report out-of-fold ROC AUC and average precision with folds '
                    'grouped by drive, fit each α on all its candidates and save the bundle: '
                    'one manifest and one XGBoost JSON booster per α.')
    add_source_arguments(parser)
    add_params_arguments(parser)
    parser.add_argument('--alphas', type=float, nargs='+', default=list(PAPER_ALPHAS),
                        help='α grid, one classifier each (default the paper\'s: '
                             '0.9 0.95 0.975 0.99 0.995 1)')
    parser.add_argument('--out', required=True,
                        help='bundle manifest (.json); the boosters <stem>.a<α>.json go '
                             'beside it')
    add_force(parser)
    parser.set_defaults(func=run)


def _print_alpha(alpha: float, summary: dict, metrics: dict | None, skipped: str | None) -> None:
    """Print one α: candidates, and its out-of-fold numbers or why it has none."""
    print(f'alpha {alpha:g}: {summary["candidates"]} candidates '
          f'({summary["true_positives"]} true positives)')
    if skipped is not None:
        print(f'  no classifier: {skipped}')
        return
    if metrics.get('cv') == 'impossible':
        print(f'  fitted on all candidates; no out-of-fold numbers: {metrics["reason"]}')
        return
    print(f'  {metrics["cv"]}: pooled out-of-fold ROC AUC {_show(metrics["auc_pooled"])}, '
          f'AP {_show(metrics["ap_pooled"])}')
    for auc, drives in zip(metrics['auc_per_fold'], metrics['test_drives_per_fold']):
        print(f'  test drives {", ".join(drives)}: ROC AUC {_show(auc)}')


def _show(value: float | None) -> str:
    """Format a metric; None (one label only) as 'undefined'."""
    return 'undefined (one label only)' if value is None else f'{value:.3f}'


def run(args: argparse.Namespace) -> int:
    """Fit and save the bundle; print the cross-validation of every α."""
    for alpha in args.alphas:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'--alphas must lie in [0, 1], got {alpha}')
    out = output_path(args.out, args.force, 'meta model bundle')
    if out.suffix != '.json':
        raise CommandError(f'meta model bundle {out}: use a .json file name')
    for alpha in args.alphas:
        output_path(out.with_name(f'{out.stem}.a{alpha:g}.json'), args.force, 'bundle member')
    setup = build_setup(args)
    folder = collect(setup.source, setup.priors, setup.table, args.alphas, setup.cache,
                     progress=True)
    bundle, _ = fit_bundle(folder, setup.context(1.0), args.alphas, setup.params, setup.folds,
                           describe(args, setup), progress=True)
    first = candidate_set(folder, args.alphas[0], setup.feature_names).summary()
    print(f'{first["frames"]} frames of {len(first["drives"])} drives')
    for alpha in sorted(set(args.alphas)):
        member = bundle.members.get(alpha)
        _print_alpha(alpha, candidate_set(folder, alpha, setup.feature_names).summary(),
                     None if member is None else member.info['metrics'],
                     bundle.skipped.get(alpha))
    written = bundle.save(out)
    print(f'wrote {written[-1]} and {len(written) - 1} members beside it')
    return 0
