"""ONNX Runtime's execution providers at a camera's size: the network and the node's frame path.

For each shipped street chain (``--chains``, default every street chain of ``models/``:
``metafusion models``) and each backend (``onnxruntime-cpu``: ONNX Runtime's CPU provider, the
baseline of the same run; ``onnxruntime-cuda``: its CUDA provider from ``onnxruntime-gpu``), one
JSON line per case, medians of ``--runs`` after a warm-up:

- ``network``: the session alone on a preprocessed input (softmax out); where the chain has a
  static INT8 network (``<stem>.int8.onnx``, ``metafusion quantize``), the CPU rows come for
  ``precision`` fp32 and int8, timed run by run in turn (so both see the same load), the INT8
  row with its ``speedup`` over fp32;
- ``frame``: :meth:`FusionEngine.process` on camera frames of ``--camera`` pixels (2048x1024 by
  default, the Cityscapes camera; CamVid test frames resized, ``benchmarks/timing.py``):
  preprocessing, network, MetaFusion at the network's size with the chain's priors and meta
  classifier bundle — the node's work per frame without DDS; the core's stage times beside it
  (fp32 and, on the CPU, int8 where the chain has it).

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

from metafusion_ros.runtime.chains import Chain, chain_names, load_chain  # noqa: E402
from metafusion_ros.runtime.engine import EngineConfig, FusionEngine  # noqa: E402
from metafusion_ros.runtime.segmenter import load_segmenter  # noqa: E402
from timing import street_frames  # noqa: E402

BACKENDS = ('onnxruntime-cpu', 'onnxruntime-cuda')


def precisions(chain: Chain, backend: str) -> tuple[str, ...]:
    """Return fp32, and int8 on the CPU where ``chain`` has an INT8 network."""
    cpu_int8 = backend == 'onnxruntime-cpu' and chain.network_int8 is not None
    return ('fp32', 'int8') if cpu_int8 else ('fp32',)


def network_rows(chain: Chain, backend: str, threads: int, runs: int) -> list[dict]:
    """Return the session-alone row of ``chain``'s network on ``backend`` per precision.

    The precisions run in turn, run by run, on the same input; an INT8 row carries its speed-up
    over the fp32 row of the same runs.
    """
    segmenters = {p: load_segmenter(chain.network, backend=backend, threads=threads,
                                    precision=p) for p in precisions(chain, backend)}
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


def frame_row(chain: Chain, backend: str, frames: list[np.ndarray], runs: int,
              precision: str) -> dict:
    """Return the whole-frame row: :meth:`FusionEngine.process` medians and its stages."""
    meta = chain.meta
    engine = FusionEngine.load(EngineConfig(str(chain.network), str(chain.priors),
                                            str(meta or ''), backend=backend,
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
    return {'precision': precision, 'meta_model': meta.name if meta else None,
            'camera': [frames[0].shape[1], frames[0].shape[0]],
            'median_ms': round(statistics.median(totals), 2),
            'stages_median_ms': {k: round(statistics.median(v), 2) for k, v in stages.items()}}


def main() -> int:
    """Print one JSON line per network, backend and case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', type=Path, default=REPO / 'models',
                        help='folder of the chain manifests and their members')
    parser.add_argument('--chains', default='',
                        help='comma-separated chain names (default: every street chain)')
    parser.add_argument('--camera', default='2048x1024', help='frame size WxH')
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--threads', type=int, default=0, help='CPU threads (0: all cores)')
    args = parser.parse_args()
    width, height = (int(v) for v in args.camera.split('x'))
    frames, source = street_frames((width, height), 3)
    names = [n for n in args.chains.split(',') if n] or \
        [n for n in chain_names(args.models) if load_chain(n, args.models).kind == 'street']
    print(json.dumps({'frames': source}), flush=True)
    for name in names:
        chain = load_chain(name, args.models)
        chain.verify()
        for backend in BACKENDS:
            cases = [('network', lambda: network_rows(chain, backend, args.threads, args.runs))]
            cases += [('frame', lambda p=p: [frame_row(chain, backend, frames, args.runs, p)])
                      for p in precisions(chain, backend)]
            for case, rows in cases:
                base = {'case': case, 'chain': name, 'model': chain.network.name,
                        'backend': backend}
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
