"""``metafusion priors``: position-specific priors (eq. 5) of a labelled split, with a picture."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metafusion_ros.core.classes import table_by_name
from metafusion_ros.core.mapping import mapping_between
from metafusion_ros.core.priors import Priors, estimate_priors
from metafusion_ros.tools.cli import add_force, output_path
from metafusion_ros.tools.data.datasets import DATASETS, open_dataset, parse_size


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``priors`` subcommand."""
    parser = subparsers.add_parser(
        'priors', help='estimate the position-specific class priors (eq. 5) of a dataset split',
        description='Count, per pixel, how often each class occurs in the label maps of a split '
                    '(ignore pixels excluded) and save the priors as .npz for the ML rule; '
                    'optionally draw the prior of the target class as a PNG.')
    parser.add_argument('--dataset', required=True, choices=DATASETS,
                        help='layout and class table (synthetic = the Cityscapes layout '
                             'written by `metafusion synth`)')
    parser.add_argument('--root', required=True, help='dataset root folder')
    parser.add_argument('--split', default='train', help='split to count (default train)')
    parser.add_argument('--out', required=True, help='priors file to write (.npz)')
    parser.add_argument('--categories', action='store_true',
                        help='priors over the categories (Cityscapes: 8, person+rider = human) '
                             'instead of the classes')
    parser.add_argument('--size', help='resize the priors to WxH (default: label resolution)')
    parser.add_argument('--target', help='target class c (default: the table\'s, e.g. person)')
    parser.add_argument('--table', choices=('cityscapes', 'camvid'),
                        help='count the labels in this class table, read through the documented '
                             'label mapping (e.g. CamVid labels as Cityscapes trainIds for a '
                             'Cityscapes network; default: the dataset\'s own table)')
    parser.add_argument('--png', help='also draw the target-class prior into this PNG')
    parser.add_argument('--smoothing', type=float, default=0.0, metavar='LAMBDA',
                        help='pseudo-images spread as the overall class frequency, so no prior '
                             'is exactly 0 (default 0: eq. 5 as in the reference)')
    parser.add_argument('--skip-bad', action='store_true',
                        help='log and count unreadable or inconsistent frames instead of '
                             'stopping at the first')
    add_force(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Estimate, save and optionally draw the priors."""
    table = table_by_name(args.table or args.dataset, args.target)
    size = None if args.size is None else parse_size(args.size)[::-1]
    out = output_path(args.out, args.force, 'priors file')
    png = None if args.png is None else output_path(args.png, args.force, 'picture')
    source = open_dataset(args.dataset, args.root, args.split, table, images=False,
                          skip_bad=args.skip_bad)
    mapping = mapping_between(table_by_name(args.dataset), table)
    provenance = {'dataset': args.dataset, 'split': args.split, 'root': str(args.root),
                  'labels_read_as': None if mapping is None else mapping.name,
                  'label_files': len(source), 'labels_sha256': source.labels_sha256(),
                  'label_file_sha256': source.label_digests()}
    priors = estimate_priors(source.label_maps(), table, categories=args.categories, size=size,
                             progress=True, dataset=f'{args.dataset}:{args.split}',
                             smoothing=args.smoothing, provenance=provenance)
    priors.save(out)
    height, width = priors.resolution
    print(f'wrote {out}: {priors.level} priors over {len(priors.names)} channels, '
          f'{width}x{height}, from {priors.num_images} label maps'
          + (f' ({len(source.skipped)} skipped)' if source.skipped else ''))
    if png is not None:
        draw_target_prior(priors, png)
        print(f'wrote {png}')
    return 0


def draw_target_prior(priors: Priors, path: Path) -> None:
    """Draw ``p_z(c)`` of the target class (its category for category priors) into a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    table = priors.table
    prior = priors.class_priors()[:, :, table.target]
    height, width = prior.shape
    fig, ax = plt.subplots(figsize=(8, 8 * height / width + 0.8), dpi=100)
    shown = ax.imshow(prior, cmap='magma', vmin=0.0, vmax=max(float(prior.max()), 1e-6))
    what = table.target_name if priors.level == 'class' else \
        table.category_names[table.category_of_class[table.target]]
    ax.set_title(f'prior p_z({what}) from {priors.num_images} images of {priors.dataset} '
                 f'(max {float(np.max(prior)):.3f})')
    ax.set_axis_off()
    fig.colorbar(shown, ax=ax, fraction=0.025, pad=0.01)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches='tight')
    plt.close(fig)
