"""Position-specific class priors (eq. 5) and their interpolation (eq. 15).

``p_z(y)`` is the fraction of training images whose label at pixel ``z`` is ``y``; pixels labelled
ignore do not count (neither in the numerator nor in the denominator of that pixel). With category
priors (Cityscapes, §6 of the paper) the prior of a class is the prior of its category.

File format (``.npz``, loaded with ``allow_pickle=False``):

- ``probs``: float32 ``(H, W, K)``, ``K`` = number of classes or categories; sums to 1 over ``K``
  wherever at least one image had a non-ignore label, 1/K elsewhere;
- ``counts``: int32 ``(H, W)``, the number of non-ignore labels seen per pixel;
- ``meta``: a 0-d unicode array holding JSON: ``format`` (``metafusion-priors/1``), ``names``
  (the K names), ``level`` (``class`` or ``category``), ``table`` (the class table),
  ``num_images``, ``dataset``, ``resolution`` ``[H, W]`` and ``provenance``: where the priors
  came from, e.g. ``split``, ``root``, ``smoothing`` (λ), ``labels_read_as`` (a label mapping) and
  ``labels_sha256``
  (:meth:`~metafusion_ros.tools.data.frame.FrameSource.labels_sha256` of the label
  files counted); files written before it have none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.files import load_npz, MAX_TEXT_BYTES, naming, parse_json

__all__ = ['Priors', 'estimate_priors', 'interpolate', 'check_probabilities', 'REFERENCE_EPS',
           'SUM_TOLERANCE']

FORMAT = 'metafusion-priors/1'
# The reference adds this to every prior before dividing (spec §1).
REFERENCE_EPS = 1e-5
# How far the K priors of a pixel may sum from 1. Stored float32 values are rounded by at most
# 2^-24 each, so a sum of K of them is off by at most K * 2^-24 (1.1e-6 for 19 classes); the
# shipped priors are off by 4.9e-8 at most (float64 sum, test_data_priors.py).
SUM_TOLERANCE = 1e-4


def check_probabilities(probs: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``probs`` (H, W, K) are finite, >= 0 and sum to 1 per pixel."""
    finite = np.isfinite(probs)
    if not finite.all():
        raise ValueError(f'priors hold {probs.size - int(finite.sum())} NaN or Inf values')
    if probs.size and probs.min() < 0:
        raise ValueError(f'priors hold {int((probs < 0).sum())} negative values '
                         f'(smallest {float(probs.min()):g})')
    error = np.abs(probs.sum(axis=2, dtype=np.float64) - 1.0)
    if error.size and error.max() > SUM_TOLERANCE:
        row, col = np.unravel_index(int(error.argmax()), error.shape)
        raise ValueError(f'priors are not probabilities: the {probs.shape[2]} priors of a pixel '
                         f'must sum to 1 (within {SUM_TOLERANCE:g}), at pixel ({row}, {col}) '
                         f'they sum to {float(probs[row, col].sum(dtype=np.float64)):.6g} '
                         f'({int((error > SUM_TOLERANCE).sum())} pixels off)')


@dataclass(frozen=True, eq=False)
class Priors:
    """Position-specific priors ``p_z(y)`` over classes or categories (eq. 5)."""

    probs: np.ndarray
    table: ClassTable
    level: str = 'class'
    num_images: int = 0
    dataset: str = ''
    counts: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.level not in ('class', 'category'):
            raise ValueError(f"priors level must be 'class' or 'category', got {self.level!r}")
        if self.level == 'category' and self.table.category_of_class is None:
            raise ValueError(f'class table {self.table.name!r} has no categories')
        probs = np.asarray(self.probs)
        if probs.ndim != 3 or probs.shape[2] != len(self.names):
            raise ValueError(f'priors must be (H, W, {len(self.names)}) for {self.level} level '
                             f'of table {self.table.name!r}, got shape {probs.shape}')
        if not np.issubdtype(probs.dtype, np.floating):
            raise TypeError(f'priors must be floating point, got {probs.dtype}')
        object.__setattr__(self, 'probs', probs.astype(np.float32, copy=False))
        check_probabilities(self.probs)

    @property
    def names(self) -> tuple[str, ...]:
        """Return the names of the K prior channels (classes or categories)."""
        if self.level == 'category':
            return self.table.category_names
        return self.table.class_names

    @property
    def resolution(self) -> tuple[int, int]:
        """Return ``(H, W)`` of the priors."""
        return self.probs.shape[0], self.probs.shape[1]

    @property
    def digest(self) -> str:
        """Return a short hash of the prior values and metadata (recorded with meta models)."""
        h = hashlib.sha256(np.ascontiguousarray(self.probs).tobytes())
        h.update(self.level.encode() + self.table.fingerprint.encode())
        return h.hexdigest()[:16]

    def class_priors(self) -> np.ndarray:
        """Return ``(H, W, C)`` priors per class; a class gets the prior of its category (§6)."""
        if self.level == 'class':
            return self.probs
        # take, not [:, :, index]: fancy indexing would lay the class axis out outermost
        return np.take(self.probs, np.asarray(self.table.category_of_class), axis=2)

    def class_priors_at(self, pixels: np.ndarray) -> np.ndarray:
        """Return ``(n, C)`` class priors at flat pixel indices (no full-frame expansion)."""
        channels = self.probs.reshape(-1, self.probs.shape[2])[pixels]
        if self.level == 'class':
            return channels
        return np.take(channels, np.asarray(self.table.category_of_class), axis=1)

    def resized(self, size: tuple[int, int]) -> 'Priors':
        """Return the priors resized to ``(H, W)``: bilinear, then renormalised (spec §1)."""
        if tuple(size) == self.resolution:
            return self
        out = _resize_bilinear(self.probs, size)
        out /= np.maximum(out.sum(axis=2, keepdims=True), np.float32(1e-12))
        return Priors(out, self.table, self.level, self.num_images, self.dataset, None,
                      self.provenance)

    def save(self, path: str | Path) -> None:
        """Write the documented ``.npz`` format (see module docstring)."""
        meta = {'format': FORMAT, 'names': list(self.names), 'level': self.level,
                'table': self.table.to_dict(), 'num_images': int(self.num_images),
                'dataset': self.dataset, 'resolution': list(self.resolution),
                'provenance': self.provenance}
        arrays = {'probs': self.probs, 'meta': np.array(json.dumps(meta))}
        if self.counts is not None:
            arrays['counts'] = self.counts.astype(np.int32)
        with open(path, 'wb') as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> 'Priors':
        """Read a priors ``.npz``; raise ``ValueError`` naming the file when it is not one.

        The arrays' declared sizes are bounded before they are read (:func:`load_npz`); any
        failure, expected or not, is one line naming the file (:func:`naming`).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'priors file {path} does not exist')
        what = f'priors file {path}'
        with naming('priors file', path):
            arrays = load_npz(path, what, member_limits={'meta': 4 * MAX_TEXT_BYTES})
            missing = {'probs', 'meta'} - set(arrays)
            if missing:
                raise ValueError(f'{what}: not a readable priors .npz (no array '
                                 f'{", ".join(sorted(missing))}; it holds '
                                 f'{", ".join(sorted(arrays)) or "none"})')
            meta = parse_json(str(arrays['meta']), what)
            if not isinstance(meta, dict):
                raise ValueError(f'{what}: meta must be a JSON object, got '
                                 f'{type(meta).__name__}')
            if meta.get('format') != FORMAT:
                raise ValueError(f'{what}: unknown format {meta.get("format")!r}')
            priors = cls(arrays['probs'], ClassTable.from_dict(meta['table']), meta['level'],
                         int(meta['num_images']), str(meta.get('dataset', '')),
                         arrays.get('counts'), dict(meta.get('provenance') or {}))
            if list(priors.names) != list(meta['names']):
                raise ValueError(f'{what}: channel names do not match its class table')
        return priors


def _resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, K)`` to ``size`` with bilinear interpolation (pixel-centre aligned)."""
    from scipy import ndimage

    h, w = array.shape[:2]
    new_h, new_w = size
    if new_h < 1 or new_w < 1:
        raise ValueError(f'cannot resize priors to {size}')
    rows = (np.arange(new_h) + 0.5) * (h / new_h) - 0.5
    cols = (np.arange(new_w) + 0.5) * (w / new_w) - 0.5
    grid_r, grid_c = np.meshgrid(np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1), indexing='ij')
    out = np.empty((new_h, new_w, array.shape[2]), dtype=np.float32)
    for k in range(array.shape[2]):
        out[:, :, k] = ndimage.map_coordinates(array[:, :, k], [grid_r, grid_c], order=1)
    return out


def _channel_labels(labels: np.ndarray, table: ClassTable, categories: bool) -> np.ndarray:
    """Map a label map to prior channels (merged classes, categories); ignore -> K."""
    table.check_labels(labels)
    labels = table.merge_labels(labels)
    k = len(table.category_names) if categories else table.num_classes
    lut = np.full(256, k, dtype=np.int64)
    mapping = np.asarray(table.category_of_class) if categories else np.arange(table.num_classes)
    lut[:table.num_classes] = mapping
    return lut[labels]


def estimate_priors(label_maps: Iterable[np.ndarray], table: ClassTable,
                    categories: bool = False, size: tuple[int, int] | None = None,
                    progress: bool = False, dataset: str = '', smoothing: float = 0.0,
                    provenance: dict[str, Any] | None = None) -> Priors:
    """Estimate ``p_z(y)`` = share of images labelled ``y`` at pixel ``z`` (eq. 5).

    ``label_maps`` are uint8 ``(H, W)`` maps in ``table``'s ids (ignore = ``table.ignore_label``,
    excluded per pixel). Merged classes count for their destination. With ``categories`` the
    channels are the table's categories. ``size`` = ``(H, W)`` resizes the result (bilinear,
    renormalised).

    ``smoothing`` = λ >= 0 adds λ pseudo-images distributed as the split's overall label
    frequency: ``p_z(y) = (n_z(y) + λ f(y)) / (n_z + λ)``. λ = 0 (the default) is eq. 5 exactly,
    as in the reference; with a few hundred images many pixels then have a prior of 0 for some
    class, and the ML rule's ``1 / (p + 1e-5)`` lets that class win on its tiny probability.

    ``provenance`` (JSON data: split, root, label digest, ...) is stored with the priors, with
    ``smoothing`` added.
    """
    if not (smoothing >= 0 and np.isfinite(smoothing)):
        raise ValueError(f'smoothing must be a finite number >= 0, got {smoothing}')
    if categories and table.category_of_class is None:
        raise ValueError(f'class table {table.name!r} has no categories')
    k = len(table.category_names) if categories else table.num_classes
    hist = None
    num = 0
    iterator = label_maps
    if progress:
        from tqdm import tqdm
        iterator = tqdm(label_maps, desc='priors', unit='img')
    for labels in iterator:
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise TypeError(f'label map {num}: expected uint8 (H, W), '
                            f'got {labels.dtype} {labels.shape}')
        if hist is None:
            hist = np.zeros(labels.shape + (k + 1,), dtype=np.int32)
        elif labels.shape != hist.shape[:2]:
            raise ValueError(f'label map {num}: size {labels.shape} differs from the first '
                             f'map {hist.shape[:2]}')
        channel = _channel_labels(labels, table, categories)
        np.put_along_axis(hist, channel[:, :, None],
                          np.take_along_axis(hist, channel[:, :, None], axis=2) + 1, axis=2)
        num += 1
    if hist is None:
        raise ValueError('no label maps: cannot estimate priors from an empty dataset')
    counts = hist[:, :, :k].sum(axis=2)
    frequency = hist[:, :, :k].sum(axis=(0, 1)) / max(int(counts.sum()), 1)
    pseudo = hist[:, :, :k] + smoothing * frequency
    total = counts[:, :, None] + smoothing
    probs = np.where(total > 0, pseudo / np.maximum(total, 1e-12), 1.0 / k)
    priors = Priors(probs.astype(np.float32), table, 'category' if categories else 'class',
                    num, dataset, counts.astype(np.int32),
                    {**(provenance or {}), 'smoothing': float(smoothing)})
    return priors if size is None else priors.resized(size)


def interpolate(class_priors: np.ndarray, alpha: float) -> np.ndarray:
    """Return ``p_{z,α}(y) = (1 - α) + α p_z(y)`` (eq. 15); α = 0 is Bayes, α = 1 is ML."""
    alpha = check_alpha(alpha)
    return (np.float32(1.0 - alpha) + np.float32(alpha) * class_priors).astype(np.float32)


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, raising ``ValueError`` unless it lies in [0, 1]."""
    try:
        value = float(alpha)
    except (TypeError, ValueError) as exc:
        raise TypeError(f'alpha must be a number in [0, 1], got {alpha!r}') from exc
    if not 0.0 <= value <= 1.0 or not np.isfinite(value):
        raise ValueError(f'alpha must lie in [0, 1], got {value}')
    return value
