"""``metafusion digits``: the paper's §5 protocol on scikit-learn's digits (Table 1 layout)."""
from __future__ import annotations

import argparse
import shlex

from metafusion_ros.tools.cli import add_force, output_folder
from metafusion_ros.tools.meta.digits import DigitsSetup, run_digits, write_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``digits`` subcommand."""
    parser = subparsers.add_parser(
        'digits', help='minority-class protocol of the paper (§5) on scikit-learn digits',
        description='For each digit class c: leave 90 %% of c out of training, compare the '
                    'Bayes rule, the ML rule and MetaFusion (Table 1 layout).')
    parser.add_argument('--out', default='docs/results', help='output folder (digits.md/.csv)')
    parser.add_argument('--left-out', type=float, default=0.9,
                        help='share of class c removed from training (default 0.9)')
    parser.add_argument('--folds', type=int, default=5, help='k of the k-fold CV (default 5)')
    parser.add_argument('--tau', type=float, default=0.5, help='meta threshold τ (default 0.5)')
    parser.add_argument('--seed', type=int, default=0, help='split seed (default 0)')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the protocol for all ten classes and write the table."""
    if not 0.0 <= args.left_out < 1.0:
        raise ValueError(f'--left-out must lie in [0, 1), got {args.left_out}')
    if args.folds < 2:
        raise ValueError(f'--folds must be at least 2, got {args.folds}')
    output_folder(args.out, args.force, ['digits.md', 'digits.csv'])
    setup = DigitsSetup(left_out=args.left_out, folds=args.folds, tau=args.tau, seed=args.seed)
    rows = run_digits(setup, progress=True)
    command = (f'metafusion digits --out {shlex.quote(str(args.out))} '
               f'--left-out {args.left_out:g} --folds {args.folds} --tau {args.tau:g} '
               f'--seed {args.seed}')
    md, csv_path = write_table(rows, args.out, command, setup)
    print(md.read_text())
    print(f'wrote {md} and {csv_path}')
    return 0
