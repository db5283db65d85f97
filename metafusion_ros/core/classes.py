"""Class tables: the label spaces MetaFusion works in (spec §1, "Category priors").

A :class:`ClassTable` is data, not code: the class names, the ignore label, the target class ``c``
(the minority class whose false negatives MetaFusion reduces), an optional grouping of classes into
categories (Cityscapes' 8 official categories, used for the category priors of §6 of the paper)
and optional merges (the reference merges *rider* into *person*).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import hashlib
import json
from typing import Any

import numpy as np

__all__ = [
    'ClassTable', 'cityscapes_table', 'camvid_table', 'table_by_name',
    'CITYSCAPES_LABELID_TO_TRAINID', 'cityscapes_labelid_lut',
]


@dataclass(frozen=True)
class ClassTable:
    """A label space: class names, ignore label, target class ``c``, categories and merges.

    ``merge`` holds ``(source, destination)`` class pairs: the source's probability is set to 0
    and the softmax renormalised (spec §1), and ground truth ``source`` is read as ``destination``.
    """

    name: str
    class_names: tuple[str, ...]
    ignore_label: int
    target: int
    palette: tuple[tuple[int, int, int], ...]
    merge: tuple[tuple[int, int], ...] = ()
    category_names: tuple[str, ...] | None = None
    category_of_class: tuple[int, ...] | None = None
    _fingerprint: str = field(default='', init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.class_names)
        if n < 2:
            raise ValueError(f'class table {self.name!r}: needs at least 2 classes, got {n}')
        if not 0 <= self.target < n:
            raise ValueError(f'class table {self.name!r}: target class {self.target} '
                             f'not in 0..{n - 1}')
        if 0 <= self.ignore_label < n:
            raise ValueError(f'class table {self.name!r}: ignore label {self.ignore_label} '
                             f'collides with class {self.class_names[self.ignore_label]!r}')
        if len(self.palette) != n:
            raise ValueError(f'class table {self.name!r}: palette has {len(self.palette)} colours '
                             f'for {n} classes')
        for src, dst in self.merge:
            if not (0 <= src < n and 0 <= dst < n) or src == dst:
                raise ValueError(f'class table {self.name!r}: bad merge {src} -> {dst}')
        if (self.category_of_class is None) != (self.category_names is None):
            raise ValueError(f'class table {self.name!r}: category names and mapping go together')
        if self.category_of_class is not None:
            if len(self.category_of_class) != n:
                raise ValueError(f'class table {self.name!r}: category_of_class has '
                                 f'{len(self.category_of_class)} entries for {n} classes')
            k = len(self.category_names)
            if any(not 0 <= cat < k for cat in self.category_of_class):
                raise ValueError(f'class table {self.name!r}: category index outside 0..{k - 1}')
        object.__setattr__(self, '_fingerprint', hashlib.sha256(
            json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16])

    @property
    def num_classes(self) -> int:
        """Return the number of classes ``C`` (ignore excluded)."""
        return len(self.class_names)

    @property
    def target_name(self) -> str:
        """Return the name of the target class ``c``."""
        return self.class_names[self.target]

    @property
    def merged_away(self) -> tuple[int, ...]:
        """Return the classes merged into another (never predicted)."""
        return tuple(src for src, _ in self.merge)

    @property
    def fingerprint(self) -> str:
        """Return a short stable hash of the table, recorded with priors and meta models."""
        return self._fingerprint

    def index(self, name: str) -> int:
        """Return the index of class ``name`` (case-insensitive)."""
        lowered = [n.lower() for n in self.class_names]
        if name.lower() not in lowered:
            raise ValueError(f'class {name!r} is not in table {self.name!r} '
                             f'(classes: {", ".join(self.class_names)})')
        return lowered.index(name.lower())

    def with_target(self, target: int | str) -> 'ClassTable':
        """Return a copy whose target class ``c`` is ``target`` (index or name)."""
        idx = self.index(target) if isinstance(target, str) else int(target)
        return replace(self, target=idx)

    def merge_labels(self, labels: np.ndarray) -> np.ndarray:
        """Map ground-truth labels of merged classes onto their destination (rider -> person)."""
        if not self.merge:
            return labels
        out = labels.copy()
        for src, dst in self.merge:
            out[labels == src] = dst
        return out

    def check_labels(self, labels: np.ndarray, what: str = 'label map') -> None:
        """Raise ``ValueError`` when ``labels`` holds values outside the table and ignore."""
        labels = np.asarray(labels)
        values = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)) if (
            labels.dtype == np.uint8) else np.unique(labels)
        bad = values[(values >= self.num_classes) & (values != self.ignore_label)]
        if np.any(values < 0) or bad.size:
            shown = ', '.join(str(v) for v in np.concatenate([values[values < 0], bad])[:8])
            raise ValueError(f'{what}: label values {shown} are outside table {self.name!r} '
                             f'(0..{self.num_classes - 1}, ignore {self.ignore_label})')

    def palette_array(self) -> np.ndarray:
        """Return the palette as a ``(C + 1, 3)`` uint8 array whose last row colours ignore."""
        return np.array(list(self.palette) + [(0, 0, 0)], dtype=np.uint8)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON-compatible data (for manifests and ``.npz`` metadata)."""
        return {
            'name': self.name,
            'class_names': list(self.class_names),
            'ignore_label': self.ignore_label,
            'target': self.target,
            'palette': [list(c) for c in self.palette],
            'merge': [list(m) for m in self.merge],
            'category_names': None if self.category_names is None else list(self.category_names),
            'category_of_class': (None if self.category_of_class is None
                                  else list(self.category_of_class)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'ClassTable':
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                name=str(data['name']),
                class_names=tuple(str(n) for n in data['class_names']),
                ignore_label=int(data['ignore_label']),
                target=int(data['target']),
                palette=tuple(tuple(int(v) for v in c) for c in data['palette']),
                merge=tuple(tuple(int(v) for v in m) for m in data.get('merge', ())),
                category_names=(None if data.get('category_names') is None
                                else tuple(data['category_names'])),
                category_of_class=(None if data.get('category_of_class') is None
                                   else tuple(int(v) for v in data['category_of_class'])),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f'malformed class table: {exc!r}') from exc


# Cityscapes: official labels.py (cityscapesScripts): labelId -> trainId, 255 = ignore.
CITYSCAPES_LABELID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

_CITYSCAPES_NAMES = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
    'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
    'motorcycle', 'bicycle',
)
_CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
_CITYSCAPES_CATEGORIES = (
    'void', 'flat', 'construction', 'object', 'nature', 'sky', 'human', 'vehicle',
)
_CITYSCAPES_CATEGORY_OF_CLASS = (1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 6, 6, 7, 7, 7, 7, 7, 7)

_CAMVID_NAMES = (
    'Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence', 'Car',
    'Pedestrian', 'Bicyclist',
)
# Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist
_CAMVID_CATEGORY_OF_CLASS = (5, 2, 3, 1, 1, 4, 3, 2, 7, 6, 6)
_CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)


def cityscapes_labelid_lut() -> np.ndarray:
    """Return a 256-entry uint8 lookup table labelId -> trainId (255 = ignore)."""
    lut = np.full(256, 255, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_LABELID_TO_TRAINID.items():
        lut[label_id] = train_id
    return lut


def cityscapes_table(target: str = 'person', merge_rider: bool = True) -> ClassTable:
    """Return Cityscapes' 19 trainIds with the 8 official categories; rider merged into person."""
    person, rider = _CITYSCAPES_NAMES.index('person'), _CITYSCAPES_NAMES.index('rider')
    table = ClassTable(
        name='cityscapes', class_names=_CITYSCAPES_NAMES, ignore_label=255, target=person,
        palette=_CITYSCAPES_PALETTE, merge=((rider, person),) if merge_rider else (),
        category_names=_CITYSCAPES_CATEGORIES, category_of_class=_CITYSCAPES_CATEGORY_OF_CLASS)
    return table.with_target(target)


def camvid_table(target: str = 'Pedestrian') -> ClassTable:
    """Return the 11 CamVid classes (SegNet version); void = 11 is ignore, Bicyclist its own.

    The categories are Cityscapes' 8 (§6 of the paper), each CamVid class in the category of the
    Cityscapes class ``core.mapping.CAMVID_TO_CITYSCAPES`` reads it as: human = Pedestrian +
    Bicyclist, flat = Road + Pavement, construction = Building + Fence, object = Pole +
    SignSymbol, nature = Tree, sky = Sky, vehicle = Car (no CamVid class is "void").
    """
    table = ClassTable(name='camvid', class_names=_CAMVID_NAMES, ignore_label=11,
                       target=_CAMVID_NAMES.index('Pedestrian'), palette=_CAMVID_PALETTE,
                       category_names=_CITYSCAPES_CATEGORIES,
                       category_of_class=_CAMVID_CATEGORY_OF_CLASS)
    return table.with_target(target)


def table_by_name(name: str, target: str | None = None) -> ClassTable:
    """Return a built-in table by name (``cityscapes`` or ``camvid``), optionally retargeted."""
    builders = {'cityscapes': cityscapes_table, 'camvid': camvid_table,
                'synthetic': cityscapes_table}
    if name not in builders:
        raise ValueError(f'unknown class table {name!r}; known: {", ".join(sorted(builders))}')
    table = builders[name]()
    return table if target is None else table.with_target(target)
