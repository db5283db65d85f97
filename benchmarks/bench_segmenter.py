"""ONNX Runtime latency of a chain's network, and of the per-pixel MetaFusion work after it.

Prints one JSON line per case (median of >= 5 runs after a warm-up, single-threaded unless
``--threads``): ``network`` (the model at its input size, softmax out) and ``kernels`` (on that
softmax, at the network's output size: ``rules_ms`` the Bayes and ML masks of
:func:`~metafusion_ros.core.kernels.decision_rules`, ``heatmaps_full_ms`` the full-frame E, M, V
the node computes on demand, ``share_of_network`` both together over the network's time). The
network and priors of ``--chain`` (default: the launch default chain); ``--model`` for an ONNX
file of no chain, with random priors of its class table (the kernels' cost does not depend on
their values).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metafusion_ros.core import kernels  # noqa: E402
from metafusion_ros.core.pipeline import MetaFusion, priors_channel_map  # noqa: E402
from metafusion_ros.core.priors import Priors  # noqa: E402
from metafusion_ros.runtime.chains import DEFAULT_CHAIN, load_chain  # noqa: E402
from metafusion_ros.runtime.segmenter import load_segmenter, resolve_spec  # noqa: E402
from timing import median_ms  # noqa: E402


def random_priors(table) -> Priors:
    """Return random priors of ``table`` (for a network of no chain)."""
    rng = np.random.default_rng(1)
    level = 'class' if table.category_names is None else 'category'
    k = table.num_classes if level == 'class' else len(table.category_names)
    return Priors(rng.dirichlet(np.ones(k), (64, 128)).astype(np.float32), table, level)


def main() -> int:
    """Run the two cases and print their JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--chain', default=DEFAULT_CHAIN, help='chain (default %(default)s)')
    parser.add_argument('--model', type=Path, default=None, help='an ONNX file instead')
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    chain = None if args.model else load_chain(args.chain)
    model = args.model or chain.network
    spec = resolve_spec(model, None)
    segmenter = load_segmenter(model, spec=spec, threads=args.threads)
    image = np.random.default_rng(0).integers(
        0, 256, (segmenter.preprocess.height, segmenter.preprocess.width, 3), dtype=np.uint8)
    x = segmenter.preprocess(image)
    base = {'model': model.name, 'input': [segmenter.preprocess.width,
                                           segmenter.preprocess.height],
            'classes': spec.table.num_classes, 'threads': args.threads, 'runs': args.runs,
            'providers': segmenter.providers}
    net_ms = median_ms(lambda: segmenter.run_network(x), args.runs, warmup=1)
    print(json.dumps({'case': 'network', **base, 'median_ms': round(net_ms, 2)}))
    probs = segmenter.infer_network(image).probs
    priors = random_priors(spec.table) if chain is None else Priors.load(chain.priors)
    metafusion = MetaFusion(priors, spec.table, alpha=1.0)
    shape = probs.shape[:2]
    inverse = metafusion.inverse_prior_alpha(shape)
    channels = priors_channel_map(metafusion.priors_at(shape))
    rules_ms = median_ms(lambda: kernels.decision_rules(
        probs, inverse, channels, spec.table.merged_away), args.runs, warmup=1)
    heat_ms = median_ms(lambda: metafusion.heatmaps_at(probs), args.runs, warmup=1)
    print(json.dumps({'case': 'kernels', **base, 'size': list(probs.shape),
                      'rules_ms': round(rules_ms, 2), 'heatmaps_full_ms': round(heat_ms, 2),
                      'share_of_network': round((rules_ms + heat_ms) / net_ms, 3)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
