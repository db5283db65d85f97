"""``make demo``: the default chain through a bag and the real node over DDS, scored.

Steps: write a drive as a rosbag2 — a stretch of CamVid (``--split``, ``--start``,
``--frames``; 20 frames of test by default) from ``../shared/data/camvid`` when it is there, its
labels mapped to the chain's class table (``core/mapping.py``), else a generated synthetic drive
(test split) at the priors' resolution; start ``metafusion_node`` as its own process with the
chain (``--chain``, the default chain unless given: network, priors and meta bundle from its
manifest, members checked against their SHA-256); replay the bag to it in lock-step, score its
Bayes, ML and fused masks against the ground truth (segment FP/FN of class c, Δ of eq. 17),
print which chain ran on which frames and what it scored, and write ``out/demo/strip.png``
(camera image | fused mask with the flagged segments: green kept, red dropped, with the meta
score) and ``out/demo/summary.json``. A chain without a meta classifier keeps every candidate
(plain ML for class c) and the demo says so.
"""
from __future__ import annotations

import argparse
from itertools import islice
import json
import os
from pathlib import Path
import shutil
import sys
from typing import Any

import numpy as np

from metafusion_ros.runtime.chains import Chain, ChainError, DEFAULT_CHAIN, load_chain, NO_META

__all__ = ['main', 'draw_strip']

KEEP, DROP = (40, 220, 40), (235, 40, 40)
CAMVID = Path('../shared/data/camvid')  # beside the checkout, as make demo runs it


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the demo's options."""
    parser = argparse.ArgumentParser(prog='python -m metafusion_ros.tools.demo',
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--chain', default=DEFAULT_CHAIN,
                        help=f'chain to run (default {DEFAULT_CHAIN}; metafusion models lists '
                             f'them)')
    parser.add_argument('--models', type=Path, default=None,
                        help="folder of the chain manifests (default: the package's models/)")
    parser.add_argument('--camvid', type=Path, default=CAMVID,
                        help=f'CamVid root (default {CAMVID}); absent: a synthetic drive')
    parser.add_argument('--split', default='test', help='CamVid split (test)')
    parser.add_argument('--start', type=int, default=0, help='first CamVid frame (0)')
    parser.add_argument('--out', type=Path, default=Path('out/demo'))
    parser.add_argument('--frames', type=int, default=20, help='frames of the drive (20)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the synthetic drive')
    parser.add_argument('--strip', type=int, default=4, help='frames in the image strip (4)')
    parser.add_argument('--timeout', type=float, default=120.0,
                        help='seconds to wait for the node (start-up and per frame)')
    return parser.parse_args(argv)


def _chain(name: str, models: Path | None) -> Chain:
    """Return the checked chain; exit with one line when it is unknown or changed."""
    try:
        chain = load_chain(name, models)
        chain.verify()
    except ChainError as exc:
        sys.exit(f'demo: {exc}')
    print(f'demo: chain {chain.name} ({chain.kind}): {chain.summary}')
    for part, text in chain.trained_on.items():
        print(f'  {part} from: {text}')
    if chain.meta is None:
        print('demo: the chain has no meta classifier: keeping every candidate '
              '(MetaFusion degrades to plain ML for class c)')
    return chain


def _camvid_drive(args: argparse.Namespace, table: Any, bag: Path) -> str:
    """Write a stretch of CamVid as the bag, labels in ``table``; return what it is."""
    from metafusion_ros.ros.bag import write_drive
    from metafusion_ros.tools.data.datasets import open_dataset

    source = open_dataset('camvid', args.camvid, args.split, table)
    frames = list(islice(iter(source), args.start, args.start + args.frames))
    if not frames:
        sys.exit(f'demo: CamVid {args.split} under {args.camvid} has no frame {args.start}')
    write_drive(frames, bag, table)
    mapping = '' if table.name == 'camvid' else f', labels mapped camvid->{table.name}'
    return (f'{len(frames)} CamVid {args.split} frames ({frames[0].name} ... {frames[-1].name}) '
            f'from {args.camvid}{mapping}')


def _synthetic_drive(args: argparse.Namespace, size: tuple[int, int], out: Path,
                     bag: Path) -> str:
    """Generate a held-out synthetic drive (test split) as the bag; return what it is."""
    from metafusion_ros.ros.bag import write_drive
    from metafusion_ros.tools.data.datasets import open_dataset
    from metafusion_ros.tools.data.synth import generate_drives

    root = out / 'synth'
    shutil.rmtree(root, ignore_errors=True)
    generate_drives(root, {'test': 1}, frames=args.frames, size=size, seed=args.seed,
                    progress=True)
    source = open_dataset('synthetic', root, 'test')
    write_drive(iter(source), bag, source.table)
    return (f'a generated {size[0]}x{size[1]} synthetic drive of {args.frames} frames (no CamVid '
            f'at {args.camvid})')


def _drive(args: argparse.Namespace, priors: Any) -> tuple[Path, str]:
    """Write the demo's bag: CamVid when it is there, else a synthetic drive."""
    bag = args.out / 'drive'
    shutil.rmtree(bag, ignore_errors=True)
    if (args.camvid / args.split).is_dir():
        what = _camvid_drive(args, priors.table, bag)
    else:
        height, width = priors.resolution
        what = _synthetic_drive(args, (width, height), args.out, bag)
    print(f'demo: wrote {bag}: {what}')
    return bag, what


def _env(out: Path) -> dict[str, str]:
    """Return a private ROS environment (own domain, localhost only, logs under ``out``)."""
    env = dict(os.environ)
    env.setdefault('ROS_DOMAIN_ID', str(40 + os.getpid() % 50))
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_LOG_DIR=str(out / 'ros_log'),
               OMP_NUM_THREADS=env.get('OMP_NUM_THREADS', '2'))
    return env


def draw_strip(rows: list[tuple[np.ndarray, np.ndarray, dict]], palette: np.ndarray,
               path: Path) -> None:
    """Write rows of (camera image | fused mask blended over it with flagged boxes) to ``path``."""
    from PIL import Image, ImageDraw

    tiles = []
    for image, fused, report in rows:
        overlay = (0.45 * image + 0.55 * palette[np.minimum(fused, len(palette) - 1)])
        panels = [Image.fromarray(image), Image.fromarray(overlay.astype(np.uint8))]
        for panel in panels:
            draw = ImageDraw.Draw(panel)
            for seg in report['segments']:
                r0, c0, r1, c1 = seg['box']
                colour = KEEP if seg['verdict'] == 'keep' else DROP
                draw.rectangle([c0 - 2, r0 - 2, c1 + 1, r1 + 1], outline=colour, width=2)
                draw.text((c0, max(0, r0 - 12)), f"{seg['score']:.2f}", fill=colour)
        row = Image.new('RGB', (image.shape[1] * 2 + 8, image.shape[0]), (255, 255, 255))
        row.paste(panels[0], (0, 0))
        row.paste(panels[1], (image.shape[1] + 8, 0))
        tiles.append(row)
    strip = Image.new('RGB', (tiles[0].width, sum(t.height + 8 for t in tiles) - 8),
                      (255, 255, 255))
    top = 0
    for tile in tiles:
        strip.paste(tile, (0, top))
        top += tile.height + 8
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)


def _print_summary(summary: dict[str, Any], meta: Path | None) -> None:
    """Print which chain ran on which frames, latency percentiles and the FP/FN table."""
    latency = summary['latency_ms']
    print(f"\nchain {summary['chain']} on {summary['frames']}")
    print(f"frames: {summary['frames_scored']} scored of {summary['frames_sent']} sent; "
          f"end-to-end latency p50 {latency['p50']} ms, p90 {latency['p90']} ms, "
          f"p99 {latency['p99']} ms")
    print(f"meta classifier: {meta if meta else 'none (all candidates kept)'}")
    print(f"{'rule':<12}{'TP':>6}{'FP':>6}{'FN':>6}{'F1':>8}{'delta':>11}")
    for rule, c in summary['rules'].items():
        delta = c.get('delta')
        f1 = float('nan') if c['f1'] is None else c['f1']
        print(f"{rule:<12}{c['tp']:>6}{c['fp']:>6}{c['fn']:>6}{f1:>8.3f}"
              f"{'' if delta is None else f'{delta:11.2f}'}")
    share, rules = summary['kept_share_of_ml_added_tp'], summary['rules']
    if share is None or rules['ml']['fn'] >= rules['bayes']['fn']:
        share_text = 'n/a (ML recovered no pedestrian Bayes missed)'
    else:
        share_text = f'{share:.1%}'
    print(f"share of ML's recovered pedestrians kept by MetaFusion: {share_text}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return 0 on success."""
    from metafusion_ros.core.priors import Priors
    from metafusion_ros.ros.bag import DriveBag, header_stamp, IMAGE_TOPIC, image_rgb
    from metafusion_ros.ros.process import start_node, stop_node
    from metafusion_ros.ros.score import score_bag

    args = _parse(argv)
    chain = _chain(args.chain, args.models)
    model, priors, meta = chain.network, chain.priors, chain.meta
    args.out.mkdir(parents=True, exist_ok=True)
    path, frames = _drive(args, Priors.load(priors))
    bag = DriveBag(path)
    images = {header_stamp(data): data for _, _, data in bag.messages([IMAGE_TOPIC])}
    env = _env(args.out)
    log = args.out / 'node.log'
    # Reliable input: best-effort samples over ~1 MB are often lost on a busy host (UDP
    # fragments), and lock-step scoring wants every frame.
    proc = start_node({'model_path': model, 'priors_path': priors,
                       'meta_model_path': meta or NO_META, 'qos.reliability': 'reliable'},
                      env=env,
                      remap={'~/input/image': '/camera/image_raw',
                             '~/input/camera_info': '/camera/camera_info'}, log=log)
    print(f'demo: started metafusion_node (pid {proc.pid}, domain {env["ROS_DOMAIN_ID"]}, '
          f'log {log})')
    rows: list[tuple[Any, ...]] = []

    def keep(stamp, masks, report):
        rows.append((len(report['segments']), stamp, masks['mask'], report))

    try:
        summary = score_bag(bag, timeout=args.timeout, on_frame=keep,
                            domain_id=int(env['ROS_DOMAIN_ID']),
                            alive=lambda: proc.poll() is None).summary()
    except ValueError as exc:
        print(f'demo: {exc}\n--- node log ---\n{log.read_text()}', file=sys.stderr)
        return 1
    finally:
        code = stop_node(proc)
    rows.sort(key=lambda r: -r[0])
    chosen = sorted(rows[:args.strip], key=lambda r: r[1])
    strip = [(image_rgb(images[r[1]]), r[2], r[3]) for r in chosen]
    if strip:
        draw_strip(strip, bag.table().palette_array(), args.out / 'strip.png')
    summary.update(node_exit_code=code, chain=chain.name, frames=frames,
                   meta_model=str(meta) if meta else None, model=str(model), priors=str(priors))
    (args.out / 'summary.json').write_text(json.dumps(summary, indent=1) + '\n')
    _print_summary(summary, meta)
    print(f"demo: wrote {args.out / 'strip.png'} and {args.out / 'summary.json'}; "
          f'node exit code {code}')
    return 0 if code == 0 and summary['frames_scored'] else 1


if __name__ == '__main__':
    sys.exit(main())
