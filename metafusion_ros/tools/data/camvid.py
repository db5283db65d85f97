"""CamVid layout (SegNet's 11-class, 480x360 version): ``<split>/`` images, ``<split>annot/``.

Label PNGs hold the class index per pixel (0 Sky .. 10 Bicyclist, 11 void = ignore). Read with
another table (e.g. Cityscapes'), the labels go through the documented mapping of
:mod:`metafusion_ros.core.mapping`; a value outside it is an error naming the file and value.
Frames are grouped into drives by the file-name prefix (``0001TP``, ``0006R0``, ``0016E5``,
``Seq05VD``) and ordered by the frame number after it (``0001TP_006690.png``,
``0006R0_f02040.png``).
"""
from __future__ import annotations

from pathlib import Path
import re
from typing import Callable

import numpy as np

from metafusion_ros.core.classes import camvid_table, ClassTable
from metafusion_ros.core.mapping import mapping_between
from metafusion_ros.tools.data.frame import (DatasetError, FrameFile, FrameSource, build_source,
                                             list_pngs)

__all__ = ['iter_camvid', 'CAMVID_VOID']

# The void index in the CamVid annotation PNGs.
CAMVID_VOID = 11
_NAME = re.compile(r'^(?P<drive>[A-Za-z0-9]+)_f?(?P<frame>\d+)\.png$')


def _void_to_ignore(raw: np.ndarray, table: ClassTable) -> np.ndarray:
    """Map CamVid's void index onto the table's ignore label."""
    if table.ignore_label == CAMVID_VOID:
        return raw
    return np.where(raw == CAMVID_VOID, np.uint8(table.ignore_label), raw).astype(np.uint8)


def _decoder(table: ClassTable) -> Callable[[np.ndarray, Path], np.ndarray]:
    """Return the label decoder into ``table``: CamVid's ids, or a documented mapping of them."""
    if table.class_names == camvid_table().class_names:
        return lambda raw, path: _void_to_ignore(raw, table)
    mapping = mapping_between(camvid_table(), table)  # ValueError when there is none

    def decode(raw: np.ndarray, path: Path) -> np.ndarray:
        try:
            return mapping.apply(raw, str(path))
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc
    return decode


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
    decode = _decoder(table)
    root = Path(root)
    found = list_pngs(root / split, f'CamVid {split}')
    label_dir = root / f'{split}annot'
    list_pngs(label_dir, f'CamVid {split}annot')
    return build_source(found, lambda image: _frame_file(image, label_dir), table, decode,
                        f'CamVid {split} folder {root / split}', images, skip_bad)
