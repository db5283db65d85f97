"""``metafusion miou``: a network's mIoU and per-class IoU on a labelled folder (one drive)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from metafusion_ros.core.classes import table_by_name
from metafusion_ros.core.files import naming
from metafusion_ros.core.mapping import mapping_between
from metafusion_ros.runtime.segmenter.precision import ONNX_PRECISIONS
from metafusion_ros.tools.cli import add_force, output_path
from metafusion_ros.tools.data.datasets import DATASETS, open_dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``miou`` subcommand."""
    parser = subparsers.add_parser(
        'miou', help='report a network\'s mIoU and per-class IoU on a labelled dataset folder',
        description='Run a segmentation model (ONNX + its spec) once over every frame of the '
                    'given split(s) and report pixel IoU per class, mIoU and the IoU of the '
                    'target\'s category (human) at the label resolution. A network with other '
                    'classes than the dataset (a Cityscapes network on CamVid) is scored in the '
                    'dataset\'s classes through the documented label mapping.')
    parser.add_argument('--dataset', required=True, choices=DATASETS,
                        help='layout and class table of the folder')
    parser.add_argument('--root', required=True, type=Path, help='dataset root folder')
    parser.add_argument('--split', action='append', required=True,
                        help='split(s) to score; repeat or comma-separate (e.g. val,test)')
    parser.add_argument('--model', required=True, type=Path, help='ONNX model with its spec')
    parser.add_argument('--precision', choices=ONNX_PRECISIONS, default='fp32',
                        help='int8: run the INT8 network beside the model (<stem>.int8.onnx, '
                             '`metafusion quantize`), checked to be made from it; the scores '
                             'name the file that ran')
    parser.add_argument('--out', type=Path, help='also write the scores to this JSON file')
    parser.add_argument('--threads', type=int, default=1,
                        help='ONNX Runtime intra-op threads (default 1)')
    parser.add_argument('--limit', type=int, default=None,
                        help='score at most this many frames per split')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score the model and print one line per class."""
    from metafusion_ros.runtime.segmenter import load_segmenter
    from metafusion_ros.runtime.segmenter.base import file_sha256
    from metafusion_ros.tools.training.scoring import score_splits

    table = table_by_name(args.dataset)
    out = None if args.out is None else output_path(args.out, args.force, 'scores file')
    splits = [s for value in args.split for s in value.split(',') if s]
    sources = {split: open_dataset(args.dataset, args.root, split, table) for split in splits}
    with naming('model', args.model):
        seg = load_segmenter(args.model, threads=args.threads, precision=args.precision)
    mapping = mapping_between(seg.spec.table, table) if seg.spec.table is not None else None

    def predict(image: np.ndarray) -> np.ndarray:
        return seg.infer(image).probs.argmax(-1).astype(np.uint8)
    scores = score_splits(predict, sources, mapping, args.limit)
    pre = seg.spec.preprocess
    report = {'model': str(seg.model_path), 'model_sha256': file_sha256(seg.model_path),
              'precision': args.precision,
              'input_size': [pre.width, pre.height], 'dataset': args.dataset,
              'root': str(args.root), 'splits': splits,
              'mapping': None if mapping is None else mapping.name, **scores}
    _print(report)
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + '\n')
        print(f'wrote {out}')
    return 0


def _print(report: dict) -> None:
    """Print the combined scores: per-class IoU, mIoU, target and group IoU, time per frame."""
    total = report['all']
    for name, value in total['iou'].items():
        print(f'{name:>14}: ' + ('  n/a' if value is None else f'{100 * value:5.1f}'))
    print(f'mIoU {100 * total["miou"]:.1f}, {total["target"]} {100 * total["target_iou"]:.1f}, '
          f'{"+".join(total["target_group"])} {100 * total["target_group_iou"]:.1f} on '
          f'{total["images"]} frames of {",".join(report["splits"])}'
          + (f' (predictions mapped {report["mapping"]})' if report['mapping'] else '')
          + f'; {report["ms_per_frame_median"]:.0f} ms per frame (median)')
