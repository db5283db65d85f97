"""What the node shows besides the mask: the mask over the camera image, and the class table.

Pure numpy (no ROS): :func:`overlay` blends the class colours of a label map onto the camera
frame; :func:`class_report` describes the class table once (ids, names, colours, categories,
merged classes), so a consumer of ``~/output/mask`` can read the ids without the priors file.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.runtime.segmenter.preprocess import Nearest

__all__ = ['colour_labels', 'overlay', 'class_report']


def colour_labels(labels: np.ndarray, table: ClassTable) -> np.ndarray:
    """Return an ``(H, W, 3)`` uint8 image of ``labels`` in the table's palette (ignore black)."""
    palette = table.palette_array()
    return palette[np.minimum(labels, len(palette) - 1)]


def overlay(rgb: np.ndarray, labels: np.ndarray, table: ClassTable,
            opacity: float = 0.5) -> np.ndarray:
    """Return ``rgb`` with the class colours of ``labels`` blended in at ``opacity`` (0..1).

    A label map of another size than the frame is scaled to it as the published camera-size
    masks are (:class:`~metafusion_ros.runtime.segmenter.preprocess.Nearest`).
    """
    weight = np.uint16(round(min(max(opacity, 0.0), 1.0) * 256))
    labels = Nearest.between(labels.shape, rgb.shape[:2]).labels(labels)
    colours = colour_labels(labels, table)
    mixed = rgb.astype(np.uint16) * (np.uint16(256) - weight) + colours * weight
    return (mixed >> 8).astype(np.uint8)


def class_report(table: ClassTable) -> dict[str, Any]:
    """Return the class table as JSON-ready data: per class id, name, colour, category, merge."""
    merged = dict(table.merge)
    names = table.class_names
    classes = []
    for cid, name in enumerate(names):
        into = merged.get(cid)
        classes.append({
            'id': cid, 'name': name, 'colour': list(table.palette[cid]),
            'category': (None if table.category_names is None
                         else table.category_names[table.category_of_class[cid]]),
            'in_mask': into is None,
            'merged_into': None if into is None else {'id': into, 'name': names[into]}})
    merges = ', '.join(f'{names[src]} -> {names[dst]}' for src, dst in table.merge)
    return {
        'table': table.name, 'target': {'id': table.target, 'name': table.target_name},
        'ignore_label': table.ignore_label, 'classes': classes,
        'note': (f'merged classes never appear in the masks: their pixels carry the class they '
                 f'are merged into ({merges})' if merges else 'no merged classes'),
    }
