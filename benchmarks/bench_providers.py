"""ONNX Runtime's execution providers at a camera's size: the network and the node's frame path.

For the shipped street network ``cityscapes_espnet.onnx`` (1024x512 input), the toy
``synthetic_toy.onnx`` (512x256) and each backend (``onnxruntime-cpu``: ONNX Runtime's CPU
provider, the baseline of the same run; ``onnxruntime-cuda``: its CUDA provider from
``onnxruntime-gpu``), one JSON line per case, medians of ``--runs`` after a warm-up:

- ``network``: the session alone on a preprocessed input (softmax out);
- ``frame``: :meth:`FusionEngine.process` on a generated street frame of ``--camera`` pixels
  (2048x1024 by default, the Cityscapes camera): preprocessing, network, MetaFusion at the
  network's size with the shipped priors and, where shipped, meta classifier bundle — the
  node's work per frame without DDS; the core's stage times beside it.

The CUDA rows say ``skipped`` with the reason where ONNX Runtime offers no CUDA provider (no
``onnxruntime-gpu``, or no GPU). CPU threads: ONNX Runtime's default (all cores) unless
``--threads``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import statistics
import sys
import time

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metafusion_ros.runtime.engine import EngineConfig, FusionEngine  # noqa: E402
from metafusion_ros.runtime.segmenter import load_segmenter  # noqa: E402
from metafusion_ros.tools.data.synth import render_drive  # noqa: E402
from timing import median_ms  # noqa: E402

# network -> its priors and meta bundle in models/ (the bundle is optional)
CHAINS = {'cityscapes_espnet': ('cityscapes_category_priors.npz', 'cityscapes_espnet_meta.json'),
          'synthetic_toy': ('synthetic_toy_priors.npz', 'synthetic_toy_meta.json')}
BACKENDS = ('onnxruntime-cpu', 'onnxruntime-cuda')


def camera_frames(size: tuple[int, int], count: int) -> list[np.ndarray]:
    """Return ``count`` generated street frames of ``size`` (W, H), rendered at a quarter."""
    width, height = size
    frames = render_drive(0, 'test', 0, count, size=(width // 2, height // 2))
    return [np.ascontiguousarray(image.repeat(2, 0).repeat(2, 1)) for _, image, _ in frames]


def network_row(model: Path, backend: str, threads: int, runs: int) -> dict:
    """Return the session-alone row of ``model`` on ``backend``."""
    segmenter = load_segmenter(model, backend=backend, threads=threads)
    x = segmenter.preprocess(np.random.default_rng(0).integers(
        0, 256, (segmenter.preprocess.height, segmenter.preprocess.width, 3), dtype=np.uint8))
    return {'providers': segmenter.providers,
            'input': [segmenter.preprocess.width, segmenter.preprocess.height],
            'median_ms': round(median_ms(lambda: segmenter.run_network(x), runs, warmup=2), 2)}


def frame_row(model: Path, backend: str, frames: list[np.ndarray], runs: int) -> dict:
    """Return the whole-frame row: :meth:`FusionEngine.process` medians and its stages."""
    priors, meta = (model.parent / name for name in CHAINS[model.stem])
    engine = FusionEngine.load(EngineConfig(str(model), str(priors),
                                            str(meta) if meta.is_file() else '', backend=backend))
    engine.warm_up(frames[0].shape[:2])
    totals, stages = [], {}
    for index in range(runs + 2):
        start = time.perf_counter()
        processed = engine.process(frames[index % len(frames)])
        if index >= 2:  # two warm-up frames
            totals.append((time.perf_counter() - start) * 1e3)
            for name, ms in processed.stages_ms.items():
                stages.setdefault(name, []).append(ms)
    return {'meta_model': meta.name if meta.is_file() else None,
            'camera': [frames[0].shape[1], frames[0].shape[0]],
            'median_ms': round(statistics.median(totals), 2),
            'stages_median_ms': {k: round(statistics.median(v), 2) for k, v in stages.items()}}


def main() -> int:
    """Print one JSON line per network, backend and case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', type=Path, default=REPO / 'models')
    parser.add_argument('--camera', default='2048x1024', help='frame size WxH')
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--threads', type=int, default=0, help='CPU threads (0: all cores)')
    args = parser.parse_args()
    width, height = (int(v) for v in args.camera.split('x'))
    frames = camera_frames((width, height), 3)
    for name in CHAINS:
        model = args.models / f'{name}.onnx'
        for backend in BACKENDS:
            for case, row in (('network', lambda: network_row(model, backend, args.threads,
                                                              args.runs)),
                              ('frame', lambda: frame_row(model, backend, frames, args.runs))):
                base = {'case': case, 'model': model.name, 'backend': backend}
                try:
                    print(json.dumps({**base, **row()}), flush=True)
                except ValueError as exc:  # no CUDA provider here: the reason, one line
                    if backend == 'onnxruntime-cpu':
                        raise
                    print(json.dumps({**base, 'skipped': str(exc)}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
