"""Open a labelled split by dataset name; parse ``WxH`` sizes for the command line."""
from __future__ import annotations

from pathlib import Path

from metafusion_ros.core.classes import ClassTable, table_by_name
from metafusion_ros.tools.data.camvid import iter_camvid
from metafusion_ros.tools.data.cityscapes import iter_cityscapes
from metafusion_ros.tools.data.frame import FrameSource

__all__ = ['DATASETS', 'open_dataset', 'parse_size']

# 'synthetic' is the Cityscapes layout written by ``metafusion synth``.
DATASETS = ('cityscapes', 'camvid', 'synthetic')


def open_dataset(name: str, root: str | Path, split: str, table: ClassTable | None = None, *,
                 images: bool = True, skip_bad: bool = False) -> FrameSource:
    """Return the frames of ``split`` of dataset ``name`` under ``root`` in drive order."""
    if name not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; known: {", ".join(DATASETS)}')
    table = table_by_name(name) if table is None else table
    reader = iter_camvid if name == 'camvid' else iter_cityscapes
    return reader(root, split, table, images=images, skip_bad=skip_bad)


def parse_size(text: str) -> tuple[int, int]:
    """Return ``(W, H)`` from ``'WxH'`` (e.g. ``1024x512``); ``ValueError`` if malformed."""
    width, sep, height = str(text).lower().partition('x')
    if not sep or not width.strip().isdigit() or not height.strip().isdigit() \
            or int(width) < 1 or int(height) < 1:
        raise ValueError(f'size {text!r}: expected WIDTHxHEIGHT with positive integers, '
                         f'e.g. 1024x512')
    return int(width), int(height)
