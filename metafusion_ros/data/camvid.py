"""CamVid layout (SegNet's 11-class, 480x360 version): ``<split>/`` images, ``<split>annot/``.

Label PNGs hold the class index per pixel (0 Sky .. 10 Bicyclist, 11 void = ignore). Frames are
grouped into drives by the file-name prefix (``0001TP``, ``0006R0``, ``0016E5``, ``Seq05VD``) and
ordered by the frame number after it (``0001TP_006690.png``, ``0006R0_f02040.png``).
"""
from __future__ import annotations

from pathlib import Path
import re

import numpy as np

from ..core.classes import ClassTable, camvid_table
from .frame import DatasetError, FrameFile, FrameSource, build_source, list_pngs

__all__ = ['iter_camvid', 'CAMVID_VOID']

# The void index in the CamVid annotation PNGs.
CAMVID_VOID = 11
_NAME = re.compile(r'^(?P<drive>[A-Za-z0-9]+)_f?(?P<frame>\d+)\.png$')


def _void_to_ignore(raw: np.ndarray, table: ClassTable) -> np.ndarray:
    """Map CamVid's void index onto the table's ignore label."""
    if table.ignore_label == CAMVID_VOID:
        return raw
    return np.where(raw == CAMVID_VOID, np.uint8(table.ignore_label), raw).astype(np.uint8)


def _frame_file(image: Path, label_dir: Path) -> FrameFile:
    """Parse a CamVid image name and find its annotation."""
    match = _NAME.match(image.name)
    if match is None:
        raise DatasetError(f'{image}: not a CamVid image name (<drive>_<frame>.png)')
    label = label_dir / image.name
    if not label.is_file():
        raise DatasetError(f'{image}: image has no label map {label}')
    return FrameFile(image, label, match['drive'], int(match['frame']))


def iter_camvid(root: str | Path, split: str, table: ClassTable | None = None, *,
                images: bool = True, skip_bad: bool = False) -> FrameSource:
    """Return the frames of ``split`` under ``root`` in drive order.

    Raises :class:`DatasetError` naming the folder or file for a missing or empty folder or an
    image without annotation; decoding problems (size, unknown values, unreadable PNG) are raised
    (or, with ``skip_bad``, logged and counted) while iterating.
    """
    table = camvid_table() if table is None else table
    if table.num_classes != CAMVID_VOID:
        raise ValueError(f'class table {table.name!r} has {table.num_classes} classes; CamVid '
                         f'annotations hold {CAMVID_VOID} classes and void')
    root = Path(root)
    found = list_pngs(root / split, f'CamVid {split}')
    label_dir = root / f'{split}annot'
    list_pngs(label_dir, f'CamVid {split}annot')
    return build_source(found, lambda image: _frame_file(image, label_dir), table,
                        lambda raw, path: _void_to_ignore(raw, table),
                        f'CamVid {split} folder {root / split}', images, skip_bad)
