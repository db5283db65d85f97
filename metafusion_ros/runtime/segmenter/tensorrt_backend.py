"""TensorRT backend (optional ``tensorrt`` + ``pycuda``): cached engines, one CUDA stream.

The engine is built from the ONNX file (fp32 or fp16, a workspace limit, one optimisation
profile fixed to the declared input shape), with build progress logged through
``tensorrt.IProgressMonitor`` where the installed TensorRT has it. The serialized engine is
cached as ``<cache_dir>/<model stem>-<key digest>.engine`` under an :class:`EngineKey` made of
the TensorRT version, the GPU name and compute capability, the precision, the input shape and the
ONNX file's SHA-256. Each engine file starts with a header holding that key, so an engine built
for another GPU, TensorRT version or model is recognised before TensorRT sees it: in the cache it
is rebuilt (logged); passed explicitly as ``engine_path`` it is a clear :class:`EngineError` at
load time. Inference uses the tensor-based API of TensorRT 10 (``get_tensor_name``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``), page-locked host buffers
and one CUDA stream.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
import hashlib
import json
import logging
import os
from pathlib import Path
import struct
from types import ModuleType
from typing import Any, Callable

import numpy as np

from metafusion_ros.core.priors import Priors
from metafusion_ros.runtime.segmenter.base import ENGINE_MAGIC, file_sha256, Segmenter
from metafusion_ros.runtime.segmenter.spec import ModelSpec

try:  # optional extra: only machines with an NVIDIA GPU have them
    import tensorrt as _trt
except ImportError:  # pragma: no cover - depends on the machine
    _trt = None
try:
    import pycuda.driver as _cuda
except ImportError:  # pragma: no cover - depends on the machine
    _cuda = None

__all__ = ['EngineKey', 'EngineError', 'Binding', 'TensorRTSegmenter', 'write_engine',
           'read_engine', 'load_or_build_engine', 'check_bindings', 'default_cache_dir']

LOG = logging.getLogger(__name__)
PRECISIONS = ('fp32', 'fp16')


class EngineError(ValueError):
    """A TensorRT engine file that is corrupt or was built for something else."""


@dataclass(frozen=True)
class EngineKey:
    """What a serialized engine is only valid for."""

    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    input_shape: tuple[int, ...]
    onnx_sha256: str

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {self.precision!r}')
        object.__setattr__(self, 'input_shape', tuple(int(d) for d in self.input_shape))

    def digest(self) -> str:
        """Return a short hash of every field (part of the cache file name)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, other: 'EngineKey') -> list[str]:
        """Return ``field: engine X, here Y`` for every field that differs."""
        return [f'{f.name}: engine {getattr(other, f.name)!r}, here {getattr(self, f.name)!r}'
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'EngineKey':
        """Inverse of ``dataclasses.asdict``."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Binding:
    """One I/O tensor of an engine: name, direction, shape and numpy dtype."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: Any


def default_cache_dir() -> Path:
    """Return ``$METAFUSION_TRT_CACHE`` or ``~/.cache/metafusion_ros/tensorrt``."""
    env = os.environ.get('METAFUSION_TRT_CACHE')
    return Path(env) if env else Path.home() / '.cache' / 'metafusion_ros' / 'tensorrt'


def write_engine(path: str | Path, key: EngineKey, blob: bytes) -> None:
    """Write ``ENGINE_MAGIC | header length | key JSON | engine`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps(asdict(key), sort_keys=True).encode()
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(ENGINE_MAGIC + struct.pack('<I', len(header)) + header + bytes(blob))
    tmp.replace(path)


def read_engine(path: str | Path) -> tuple[EngineKey, bytes]:
    """Read an engine file; raise :class:`EngineError` naming it when it is corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'TensorRT engine {path} does not exist')
    data = path.read_bytes()
    n = len(ENGINE_MAGIC) + 4
    if len(data) < n or data[:len(ENGINE_MAGIC)] != ENGINE_MAGIC:
        raise EngineError(f'TensorRT engine {path}: corrupt or not written by metafusion_ros '
                          f'(no engine header); delete it to rebuild')
    (size,) = struct.unpack('<I', data[len(ENGINE_MAGIC):n])
    try:
        key = EngineKey.from_dict(json.loads(data[n:n + size]))
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f'TensorRT engine {path}: corrupt header ({exc})') from exc
    blob = data[n + size:]
    if not blob:
        raise EngineError(f'TensorRT engine {path}: truncated (no engine after the header)')
    return key, blob


def load_or_build_engine(key: EngineKey, build: Callable[[], bytes], cache_dir: Path,
                         stem: str, engine_path: str | Path | None = None,
                         rebuild: bool = False) -> bytes:
    """Return a serialized engine valid for ``key``: cached, given, or freshly built.

    An explicit ``engine_path`` must match ``key`` (else :class:`EngineError` listing the
    differences, e.g. another GPU); a cached engine that is stale or corrupt is rebuilt.
    """
    if engine_path is not None:
        found, blob = read_engine(engine_path)
        if found != key:
            raise EngineError(f'TensorRT engine {engine_path} is stale: '
                              + '; '.join(key.differences(found))
                              + '. Rebuild it (omit engine_path to use the cache)')
        return blob
    path = Path(cache_dir) / f'{stem}-{key.digest()}.engine'
    if path.is_file() and not rebuild:
        try:
            found, blob = read_engine(path)
            if found == key:
                LOG.info('TensorRT engine from cache %s', path)
                return blob
            LOG.warning('TensorRT engine %s is stale (%s): rebuilding', path,
                        '; '.join(key.differences(found)))
        except EngineError as exc:
            LOG.warning('%s: rebuilding', exc)
    blob = build()
    try:
        write_engine(path, key, blob)
    except OSError as exc:  # e.g. a read-only cache: the engine still runs, it is only rebuilt
        LOG.warning('TensorRT engine not cached as %s (%s); it is rebuilt at the next start',
                    path, exc)
        return blob
    LOG.info('TensorRT engine cached as %s', path)
    return blob


def check_bindings(bindings: list[Binding], spec: ModelSpec, source: str) -> None:
    """Check the engine's I/O tensors against the spec; raise ``ValueError`` on a mismatch."""
    by_name = {b.name: b for b in bindings}
    inputs = [b for b in bindings if b.is_input]
    for b in bindings:
        if any(d < 0 for d in b.shape):
            raise ValueError(f'{source}: tensor {b.name!r} has unresolved dims {list(b.shape)}')
    image = spec.preprocess.input_shape
    if not inputs or tuple(inputs[0].shape) != image:
        raise ValueError(f'{source}: engine input {inputs[0].name if inputs else None!r} has '
                         f'shape {list(inputs[0].shape) if inputs else None}, the preprocess '
                         f'config declares {list(image)}')
    name = spec.output.name or next(b.name for b in bindings if not b.is_input)
    out = by_name.get(name)
    if out is None or out.is_input or len(out.shape) != 4:
        raise ValueError(f'{source}: engine output {name!r} missing or not of rank 4 '
                         f'({None if out is None else list(out.shape)})')
    classes = out.shape[spec.output.class_axis]
    if spec.num_classes is not None and classes != spec.num_classes:
        raise ValueError(f'{source}: engine output has {classes} classes, the class table '
                         f'{spec.num_classes}')


def _progress_monitor(trt: ModuleType) -> Any:
    """Return an ``IProgressMonitor`` logging build phases, or None where TensorRT lacks it."""
    base = getattr(trt, 'IProgressMonitor', None)
    if base is None:
        return None

    class _LogProgress(base):
        """Log every phase start/finish and every tenth step of the engine build."""

        def __init__(self) -> None:
            base.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            """Log a phase start."""
            self.steps[phase_name] = num_steps
            LOG.info('TensorRT build: %s%s (%d steps)',
                     f'{parent_phase} / ' if parent_phase else '', phase_name, num_steps)

        def step_complete(self, phase_name, step):
            """Log progress; return True to continue the build."""
            total = self.steps.get(phase_name, 0)
            if total >= 10 and (step + 1) % max(total // 10, 1) == 0:
                LOG.info('TensorRT build: %s %d/%d', phase_name, step + 1, total)
            return True

        def phase_finish(self, phase_name):
            """Log a phase end."""
            LOG.info('TensorRT build: %s done', phase_name)
    return _LogProgress()


def build_engine(trt: ModuleType, onnx_path: Path, input_name: str,
                 input_shape: tuple[int, ...], precision: str, workspace_mb: int) -> bytes:
    """Build and serialize an engine from ``onnx_path`` (raises ``ValueError`` on failure)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH'):  # TensorRT < 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f'ONNX model {onnx_path}: TensorRT cannot parse it ({errors})')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, input_shape, input_shape, input_shape)
    config.add_optimization_profile(profile)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    LOG.info('building TensorRT %s engine for %s (input %s, workspace %d MiB)', precision,
             onnx_path, list(input_shape), workspace_mb)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f'ONNX model {onnx_path}: TensorRT engine build failed (see log)')
    return bytes(serialized)


class TensorRTSegmenter(Segmenter):
    """Run a segmentation ONNX model as a TensorRT engine (built once, cached)."""

    backend = 'tensorrt'

    def __init__(self, model_path: str | Path, spec: ModelSpec, priors: Priors | None = None,
                 precision: str = 'fp16', workspace_mb: int = 1024,
                 cache_dir: str | Path | None = None, engine_path: str | Path | None = None,
                 rebuild: bool = False, device: int = 0, trt_module: ModuleType | None = None,
                 cuda_module: ModuleType | None = None) -> None:
        super().__init__(model_path, spec, priors)
        trt = trt_module or _trt
        cuda = cuda_module or _cuda
        if trt is None or cuda is None:
            raise ValueError('the TensorRT backend needs the optional packages tensorrt and '
                             'pycuda (NVIDIA GPU machines); use backend onnxruntime here')
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
        self._trt, self._cuda = trt, cuda
        cuda.init()
        dev = cuda.Device(device)
        self._ctx = dev.retain_primary_context()
        self._ctx.push()
        try:
            self.key = EngineKey(trt.__version__, dev.name(),
                                 '%d.%d' % tuple(dev.compute_capability()), precision,
                                 self.preprocess.input_shape, file_sha256(self.model_path))
            blob = load_or_build_engine(
                self.key, lambda: build_engine(trt, self.model_path, self.input_name,
                                               self.preprocess.input_shape, precision,
                                               workspace_mb),
                Path(cache_dir) if cache_dir else default_cache_dir(), self.model_path.stem,
                engine_path, rebuild)
            self._setup(blob, engine_path or 'cached engine')
        finally:
            self._ctx.pop()
        self.warm_up()

    def _setup(self, blob: bytes, source: str | Path) -> None:
        """Deserialize the engine, check its bindings, allocate pinned and device buffers."""
        trt, cuda = self._trt, self._cuda
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise EngineError(f'TensorRT engine {source}: TensorRT cannot deserialize it '
                              f'(corrupt, or built by another TensorRT version)')
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        for name in names:
            if name == self.input_name:
                self.context.set_input_shape(name, self.preprocess.input_shape)
        bindings = [Binding(n, is_input[n], tuple(self.context.get_tensor_shape(n)),
                            trt.nptype(self.engine.get_tensor_dtype(n))) for n in names]
        check_bindings(bindings, self.spec,
                       f'TensorRT engine for {self.model_path}')
        self.bindings = bindings
        self._host, self._device = {}, {}
        for b in bindings:
            self._host[b.name] = cuda.pagelocked_empty(b.shape, b.dtype)
            self._device[b.name] = cuda.mem_alloc(self._host[b.name].nbytes)
            self.context.set_tensor_address(b.name, int(self._device[b.name]))
        self._stream = cuda.Stream()

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Copy inputs in, enqueue the engine on the stream, copy outputs out, synchronise."""
        cuda = self._cuda
        self._ctx.push()
        try:
            for b in self.bindings:
                if b.is_input:
                    np.copyto(self._host[b.name], x, casting='same_kind')
                    cuda.memcpy_htod_async(self._device[b.name], self._host[b.name],
                                           self._stream)
            if not self.context.execute_async_v3(self._stream.handle):
                raise RuntimeError(f'TensorRT execution failed for {self.model_path}')
            for b in self.bindings:
                if not b.is_input:
                    cuda.memcpy_dtoh_async(self._host[b.name], self._device[b.name],
                                           self._stream)
            self._stream.synchronize()
            return {b.name: self._host[b.name].copy() for b in self.bindings if not b.is_input}
        finally:
            self._ctx.pop()
