"""A network's own quality on a labelled folder: mIoU, per-class IoU, human IoU (no torch).

Each frame runs once through the segmenter (outputs resized to the label resolution as the node
does: probabilities bilinearly, then the argmax). When the network's classes are not the
dataset's (a Cityscapes network on CamVid), its argmax goes through the documented label
mapping (:mod:`metafusion_ros.core.mapping`) into the dataset's classes, where it is scored.
The human IoU reads the classes of the target's category as one (CamVid: Pedestrian +
Bicyclist; Cityscapes: person + rider).
"""
from __future__ import annotations

from dataclasses import replace
import math
import time
from typing import Any, Callable, Iterable

import numpy as np
from tqdm import tqdm

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.evaluation import confusion, group_iou, iou_per_class
from metafusion_ros.core.mapping import LabelMapping
from metafusion_ros.tools.data.frame import FrameSource

__all__ = ['target_group', 'scores_of', 'score_splits']


def target_group(table: ClassTable) -> list[int]:
    """Return the classes read as the target: its category's, else the target and its merges."""
    if table.category_of_class is not None:
        category = table.category_of_class[table.target]
        return [c for c, k in enumerate(table.category_of_class) if k == category]
    return [table.target] + [src for src, dst in table.merge if dst == table.target]


def scores_of(conf: np.ndarray, table: ClassTable, images: int) -> dict[str, Any]:
    """Return mIoU, per-class IoU (``None`` for absent classes) and the target/group IoU."""
    iou = iou_per_class(conf)
    group = target_group(table)
    return {'images': images, 'miou': float(np.nanmean(iou)) if images else float('nan'),
            'target': table.target_name, 'target_iou': float(iou[table.target]),
            'target_group': [table.class_names[c] for c in group],
            'target_group_iou': group_iou(conf, group),
            'iou': {n: (None if math.isnan(v) else float(v))
                    for n, v in zip(table.class_names, iou)}}


def score_splits(predict: Callable[[np.ndarray], np.ndarray],
                 sources: dict[str, FrameSource], mapping: LabelMapping | None,
                 limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Score ``predict`` (RGB image -> label map in the network's ids) on every split.

    Returns per-split scores, the scores of all splits together (``all``) and the median time
    per frame of ``predict`` in milliseconds. Every class is scored on its own (no merge).
    """
    table = next(iter(sources.values())).table
    plain = replace(table, merge=())
    lut = None if mapping is None else mapping.lookup().astype(np.uint8)
    confs, seconds = {}, []
    for split, source in sources.items():
        conf = np.zeros((table.num_classes,) * 2, dtype=np.int64)
        count = 0
        for frame in _frames(source, limit, progress, split):
            start = time.perf_counter()
            pred = predict(frame.image)
            seconds.append(time.perf_counter() - start)
            conf += confusion(pred if lut is None else lut[pred], frame.labels, plain)
            count += 1
        confs[split] = (conf, count)
    out = {split: scores_of(conf, table, n) for split, (conf, n) in confs.items()}
    out['all'] = scores_of(sum(c for c, _ in confs.values()),
                           table, sum(n for _, n in confs.values()))
    out['ms_per_frame_median'] = float(np.median(seconds) * 1e3) if seconds else float('nan')
    return out


def _frames(source: FrameSource, limit: int | None, progress: bool,
            split: str) -> Iterable[Any]:
    """Yield at most ``limit`` frames of ``source``, with a progress bar."""
    total = len(source) if limit is None else min(limit, len(source))
    frames = tqdm(source, total=total, desc=split, unit='frame', disable=not progress)
    for i, frame in enumerate(frames):
        if i >= total:
            break
        yield frame
