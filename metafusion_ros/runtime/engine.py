"""The node's processing chain without ROS: segmenter -> MetaFusion -> meta classifier.

:class:`FusionEngine` loads the three files the node needs (network, priors, meta model), found
by :func:`~metafusion_ros.runtime.chains.resolve` from a chain name or an ONNX path (its
chain's priors and meta bundle fill the empty ones), checks that they belong together and then
turns an RGB frame into a
:class:`~metafusion_ros.core.pipeline.FrameResult`. The node, the demo and the benchmark share it;
every decision is the core's (:class:`~metafusion_ros.core.pipeline.MetaFusion`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
import threading
import time
from typing import Any

import numpy as np

from metafusion_ros.core.defaults import ALPHA, FUSION, TAU
from metafusion_ros.core.files import full_path, naming, one_line
from metafusion_ros.core.fusion import check_fusion
from metafusion_ros.core.pipeline import check_tau, FrameResult, MetaFusion
from metafusion_ros.core.priors import check_alpha, Priors
from metafusion_ros.runtime.chains import Chain, ChainError, resolve
from metafusion_ros.runtime.segmenter.preprocess import Nearest

__all__ = ['EngineConfig', 'FusionEngine', 'Processed', 'ConfigurationError',
           'ResolutionMismatch', 'BadNetworkOutput']


class ConfigurationError(ValueError):
    """A model, priors or meta model file is missing, unreadable or does not fit the others."""


class ResolutionMismatch(ValueError):
    """An image's resolution differs from the priors' and ``resize_mode`` is ``refuse``."""

    reason = 'resolution_mismatch'


class BadNetworkOutput(ValueError):
    """The network's output failed the core's checks (NaN, Inf, unnormalised, wrong classes)."""

    reason = 'bad_network_output'


@dataclass(frozen=True)
class EngineConfig:
    """Files and settings of a :class:`FusionEngine` (the node's parameters of the same names).

    ``model_path`` is a chain name, an ONNX file or ``''`` (the default chain); an empty
    ``priors_path`` / ``meta_model_path`` is the chain's, ``meta_model_path`` ``'none'`` no meta
    classifier (:func:`~metafusion_ros.runtime.chains.resolve`).
    """

    model_path: str
    priors_path: str
    meta_model_path: str = ''
    backend: str = 'onnxruntime'
    precision: str = 'fp32'
    alpha: float = ALPHA
    tau: float = TAU
    fusion: str = FUSION
    target_class: str = ''
    resize_mode: str = 'resize'


@dataclass(frozen=True, eq=False)
class Processed:
    """One processed frame: the core's result, the network output and stage timings (ms).

    ``result`` and ``output`` are at the network's output resolution; ``camera_size`` is the
    image's ``(H, W)``, and :attr:`to_camera` resamples label maps, boxes and areas to it.
    """

    result: FrameResult
    output: Any
    camera_size: tuple[int, int]
    stages_ms: dict[str, float] = field(default_factory=dict)  # preprocess, network, the core's

    @property
    def to_camera(self) -> Nearest:
        """Return the nearest-neighbour resampling from the network's to the camera's size."""
        return Nearest.between(self.result.fused.shape, self.camera_size)


def _existing(path: str, what: str) -> Path:
    """Return ``path`` if it names an existing file, else raise naming ``what``."""
    if not path:
        raise ConfigurationError(f'{what} path is empty')
    file = full_path(path)
    if file.is_dir():
        raise ConfigurationError(f'{what} file {file} is a folder, not a file')
    if not file.is_file():
        raise ConfigurationError(f'{what} file {file} does not exist')
    return file


def _load_priors(config: EngineConfig) -> Priors:
    """Load the priors file or raise a one-line ConfigurationError."""
    if not config.priors_path:
        raise ConfigurationError(f'priors path is empty and model {config.model_path} is in no '
                                 f'chain manifest: give its priors (priors_path)')
    file = _existing(config.priors_path, 'priors')
    try:
        with naming('priors file', file):
            return Priors.load(file)
    except Exception as exc:  # noqa: B902 - named by naming(): one line, whatever it was
        raise ConfigurationError(one_line(str(exc))) from exc


def _load_segmenter(config: EngineConfig, priors: Priors) -> Any:
    """Load and check the network (against the priors) or raise a one-line ConfigurationError."""
    from metafusion_ros.runtime.segmenter import load_segmenter
    from metafusion_ros.runtime.segmenter.base import PriorsMismatch

    file = _existing(config.model_path, 'model')
    # with TensorRT, fp32 (the parameter's default) leaves the backend its default engine (fp16)
    precision = None if config.precision == 'fp32' and config.backend == 'tensorrt' else \
        config.precision
    try:
        return load_segmenter(str(file), backend=config.backend, priors=priors,
                              precision=precision)
    except PriorsMismatch as exc:  # names the model; the priors object has no file name
        raise ConfigurationError(f'{exc} (priors file {config.priors_path})') from exc
    except Exception as exc:  # noqa: B902 - the loader boundary: any failure names the model
        message = one_line(str(exc))
        if not isinstance(exc, (OSError, ValueError, RuntimeError, ImportError)):
            message = f'{type(exc).__name__}: {message}'
        raise ConfigurationError(message if str(file) in message else
                                 f'model {file}: {message}') from exc


def _load_meta(config: EngineConfig, metafusion: MetaFusion) -> Any:
    """Load the meta bundle fitting ``metafusion`` (schema, table, α, priors, network) or None."""
    if not config.meta_model_path:
        return None
    from metafusion_ros.runtime.classifier import MetaBundle, ModelContext
    from metafusion_ros.runtime.segmenter.base import file_sha256

    file = _existing(config.meta_model_path, 'meta model')
    runtime = ModelContext(metafusion.feature_names, metafusion.table, metafusion.alpha,
                           metafusion.priors.digest, file_sha256(config.model_path))
    try:
        with naming('meta model bundle', file):
            return MetaBundle.load(file, runtime)
    except Exception as exc:  # noqa: B902 - named by naming(): one line, whatever it was
        raise ConfigurationError(one_line(str(exc))) from exc


class FusionEngine:
    """A loaded network, priors and meta bundle; turns RGB frames into FrameResults.

    ``meta`` is a :class:`~metafusion_ros.runtime.classifier.MetaBundle`; the member serving the
    current α (:attr:`meta_choice`) scores the candidates and follows α changes. ``chain`` is the
    chain the network belongs to (None: a network of no chain) and ``config`` the configuration
    with the files resolved.
    """

    def __init__(self, segmenter: Any, metafusion: MetaFusion, meta: Any = None,
                 resize: bool = True, chain: Chain | None = None,
                 config: EngineConfig | None = None) -> None:
        self.segmenter = segmenter
        self.metafusion = metafusion
        self.meta = meta
        self.chain = chain
        self.config = config
        self.meta_choice = None if meta is None else meta.select(metafusion.alpha)
        self.resize = resize
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, config: EngineConfig) -> 'FusionEngine':
        """Resolve, load and cross-check the files of ``config``; raise ConfigurationError.

        Every error is one line; a chain whose members do not match its manifest is refused.
        """
        if config.resize_mode not in ('resize', 'refuse'):
            raise ConfigurationError(f"resize_mode must be 'resize' or 'refuse', got "
                                     f'{config.resize_mode!r}')
        try:
            files = resolve(config.model_path, config.priors_path, config.meta_model_path)
        except ChainError as exc:
            raise ConfigurationError(str(exc)) from exc
        config = replace(config, model_path=files.model, priors_path=files.priors,
                         meta_model_path=files.meta)
        priors = _load_priors(config)
        table = priors.table
        try:
            if config.target_class:
                table = table.with_target(config.target_class)
            metafusion = MetaFusion(priors, table, config.alpha, config.tau, config.fusion)
        except ValueError as exc:
            raise ConfigurationError(f'priors {config.priors_path}: {exc}') from exc
        engine = cls(_load_segmenter(config, priors), metafusion, _load_meta(config, metafusion),
                     config.resize_mode == 'resize', files.chain, config)
        engine.warm_up()
        return engine

    def warm_up(self, size: tuple[int, int] | None = None) -> None:
        """Run the whole chain once on a blank ``size`` frame (default: the priors' size).

        Compiles the kernels and sizes the caches before the first real frame.
        """
        height, width = size or self.metafusion.priors.resolution
        try:
            self.process(np.zeros((height, width, 3), dtype=np.uint8))
        except BadNetworkOutput as exc:
            raise ConfigurationError(f'warm-up frame failed: {exc}') from exc

    @property
    def table(self):
        """Return the class table in use (the priors' table with the configured target)."""
        return self.metafusion.table

    def set_params(self, **values: float) -> None:
        """Queue new ``alpha`` / ``tau`` / ``fusion`` values; they apply from the next frame on.

        Raise ``ValueError`` for values outside [0, 1], an unknown fusion reading or an α no
        member of the meta bundle serves.
        """
        if 'fusion' in values:
            check_fusion(values['fusion'])
        if 'alpha' in values:
            check_alpha(values['alpha'])
            self.choice_for(values['alpha'])
        if 'tau' in values:
            check_tau(values['tau'])
        with self._lock:
            self._pending.update(values)

    def choice_for(self, alpha: float) -> Any:
        """Return the meta bundle's member choice for ``alpha`` (None without a bundle)."""
        return None if self.meta is None else self.meta.select(float(alpha))

    def _apply_pending(self) -> None:
        """Apply queued α / τ / fusion between frames, never in the middle of one."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for name, value in pending.items():
            setattr(self.metafusion, name, value)
            if name == 'alpha':
                self.meta_choice = self.choice_for(value)

    def score_fn(self):
        """Return the current α's meta classifier ``P(true positive)``, or None (keep all)."""
        if self.meta is None:
            return None
        return self.meta.members[self.meta_choice.alpha].predict_proba

    def process(self, rgb: np.ndarray) -> Processed:
        """Segment ``rgb`` and run MetaFusion (candidates, features, meta scores, fusion).

        MetaFusion runs at the network's output resolution; the priors are resized to it.
        """
        self._apply_pending()
        if not self.resize and rgb.shape[:2] != self.metafusion.priors.resolution:
            raise ResolutionMismatch(
                f'image {rgb.shape[1]}x{rgb.shape[0]} differs from the priors '
                f'{self.metafusion.priors.resolution[1]}x{self.metafusion.priors.resolution[0]} '
                f"and resize_mode is 'refuse'")
        start = time.perf_counter()
        try:
            x = self.segmenter.preprocess(rgb)
            preprocessed = time.perf_counter()
            output = self.segmenter.infer_input(x)
            middle = time.perf_counter()
            result = self.metafusion.process(output.probs, self.score_fn())
        except (ValueError, TypeError) as exc:
            raise BadNetworkOutput(f'network output rejected: {exc}') from exc
        return Processed(result, output, rgb.shape[:2],
                         {'preprocess': (preprocessed - start) * 1e3,
                          'network': (middle - preprocessed) * 1e3, **self.metafusion.stage_ms})

    def heatmaps(self, processed: Processed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return full-frame E, M, V of the ML probabilities (eq. 6-8) at the network's size.

        Computed on demand by the kernel that gives the candidates' heatmaps, one pixel at a
        time (no full-frame ML probabilities).
        """
        return self.metafusion.heatmaps_at(processed.output.probs)

    def confidence(self, processed: Processed) -> np.ndarray:
        """Return the fused label's probability per pixel at the network's size (on demand).

        :meth:`~metafusion_ros.core.pipeline.MetaFusion.confidence`: the Bayes label's softmax
        probability, or the ML probability of c where MetaFusion fused an ML segment.
        """
        return self.metafusion.confidence(processed.output.probs, processed.result)
