"""A toy street-scene softmax generator for the meta tools' tests.

Frames are tiny (default 48x64) CamVid-class label maps (sky, building band, pavement, road) with
pedestrians in the building/pavement band, and a softmax a weak network might produce: true
pedestrians get a coherent pedestrian logit that is, for 70 % of them, too small for the Bayes
rule (the ML rule finds most of those), and *decoys*, flat boxes on the building, get a noisier
pedestrian logit of the same size (the ML rule's false positives). Absent classes get very low
logits, so the ML rule does not flip whole regions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from metafusion_ros.core.classes import camvid_table, ClassTable
from metafusion_ros.core.features import feature_names
from metafusion_ros.core.priors import estimate_priors, Priors
from metafusion_ros.runtime.classifier import MetaBundle, MetaClassifier, MetaParams, ModelContext

__all__ = ['toy_frame', 'toy_drives', 'write_meta_model']

SKY, BUILDING, ROAD, PAVEMENT, PEDESTRIAN = 0, 1, 3, 4, 9


def _layout(h: int, w: int) -> np.ndarray:
    """Return the background label map: sky, building band, pavement, road."""
    gt = np.full((h, w), BUILDING, dtype=np.uint8)
    gt[: h // 5] = SKY
    gt[h * 3 // 5: h * 3 // 4] = PAVEMENT
    gt[h * 3 // 4:] = ROAD
    return gt


def _blob(rng: np.random.Generator, h: int, w: int, upright: bool) -> tuple[slice, slice]:
    """Return a random upright (pedestrian) or flat (decoy) box inside the building band."""
    bh, bw = int(rng.integers(7, 12)), int(rng.integers(4, 7))
    if not upright:
        bh, bw = bw, bh
    top = int(rng.integers(h // 5 + 1, h * 3 // 4 - bh))
    left = int(rng.integers(1, w - bw - 1))
    return slice(top, top + bh), slice(left, left + bw)


def toy_frame(rng: np.random.Generator, size: tuple[int, int] = (48, 64), people: int = 5,
              decoys: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(probs (H, W, 11) float32, gt (H, W) uint8)`` of one toy frame."""
    h, w = size
    gt = _layout(h, w)
    ped = np.full((h, w), -12.0, dtype=np.float32)
    for k in range(people + decoys):
        box = _blob(rng, h, w, k < people)
        if k < people:
            gt[box] = PEDESTRIAN
            ped[box] = 6.0 if rng.random() < 0.3 else rng.uniform(1.8, 3.2)
        else:
            shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
            patch = rng.uniform(1.5, 3.0) + rng.normal(0.0, 0.4, size=shape)
            ped[box] = np.maximum(ped[box], patch.astype(np.float32))
    background = np.where(gt == PEDESTRIAN, BUILDING, gt)
    logits = np.full((h, w, 11), -12.0, dtype=np.float32)
    np.put_along_axis(logits, background[:, :, None].astype(np.int64), 4.0, axis=2)
    logits[:, :, PEDESTRIAN] = ped
    logits += rng.normal(0.0, 0.3, logits.shape).astype(np.float32)
    probs = np.exp(logits - logits.max(axis=2, keepdims=True))
    return (probs / probs.sum(axis=2, keepdims=True)).astype(np.float32), gt


def toy_drives(seed: int = 0, drives: int = 3, frames: int = 4, size: tuple[int, int] = (48, 64)
               ) -> tuple[ClassTable, Priors, list[tuple[str, str, np.ndarray, np.ndarray]]]:
    """Return the CamVid table, priors from 20 training frames, and ``(key, drive, probs, gt)``."""
    rng = np.random.default_rng(seed)
    table = camvid_table()
    priors = estimate_priors([toy_frame(rng, size)[1] for _ in range(20)], table,
                             dataset='toy')
    items = []
    for d in range(drives):
        for f in range(frames):
            probs, gt = toy_frame(rng, size)
            items.append((f'drive{d}_{f:03d}', f'drive{d}', probs, gt))
    return table, priors, items


def write_meta_model(path: str | Path, priors_path: str | Path,
                     alphas: tuple[float, ...] = (0.5, 0.9, 1.0), network_digest: str = ''
                     ) -> Path:
    """Fit a small meta bundle (one member per α) on random features of the priors' schema."""
    priors = Priors.load(priors_path)
    names = feature_names(priors.table)
    rng = np.random.default_rng(0)
    features = rng.random((200, len(names)))
    members = {alpha: MetaClassifier.fit(  # thresholds differ, so members do too
        features, features[:, 0] > 1.0 - alpha / 2,
        ModelContext(names, priors.table, alpha, priors.digest, network_digest),
        MetaParams(n_estimators=3)) for alpha in alphas}
    MetaBundle(members, source='random features (plumbing tests)').save(path)
    return Path(path)
