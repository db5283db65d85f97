"""``metafusion add-head``: append the per-pixel MetaFusion head to a segmentation ONNX model."""
from __future__ import annotations

import argparse

from ..core.priors import Priors
from ..segmenter import resolve_spec
from ..segmenter.head import add_head_file


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``add-head`` subcommand."""
    parser = subparsers.add_parser(
        'add-head', help='append the per-pixel MetaFusion head to an ONNX model',
        description='Append softmax, rider->person merge, Bayes argmax, division by the '
                    'α-adjusted priors, ML argmax and the E/M/V heatmaps of the ML '
                    'probabilities (eq. 1, 3, 6-8, 15, 16) to a segmentation ONNX model, so '
                    'that ONNX Runtime or TensorRT does that work. Writes OUTPUT and its spec '
                    '(OUTPUT with .json).')
    parser.add_argument('model', help='segmentation ONNX model (softmax or logits output)')
    parser.add_argument('--output', required=True, help='ONNX file to write')
    parser.add_argument('--spec', default=None,
                        help='model spec JSON/YAML (preprocess, output name/kind/layout, class '
                             'table); default: the .json/.yaml beside MODEL')
    parser.add_argument('--priors', default=None,
                        help='priors .npz (needed unless --priors-mode input)')
    parser.add_argument('--alpha', type=float, default=1.0,
                        help='prior interpolation α (eq. 15) baked in (default 1)')
    parser.add_argument('--priors-mode', choices=('constant', 'alpha-input', 'input'),
                        default='constant',
                        help='constant: priors and α in the graph; alpha-input: α a graph '
                             'input; input: p_α a graph input (default constant)')
    parser.add_argument('--probs-ml', action='store_true',
                        help='also output the ML probabilities (1, h, w, C)')
    parser.add_argument('--label-dtype', choices=('uint8', 'int32'), default='uint8',
                        help='dtype of the two label maps (int32 for TensorRT builds '
                             'without uint8 outputs)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Append the head and write the model and its spec."""
    spec = resolve_spec(args.model, args.spec)
    priors = None if args.priors is None else Priors.load(args.priors)
    new = add_head_file(args.model, args.output, spec, priors, alpha=args.alpha,
                        mode=args.priors_mode, probs_ml=args.probs_ml,
                        label_dtype=args.label_dtype)
    print(f'wrote {args.output} (outputs {", ".join(new.head.outputs)}, '
          f'{new.head.resolution[0]}x{new.head.resolution[1]}, priors {new.head.priors}, '
          f'α {new.head.alpha})')
    return 0
