"""``metafusion operating-point``: pick α and τ from evaluation results, write the node's YAML."""
from __future__ import annotations

import argparse

from metafusion_ros.core.defaults import FUSION, FUSION_MODES
from metafusion_ros.runtime.classifier import MetaBundle
from metafusion_ros.tools.cli import add_force, output_path
from metafusion_ros.tools.meta.operating_point import choose, read_rows, write_config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``operating-point`` subcommand."""
    parser = subparsers.add_parser(
        'operating-point', help='choose α and τ from `metafusion evaluate` results',
        description='Pick the MetaFusion (α, τ) with the fewest false positives at a bound on '
                    'false negatives, or the smallest FP + w·FN, and write alpha and tau into '
                    'a ROS 2 parameter YAML for the node.')
    parser.add_argument('--results', required=True, help='evaluation CSV (metafusion evaluate)')
    criterion = parser.add_mutually_exclusive_group(required=True)
    criterion.add_argument('--max-fn', type=int, help='largest acceptable false negatives')
    criterion.add_argument('--fn-weight', type=float,
                           help='false positives one false negative is worth')
    parser.add_argument('--model', help='meta bundle the node loads: restrict to its α grid')
    parser.add_argument('--fusion', choices=FUSION_MODES, default=FUSION,
                        help='fusion reading (spec §5) the node runs with (default reference)')
    parser.add_argument('--config', default='config/operating_point.yaml',
                        help='parameter YAML to write (default config/operating_point.yaml; '
                             'an existing one is updated with --force, its other keys kept)')
    parser.add_argument('--node', default='metafusion_node', help='node name key in the YAML')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Choose the operating point and write it."""
    config = output_path(args.config, args.force, 'parameter file')
    alphas = None if args.model is None else MetaBundle.load(args.model).alphas
    point = choose(read_rows(args.results), args.max_fn, args.fn_weight, alphas, args.fusion)
    path = write_config(config, point, args.node)
    print(f'alpha {point.alpha:g}, tau {point.tau:g}, {point.fusion} fusion: {point.fp} false '
          f'positives, {point.fn} false negatives in the evaluation; wrote {path}')
    return 0
