"""``metafusion quantize``: a static INT8 ONNX of a network, calibrated on dataset frames."""
from __future__ import annotations

import argparse
from pathlib import Path

from metafusion_ros.tools.cli import add_force, output_path
from metafusion_ros.tools.data.datasets import DATASETS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand."""
    from metafusion_ros.tools.quantize import FORMATS, KEEP_FLOAT, METHODS, QuantSettings, TYPES

    default = QuantSettings()
    parser = subparsers.add_parser(
        'quantize', help='write a static INT8 (QDQ) ONNX of a network, calibrated on frames',
        description='Calibrate the network on frames of a dataset split (fed through the '
                    'model\'s own spec preprocessing) and write its static INT8 model with ONNX '
                    'Runtime\'s quantization tools, by default beside it as <stem>.int8.onnx '
                    'with its spec <stem>.int8.json, which `precision: int8` selects. Calibrate '
                    'on frames the evaluation does not use (CamVid: train drive 0006R0).')
    parser.add_argument('--model', required=True, type=Path, help='fp32 ONNX model (spec beside)')
    parser.add_argument('--dataset', required=True, choices=DATASETS,
                        help='layout of the calibration folder')
    parser.add_argument('--root', required=True, type=Path, help='dataset root folder')
    parser.add_argument('--split', default='train', help='split to calibrate on (default train)')
    parser.add_argument('--drives', default='',
                        help='comma-separated drives of the split (default: all of them)')
    parser.add_argument('--frames', type=int, default=None,
                        help='calibrate on this many frames, spread evenly over the drives '
                             '(default: all)')
    parser.add_argument('--method', choices=METHODS, default=default.method,
                        help='activation ranges: min/max, entropy (KL) or a percentile of '
                             'each histogram (default %(default)s)')
    parser.add_argument('--percentile', type=float, default=default.percentile,
                        help='percentile of --method percentile (default %(default)s)')
    parser.add_argument('--format', dest='quant_format', choices=FORMATS,
                        default=default.quant_format,
                        help='QDQ (Quantize/DequantizeLinear pairs, fused by ONNX Runtime) or '
                             'QOperator (QLinear* operators) (default %(default)s)')
    parser.add_argument('--activation-type', choices=TYPES, default=default.activation_type,
                        help='activations (default %(default)s)')
    parser.add_argument('--weight-type', choices=TYPES, default=default.weight_type,
                        help='weights (default %(default)s)')
    parser.add_argument('--per-channel', action=argparse.BooleanOptionalAction,
                        default=default.per_channel,
                        help='one weight scale per output channel (default on)')
    parser.add_argument('--reduce-range', action='store_true',
                        help='7-bit weights (for CPUs without VNNI)')
    parser.add_argument('--keep-float', default=','.join(default.keep_float),
                        help=f'comma-separated nodes left in float: {", ".join(KEEP_FLOAT)} '
                             f'(the convolutions reading the image, the last convolution, the '
                             f'softmax after it), op types or node names (default '
                             f'%(default)s)')
    parser.add_argument('--out', type=Path,
                        help='INT8 model to write (default <stem>.int8.onnx beside the model)')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate, quantize and print what was written."""
    from metafusion_ros.runtime.segmenter.precision import int8_sibling
    from metafusion_ros.tools.quantize import (calibration_frames, QuantSettings,
                                               quantize_network)

    out = int8_sibling(args.model) if args.out is None else args.out
    for path in (out, out.with_suffix('.json')):  # the network and its spec, before calibrating
        output_path(path, args.force, 'INT8 model' if path == out else 'INT8 spec')

    settings = QuantSettings(method=args.method, quant_format=args.quant_format,
                             activation_type=args.activation_type, weight_type=args.weight_type,
                             per_channel=args.per_channel, reduce_range=args.reduce_range,
                             keep_float=tuple(v for v in args.keep_float.split(',') if v),
                             percentile=args.percentile)
    frames = calibration_frames(args.dataset, args.root, args.split,
                                [d for d in args.drives.split(',') if d], args.frames)
    out, spec = quantize_network(args.model, frames, settings, out)
    record = spec.extra['quantization']
    print(f'wrote {out} and {out.with_suffix(".json").name}: {settings.quant_format} '
          f'{settings.activation_type}/{settings.weight_type}, {settings.method} ranges from '
          f'{len(frames.paths)} frames of {args.dataset} {args.split} '
          f'({", ".join(frames.drives)}), {len(record["float_nodes"])} nodes in float; '
          f'source {args.model.name} sha256 {record["source"]["sha256"][:16]}…')
    return 0
