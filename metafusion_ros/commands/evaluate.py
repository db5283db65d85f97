"""``metafusion evaluate``: Table 2 and Figures 4-6 of the paper, out-of-fold, on labelled data."""
from __future__ import annotations

import argparse
import shlex
import sys

from ..meta.collect import collect
from ..meta.evaluate import DEFAULT_ALPHAS, evaluate
from ..meta.report import write_report
from ..meta.sources import add_params_arguments, add_source_arguments, build_setup, describe


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        'evaluate', help='compare MetaFusion with the adjusted rules (Table 2, Fig. 4-6)',
        description='For each α: the ML rule and out-of-fold MetaFusion (folds grouped by '
                    'drive) against Bayes: segment FP/FN of class c, Δ, mIoU, F1, kept share '
                    'of ML\'s added true positives; Markdown + CSV table and figures.')
    add_source_arguments(parser)
    add_params_arguments(parser)
    parser.add_argument('--alphas', type=float, nargs='+', default=list(DEFAULT_ALPHAS),
                        help='α grid (default the paper\'s: 0 0.9 0.95 0.975 0.99 0.995 1)')
    parser.add_argument('--tau', type=float, nargs='+', default=[0.5],
                        help='meta threshold(s) τ; the first is the one of the Markdown table')
    parser.add_argument('--out', default='docs/results', help='output folder')
    parser.add_argument('--name', required=True, help='report name (file prefix)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Collect, evaluate and write the report."""
    for tau in args.tau:
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f'--tau must lie in [0, 1], got {tau}')
    setup = build_setup(args)
    folder = collect(setup.source, setup.priors, setup.table, args.alphas, setup.cache,
                     progress=True)
    evaluation = evaluate(folder, setup.table, setup.feature_names, setup.priors.digest,
                          args.alphas, args.tau, setup.params, setup.folds, progress=True)
    command = 'metafusion ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv[1:2] == ['evaluate'] else 'metafusion evaluate ...'
    md = write_report(evaluation, folder, setup.table, setup.feature_names, args.out, args.name,
                      command, f'Frames: {describe(args)}; priors `{args.priors}`.',
                      args.tau[0])
    print(md.read_text())
    print(f'wrote {md} and its CSV and figures')
    return 0
