"""ONNX Runtime's execution providers at a camera's size: the network and the node's frame path.

For each shipped street network (``cityscapes_espnet.onnx``, 1024x512 input; ``synthetic.onnx``,
512x256) and each backend (``onnxruntime-cpu``: ONNX Runtime's CPU provider, the baseline of the
same run; ``onnxruntime-cuda``: its CUDA provider from ``onnxruntime-gpu``), one JSON line per
case, medians of ``--runs`` after a warm-up:

- ``network``: the session alone on a preprocessed input (softmax out); where the network has a
  static INT8 sibling (``<stem>.int8.onnx``, ``metafusion quantize``), the CPU rows come for
  ``precision`` fp32 and int8, timed run by run in turn (so both see the same load), the INT8
  row with its ``speedup`` over fp32;
- ``frame``: :meth:`FusionEngine.process` on a generated street frame of ``--camera`` pixels
  (2048x1024 by default, the Cityscapes camera): preprocessing, network, MetaFusion at the
  network's size with the shipped priors and, where shipped, meta classifier bundle — the
  node's work per frame without DDS; the core's stage times beside it (fp32 and, on the CPU,
  int8 where the sibling is shipped).

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
from metafusion_ros.runtime.segmenter.precision import int8_sibling  # noqa: E402
from metafusion_ros.tools.data.synth import render_drive  # noqa: E402

# network -> its priors and meta bundle in models/ (the bundle is optional)
CHAINS = {'cityscapes_espnet': ('cityscapes_espnet_priors.npz', 'cityscapes_espnet_meta.json'),
          'synthetic': ('synthetic_priors.npz', 'synthetic_meta.json')}
BACKENDS = ('onnxruntime-cpu', 'onnxruntime-cuda')


def camera_frames(size: tuple[int, int], count: int) -> list[np.ndarray]:
    """Return ``count`` generated street frames of ``size`` (W, H), rendered at a quarter."""
    width, height = size
    frames = render_drive(0, 'test', 0, count, size=(width // 2, height // 2))
    return [np.ascontiguousarray(image.repeat(2, 0).repeat(2, 1)) for _, image, _ in frames]


def precisions(model: Path, backend: str) -> tuple[str, ...]:
    """Return fp32, and int8 on the CPU where ``model`` has its INT8 sibling."""
    cpu_int8 = backend == 'onnxruntime-cpu' and int8_sibling(model).is_file()
    return ('fp32', 'int8') if cpu_int8 else ('fp32',)


def network_rows(model: Path, backend: str, threads: int, runs: int) -> list[dict]:
    """Return the session-alone row of ``model`` on ``backend`` per precision.

    The precisions run in turn, run by run, on the same input; an INT8 row carries its speed-up
    over the fp32 row of the same runs.
    """
    segmenters = {p: load_segmenter(model, backend=backend, threads=threads, precision=p)
                  for p in precisions(model, backend)}
    pre = segmenters['fp32'].preprocess
    x = pre(np.random.default_rng(0).integers(0, 256, (pre.height, pre.width, 3), np.uint8))
    times: dict[str, list[float]] = {p: [] for p in segmenters}
    for index in range(runs + 2):  # two warm-up rounds
        for precision, segmenter in segmenters.items():
            start = time.perf_counter()
            segmenter.run_network(x)
            if index >= 2:
                times[precision].append((time.perf_counter() - start) * 1e3)
    medians = {p: statistics.median(t) for p, t in times.items()}
    return [{'precision': p, 'file': segmenter.model_path.name, 'providers': segmenter.providers,
             'input': [pre.width, pre.height], 'median_ms': round(medians[p], 2),
             **({'speedup': round(medians['fp32'] / medians[p], 2)} if p != 'fp32' else {})}
            for p, segmenter in segmenters.items()]


def frame_row(model: Path, backend: str, frames: list[np.ndarray], runs: int,
              precision: str) -> dict:
    """Return the whole-frame row: :meth:`FusionEngine.process` medians and its stages."""
    priors, meta = (model.parent / name for name in CHAINS[model.stem])
    engine = FusionEngine.load(EngineConfig(str(model), str(priors),
                                            str(meta) if meta.is_file() else '', backend=backend,
                                            precision=precision))
    engine.warm_up(frames[0].shape[:2])
    totals, stages = [], {}
    for index in range(runs + 2):
        start = time.perf_counter()
        processed = engine.process(frames[index % len(frames)])
        if index >= 2:  # two warm-up frames
            totals.append((time.perf_counter() - start) * 1e3)
            for name, ms in processed.stages_ms.items():
                stages.setdefault(name, []).append(ms)
    return {'precision': precision, 'meta_model': meta.name if meta.is_file() else None,
            'camera': [frames[0].shape[1], frames[0].shape[0]],
            'median_ms': round(statistics.median(totals), 2),
            'stages_median_ms': {k: round(statistics.median(v), 2) for k, v in stages.items()}}


def main() -> int:
    """Print one JSON line per network, backend and case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', type=Path, default=REPO / 'models',
                        help='folder of the networks (with their INT8 siblings), priors, bundles')
    parser.add_argument('--camera', default='2048x1024', help='frame size WxH')
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--threads', type=int, default=0, help='CPU threads (0: all cores)')
    args = parser.parse_args()
    width, height = (int(v) for v in args.camera.split('x'))
    frames = camera_frames((width, height), 3)
    for name in CHAINS:
        model = args.models / f'{name}.onnx'
        if not model.is_file():  # --models: a folder with some of the chains
            print(json.dumps({'model': model.name, 'skipped': f'{model} does not exist'}))
            continue
        for backend in BACKENDS:
            cases = [('network', lambda: network_rows(model, backend, args.threads, args.runs))]
            cases += [('frame', lambda p=p: [frame_row(model, backend, frames, args.runs, p)])
                      for p in precisions(model, backend)]
            for case, rows in cases:
                base = {'case': case, 'model': model.name, 'backend': backend}
                try:
                    for row in rows():
                        print(json.dumps({**base, **row}), flush=True)
                except ValueError as exc:  # no CUDA provider here: the reason, one line
                    if backend == 'onnxruntime-cpu':
                        raise
                    print(json.dumps({**base, 'skipped': str(exc)}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
