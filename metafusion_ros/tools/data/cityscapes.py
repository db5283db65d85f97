"""Cityscapes layout: ``leftImg8bit/<split>/<city>/`` images with ``gtFine`` labelIds PNGs.

File names are ``<city>_<seq>_<frame>_leftImg8bit.png`` and
``<city>_<seq>_<frame>_gtFine_labelIds.png``; the drive of a frame is ``<city>_<seq>``. The
official labelIds (0..33) are converted to the 19 trainIds with
:func:`metafusion_ros.core.classes.cityscapes_labelid_lut` (255 = ignore). The unlabelled
``leftImg8bit_sequence/<split>/<city>/`` layout (the 30-frame snippets) is read by
:func:`iter_cityscapes_sequence`.
"""
from __future__ import annotations

from pathlib import Path
import re

import numpy as np

from metafusion_ros.core.classes import ClassTable, cityscapes_labelid_lut, cityscapes_table
from metafusion_ros.tools.data.frame import (DatasetError, FrameFile, FrameSource, build_source,
                                             list_pngs, require_dir)

__all__ = ['iter_cityscapes', 'iter_cityscapes_sequence', 'cityscapes_paths',
           'labelids_to_trainids', 'MAX_LABEL_ID', 'TRAINID_SUFFIX']

IMAGE_SUFFIX = '_leftImg8bit.png'
LABEL_SUFFIX = '_gtFine_labelIds.png'
# Written next to the labelIds by cityscapesScripts' createTrainIdLabelImgs (and by synth).
TRAINID_SUFFIX = '_gtFine_labelTrainIds.png'
# The largest official labelId (bicycle = 33); license plate (-1) is never drawn in the PNGs.
MAX_LABEL_ID = 33
_NAME = re.compile(r'^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)' + re.escape(IMAGE_SUFFIX) + '$')


def cityscapes_paths(root: str | Path, split: str, city: str, seq: int,
                     frame: int) -> tuple[Path, Path]:
    """Return the (image, labelIds) paths of one frame in the Cityscapes layout under ``root``."""
    stem = f'{city}_{seq:06d}_{frame:06d}'
    root = Path(root)
    return (root / 'leftImg8bit' / split / city / (stem + IMAGE_SUFFIX),
            root / 'gtFine' / split / city / (stem + LABEL_SUFFIX))


def labelids_to_trainids(raw: np.ndarray, path: Path, table: ClassTable) -> np.ndarray:
    """Map official labelIds to trainIds in ``table`` (ignore -> the table's ignore label)."""
    if raw.size and int(raw.max()) > MAX_LABEL_ID:
        values = np.unique(raw[raw > MAX_LABEL_ID])
        shown = ', '.join(str(v) for v in values[:8])
        raise DatasetError(f'{path}: labelIds {shown} are not Cityscapes labelIds '
                           f'(0..{MAX_LABEL_ID})')
    lut = cityscapes_labelid_lut()
    lut[lut == 255] = table.ignore_label
    return lut[raw]


def _frame_file(image: Path, label_dir: Path | None) -> FrameFile:
    """Parse a Cityscapes image name into a :class:`FrameFile` (label path when labelled)."""
    match = _NAME.match(image.name)
    if match is None:
        raise DatasetError(f'{image}: not a Cityscapes image name '
                           f'(<city>_<seq>_<frame>{IMAGE_SUFFIX})')
    label = None
    if label_dir is not None:
        label = label_dir / image.parent.name / image.name.replace(IMAGE_SUFFIX, LABEL_SUFFIX)
        if not label.is_file():
            raise DatasetError(f'{image}: image has no label map {label}')
    return FrameFile(image, label, f'{match["city"]}_{match["seq"]}', int(match['frame']))


def _source(image_dir: Path, label_dir: Path | None, table: ClassTable, what: str,
            images: bool, skip_bad: bool) -> FrameSource:
    """List the frames under ``image_dir`` (one folder per city) and pair them with labels."""
    found = list_pngs(image_dir, what, '*/*' + IMAGE_SUFFIX)

    def decode(raw: np.ndarray, path: Path) -> np.ndarray:
        return labelids_to_trainids(raw, path, table)
    return build_source(found, lambda image: _frame_file(image, label_dir), table,
                        None if label_dir is None else decode, f'{what} folder {image_dir}',
                        images, skip_bad)


def iter_cityscapes(root: str | Path, split: str, table: ClassTable | None = None, *,
                    images: bool = True, skip_bad: bool = False) -> FrameSource:
    """Return the labelled frames of ``split`` (``leftImg8bit`` + ``gtFine`` labelIds).

    Labels are trainIds of ``table`` (default :func:`cityscapes_table`, 19 classes). Raises
    :class:`DatasetError` naming the folder or file for a missing or empty folder or an image
    without label; decoding problems are raised (or skipped) while iterating.
    """
    table = cityscapes_table() if table is None else table
    if table.num_classes != len(cityscapes_table().class_names):
        raise ValueError(f'class table {table.name!r} has {table.num_classes} classes; the '
                         f'Cityscapes reader yields the 19 trainIds')
    root = Path(root)
    label_dir = require_dir(root / 'gtFine' / split, f'Cityscapes gtFine/{split}')
    return _source(root / 'leftImg8bit' / split, label_dir, table,
                   f'Cityscapes leftImg8bit/{split}', images, skip_bad)


def iter_cityscapes_sequence(root: str | Path, split: str, table: ClassTable | None = None, *,
                             skip_bad: bool = False) -> FrameSource:
    """Return the unlabelled frames of ``leftImg8bit_sequence/<split>`` (``labels`` is None)."""
    table = cityscapes_table() if table is None else table
    return _source(Path(root) / 'leftImg8bit_sequence' / split, None, table,
                   f'Cityscapes leftImg8bit_sequence/{split}', True, skip_bad)
