"""``metafusion bag make|play|score``: drives as rosbag2, replayed to the node and scored."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

from metafusion_ros.tools.cli import add_force, CommandError, output_path

__all__ = ['register']


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bag`` with its ``make``, ``play`` and ``score`` subcommands."""
    parser = subparsers.add_parser('bag', help='write, replay and score rosbag2 drives',
                                   description=__doc__)
    sub = parser.add_subparsers(dest='bag_command', metavar='ACTION', required=True)

    make = sub.add_parser('make', help='write a drive (images, camera info, ground truth)')
    make.add_argument('--dataset', required=True, choices=('cityscapes', 'camvid', 'synthetic'))
    make.add_argument('--root', required=True, type=Path, help='dataset root folder')
    make.add_argument('--split', default='val', help='split to write (default: val)')
    make.add_argument('--out', required=True, type=Path, help='bag folder to create')
    make.add_argument('--storage', default='mcap', choices=('mcap', 'sqlite3'))
    make.add_argument('--rate', type=float, default=10.0, help='frames per second (10)')
    make.add_argument('--max-frames', type=int, default=0, help='0 = all frames of the split')
    make.add_argument('--frame-id', default='camera', help='header frame_id (camera)')
    add_force(make)
    make.set_defaults(func=_make)

    play = sub.add_parser('play', help='replay a bag through rclpy with its timing')
    play.add_argument('bag', type=Path)
    play.add_argument('--rate', type=float, default=1.0, help='playback speed factor (1.0)')
    play.add_argument('--loop', action='store_true', help='start over at the end')
    play.add_argument('--ground-truth', action='store_true',
                      help='also publish the ground-truth topic')
    play.add_argument('--clock', action='store_true',
                      help='publish the bag time on /clock (rosgraph_msgs/Clock), for nodes '
                           'run with use_sim_time')
    play.add_argument('--wait', type=float, default=3.0,
                      help='seconds to wait for a subscriber on every played topic before the '
                           'first message (DDS discovery; 0: start at once) (3)')
    play.set_defaults(func=_play)

    score = sub.add_parser('score', help='replay a bag to a running node and score its masks')
    score.add_argument('bag', type=Path)
    score.add_argument('--node', default='/metafusion_node',
                       help='fully qualified node name (outputs under NODE/output)')
    score.add_argument('--rate', type=float, default=1.0, help='playback speed factor (1.0)')
    score.add_argument('--no-lockstep', dest='lockstep', action='store_false',
                       help="use the bag's timing only (frames the node drops go unscored)")
    score.add_argument('--timeout', type=float, default=30.0,
                       help='seconds to wait for the node and for each frame (30)')
    score.add_argument('--json', type=Path, help='also write the report to this file')
    add_force(score)
    score.set_defaults(func=_score)


def _make(args: argparse.Namespace) -> int:
    """Write the bag of one dataset split."""
    from itertools import islice

    from tqdm import tqdm

    from metafusion_ros.tools.data.datasets import open_dataset
    from metafusion_ros.ros.bag import write_drive

    if args.max_frames < 0:
        raise CommandError(f'--max-frames must be >= 0, got {args.max_frames}')
    output_path(args.out, args.force, 'bag', folder=True)
    source = open_dataset(args.dataset, args.root, args.split)
    total = len(source) if not args.max_frames else min(len(source), args.max_frames)
    frames = islice(iter(source), total)
    count = write_drive(frames, args.out, source.table, storage=args.storage, rate=args.rate,
                        frame_id=args.frame_id, replace=args.force,
                        progress=lambda it: tqdm(it, total=total, desc='bag', unit='frame'))
    print(f'wrote {count} frames of {args.dataset} {args.split} to {args.out} ({args.storage})')
    return 0


def _play(args: argparse.Namespace) -> int:
    """Replay a bag until its end (or forever with --loop); Ctrl-C stops it cleanly."""
    from collections import Counter

    from metafusion_ros.ros.bag import BagError, DriveBag, GT_TOPIC, play, unknown_topics

    bag = DriveBag(args.bag)
    topics = [t for t in bag.topics() if args.ground_truth or t != GT_TOPIC]
    counts = bag.counts()
    if not sum(counts[t] for t in topics):
        raise BagError(f'bag {args.bag} holds no messages on {", ".join(topics) or "any topic"}')
    skipped: Counter[str] = unknown_topics(bag, topics)

    def unheard(topics: list[str]) -> None:
        """Say which topics had no subscriber after the wait."""
        print(f'metafusion bag play: no subscriber on {", ".join(topics)} after '
              f'{args.wait:g} s; playing anyway', file=sys.stderr)

    count = play(bag, topics, rate=args.rate, loop=args.loop, clock=args.clock, wait=args.wait,
                 skipped=skipped, unheard=unheard)
    print(f'published {count} messages from {args.bag}' + (
        f'; skipped {sum(skipped.values())} ({_reasons(skipped)})' if skipped else ''))
    return 0


def _score(args: argparse.Namespace) -> int:
    """Replay a bag to the node, print the FP/FN/Δ report as JSON."""
    from metafusion_ros.ros.bag import DriveBag
    from metafusion_ros.ros.score import score_bag

    out = None if args.json is None else output_path(args.json, args.force, 'report file')
    report = score_bag(DriveBag(args.bag), node=args.node, rate=args.rate,
                       lockstep=args.lockstep, timeout=args.timeout).summary()
    text = json.dumps(report, indent=1)
    print(text, file=sys.stdout)
    if out is not None:
        out.write_text(text + '\n')
    if report['frames_scored'] == 0:
        skipped = report['messages_skipped']
        raise CommandError(f'no frame of {args.bag} was scored; ' + (
            f'skipped {_reasons(skipped)}' if skipped else f'is {args.node} running?'))
    return 0


def _reasons(skipped: dict[str, int]) -> str:
    """Return ``topic: reason xN`` pairs of skipped messages, comma-separated."""
    return ', '.join(f'{key} x{count}' for key, count in sorted(skipped.items()))
