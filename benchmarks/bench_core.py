"""Benchmark the MetaFusion core after the network (issue 2): one JSON line per case.

Cases 2048x1024x19 and 1024x512x19 on a street-like softmax generated here: sky, buildings,
vegetation, road and sidewalk bands, hundreds of segments from smooth noise, cars, poles and a few
dozen small human blobs, some of which only the ML rule finds. Fields (medians of ``--repeats``
single-threaded runs):

- ``post_network_ms``: softmax -> Bayes and ML masks, candidates, features, decisions and fused
  mask (α = 1, a given keep/drop callable);
- ``segment_stage_ms``: the same from the two masks and the softmax (no full-frame pass);
- ``stream_pass_ms``: one ``probs.sum()`` over the same array, the memory-bandwidth floor;
- ``rules_ms``: the decision rules alone; ``rules_estimated_priors_ms`` the same with priors
  estimated (eq. 5, smoothed) from generated street label maps, whose zeros make ``1 / p``
  span five decades: the kernel's cost must not depend on the priors.

Realistic rows (after the generated ones; ``--chain``, default the launch default chain): the
chain's network softmax on camera frames (CamVid test frames, or generated ones without
``../shared``: ``benchmarks/timing.street_frames``), at the network's output size (where the node
runs MetaFusion) and enlarged bilinearly to 2048x1024, with the chain's estimated priors and
α = 1. Fields as
above plus ``frames`` (medians over them), ``candidates`` and ``candidate_pixels`` (per frame,
summed over the frames), ``heatmaps_full_ms`` (the full-frame heatmaps on demand) and
``fusion_<reading>_ms``: eq. 14 alone for each fusion reading (spec §5; ``support`` includes
reading the softmax at the agreeing pixels, ``core.fusion.support_at``).

``--cache FOLDER [--alpha A] [--table NAME]`` (instead of the rows above): the row
``fusion_cache``, timing the readings on the frames of a ``metafusion evaluate`` cache folder
(its masks, candidates and agreeing pixels at the network's resolution, every candidate kept),
e.g. the Cityscapes network on CamVid, whose agreeing ML segments are large; the softmax gather
of ``support`` is timed on a random softmax of the frame's size and the table's class count (its
cost depends on the pixel count only).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import statistics
from typing import Any

import numpy as np

from metafusion_ros.core import classes, kernels
from metafusion_ros.core.fusion import FUSION_MODES, fuse, support_at
from metafusion_ros.core.pipeline import FrameResult, MetaFusion, priors_channel_map
from metafusion_ros.core.priors import estimate_priors, Priors
from metafusion_ros.runtime.chains import DEFAULT_CHAIN, load_chain
from timing import median_ms, street_frames

os.environ.setdefault('OMP_NUM_THREADS', '1')


MISSED = 255  # marks humans the simulated network misses


def street_labels(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Return a street-like Cityscapes trainId map with many segments and small humans."""
    rows = np.arange(h)[:, None] / h
    labels = np.where(rows < 0.3, 10, np.where(rows < 0.55, 2, np.where(rows < 0.65, 1, 0)))
    labels = np.broadcast_to(labels, (h, w)).astype(np.uint8).copy()
    coarse = rng.integers(0, 4, size=(h // 32 + 1, w // 32 + 1))
    blocks = np.kron(coarse, np.ones((32, 32), dtype=np.int64))[:h, :w]
    facade = (rows >= 0.3) & (rows < 0.55)
    labels[facade & (blocks == 1)] = 8        # vegetation patches
    labels[facade & (blocks == 2)] = 3        # walls
    for _ in range(w // 16):                  # poles and signs
        c = rng.integers(0, w - 4)
        labels[int(0.25 * h):int(0.62 * h), c:c + max(2, w // 512)] = 5
    for _ in range(max(8, w // 64)):          # cars
        r, c = rng.integers(int(0.55 * h), int(0.85 * h)), rng.integers(0, w - w // 12)
        labels[r:r + h // 14, c:c + w // 12] = 13
    for k in range(40):                       # small humans (about 60..600 px at 2048x1024)
        r, c = rng.integers(int(0.45 * h), int(0.8 * h)), rng.integers(0, w - 20)
        hh, ww = rng.integers(h // 128, h // 40), rng.integers(w // 512 + 1, w // 160 + 2)
        labels[r:r + hh, c:c + ww] = MISSED if k % 2 else 11
    return labels


def street_softmax(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (softmax (H, W, 19) float32, label map): confident classes, noisy humans."""
    rng = np.random.default_rng(seed)
    labels = street_labels(h, w, rng)
    logits = np.zeros((h, w, 19), dtype=np.float32)
    for y in range(19):
        noise = rng.normal(size=(h // 16 + 1, w // 16 + 1)).astype(np.float32)
        logits[:, :, y] = np.kron(noise, np.ones((16, 16), np.float32))[:h, :w]
    missed = labels == MISSED
    labels[missed] = 11
    np.put_along_axis(logits, labels[:, :, None].astype(np.int64), 7.0, axis=2)
    logits[missed, 11] = 1.5                  # the network misses every other human ...
    logits[missed, 0] = 2.5                   # ... and calls it road; ML recovers it
    logits -= logits.max(axis=2, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=2, keepdims=True)
    return logits, labels


def street_priors(table: classes.ClassTable, maps: int = 20, smoothing: float = 60.0) -> Priors:
    """Return category priors (eq. 5) of generated street label maps at 512x256.

    Smoothed like the shipped ``models/synthetic_toy_priors.npz``; categories the street never
    shows keep a prior of 0, as in estimated priors, so ``1 / (p + 1e-5)`` spans five decades.
    """
    rng = np.random.default_rng(1)
    label_maps = (np.where(m == MISSED, 11, m).astype(np.uint8)
                  for m in (street_labels(256, 512, rng) for _ in range(maps)))
    return estimate_priors(label_maps, table, categories=True, smoothing=smoothing)


def rules_ms(mf: MetaFusion, probs: np.ndarray, repeats: int) -> float:
    """Return the median time of the decision rules alone (eq. 1, 16) with ``mf``'s priors."""
    inverse = mf.inverse_prior_alpha(probs.shape[:2])
    channel_map = priors_channel_map(mf.priors_at(probs.shape[:2]))
    return median_ms(lambda: kernels.decision_rules(probs, inverse, channel_map,
                                                    mf.table.merged_away), repeats, warmup=1)


def run_case(w: int, h: int, repeats: int) -> dict:
    """Measure one resolution and return its JSON record."""
    table = classes.cityscapes_table()
    probs, labels = street_softmax(h, w)
    prior = np.full((h, w, 8), 1 / 8, np.float32)
    prior[:, :, table.category_names.index('human')] = 0.01
    prior /= prior.sum(axis=2, keepdims=True)
    mf = MetaFusion(Priors(prior, table, level='category'), alpha=1.0)
    score_fn = lambda f: (f[:, 30] > 50).astype(np.float64)  # noqa: E731 - keep big ones
    result = mf.process(probs, score_fn)          # warm-up: numba compile, priors cache
    stream = median_ms(lambda: probs.sum(), repeats)
    post = median_ms(lambda: mf.process(probs, score_fn), repeats)
    seg = median_ms(lambda: mf.segment_stage(result.pred_bayes, result.pred_ml, probs, score_fn),
                    repeats)
    rules = rules_ms(mf, probs, repeats)
    rules_estimated = rules_ms(MetaFusion(street_priors(table), alpha=1.0), probs, repeats)
    from scipy import ndimage
    _, n_segments = ndimage.label(np.ones_like(labels))
    return {'case': f'{w}x{h}x19', 'repeats': repeats,
            'post_network_ms': round(post, 2), 'segment_stage_ms': round(seg, 2),
            'stream_pass_ms': round(stream, 2),
            'rules_ms': round(rules, 2), 'rules_estimated_priors_ms': round(rules_estimated, 2),
            'post_over_stream': round(post / stream, 2), 'candidates': result.candidates.count,
            'kept': int(result.keep.sum()),
            'human_blobs_gt': int(ndimage.label(labels == 11, np.ones((3, 3)))[1]),
            'target_post_le_3x_stream': post <= 3 * stream, 'target_segment_le_5ms': seg <= 5}


def network_softmaxes(network: Path, frames: int) -> tuple[list[np.ndarray], str]:
    """Return the network's softmax (h, w, C) of ``frames`` camera frames and their source."""
    from metafusion_ros.runtime.segmenter import load_segmenter

    segmenter = load_segmenter(network, threads=1)
    images, source = street_frames((1280, 720), frames)
    return [segmenter.infer_network(image).probs for image in images], source


def fusion_ms(result: FrameResult, probs: np.ndarray, table: classes.ClassTable,
              repeats: int) -> dict[str, float]:
    """Return the median time of eq. 14 per fusion reading on one frame's decisions."""
    def fused(mode: str) -> np.ndarray:
        support = None if mode != 'support' else support_at(
            probs, result.candidates.agreeing, table.target, table.merged_away)
        return fuse(result.pred_bayes, result.candidates, result.keep, table.target, mode,
                    support)
    return {f'fusion_{mode}_ms': median_ms(lambda m=mode: fused(m), repeats, warmup=1)
            for mode in FUSION_MODES}


def run_cache(folder: Path, alpha: float, table: classes.ClassTable, repeats: int) -> dict:
    """Time the fusion readings on the cached frames of an evaluate cache; one record."""
    from metafusion_ros.tools.meta.collect import load_frames

    rows: dict[str, list[float]] = {}
    frames = agreeing = 0
    rng = np.random.default_rng(0)
    probs = None
    for frame in load_frames(folder, alpha):
        cand = frame.candidates
        if probs is None or probs.shape[:2] != cand.shape:
            probs = rng.dirichlet(np.ones(table.num_classes), cand.shape).astype(np.float32)
        keep = np.ones(cand.count, dtype=bool)
        times = {f'fusion_{mode}_ms': (lambda m=mode: fuse(
                     frame.pred_bayes, cand, keep, table.target, m, frame.support))
                 for mode in FUSION_MODES}
        times['support_at_ms'] = lambda: support_at(probs, cand.agreeing, table.target,
                                                    table.merged_away)
        for key, fn in times.items():
            rows.setdefault(key, []).append(median_ms(fn, repeats, warmup=1))
        frames += 1
        agreeing += cand.agreeing.size
    record = {key: round(statistics.median(values), 3) for key, values in rows.items()}
    record.update({f'{key}_max': round(max(values), 3) for key, values in rows.items()})
    return {'case': 'fusion_cache', 'folder': str(folder), 'alpha': alpha, 'frames': frames,
            'size': list(probs.shape[:2]), 'agreeing_pixels_per_frame': agreeing // frames,
            'repeats': repeats, **record}


def run_realistic(softmaxes: list[np.ndarray], priors: Priors, size: tuple[int, int],
                  repeats: int) -> dict[str, Any]:
    """Measure the real softmaxes at ``size`` = (H, W) (enlarged if needed); one record."""
    from metafusion_ros.runtime.segmenter.preprocess import resize_maps

    mf = MetaFusion(priors, alpha=1.0)
    score_fn = lambda f: (f[:, 30] > 50).astype(np.float64)  # noqa: E731 - keep big ones
    rows: dict[str, list[float]] = {}
    candidates = pixels = 0
    for probs in softmaxes:
        probs = resize_maps(probs, size)
        result = mf.process(probs, score_fn)  # warm-up: numba compile, priors cache
        candidates += result.candidates.count
        pixels += result.candidates.pixels.size
        times = {
            'post_network_ms': lambda: mf.process(probs, score_fn),
            'segment_stage_ms': lambda: mf.segment_stage(result.pred_bayes, result.pred_ml,
                                                         probs, score_fn),
            'stream_pass_ms': lambda: probs.sum(),
            'heatmaps_full_ms': lambda: mf.heatmaps_at(probs)}
        for key, fn in times.items():
            rows.setdefault(key, []).append(median_ms(fn, repeats))
        for key, value in fusion_ms(result, probs, mf.table, repeats).items():
            rows.setdefault(key, []).append(value)
    record = {key: round(statistics.median(values), 2) for key, values in rows.items()}
    post, stream = record['post_network_ms'], record['stream_pass_ms']
    return {'case': f'real_network_{size[1]}x{size[0]}x{probs.shape[2]}', 'repeats': repeats,
            'frames': len(softmaxes), **record,
            'post_over_stream': round(post / stream, 2), 'candidates': candidates,
            'candidate_pixels': pixels, 'target_post_le_3x_stream': post <= 3 * stream,
            'goal_post_le_2x_stream': post <= 2 * stream}


def main() -> None:
    """Run the cases and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--frames', type=int, default=4, help='camera frames (realistic)')
    parser.add_argument('--chain', default=DEFAULT_CHAIN, help='chain of the realistic rows')
    parser.add_argument('--only-realistic', action='store_true')
    parser.add_argument('--cache', type=Path, help='an evaluate cache folder: time the fusion '
                        'readings on its frames (the fusion_cache row)')
    parser.add_argument('--alpha', type=float, default=1.0, help='α of the cached frames')
    parser.add_argument('--table', default='cityscapes', help='class table of the cache')
    args = parser.parse_args()
    if args.cache is not None:
        table = classes.table_by_name(args.table)
        print(json.dumps(run_cache(args.cache, args.alpha, table, args.repeats)), flush=True)
        return
    if not args.only_realistic:
        for w, h in ((2048, 1024), (1024, 512)):
            print(json.dumps(run_case(w, h, args.repeats)), flush=True)
    chain = load_chain(args.chain)
    softmaxes, source = network_softmaxes(chain.network, args.frames)
    priors = Priors.load(chain.priors)
    for size in (softmaxes[0].shape[:2], (1024, 2048)):
        row = run_realistic(softmaxes, priors, size, args.repeats)
        print(json.dumps({**row, 'chain': chain.name, 'frames_from': source}), flush=True)


if __name__ == '__main__':
    main()
