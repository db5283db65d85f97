"""``metafusion evaluate``: Table 2 and Figures 4-6 of the paper on labelled data.

Refit mode (default): MetaFusion out-of-fold, folds grouped by drive (needs >= 2 drives). Fixed
mode (``--meta-model BUNDLE``): the shipped bundle scores the candidates, on any folder.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from metafusion_ros.core.defaults import SUPPORT
from metafusion_ros.core.fusion import FUSION_MODES
from metafusion_ros.runtime.classifier import MetaBundle
from metafusion_ros.tools.cli import add_force, output_folder
from metafusion_ros.tools.meta.collect import collect
from metafusion_ros.tools.meta.evaluate import DEFAULT_ALPHAS, evaluate
from metafusion_ros.tools.meta.report import REPORT_FILES, write_report
from metafusion_ros.tools.meta.sources import (add_params_arguments, add_source_arguments,
                                               build_setup, describe)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        'evaluate', help='compare MetaFusion with the adjusted rules (Table 2, Fig. 4-6)',
        description='For each α: the ML rule and MetaFusion against Bayes: segment FP/FN of '
                    'class c, Δ, mIoU, per-class IoU, F1, kept share of ML\'s added true '
                    'positives; Markdown, CSV and JSON table and figures. MetaFusion is '
                    'out-of-fold (refit, folds grouped by drive) or, with --meta-model, scored '
                    'by a fixed meta model bundle (any folder, one drive is enough).')
    add_source_arguments(parser)
    add_params_arguments(parser)
    parser.add_argument('--meta-model', type=str,
                        help='fixed meta model bundle (metafusion fit); no refit, no folds')
    parser.add_argument('--alphas', type=float, nargs='+', default=None,
                        help='α grid (default: the paper\'s 0 0.9 0.95 0.975 0.99 0.995 1; with '
                             '--meta-model the bundle\'s grid)')
    parser.add_argument('--tau', type=float, nargs='+', default=[0.5],
                        help='meta threshold(s) τ; the first is the one of the Markdown table')
    parser.add_argument('--fusion', choices=FUSION_MODES, nargs='+', default=list(FUSION_MODES),
                        help='fusion reading(s) of spec §5 to report (default all: reference '
                             '= the authors\' code, literal = eq. 14 read literally, support = '
                             'the Bayes extent grown through pixels that support c)')
    parser.add_argument('--support', type=float, default=SUPPORT,
                        help=f'the support reading\'s threshold: p_c >= SUPPORT * the best other '
                             f'class\'s probability (default {SUPPORT:g}, the node\'s)')
    parser.add_argument('--out', default='docs/results', help='output folder')
    parser.add_argument('--name', required=True, help='report name (file prefix)')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Collect, evaluate and write the report."""
    for tau in args.tau:
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f'--tau must lie in [0, 1], got {tau}')
    if not args.support > 0:
        raise ValueError(f'--support must be positive, got {args.support}')
    output_folder(args.out, args.force, [f'{args.name}{end}' for end in REPORT_FILES])
    setup = build_setup(args)
    bundle = None
    if args.meta_model:
        alpha = args.alphas[0] if args.alphas else 1.0
        bundle = MetaBundle.load(args.meta_model, setup.context(alpha))
    alphas = args.alphas or list(bundle.alphas if bundle else DEFAULT_ALPHAS)
    for alpha in alphas if bundle else ():
        bundle.select(alpha)  # before the network runs: one line, exit 2
    folder = collect(setup.source, setup.priors, setup.table, alphas, setup.cache,
                     progress=True)
    evaluation = evaluate(folder, setup.table, setup.feature_names, setup.priors.digest,
                          alphas, args.tau, setup.params, setup.folds, progress=True,
                          bundle=bundle, fusions=args.fusion, support=args.support)
    command = 'metafusion ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv[1:2] == ['evaluate'] else 'metafusion evaluate ...'
    md = write_report(evaluation, folder, setup.table, setup.feature_names, args.out, args.name,
                      command, f'Frames: {describe(args, setup)}; priors `{args.priors}`.'
                      + _support_note(args),
                      args.tau[0], bundle)
    print(md.read_text())
    print(f'wrote {md} and its CSV, JSON and figures')
    return 0


def _support_note(args: argparse.Namespace) -> str:
    """Return the report's note on the support reading's threshold (empty when not evaluated)."""
    if 'support' not in args.fusion:
        return ''
    node = '' if args.support == SUPPORT else f', not the node\'s {SUPPORT:g}'
    return (f' Fusion `support`: p_c ≥ {args.support:g} × the best other class\'s '
            f'probability{node}.')
