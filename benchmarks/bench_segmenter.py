"""ONNX Runtime latency of the default model with and without the in-graph MetaFusion head.

Prints one JSON line per case (median of >= 5 runs after a warm-up, single-threaded unless
``--threads``): ``network`` (the plain model at its input size, softmax out), ``network_head``
(the same graph with the head appended, masks and heatmaps out) and ``head_extra`` (the
difference, the head's cost). Uses ``models/synthetic.onnx`` when present, else
``models/camvid.onnx``; priors are uniform-ish (the head's cost does not depend on their values).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import tempfile

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metafusion_ros.core.priors import Priors  # noqa: E402
from metafusion_ros.segmenter import load_segmenter, resolve_spec  # noqa: E402
from metafusion_ros.segmenter.head import add_head_file  # noqa: E402
from timing import median_ms  # noqa: E402

DEFAULT_MODELS = (ROOT / 'models' / 'synthetic.onnx', ROOT / 'models' / 'camvid.onnx')


def main() -> int:
    """Run the three cases and print their JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', type=Path, default=None)
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    model = args.model or next((m for m in DEFAULT_MODELS if m.is_file()), None)
    if model is None:
        print(json.dumps({'case': 'segmenter', 'skipped': 'no model in models/'}))
        return 0
    spec = resolve_spec(model, None)
    plain = load_segmenter(model, spec=spec, threads=args.threads)
    x = plain.preprocess(np.random.default_rng(0).integers(
        0, 256, (plain.preprocess.height, plain.preprocess.width, 3), dtype=np.uint8))
    rng = np.random.default_rng(1)
    table = spec.table
    level = 'class' if table.category_names is None else 'category'
    k = table.num_classes if level == 'class' else len(table.category_names)
    priors = Priors(rng.dirichlet(np.ones(k), (64, 128)).astype(np.float32), table, level)
    base = {'model': model.name, 'input': [plain.preprocess.width, plain.preprocess.height],
            'classes': table.num_classes, 'threads': args.threads, 'runs': args.runs,
            'providers': plain.providers}
    net_ms = median_ms(lambda: plain.run_network(x), args.runs, warmup=1)
    print(json.dumps({'case': 'network', **base, 'median_ms': round(net_ms, 2)}))
    with tempfile.TemporaryDirectory() as tmp:
        headed_path = Path(tmp) / 'head.onnx'
        add_head_file(model, headed_path, spec, priors, alpha=1.0)
        headed = load_segmenter(headed_path, threads=args.threads)
        head_ms = median_ms(lambda: headed.run_network(x), args.runs, warmup=1)
    print(json.dumps({'case': 'network_head', **base, 'median_ms': round(head_ms, 2)}))
    print(json.dumps({'case': 'head_extra', **base, 'median_ms': round(head_ms - net_ms, 2),
                      'share_of_network': round((head_ms - net_ms) / net_ms, 3)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
