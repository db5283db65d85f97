"""Label mappings between class tables (a network's classes and a dataset's), as data.

A :class:`LabelMapping` sends every class of a source table to one class of a target table and
the source's ignore label to the target's. Two are built in, documented in docs/data.md:

- ``camvid->cityscapes``: CamVid ground truth read in Cityscapes trainIds, one representative
  class per CamVid class (Pedestrian -> person, Bicyclist -> rider, Pavement -> sidewalk, ...).
  Every representative lies in the Cityscapes category of its CamVid class, so category priors
  (§6 of the paper: human = person + rider) estimated from mapped CamVid labels are exact; only
  the split of a category among its classes is not known from CamVid labels.
- ``cityscapes->camvid``: a Cityscapes network's trainIds read as CamVid classes, to score it on
  CamVid (wall -> Building, terrain -> Tree, truck/bus/train -> Car, motorcycle/bicycle ->
  Bicyclist, traffic light -> SignSymbol), as CamVid's 11 classes group its 32 original ones.

The CamVid table's categories (:func:`~metafusion_ros.core.classes.camvid_table`) are those of the
Cityscapes classes ``camvid->cityscapes`` sends its classes to.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metafusion_ros.core.classes import ClassTable

__all__ = ['LabelMapping', 'CAMVID_TO_CITYSCAPES', 'CITYSCAPES_TO_CAMVID', 'mapping_between',
           'MAPPINGS']

# Values a label map may not hold after the lookup (never a class id or an ignore label here).
_UNMAPPED = -1


@dataclass(frozen=True)
class LabelMapping:
    """``source`` class ids -> ``target`` class ids (``to[i]`` for source class ``i``)."""

    source: ClassTable
    target: ClassTable
    to: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.to) != self.source.num_classes:
            raise ValueError(f'mapping {self.name}: {len(self.to)} entries for '
                             f'{self.source.num_classes} source classes')
        if any(not 0 <= t < self.target.num_classes for t in self.to):
            raise ValueError(f'mapping {self.name}: target ids outside '
                             f'0..{self.target.num_classes - 1}')

    @property
    def name(self) -> str:
        """Return ``source->target``."""
        return f'{self.source.name}->{self.target.name}'

    def lookup(self) -> np.ndarray:
        """Return the 256-entry lookup table (``-1`` for values outside the source table)."""
        lut = np.full(256, _UNMAPPED, dtype=np.int16)
        lut[:self.source.num_classes] = self.to
        if 0 <= self.source.ignore_label < 256:
            lut[self.source.ignore_label] = self.target.ignore_label
        return lut

    def apply(self, labels: np.ndarray, what: str = 'label map') -> np.ndarray:
        """Return uint8 ``labels`` in target ids; ``ValueError`` naming ``what`` and the value."""
        labels = np.asarray(labels)
        if labels.dtype != np.uint8:
            raise ValueError(f'{what}: labels must be uint8, got {labels.dtype}')
        mapped = self.lookup()[labels]
        if np.any(mapped == _UNMAPPED):
            value = int(labels[mapped == _UNMAPPED].min())
            raise ValueError(f'{what}: label value {value} is not in the mapping {self.name} '
                             f'(classes 0..{self.source.num_classes - 1}, ignore '
                             f'{self.source.ignore_label})')
        return mapped.astype(np.uint8)

    def rows(self) -> list[tuple[str, str]]:
        """Return ``(source class, target class)`` name pairs, for documentation."""
        return [(self.source.class_names[i], self.target.class_names[t])
                for i, t in enumerate(self.to)]


def _by_name(source: ClassTable, target: ClassTable, pairs: dict[str, str]) -> LabelMapping:
    """Build a mapping from class names (every source class listed once)."""
    if set(pairs) != set(source.class_names):
        raise ValueError(f'mapping {source.name}->{target.name}: classes '
                         f'{sorted(set(source.class_names) ^ set(pairs))} listed wrongly')
    return LabelMapping(source, target, tuple(target.index(pairs[n]) for n in source.class_names))


CAMVID_TO_CITYSCAPES_NAMES = {
    'Sky': 'sky', 'Building': 'building', 'Pole': 'pole', 'Road': 'road',
    'Pavement': 'sidewalk', 'Tree': 'vegetation', 'SignSymbol': 'traffic sign',
    'Fence': 'fence', 'Car': 'car', 'Pedestrian': 'person', 'Bicyclist': 'rider',
}
CITYSCAPES_TO_CAMVID_NAMES = {
    'road': 'Road', 'sidewalk': 'Pavement', 'building': 'Building', 'wall': 'Building',
    'fence': 'Fence', 'pole': 'Pole', 'traffic light': 'SignSymbol',
    'traffic sign': 'SignSymbol', 'vegetation': 'Tree', 'terrain': 'Tree', 'sky': 'Sky',
    'person': 'Pedestrian', 'rider': 'Bicyclist', 'car': 'Car', 'truck': 'Car', 'bus': 'Car',
    'train': 'Car', 'motorcycle': 'Bicyclist', 'bicycle': 'Bicyclist',
}


def _builtin() -> dict[tuple[str, str], LabelMapping]:
    """Return the built-in mappings keyed by (source, target) table name."""
    from metafusion_ros.core.classes import camvid_table, cityscapes_table
    camvid, cityscapes = camvid_table(), cityscapes_table()
    return {('camvid', 'cityscapes'): _by_name(camvid, cityscapes, CAMVID_TO_CITYSCAPES_NAMES),
            ('cityscapes', 'camvid'): _by_name(cityscapes, camvid, CITYSCAPES_TO_CAMVID_NAMES)}


MAPPINGS = _builtin()
CAMVID_TO_CITYSCAPES = MAPPINGS[('camvid', 'cityscapes')]
CITYSCAPES_TO_CAMVID = MAPPINGS[('cityscapes', 'camvid')]


def mapping_between(source: ClassTable, target: ClassTable) -> LabelMapping | None:
    """Return the mapping from ``source``'s classes to ``target``'s; ``None`` if the same.

    Tables are matched by their class names (a model's spec may carry the table under any
    name); ``ValueError`` when no built-in mapping joins them.
    """
    if source.class_names == target.class_names:
        return None
    for mapping in MAPPINGS.values():
        if (mapping.source.class_names, mapping.target.class_names) == \
                (source.class_names, target.class_names):
            return LabelMapping(source, target, mapping.to)
    raise ValueError(f'no label mapping from the classes of table {source.name!r} to those of '
                     f'{target.name!r} (built in: {", ".join(m.name for m in MAPPINGS.values())})')
