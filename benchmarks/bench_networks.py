"""ONNX Runtime (CPU, fp32) time of street networks alone, interleaved in one run.

For each model (default: every shipped Cityscapes street network,
``models/cityscapes_espnet*.onnx``: ESPNet and the ESPNetv2 widths; ``--model`` for others, e.g.
exports at other input sizes), one ONNX Runtime session with ``--threads`` intra-op threads
(default 2) runs a preprocessed input (softmax out). The models take turns: one warm-up round,
then ``--runs`` rounds of one run each, so that every model meets the same load on a shared
machine and only the ratios between rows of one run are comparable. One JSON line per model:
median, first and third quartile in ms.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import statistics
import sys
import time
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metafusion_ros.runtime.segmenter import load_segmenter  # noqa: E402


def interleaved_ms(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Return each callable's times in ms over ``rounds`` rounds of one call each (+1 warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(rounds + 1):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            if index:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> int:
    """Load the models, time them in turns and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', type=Path, action='append', default=None,
                        help='ONNX model with its spec (repeat; default: the shipped ones)')
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    models = args.model or sorted((REPO / 'models').glob('cityscapes_espnet*.onnx'))
    if not models:
        print(json.dumps({'case': 'networks', 'skipped': 'no street network in models/'}))
        return 0
    rng = np.random.default_rng(0)
    runs, info = {}, {}
    for path in models:
        seg = load_segmenter(path, backend='onnxruntime-cpu', threads=args.threads)
        width, height = seg.input_size
        x = seg.preprocess(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        runs[path.name] = (lambda s=seg, v=x: s.run_network(v))
        info[path.name] = {'input': [width, height], 'providers': seg.providers}
    for name, times in interleaved_ms(runs, args.runs).items():
        q1, _, q3 = statistics.quantiles(times, n=4)
        median = statistics.median(times)
        print(json.dumps({'case': 'network', 'model': name, **info[name], 'threads': args.threads,
                          'runs': args.runs, 'median_ms': round(median, 1),
                          'q1_ms': round(q1, 1), 'q3_ms': round(q3, 1)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
