"""``metafusion espnet``: export the authors' ESPNet and ESPNetv2 weights to ONNX (torch extra)."""
from __future__ import annotations

import argparse
from pathlib import Path

from metafusion_ros.tools.cli import add_force, CommandError, output_path
from metafusion_ros.tools.data.datasets import parse_size
from metafusion_ros.tools.data.frame import read_rgb_png

WEIGHTS = ('cityscapes', 'camvid',  # ESPNet
           'cityscapes-v2-s2.0', 'cityscapes-v2-s1.0', 'cityscapes-v2-s1.5')  # ESPNetv2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``espnet`` subcommand."""
    parser = subparsers.add_parser(
        'espnet', help='export the authors\' ESPNet (Cityscapes, CamVid) or ESPNetv2 '
                       '(Cityscapes, s = 2.0 / 1.0 / 1.5) weights to ONNX',
        description='Check the SHA-256 of the authors\' file, load it strictly into the '
                    'project\'s ESPNet or ESPNetv2, export it (void output dropped, softmax '
                    'over the real classes, fixed input size) and write the spec JSON beside '
                    'it. Needs PyTorch (the optional "train" extra).')
    parser.add_argument('which', choices=WEIGHTS,
                        help='which pretrained file: ESPNet cityscapes (espnet_p_2_q_8.pth) or '
                             'camvid (espnet_p_2_q_8_camvid.pth); ESPNetv2 cityscapes-v2-s<s> '
                             '(espnetv2_s_<s>_city_*.pth)')
    parser.add_argument('--weights', required=True, type=Path, help='the authors\' .pth file')
    parser.add_argument('--output', required=True, type=Path, help='ONNX file to write')
    parser.add_argument('--size', help='input size WxH, multiples of 8 for ESPNet and of 16 '
                                       'for ESPNetv2 (default: the training size; camvid '
                                       '480x360)')
    parser.add_argument('--stats', choices=('cityscapes', 'camvid', 'imagenet'),
                        help='normalisation statistics (default: cityscapes for the ESPNet '
                             'Cityscapes weights, camvid — computed from CamVid train — for the '
                             'CamVid weights; ESPNetv2 takes imagenet only)')
    parser.add_argument('--camvid-root', type=Path,
                        help='CamVid root whose train split gives the CamVid statistics')
    parser.add_argument('--check-image', type=Path,
                        help='an image run through torch and ONNX Runtime; the max abs '
                             'difference of the probabilities goes into the JSON')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and print the check."""
    output_path(args.output, args.force, 'ONNX file')
    output_path(args.output.with_suffix('.json'), args.force, 'model spec')
    try:
        from metafusion_ros.tools.training.espnet_export import export_pretrained, PRETRAINED
    except ImportError as exc:
        raise CommandError(f'the ESPNet export needs PyTorch (pip install torch): {exc}') from exc
    image = None if args.check_image is None else read_rgb_png(args.check_image)
    size = None if args.size is None else parse_size(args.size)
    spec = export_pretrained(PRETRAINED[args.which], args.weights, args.output, size=size,
                             stats=args.stats, camvid_root=args.camvid_root, check_image=image)
    pre = spec.preprocess
    print(f'wrote {args.output} and its .json: {spec.num_classes} classes, input '
          f'{pre.width}x{pre.height}, {spec.extra["normalisation"]["statistics"]} statistics')
    if 'check' in spec.extra:
        print(f'max |torch - onnxruntime| = '
              f'{spec.extra["check"]["max_abs_diff_torch_onnxruntime"]:.3g}')
    return 0
