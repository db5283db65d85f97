"""Command-line plumbing shared by ``metafusion fit`` and ``metafusion evaluate``.

Frames come either from saved softmax files (``--softmax DIR``, see
:class:`~metafusion_ros.tools.meta.collect.NpzSource`) or from a labelled dataset split run through
a segmentation model (``--dataset``, ``--root``, ``--split``, ``--model``). Priors, the target
class and the cache folder complete the configuration.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import hashlib
from pathlib import Path

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.features import feature_names
from metafusion_ros.core.files import naming
from metafusion_ros.core.priors import Priors
from metafusion_ros.runtime.classifier import MetaParams, ModelContext
from metafusion_ros.runtime.segmenter.precision import ONNX_PRECISIONS
from metafusion_ros.tools.data.datasets import DATASETS, open_dataset
from metafusion_ros.tools.meta.collect import NpzSource, SegmenterSource, Source

__all__ = ['add_source_arguments', 'add_params_arguments', 'Setup', 'build_setup', 'describe']


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the frame source, priors, target class and cache options."""
    group = parser.add_argument_group('frames (one of --softmax or --dataset)')
    group.add_argument('--softmax', type=Path,
                       help='folder of .npz files with probs (H,W,C) and gt (H,W)')
    group.add_argument('--dataset', choices=DATASETS,
                       help='labelled dataset read with the project readers (synthetic drives '
                            'use the Cityscapes layout)')
    group.add_argument('--root', type=Path, help='dataset root folder')
    group.add_argument('--split', action='append', default=None,
                       help='split(s) to use; repeat or comma-separate (e.g. val,test)')
    group.add_argument('--model', type=Path, help='segmentation model (ONNX + its spec)')
    group.add_argument('--precision', choices=ONNX_PRECISIONS, default='fp32',
                       help='int8: run the INT8 network beside --model (<stem>.int8.onnx, '
                            '`metafusion quantize`); bundles stay tied to the fp32 file, as at '
                            'run time')
    parser.add_argument('--priors', type=Path, required=True, help='priors .npz (eq. 5)')
    parser.add_argument('--target', help='target class c by name (default: the priors table)')
    parser.add_argument('--cache', type=Path, default=Path('.cache/metafusion'),
                        help='per-frame candidate cache (default .cache/metafusion)')
    parser.add_argument('--threads', type=int, default=1,
                        help='threads for the network and XGBoost (default 1)')


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the meta classifier's hyper-parameters and the cross-validation folds."""
    defaults = MetaParams()
    parser.add_argument('--folds', type=int, default=5,
                        help='folds grouped by drive; leave-one-drive-out with fewer drives')
    parser.add_argument('--estimators', type=int, default=defaults.n_estimators,
                        help=f'boosting stages (default {defaults.n_estimators}, as the paper)')
    parser.add_argument('--depth', type=int, default=defaults.max_depth,
                        help=f'tree depth (default {defaults.max_depth})')
    parser.add_argument('--features-per-split', type=int, default=defaults.features_per_split,
                        help=f'features drawn per split (default {defaults.features_per_split})')
    parser.add_argument('--standardize', action='store_true',
                        help='standardise features as the reference does (trees do not need it)')
    parser.add_argument('--no-balance', action='store_true',
                        help='do not re-weight the minority label')


@dataclass(frozen=True)
class Setup:
    """Everything fit/evaluate need: frames, priors, class table, schema and parameters."""

    source: Source
    priors: Priors
    table: ClassTable
    feature_names: tuple[str, ...]
    params: MetaParams
    folds: int
    cache: Path
    network_digest: str = ''
    data_digest: str = ''  # SHA-256 of the frames' image and label files (--dataset)

    def context(self, alpha: float) -> ModelContext:
        """Return the meta model context at ``alpha`` (schema, table, priors, network)."""
        return ModelContext(self.feature_names, self.table, alpha, self.priors.digest,
                            self.network_digest)


def _splits(values: list[str] | None) -> list[str]:
    """Return the split names from repeated and comma-separated ``--split`` values."""
    return [s for value in values or [] for s in value.split(',') if s]


def _dataset_source(args: argparse.Namespace, table: ClassTable) -> tuple[Source, str, str]:
    """Build a :class:`SegmenterSource` for ``--dataset``; return it and two SHA-256s.

    The network's and the data's (image and label files); the data's is part of the cache key,
    so regenerated frames of the same names are run anew.
    """
    from metafusion_ros.runtime.segmenter import load_segmenter
    from metafusion_ros.runtime.segmenter.base import file_sha256

    missing = [name for name in ('root', 'split', 'model') if not getattr(args, name)]
    if missing:
        raise ValueError('--dataset needs ' + ', '.join(f'--{m}' for m in missing))
    if not Path(args.model).is_file():
        raise FileNotFoundError(f'model {args.model} does not exist')
    network = file_sha256(args.model)
    splits = _splits(args.split)
    parts = {split: open_dataset(args.dataset, args.root, split, table) for split in splits}
    with naming('model', args.model):
        segmenter = load_segmenter(args.model, threads=args.threads, precision=args.precision)
    ran = network if segmenter.model_path == Path(args.model) else \
        file_sha256(segmenter.model_path)  # the INT8 file: candidates cached apart
    data = hashlib.sha256('|'.join(part.data_sha256() for part in parts.values()).encode())
    tag = f'{args.dataset}|{Path(args.root).resolve()}|{",".join(splits)}|{ran}|' \
          f'{data.hexdigest()}'

    def segment(image):
        return segmenter.infer_network(image).probs
    return SegmenterSource(parts, segment, tag, drives_per_split=args.dataset == 'synthetic'), \
        network, data.hexdigest()


def build_setup(args: argparse.Namespace) -> Setup:
    """Return the :class:`Setup` of parsed fit/evaluate arguments (``ValueError`` if bad)."""
    if (args.softmax is None) == (args.dataset is None):
        raise ValueError('give exactly one frame source: --softmax DIR or --dataset NAME')
    priors = Priors.load(args.priors)
    table = priors.table if args.target is None else priors.table.with_target(args.target)
    source, network, data = (NpzSource(args.softmax), '', '') if args.softmax else \
        _dataset_source(args, table)
    if args.folds < 2:
        raise ValueError(f'--folds must be at least 2, got {args.folds}')
    params = MetaParams(n_estimators=args.estimators, max_depth=args.depth,
                        features_per_split=args.features_per_split, balance=not args.no_balance,
                        standardize=args.standardize, threads=max(1, args.threads))
    return Setup(source, priors, table, feature_names(table), params, args.folds, args.cache,
                 network, data)


def describe(args: argparse.Namespace, setup: Setup) -> str:
    """Return the frames' description for reports and bundles (source, splits, model, data)."""
    if args.softmax:
        return f'saved softmax files in `{args.softmax}`'
    return (f'{args.dataset} split(s) {", ".join(_splits(args.split))} under `{args.root}`, '
            f'network `{args.model}`, data SHA-256 {setup.data_digest}')
