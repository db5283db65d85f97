"""Candidate collection for fitting and evaluation, with a per-frame cache (§4, eq. 11, 13).

A *source* lists labelled frames (key and drive) and yields, on demand, the softmax and the
ground truth of one frame: saved arrays (:class:`NpzSource`, :class:`ArraySource`) or a dataset
run through a segmenter (:class:`SegmenterSource`). :func:`collect` runs
:class:`~metafusion_ros.core.pipeline.MetaFusion` with every candidate kept for each α, labels
each candidate (eq. 13: 1 iff at least one of its pixels has ground truth c) and writes one
``.npz`` per frame and α into the cache, so that another τ, another fold split or another run
of ``fit`` after ``evaluate`` needs no network and no segment stage. The cache folder is keyed by
the source, the priors and the class table.

MetaFusion runs where the node runs it, at the network's output resolution (a dataset's frames
through :meth:`~metafusion_ros.runtime.segmenter.base.Segmenter.infer_network`), so the features a
meta classifier is fitted on are the node's; ground truth stays at the labels' resolution, and
every count (eq. 13 labels, FP/FN, IoU) scores the masks as the node publishes them, enlarged to it
(nearest, :func:`at_labels`).

Per frame (``<key>.base.npz``): ``pred_bayes``, ``gt``. Per frame and α (``<key>.a<α>.npz``):
``pred_ml``, ``pixels`` and ``pixel_ids`` (the sparse candidate map), ``boxes``, ``sizes``,
``dropped``, ``agreeing`` (pixels of the agreeing ML class-c segments, spec §5), ``support``
(the softmax's ``p_c / max_{y != c} p_y`` at those pixels, for the ``support`` fusion reading),
``features``, ``labels`` (eq. 13). Masks and candidates are at the softmax's size, ``gt`` at
the labels'.
"""
from __future__ import annotations

from dataclasses import dataclass
import hashlib
import json
import os
from pathlib import Path
import re
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.files import check_npz, load_npz, read_json
from metafusion_ros.core.fusion import support_at
from metafusion_ros.core.pipeline import MetaFusion
from metafusion_ros.core.priors import Priors
from metafusion_ros.core.segments import Candidates
from metafusion_ros.runtime.segmenter.preprocess import Nearest
from metafusion_ros.tools.data.frame import FrameSource

__all__ = ['FrameRef', 'Source', 'ArraySource', 'NpzSource', 'SegmenterSource', 'CachedFrame',
           'CandidateSet', 'collect', 'candidate_labels', 'load_frames', 'candidate_set',
           'at_labels']

_SAFE = re.compile(r'[^A-Za-z0-9_.-]+')
# part of the cache key: 2 added ``agreeing``, 3 the network's resolution, 4 ``support``
CACHE_FORMAT = 4


@dataclass(frozen=True)
class FrameRef:
    """A labelled frame of a source: unique ``key`` and the ``group`` (drive) it belongs to."""

    key: str
    group: str


class Source(Protocol):
    """Labelled frames: their references, a stable identity, and softmax + ground truth."""

    def frames(self) -> list[FrameRef]:
        """Return the frames in order."""

    def identity(self) -> str:
        """Return a string that changes whenever the softmax or ground truth may change."""

    def load(self, ref: FrameRef) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(probs (H, W, C) float32, gt (H, W) uint8)`` of one frame."""


@dataclass(eq=False)
class ArraySource:
    """In-memory frames: ``(key, group, probs, gt)`` tuples (tests, notebooks)."""

    items: Sequence[tuple[str, str, np.ndarray, np.ndarray]]
    name: str = 'arrays'

    def frames(self) -> list[FrameRef]:
        """Return the frames in order."""
        return [FrameRef(key, group) for key, group, _, _ in self.items]

    def identity(self) -> str:
        """Return a hash of every array."""
        digest = hashlib.sha256(self.name.encode())
        for key, group, probs, gt in self.items:
            digest.update(f'{key}/{group}'.encode())
            digest.update(np.ascontiguousarray(probs).tobytes())
            digest.update(np.ascontiguousarray(gt).tobytes())
        return digest.hexdigest()

    def load(self, ref: FrameRef) -> tuple[np.ndarray, np.ndarray]:
        """Return the arrays of ``ref``."""
        for key, _, probs, gt in self.items:
            if key == ref.key:
                return probs, gt
        raise KeyError(ref.key)


@dataclass(eq=False)
class NpzSource:
    """A folder of ``*.npz`` files with ``probs`` (H, W, C) float and ``gt`` (H, W) uint8.

    The drive is the optional 0-d string array ``sequence``, else the file name up to the first
    ``_`` (CamVid style ``0016E5_07959.npz``).
    """

    folder: Path

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f'softmax folder {self.folder} does not exist')
        self._files = sorted(self.folder.glob('*.npz'))
        if not self._files:
            raise ValueError(f'softmax folder {self.folder} holds no .npz files')

    def frames(self) -> list[FrameRef]:
        """Return one frame per file, grouped by drive."""
        refs = []
        for path in self._files:
            check_npz(path, f'softmax file {path}')
            with np.load(path, allow_pickle=False) as data:
                group = str(data['sequence']) if 'sequence' in data.files else \
                    path.stem.split('_')[0]
            refs.append(FrameRef(path.stem, group))
        return refs

    def identity(self) -> str:
        """Return a hash of the file names, sizes and modification times."""
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in self._files]
        return hashlib.sha256(json.dumps([str(self.folder.resolve()), stats]).encode()).hexdigest()

    def load(self, ref: FrameRef) -> tuple[np.ndarray, np.ndarray]:
        """Read one file; raise ``ValueError`` naming it when arrays are missing."""
        path = self.folder / f'{ref.key}.npz'
        data = load_npz(path, f'softmax file {path}')
        try:
            return data['probs'].astype(np.float32, copy=False), data['gt']
        except KeyError as exc:
            raise ValueError(f'{path}: needs arrays probs and gt ({exc})') from exc


@dataclass(eq=False)
class SegmenterSource:
    """Frames of labelled dataset splits run through a segmentation network.

    ``splits`` maps split names to :class:`metafusion_ros.tools.data.frame.FrameSource` objects. A
    frame's key is ``<split>_<image stem>``; its drive is the reader's sequence, prefixed with the
    split when ``drives_per_split`` (the synthetic generator numbers its drives per split, so
    ``val`` and ``test`` both have a drive 0). ``segment`` maps an RGB image to a softmax at the
    network's output resolution (the node's); ``tag`` names the network and data (cache key).
    """

    splits: dict[str, FrameSource]
    segment: Callable[[np.ndarray], np.ndarray]
    tag: str
    drives_per_split: bool = False

    def __post_init__(self) -> None:
        self._frames = {}
        for split, source in self.splits.items():
            for item in source.files:
                group = f'{split}/{item.sequence}' if self.drives_per_split else item.sequence
                key = _SAFE.sub('_', f'{split}_{Path(item.image).stem}')
                self._frames[key] = (source, item, group)

    def frames(self) -> list[FrameRef]:
        """Return the frames in split and drive order."""
        return [FrameRef(key, group) for key, (_, _, group) in self._frames.items()]

    def identity(self) -> str:
        """Return the tag (network digest and splits) plus the frame list."""
        return hashlib.sha256((self.tag + '|' + '|'.join(self._frames)).encode()).hexdigest()

    def load(self, ref: FrameRef) -> tuple[np.ndarray, np.ndarray]:
        """Decode the frame, run the network and return softmax and labels."""
        source, item, _ = self._frames[ref.key]
        frame = source.read(item)
        if frame.labels is None:
            raise ValueError(f'{frame.path}: frame has no label map')
        return np.asarray(self.segment(frame.image), dtype=np.float32), frame.labels


@dataclass(frozen=True, eq=False)
class CachedFrame:
    """The cached MetaFusion state of one frame at one α (every candidate kept)."""

    ref: FrameRef
    pred_bayes: np.ndarray
    pred_ml: np.ndarray
    gt: np.ndarray
    candidates: Candidates
    features: np.ndarray
    labels: np.ndarray
    support: np.ndarray


@dataclass(frozen=True, eq=False)
class CandidateSet:
    """All candidates of a set of frames at one α: features, eq. 13 labels, frame and drive."""

    features: np.ndarray
    labels: np.ndarray
    frame: np.ndarray
    groups: np.ndarray
    feature_names: tuple[str, ...]
    num_frames: int

    @property
    def size(self) -> int:
        """Return the number of candidates."""
        return int(self.labels.size)

    def summary(self) -> dict[str, object]:
        """Return counts per drive (for manifests and reports)."""
        drives = {}
        for group in np.unique(self.groups):
            mask = self.groups == group
            drives[str(group)] = {'candidates': int(mask.sum()),
                                  'true_positives': int(self.labels[mask].sum())}
        return {'candidates': self.size, 'true_positives': int(self.labels.sum()),
                'frames': self.num_frames,
                'frames_with_candidates': int(np.unique(self.frame).size), 'drives': drives}


def at_labels(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Return the label map ``pred`` at ``gt``'s size, enlarged as the node publishes it."""
    return Nearest.between(tuple(pred.shape), tuple(gt.shape)).labels(pred)


def candidate_labels(candidates: Candidates, gt: np.ndarray, table: ClassTable) -> np.ndarray:
    """Return eq. 13 labels: 1 iff at least one pixel of the candidate has ground truth c.

    With ``gt`` of another size than the candidates' map, a candidate's pixels are those it
    covers in the mask enlarged to ``gt``'s size (:func:`at_labels`).
    """
    target = table.merge_labels(gt) == table.target
    height, width = candidates.shape
    if target.shape == (height, width):
        hit_pixels = target.ravel()
    else:  # each label pixel samples one network pixel: mark the sampled ones with c
        nearest = Nearest.between((height, width), target.shape)
        hit_pixels = np.zeros(height * width, dtype=bool)
        hit_pixels[(nearest.rows[:, None] * width + nearest.cols[None, :])[target]] = True
    hit = np.zeros(candidates.count + 1, dtype=bool)
    hit[candidates.pixel_ids[hit_pixels[candidates.pixels]]] = True
    return hit[1:]


def _alpha_tag(alpha: float) -> str:
    """Return a file-name tag for α."""
    return f'a{alpha:.6f}'


def cache_folder(cache_root: str | Path, source: Source, priors: Priors,
                 table: ClassTable) -> Path:
    """Return the cache folder of ``source`` under the given priors and class table."""
    key = hashlib.sha256(f'{CACHE_FORMAT}|{source.identity()}|{priors.digest}|'
                         f'{table.fingerprint}'.encode())
    return Path(cache_root) / key.hexdigest()[:20]


def _process(metafusion: MetaFusion, probs: np.ndarray, gt: np.ndarray, ref: FrameRef,
             alphas: list[float], folder: Path) -> None:
    """Run MetaFusion on one frame for each α and write the cache files."""
    table = metafusion.table
    if gt.ndim != 2:  # the softmax's rank is the core's check (rules.check_probs)
        raise ValueError(f'frame {ref.key}: ground truth {gt.shape} is not (H, W)')
    table.check_labels(gt, f'ground truth of frame {ref.key}')
    base = folder / f'{ref.key}.base.npz'
    for alpha in alphas:
        metafusion.alpha = alpha
        result = metafusion.process(probs, None)
        cand = result.candidates
        _save(folder / f'{ref.key}.{_alpha_tag(alpha)}.npz', pred_ml=result.pred_ml,
              pixels=cand.pixels, pixel_ids=cand.pixel_ids, boxes=cand.boxes, sizes=cand.sizes,
              dropped=np.int64(cand.dropped), agreeing=cand.agreeing, features=result.features,
              labels=candidate_labels(cand, gt, table),
              support=support_at(probs, cand.agreeing, table.target, table.merged_away))
        if not base.is_file():
            _save(base, pred_bayes=result.pred_bayes, gt=gt.astype(np.uint8))


def _save(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` atomically (a killed run leaves no half file).

    The temporary name is this process's own, so two tools filling one cache at once (``fit`` and
    ``evaluate``) each replace the file with a complete copy instead of racing for one name.
    """
    partial = path.with_suffix(f'.{os.getpid()}.partial')
    with open(partial, 'wb') as fh:
        np.savez_compressed(fh, **arrays)
    partial.replace(path)


def collect(source: Source, priors: Priors, table: ClassTable, alphas: Iterable[float],
            cache_root: str | Path, progress: bool = False) -> Path:
    """Fill the cache for every frame of ``source`` and α; return the cache folder.

    Frames whose files exist for every α are not loaded again (no network, no segment stage).
    """
    alphas = [float(a) for a in alphas]
    folder = cache_folder(cache_root, source, priors, table)
    folder.mkdir(parents=True, exist_ok=True)
    refs = source.frames()
    _check_refs(refs)
    metafusion = MetaFusion(priors, table)
    todo = [(r, _missing(folder, r, alphas)) for r in refs]
    todo = [item for item in todo if item[1]]
    if progress and todo:
        from tqdm import tqdm
        todo = tqdm(todo, desc='candidates', unit='frame')
    for ref, missing in todo:
        probs, gt = source.load(ref)
        _process(metafusion, probs, gt, ref, missing, folder)
    (folder / 'frames.json').write_text(json.dumps(
        [[r.key, r.group] for r in refs], indent=0) + '\n')
    return folder


def _missing(folder: Path, ref: FrameRef, alphas: list[float]) -> list[float]:
    """Return the α values whose cache file for ``ref`` is missing (all if the base is)."""
    if not (folder / f'{ref.key}.base.npz').is_file():
        return alphas
    return [a for a in alphas if not (folder / f'{ref.key}.{_alpha_tag(a)}.npz').is_file()]


def _check_refs(refs: list[FrameRef]) -> None:
    """Raise ``ValueError`` for an empty source or duplicate frame keys."""
    if not refs:
        raise ValueError('no labelled frames to collect candidates from')
    keys = [r.key for r in refs]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f'frame key {duplicate!r} occurs twice; keys must be unique')


def load_frames(folder: Path, alpha: float) -> Iterator[CachedFrame]:
    """Yield the cached frames of one α from a folder filled by :func:`collect`."""
    for ref in _frame_refs(folder):
        base = _cached(folder / f'{ref.key}.base.npz')
        data = _cached(folder / f'{ref.key}.{_alpha_tag(alpha)}.npz')
        candidates = Candidates(data['pixels'], data['pixel_ids'], data['pred_ml'].shape,
                                data['boxes'], data['sizes'], int(data['dropped']),
                                data['agreeing'])
        yield CachedFrame(ref, base['pred_bayes'], data['pred_ml'], base['gt'],
                          candidates, data['features'], data['labels'], data['support'])


def _frame_refs(folder: Path) -> list[FrameRef]:
    """Return the frames of a cache folder (``frames.json``, read bounded)."""
    return [FrameRef(k, g) for k, g in read_json(folder / 'frames.json', 'cache index')]


def _cached(path: Path) -> dict[str, np.ndarray]:
    """Return the arrays of one cache file, their declared sizes bounded first."""
    return load_npz(path, f'cache file {path}')


def candidate_set(folder: Path, alpha: float, feature_names: tuple[str, ...]) -> CandidateSet:
    """Concatenate the cached candidates of one α over all frames (without the masks)."""
    refs = _frame_refs(folder)
    features, labels, frame, groups = [], [], [], []
    for index, ref in enumerate(refs):
        data = _cached(folder / f'{ref.key}.{_alpha_tag(alpha)}.npz')
        features.append(data['features'])
        labels.append(data['labels'])
        frame.append(np.full(labels[-1].size, index))
        groups.append(np.full(labels[-1].size, ref.group, dtype=object))
    return CandidateSet(np.concatenate(features).reshape(-1, len(feature_names)),
                        np.concatenate(labels).astype(bool), np.concatenate(frame),
                        np.concatenate(groups).astype(str), feature_names, len(refs))
