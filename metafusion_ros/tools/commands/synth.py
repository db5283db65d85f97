"""``metafusion synth``: write synthetic Cityscapes-like drives (the embedded default data)."""
from __future__ import annotations

import argparse
import time

from metafusion_ros.tools.cli import add_force, output_folder
from metafusion_ros.tools.data.datasets import parse_size
from metafusion_ros.tools.data.synth import (DEFAULT_DRIVES, DEFAULT_FPS, DEFAULT_FRAMES,
                                             DEFAULT_SIZE, generate_drives, parse_drives)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` subcommand."""
    default_drives = ','.join(f'{k}={v}' for k, v in DEFAULT_DRIVES.items())
    parser = subparsers.add_parser(
        'synth', help='generate synthetic street-scene drives in the Cityscapes layout',
        description='Write temporally coherent synthetic drives (road, sidewalks, buildings, '
                    'vegetation, sky, poles, signs, cars and rare, small, partly occluded '
                    'pedestrians and cyclists) as leftImg8bit/ images and gtFine/ labelIds '
                    '(+ labelTrainIds) PNGs that `metafusion priors --dataset cityscapes` and '
                    'the Cityscapes reader read. The same arguments give byte-identical files.')
    parser.add_argument('--out', required=True,
                        help='output root (created if missing; if it holds files: --force)')
    parser.add_argument('--drives', default=default_drives,
                        help=f'N (N drives in each of train, val, test) or split=N[,split=N...] '
                             f'(default {default_drives})')
    parser.add_argument('--frames', type=int, default=DEFAULT_FRAMES,
                        help=f'frames per drive (default {DEFAULT_FRAMES})')
    parser.add_argument('--size', default='x'.join(map(str, DEFAULT_SIZE)),
                        help='image size WxH (default %(default)s)')
    parser.add_argument('--fps', type=float, default=DEFAULT_FPS,
                        help='frame rate of the drives (default %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the drives and print what was written."""
    drives = parse_drives(args.drives)
    size = parse_size(args.size)
    output_folder(args.out, args.force)
    start = time.perf_counter()
    summary = generate_drives(args.out, drives, args.frames, size, args.seed, args.fps,
                              progress=True)
    parts = ', '.join(f'{split} {n}' for split, n in summary.frames.items())
    print(f'wrote {sum(summary.frames.values())} frames ({parts}) of {size[0]}x{size[1]} to '
          f'{summary.out} in {time.perf_counter() - start:.1f} s; person+rider pixels '
          f'{100 * summary.human_share:.2f} %')
    return 0
