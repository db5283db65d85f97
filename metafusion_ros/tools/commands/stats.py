"""``metafusion stats``: class pixel frequencies and human segment sizes of a labelled split."""
from __future__ import annotations

import argparse
import json

from metafusion_ros.core.classes import table_by_name
from metafusion_ros.tools.cli import add_force, output_path
from metafusion_ros.tools.data.datasets import DATASETS, open_dataset
from metafusion_ros.tools.data.stats import dataset_stats


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stats`` subcommand."""
    parser = subparsers.add_parser(
        'stats', help='class pixel frequencies and human segment sizes of a dataset split',
        description='Print the share of pixels per class (ignore included) and the size '
                    'histogram of the 8-connected segments of the target class (with the '
                    'classes merged into it, e.g. person + rider).')
    parser.add_argument('--dataset', required=True, choices=DATASETS, help='layout and table')
    parser.add_argument('--root', required=True, help='dataset root folder')
    parser.add_argument('--split', default='train', help='split (default train)')
    parser.add_argument('--json', help='also write the numbers to this JSON file')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compute and print the statistics."""
    table = table_by_name(args.dataset)
    out = None if args.json is None else output_path(args.json, args.force, 'JSON file')
    source = open_dataset(args.dataset, args.root, args.split, table, images=False)
    numbers = dataset_stats(source.label_maps(), table).to_dict()
    print(f'{args.dataset} {args.split}: {numbers["frames"]} frames, {numbers["pixels"]} pixels')
    for name, share in numbers['class_percent'].items():
        print(f'  {name:<14} {share:7.3f} %')
    print(f'human ({"+".join(numbers["human_classes"])}): {numbers["human_percent"]:.3f} % of '
          f'pixels, {numbers["human_segments"]} segments '
          f'({numbers["human_segments_per_frame"]} per frame), median '
          f'{numbers["median_segment_px"]} px, {numbers["share_under_200px"]} under 200 px')
    for size, count in numbers['size_histogram'].items():
        print(f'  {size:>10} px: {count}')
    if out is not None:
        out.write_text(json.dumps(numbers, indent=2) + '\n')
    return 0
