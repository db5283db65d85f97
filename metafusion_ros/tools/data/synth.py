"""Synthetic Cityscapes-like drives: the project's embedded default data set.

:func:`generate_drives` writes a real Cityscapes layout (``leftImg8bit/<split>/<city>/`` and
``gtFine/<split>/<city>/*_gtFine_labelIds.png`` with official labelIds, plus the
``*_gtFine_labelTrainIds.png`` that cityscapesScripts derives from them) of temporally coherent
drives: a road in perspective with markings and crossings, sidewalks, grass, building and tree
blocks with fences and walls, poles with signs and traffic lights, parked and moving cars, and
rare, mostly small, sometimes occluded or dark pedestrians and cyclists (person, rider,
bicycle), under varying light, texture and sensor noise. The ego vehicle's bonnet is labelled
``ego vehicle`` (ignored by the tables), as in Cityscapes.

Each drive is drawn from the key ``[seed, crc32(split), drive]`` (one random stream per part of
the world, generated front to back) and every frame's sensor-noise offset from that key plus the
frame number, so the same arguments give byte-identical PNGs (Pillow, fixed compression level, no
metadata), adding drives leaves the existing ones unchanged, and a drive with more frames starts
with exactly the frames of a shorter one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
import zlib

import numpy as np
from PIL import Image

from metafusion_ros.core.classes import cityscapes_labelid_lut
from metafusion_ros.tools.data.cityscapes import LABEL_SUFFIX, TRAINID_SUFFIX, cityscapes_paths
from metafusion_ros.tools.data.synth_render import Renderer
from metafusion_ros.tools.data.synth_world import LABEL_IDS, make_world

__all__ = ['generate_drives', 'render_drive', 'parse_drives', 'SynthSummary', 'CITY',
           'DEFAULT_DRIVES', 'DEFAULT_FRAMES', 'DEFAULT_SIZE', 'DEFAULT_FPS']

CITY = 'synth'
DEFAULT_DRIVES: dict[str, int] = {'train': 8, 'val': 3, 'test': 3}
DEFAULT_FRAMES = 30
DEFAULT_SIZE = (1024, 512)
DEFAULT_FPS = 10.0
_HUMAN_IDS = (LABEL_IDS['person'], LABEL_IDS['rider'])


@dataclass
class SynthSummary:
    """What :func:`generate_drives` wrote: frames per split and the human pixel share."""

    out: Path
    frames: dict[str, int] = field(default_factory=dict)
    human_pixels: int = 0
    pixels: int = 0

    @property
    def human_share(self) -> float:
        """Return the fraction of all written pixels labelled person or rider."""
        return self.human_pixels / max(self.pixels, 1)


def parse_drives(spec: str | int | Mapping[str, int]) -> dict[str, int]:
    """Return drives per split from ``N`` (N each for train/val/test) or ``train=N,val=M``."""
    if isinstance(spec, Mapping):
        drives = {str(k): int(v) for k, v in spec.items()}
    elif isinstance(spec, int) or str(spec).strip().isdigit():
        drives = {split: int(spec) for split in DEFAULT_DRIVES}
    else:
        drives = {}
        for item in str(spec).split(','):
            split, sep, count = item.partition('=')
            if not sep or not split.strip() or not count.strip().isdigit():
                raise ValueError(f'drives {spec!r}: expected N or split=N[,split=N...]')
            drives[split.strip()] = int(count)
    if any(n < 0 for n in drives.values()) or not any(drives.values()):
        raise ValueError(f'drives {spec!r}: need at least one drive and no negative counts')
    return drives


def render_drive(seed: int, split: str, drive: int, frames: int,
                 size: tuple[int, int] = DEFAULT_SIZE, fps: float = DEFAULT_FPS):
    """Yield ``(frame index, RGB uint8 image, labelIds uint8 map)`` for one drive."""
    width, height = size
    if width < 32 or height < 16 or frames < 1 or fps <= 0:
        raise ValueError(f'synthetic drive needs size >= 32x16, frames >= 1 and fps > 0, got '
                         f'{width}x{height}, {frames} frames, {fps} fps')
    key = [int(seed), zlib.crc32(split.encode()), int(drive)]
    renderer = Renderer(make_world(key, frames / fps), width, height)
    for index in range(frames):
        image, labels = renderer.render(index / fps, np.random.default_rng(key + [index + 1]))
        yield index, image, labels


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write ``array`` as PNG with fixed settings (deterministic bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format='PNG', compress_level=1)


def generate_drives(out: str | Path, drives: str | int | Mapping[str, int] = DEFAULT_DRIVES,
                    frames: int = DEFAULT_FRAMES, size: tuple[int, int] = DEFAULT_SIZE,
                    seed: int = 0, fps: float = DEFAULT_FPS,
                    progress: bool = False) -> SynthSummary:
    """Write synthetic drives in the Cityscapes layout under ``out`` and return a summary.

    ``drives`` is N per split (train/val/test) or a mapping split -> N; ``size`` is ``(W, H)``;
    the frames of a drive are ``1 / fps`` seconds apart. Drive ``d`` of a split is sequence
    ``d`` of city ``synth``.
    """
    counts = parse_drives(drives)
    out = Path(out)
    summary = SynthSummary(out)
    jobs = [(split, d) for split, n in counts.items() for d in range(n)]
    trainids = cityscapes_labelid_lut()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs) * frames, desc='synth', unit='frame')
    for split, drive in jobs:
        for index, image, labels in render_drive(seed, split, drive, frames, size, fps):
            image_path, label_path = cityscapes_paths(out, split, CITY, drive, index)
            _save_png(image, image_path)
            _save_png(labels, label_path)
            _save_png(trainids[labels], label_path.with_name(
                label_path.name.replace(LABEL_SUFFIX, TRAINID_SUFFIX)))
            summary.frames[split] = summary.frames.get(split, 0) + 1
            summary.human_pixels += int(np.isin(labels, _HUMAN_IDS).sum())
            summary.pixels += labels.size
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return summary
