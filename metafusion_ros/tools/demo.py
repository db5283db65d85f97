"""``make demo``: a synthetic drive through the real node over DDS, scored, with an image strip.

Steps: generate a held-out synthetic drive (``metafusion synth``'s generator, test split), write
it as a rosbag2, start ``metafusion_node`` as its own process with the default network, priors
and meta classifier from ``models/``, replay the bag to it in lock-step, score its Bayes, ML and
fused masks against the ground truth (segment FP/FN of class c, Δ of eq. 17), print a summary and
write ``out/demo/strip.png`` (camera image | fused mask with the flagged segments: green kept,
red dropped, with the meta score) and ``out/demo/summary.json``. Without a meta classifier the
demo keeps every candidate (plain ML for class c) and says so.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import sys
from typing import Any

import numpy as np

__all__ = ['main', 'draw_strip']

MODEL, PRIORS, META = 'synthetic.onnx', 'synthetic_priors.npz', 'synthetic_meta.json'
KEEP, DROP = (40, 220, 40), (235, 40, 40)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the demo's options."""
    parser = argparse.ArgumentParser(prog='python -m metafusion_ros.tools.demo',
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', type=Path, default=None,
                        help='folder with synthetic.onnx, synthetic_priors.npz, '
                             'synthetic_meta.json (default: models/ of the package)')
    parser.add_argument('--out', type=Path, default=Path('out/demo'))
    parser.add_argument('--frames', type=int, default=20, help='frames of the drive (20)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--strip', type=int, default=4, help='frames in the image strip (4)')
    parser.add_argument('--timeout', type=float, default=120.0,
                        help='seconds to wait for the node (start-up and per frame)')
    return parser.parse_args(argv)


def _files(models: Path) -> tuple[Path, Path, Path | None]:
    """Return model, priors and meta model paths; exit with a clear line when one is missing."""
    model, priors, meta = models / MODEL, models / PRIORS, models / META
    missing = [str(p) for p in (model, priors) if not p.is_file()]
    if missing:
        sys.exit(f'demo: missing {", ".join(missing)}; train or fetch the default model and '
                 f'priors first (see README "Models")')
    if not meta.is_file():
        print(f'demo: no meta classifier at {meta}: keeping every candidate '
              f'(MetaFusion degrades to plain ML for class c)')
        return model, priors, None
    return model, priors, meta


def _drive(out: Path, frames: int, seed: int, size: tuple[int, int]) -> Path:
    """Generate the held-out drive and write it as a bag; return the bag path."""
    from metafusion_ros.tools.data.datasets import open_dataset
    from metafusion_ros.tools.data.synth import generate_drives
    from metafusion_ros.ros.bag import write_drive

    root, bag = out / 'synth', out / 'drive'
    for old in (root, bag):
        shutil.rmtree(old, ignore_errors=True)
    print(f'demo: generating a {size[0]}x{size[1]} synthetic drive of {frames} frames')
    generate_drives(root, {'test': 1}, frames=frames, size=size, seed=seed, progress=True)
    source = open_dataset('synthetic', root, 'test')
    write_drive(iter(source), bag, source.table)
    print(f'demo: wrote {bag}')
    return bag


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
    """Print the frames, latency percentiles and the FP/FN table."""
    latency = summary['latency_ms']
    print(f"\nframes: {summary['frames_scored']} scored of {summary['frames_sent']} sent; "
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
    from metafusion_ros.ros.process import package_file, start_node, stop_node
    from metafusion_ros.ros.score import score_bag

    args = _parse(argv)
    model, priors, meta = _files(args.models or package_file('models'))
    height, width = Priors.load(priors).resolution
    args.out.mkdir(parents=True, exist_ok=True)
    bag = DriveBag(_drive(args.out, args.frames, args.seed, (width, height)))
    images = {header_stamp(data): data for _, _, data in bag.messages([IMAGE_TOPIC])}
    env = _env(args.out)
    log = args.out / 'node.log'
    # Reliable input: best-effort samples over ~1 MB are often lost on a busy host (UDP
    # fragments), and lock-step scoring wants every frame.
    proc = start_node({'model_path': model, 'priors_path': priors,
                       'meta_model_path': meta or '', 'qos.reliability': 'reliable'}, env=env,
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
    summary.update(node_exit_code=code, meta_model=str(meta) if meta else None,
                   model=str(model), priors=str(priors))
    (args.out / 'summary.json').write_text(json.dumps(summary, indent=1) + '\n')
    _print_summary(summary, meta)
    print(f"demo: wrote {args.out / 'strip.png'} and {args.out / 'summary.json'}; "
          f'node exit code {code}')
    return 0 if code == 0 and summary['frames_scored'] else 1


if __name__ == '__main__':
    sys.exit(main())
