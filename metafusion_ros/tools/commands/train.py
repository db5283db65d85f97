"""``metafusion train``: train the small segmentation CNN and export it to ONNX (torch extra)."""
from __future__ import annotations

import argparse
import logging

from pathlib import Path

from metafusion_ros.tools.cli import add_force, CommandError, output_path


def _size(text: str) -> tuple[int, int]:
    """Parse ``WxH``."""
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT, got {text!r}') from exc
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f'size {text!r} is too small (at least 16x16)')
    return width, height


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        'train', help='train the segmentation CNN and export it to ONNX',
        description='Train StreetNet (a ~1 M parameter encoder-decoder) with class-weighted '
                    'cross-entropy and augmentation on a labelled data set, keep the best '
                    'validation checkpoint, export it to ONNX with a softmax output and write '
                    'settings, time and val/test IoU to the JSON beside it. Needs PyTorch '
                    '(the optional "train" extra). Re-running resumes from the last '
                    'checkpoint (<output>.ckpt/).')
    parser.add_argument('--dataset', required=True, choices=('camvid', 'cityscapes', 'synthetic'),
                        help='layout and class table (synthetic = Cityscapes layout)')
    parser.add_argument('--root', required=True, help='data set folder')
    parser.add_argument('--output', required=True, help='ONNX file to write')
    parser.add_argument('--input-size', type=_size, default=(480, 360), metavar='WxH',
                        help='network input size of the exported model (default 480x360)')
    parser.add_argument('--crop-size', type=_size, default=(320, 240), metavar='WxH',
                        help='training crop size (default 320x240)')
    parser.add_argument('--export-size', type=_size, default=None, metavar='WxH',
                        help='input size of the exported ONNX model if not --input-size (the '
                             'network is fully convolutional; pick it by validation mIoU)')
    parser.add_argument('--epochs', type=int, default=200, help='maximum epochs (default 200)')
    parser.add_argument('--time-budget', type=float, default=100.0, metavar='MIN',
                        help='stop (and end the learning-rate schedule) after this many '
                             'minutes (default 100)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (default 1: on a shared CPU more threads wait on '
                             'each other)')
    parser.add_argument('--max-images', type=int, default=None,
                        help='use at most this many images per split (smoke tests)')
    parser.add_argument('--val-every', type=int, default=2, help='validate every N epochs')
    parser.add_argument('--evaluate-only', action='store_true',
                        help='only (re)score the exported OUTPUT on val and test and update '
                             'its JSON')
    parser.add_argument('--fresh', action='store_true',
                        help='ignore an existing checkpoint instead of resuming')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, export and print the test scores."""
    if not args.evaluate_only:  # that one updates the scores in OUTPUT's JSON
        output_path(args.output, args.force, 'ONNX file')
        output_path(Path(args.output).with_suffix('.json'), args.force, 'model spec')
    try:
        from metafusion_ros.tools.training.train import rescore, TrainConfig, train
    except ImportError as exc:
        raise CommandError(f'training needs PyTorch (pip install torch): {exc}') from exc
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    cfg = TrainConfig(dataset=args.dataset, root=args.root, output=args.output,
                      input_size=args.input_size, crop_size=args.crop_size,
                      export_size=args.export_size, epochs=args.epochs,
                      time_budget_min=args.time_budget, batch_size=args.batch_size, lr=args.lr,
                      threads=args.threads, max_images=args.max_images,
                      val_every=args.val_every)
    if args.evaluate_only:
        spec = rescore(args.output, args.dataset, args.root, cfg.splits[1:], args.max_images)
    else:
        spec = train(cfg, resume=not args.fresh)
    for split, score in spec['scores'].items():
        print(f'{split}: mIoU {score["miou"]:.4f}, {score["target"]} IoU '
              f'{score["target_iou"]:.4f}, {"+".join(score["target_group"])} IoU '
              f'{score["target_group_iou"]:.4f} ({score["images"]} images)')
    print(f'wrote {args.output} and its .json')
    return 0
