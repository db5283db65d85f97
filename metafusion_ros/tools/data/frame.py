"""Frames, the PNG decoding and the skip bookkeeping shared by the dataset readers.

A reader lists the files of one split when it is called (so a missing or empty folder, or an
image without its label, is reported at once) and decodes them lazily while it is iterated.
Every problem raises :class:`DatasetError` naming the file, or, with ``skip_bad=True``, is logged
and counted in :attr:`FrameSource.skipped`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
import hashlib
import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from metafusion_ros.core.classes import ClassTable

__all__ = ['DatasetError', 'Frame', 'FrameFile', 'FrameSource', 'read_rgb_png', 'read_label_png',
           'list_pngs', 'require_dir', 'png_size', 'build_source']

LOG = logging.getLogger(__name__)

# Label maps are single-channel 8-bit PNGs; palette PNGs carry the indices themselves.
_LABEL_MODES = ('L', 'P')


class DatasetError(ValueError):
    """A dataset file or folder that cannot be read as promised; the message names it."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame of a drive.

    ``image`` is RGB uint8 ``(H, W, 3)`` (``None`` when the reader was asked for labels only),
    ``labels`` uint8 ``(H, W)`` in the class table's ids with the table's ignore label (``None``
    for unlabelled sequences), ``ignore`` the boolean mask of ignore pixels. ``sequence`` names
    the drive, ``index`` is the frame number inside it, ``name`` the image file name.
    """

    image: np.ndarray | None
    labels: np.ndarray | None
    ignore: np.ndarray | None
    sequence: str
    index: int
    name: str
    path: Path
    label_path: Path | None = None


@dataclass(frozen=True)
class FrameFile:
    """The files of one frame before decoding."""

    image: Path
    labels: Path | None
    sequence: str
    index: int


LabelDecoder = Callable[[np.ndarray, Path], np.ndarray]


@dataclass(eq=False)
class FrameSource:
    """The frames of one split, in drive order; iterable more than once, with a length.

    ``decode`` turns the raw label PNG into the table's ids (raising :class:`DatasetError` for
    unknown values). With ``images=False`` only the image header is read (its size is still
    checked against the label map). ``skipped`` holds ``(file, reason)`` for every frame left out
    because ``skip_bad`` was set.
    """

    files: list[FrameFile]
    table: ClassTable
    decode: LabelDecoder | None
    images: bool = True
    skip_bad: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        for item in self.files:
            try:
                frame = self.read(item)
            except DatasetError as exc:
                if not self.skip_bad:
                    raise
                self.skip(item.image, str(exc))
                continue
            yield frame

    def skip(self, path: Path, reason: str) -> None:
        """Log and count a frame left out (only ever called with ``skip_bad``)."""
        LOG.warning('skipping %s: %s', path, reason)
        self.skipped.append((str(path), reason))

    def read(self, item: FrameFile) -> Frame:
        """Decode one frame, raising :class:`DatasetError` naming the file on any problem."""
        if self.images:
            image = read_rgb_png(item.image)
            size = image.shape[1], image.shape[0]
        else:
            image, size = None, png_size(item.image)
        labels = ignore = None
        if item.labels is not None:
            raw = read_label_png(item.labels)
            if (raw.shape[1], raw.shape[0]) != size:
                raise DatasetError(f'{item.labels}: label map is {raw.shape[1]}x{raw.shape[0]} '
                                   f'but its image {item.image} is {size[0]}x{size[1]}')
            labels = self.decode(raw, item.labels)
            try:
                self.table.check_labels(labels, what=str(item.labels))
            except ValueError as exc:
                raise DatasetError(str(exc)) from exc
            ignore = labels == self.table.ignore_label
        return Frame(image, labels, ignore, item.sequence, item.index, item.image.name,
                     item.image, item.labels)

    def label_digests(self) -> dict[str, str]:
        """Return the SHA-256 of each label file by file name, in drive order."""
        return {item.labels.name: _file_sha256(item.labels)
                for item in self.files if item.labels is not None}

    def labels_sha256(self) -> str:
        """Return the SHA-256 of the label files: one ``name NUL sha256`` line each, drive order.

        File names, not paths, so the digest does not depend on where the folder lies; frames
        without a label file are left out.
        """
        return _digest_lines(self.label_digests())

    def data_sha256(self) -> str:
        """Return the SHA-256 over every image and label file (name and content), drive order."""
        files = [path for item in self.files for path in (item.image, item.labels) if path]
        return _digest_lines({path.name: _file_sha256(path) for path in files})

    def label_maps(self) -> 'LabelMaps':
        """Return a sized iterable over the label maps only (for priors with a progress bar)."""
        return LabelMaps(self)


@dataclass(frozen=True, eq=False)
class LabelMaps:
    """The label maps of a :class:`FrameSource` (unlabelled frames raise)."""

    source: FrameSource

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.source:
            if frame.labels is None:
                raise DatasetError(f'{frame.path}: frame has no label map')
            yield frame.labels


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise :class:`DatasetError` naming it."""
    if not path.is_dir():
        raise DatasetError(f'{what} folder {path} does not exist')
    return path


def list_pngs(folder: Path, what: str, pattern: str = '*.png',
              recursive: bool = False) -> list[Path]:
    """Return the sorted PNGs of ``folder``; raise naming the folder when it is missing/empty."""
    require_dir(folder, what)
    found = sorted(folder.rglob(pattern) if recursive else folder.glob(pattern))
    found = [p for p in found if p.is_file()]
    if not found:
        raise DatasetError(f'{what} folder {folder} holds no {pattern} files')
    return found


@contextmanager
def _png(path: Path) -> Iterator[Image.Image]:
    """Open ``path`` with Pillow; raise :class:`DatasetError` naming it when unreadable."""
    try:
        with Image.open(path) as im:
            yield im
    except FileNotFoundError as exc:
        raise DatasetError(f'{path}: file does not exist') from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f'{path}: unreadable PNG ({exc})') from exc


def _open_png(path: Path) -> Image.Image:
    """Return the fully decoded image of ``path``."""
    with _png(path) as im:
        im.load()
        return im.copy()


def png_size(path: Path) -> tuple[int, int]:
    """Return ``(W, H)`` from the header of ``path`` without decoding the pixels."""
    with _png(path) as im:
        return im.size


def read_rgb_png(path: Path) -> np.ndarray:
    """Read an image as RGB uint8 ``(H, W, 3)``."""
    im = _open_png(path)
    if im.mode != 'RGB':
        im = im.convert('RGB')
    return np.asarray(im, dtype=np.uint8).copy()


def read_label_png(path: Path) -> np.ndarray:
    """Read a single-channel 8-bit label PNG as uint8 ``(H, W)``."""
    im = _open_png(path)
    if im.mode not in _LABEL_MODES:
        raise DatasetError(f'{path}: label PNG must be 8-bit single channel (mode L or P), '
                           f'got mode {im.mode}')
    return np.asarray(im, dtype=np.uint8).copy()


def build_source(found: Iterable[Path], parse: Callable[[Path], FrameFile], table: ClassTable,
                 decode: LabelDecoder | None, what: str, images: bool = True,
                 skip_bad: bool = False) -> FrameSource:
    """Parse every image path into a :class:`FrameFile` and return them in drive order.

    ``parse`` raises :class:`DatasetError` for a bad name or a missing label; with ``skip_bad``
    that frame is logged and counted instead. ``what`` names the split in errors.
    """
    source = FrameSource([], table, decode, images, skip_bad)
    files = []
    for image in found:
        try:
            files.append(parse(image))
        except DatasetError as exc:
            if not skip_bad:
                raise
            source.skip(image, str(exc))
    if not files:
        raise DatasetError(f'{what}: no usable frames')
    source.files = sorted(files, key=lambda f: (f.sequence, f.index, f.image.name))
    return source


def _file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest_lines(digests: dict[str, str]) -> str:
    """Return the SHA-256 of ``name NUL sha256`` lines, one per file, in the given order."""
    digest = hashlib.sha256()
    for name, content in digests.items():
        digest.update(f'{name}\0{content}\n'.encode())
    return digest.hexdigest()
