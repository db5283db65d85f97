"""Dataset statistics: class pixel frequencies and the sizes of human segments.

A human segment is an 8-connected component of the target class ``c`` together with the classes
merged into it (Cityscapes: person + rider; CamVid: Pedestrian), counted per frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from scipy import ndimage

from metafusion_ros.core.classes import ClassTable

__all__ = ['DatasetStats', 'dataset_stats', 'human_segment_sizes', 'SIZE_BINS']

# Histogram bin edges (pixels) of human segment sizes; the last bin is open.
SIZE_BINS = (1, 50, 100, 200, 500, 1000, 2000, 5000)
_EIGHT = np.ones((3, 3), dtype=bool)


def human_classes(table: ClassTable) -> tuple[int, ...]:
    """Return the target class and the classes merged into it."""
    return (table.target,) + tuple(src for src, dst in table.merge if dst == table.target)


def human_segment_sizes(labels: np.ndarray, table: ClassTable) -> np.ndarray:
    """Return the pixel counts of the 8-connected human segments of one label map."""
    components, count = ndimage.label(np.isin(labels, human_classes(table)), _EIGHT)
    return np.bincount(components.ravel(), minlength=count + 1)[1:]


@dataclass(frozen=True)
class DatasetStats:
    """Pixel counts per class (and ignore) and all human segment sizes of a split."""

    table: ClassTable
    frames: int
    class_pixels: np.ndarray     # (C + 1,) the last entry counts ignore
    segment_sizes: np.ndarray    # (n,) pixels per human segment

    @property
    def pixels(self) -> int:
        """Return the number of pixels, ignore included."""
        return int(self.class_pixels.sum())

    def histogram(self) -> list[tuple[str, int]]:
        """Return ``(bin, count)`` of the segment sizes over :data:`SIZE_BINS`."""
        edges = list(SIZE_BINS) + [np.inf]
        counts, _ = np.histogram(self.segment_sizes, bins=edges)
        names = [f'{lo}-{hi - 1}' for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:])]
        return list(zip(names + [f'>={SIZE_BINS[-1]}'], (int(c) for c in counts)))

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-compatible numbers: frequencies in %, segment count, median, histogram."""
        names = list(self.table.class_names) + ['ignore']
        share = 100.0 * self.class_pixels / max(self.pixels, 1)
        sizes = self.segment_sizes
        human = [self.table.class_names[k] for k in human_classes(self.table)]
        return {
            'frames': self.frames, 'pixels': self.pixels,
            'class_percent': {n: round(float(v), 3) for n, v in zip(names, share)},
            'human_classes': human,
            'human_percent': round(float(share[list(human_classes(self.table))].sum()), 3),
            'human_segments': int(sizes.size),
            'human_segments_per_frame': round(sizes.size / max(self.frames, 1), 2),
            'median_segment_px': float(np.median(sizes)) if sizes.size else None,
            'share_under_200px': round(float((sizes < 200).mean()), 3) if sizes.size else None,
            'size_histogram': dict(self.histogram()),
        }


def dataset_stats(label_maps: Iterable[np.ndarray], table: ClassTable) -> DatasetStats:
    """Count class pixels and human segments over ``label_maps`` (in ``table``'s ids)."""
    pixels = np.zeros(table.num_classes + 1, dtype=np.int64)
    sizes: list[np.ndarray] = []
    frames = 0
    for labels in label_maps:
        counts = np.bincount(labels.ravel(), minlength=256)
        pixels[:-1] += counts[:table.num_classes]
        pixels[-1] += counts[table.ignore_label]
        sizes.append(human_segment_sizes(labels, table))
        frames += 1
    if frames == 0:
        raise ValueError('no label maps: cannot compute dataset statistics')
    return DatasetStats(table, frames, pixels, np.concatenate(sizes).astype(np.int64))
