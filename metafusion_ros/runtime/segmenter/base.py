"""The :class:`Segmenter` interface: an RGB image in, per-pixel outputs out.

:meth:`Segmenter.infer_network` keeps the network's output resolution (the node's path);
:meth:`Segmenter.infer` resizes to the image's resolution (the offline tools' path).

A segmenter runs one ONNX model (ONNX Runtime or TensorRT backend) described by a
:class:`~metafusion_ros.runtime.segmenter.spec.ModelSpec` and yields the softmax ``probs``
(H, W, C) float32; the decision rules and heatmaps run on it in the core's kernels, for every
backend.
Everything that can be checked is checked when the model is loaded: the file, the graph's input
and output ranks and sizes, the class count against the class table and the priors, and one
warm-up run on a blank image. A bad model never fails at the first camera frame.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
import hashlib
import logging
from pathlib import Path

import numpy as np
import onnx
from scipy.special import softmax

from metafusion_ros.core.files import check_file_size, MAX_MODEL_BYTES
from metafusion_ros.core.priors import Priors
from metafusion_ros.runtime.segmenter.preprocess import resize_maps
from metafusion_ros.runtime.segmenter.spec import ModelSpec

__all__ = ['Segmenter', 'SegmenterOutput', 'GraphIO', 'graph_io', 'inspect_onnx', 'file_sha256',
           'check_priors', 'PriorsMismatch', 'output_dims', 'check_not_engine', 'ENGINE_MAGIC']

LOG = logging.getLogger(__name__)
# First bytes of the engine files the TensorRT backend writes (tensorrt_backend.write_engine).
ENGINE_MAGIC = b'MFTRTENG'


@dataclass(frozen=True, eq=False)
class SegmenterOutput:
    """One frame's softmax ``probs`` (H, W, C) float32 (network's or camera's resolution)."""

    probs: np.ndarray


@dataclass(frozen=True)
class GraphIO:
    """Names and static shapes (``None`` for symbolic dims) of a graph's inputs and outputs."""

    inputs: dict[str, tuple[int | None, ...]]
    outputs: dict[str, tuple[int | None, ...]]


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    """Return the static dims of a value info (``None`` where symbolic or unknown)."""
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField('dim_value') else None for d in shape.dim)


def check_not_engine(path: str | Path) -> None:
    """Raise ``ValueError`` when ``path`` is a cached TensorRT engine instead of an ONNX model."""
    path = Path(path)
    if path.is_file():
        with open(path, 'rb') as fh:
            if fh.read(len(ENGINE_MAGIC)) == ENGINE_MAGIC:
                raise ValueError(f'model {path} is a TensorRT engine file, not an ONNX model; '
                                 f'give the ONNX model (backend tensorrt builds and caches its '
                                 f'engine)')


def inspect_onnx(path: str | Path) -> tuple[onnx.ModelProto, GraphIO]:
    """Load, check and shape-infer an ONNX file; raise ``ValueError`` naming it when broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'ONNX model {path} does not exist')
    check_file_size(path, MAX_MODEL_BYTES, 'ONNX model')
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, InferenceError...
        raise ValueError(f'ONNX model {path}: not a valid ONNX file ({type(exc).__name__}: '
                         f'{str(exc).splitlines()[0] if str(exc) else "unreadable"})') from exc
    return model, graph_io(model)


def graph_io(model: onnx.ModelProto) -> GraphIO:
    """Return the graph's run-time inputs (initializers excluded) and outputs with dims."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = {v.name: _dims(v) for v in model.graph.input if v.name not in initializers}
    outputs = {v.name: _dims(v) for v in model.graph.output}
    return GraphIO(inputs, outputs)


def output_dims(spec: ModelSpec, io: GraphIO, source: str) -> tuple[str, tuple[int | None, ...]]:
    """Return the name and dims of the spec's output, checking rank and class count."""
    name = spec.output.name or next(iter(io.outputs))
    if name not in io.outputs:
        raise ValueError(f'{source}: no output named {name!r} (outputs: {", ".join(io.outputs)})')
    dims = io.outputs[name]
    if len(dims) != 4:
        raise ValueError(f'{source}: output {name!r} has rank {len(dims)}, expected 4 '
                         f'({spec.output.layout})')
    classes = dims[spec.output.class_axis]
    if spec.num_classes is not None and classes is not None and classes != spec.num_classes:
        raise ValueError(f'{source}: output {name!r} has {classes} classes on axis '
                         f'{spec.output.class_axis} ({spec.output.layout}), the class table '
                         f'{spec.num_classes}')
    return name, dims


class PriorsMismatch(ValueError):
    """The priors do not fit the model (class table, class count, or the graph's own priors)."""


def check_priors(priors: Priors, spec: ModelSpec, source: str) -> None:
    """Raise :class:`PriorsMismatch` when the priors' classes do not match the model's."""
    table = priors.table
    if spec.num_classes is not None and table.num_classes != spec.num_classes:
        raise PriorsMismatch(f'priors ({table.name!r}, {table.num_classes} classes) do not '
                             f'match {source} ({spec.num_classes} classes)')
    if spec.table is not None and table.class_names != spec.table.class_names:
        raise PriorsMismatch(f'priors classes {list(table.class_names)} do not match the '
                             f'classes of {source} {list(spec.table.class_names)}')


class Segmenter(ABC):
    """A segmentation network: ``infer(image RGB uint8 (H, W, 3)) -> SegmenterOutput``."""

    backend = 'abstract'

    def __init__(self, model_path: str | Path, spec: ModelSpec,
                 priors: Priors | None = None) -> None:
        self.model_path = Path(model_path)
        self.spec = spec
        self.preprocess = spec.preprocess
        _, self.io = inspect_onnx(self.model_path)
        self._check_graph()
        if priors is not None:
            check_priors(priors, spec, str(self.model_path))
        self.priors = priors

    # -- properties ---------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """Return the declared network input size ``(width, height)``."""
        return self.preprocess.width, self.preprocess.height

    @property
    def num_classes(self) -> int | None:
        """Return the number of classes ``C`` (None when neither spec nor graph tells)."""
        return self.spec.num_classes

    # -- checks -------------------------------------------------------------------------------
    def _check_graph(self) -> None:
        """Check the graph's input and outputs against the spec (static shapes)."""
        source = f'ONNX model {self.model_path}'
        if len(self.io.inputs) != 1:
            raise ValueError(f'{source}: expected 1 graph input, found '
                             f'{len(self.io.inputs)} ({", ".join(self.io.inputs)})')
        name, dims = next(iter(self.io.inputs.items()))
        shape = self.preprocess.input_shape
        if len(dims) != 4 or any(d is not None and d != s for d, s in zip(dims, shape)):
            raise ValueError(f'{source}: input {name!r} has shape {list(dims)}, the preprocess '
                             f'config declares {list(shape)} ({self.preprocess.layout})')
        self.input_name = name
        self.output_name, _ = output_dims(self.spec, self.io, source)

    def _check_raw(self, raw: dict[str, np.ndarray]) -> None:
        """Check the shapes of one run's outputs (at load time and on every frame)."""
        source = f'ONNX model {self.model_path}'
        out = raw[self.output_name]
        if out.ndim != 4 or out.shape[0] != 1:
            raise ValueError(f'{source}: output {self.output_name!r} has shape '
                             f'{out.shape}, expected (1, ...) of rank 4')
        classes = out.shape[self.spec.output.class_axis]
        if self.spec.num_classes is not None and classes != self.spec.num_classes:
            raise ValueError(f'{source}: output has {classes} classes, the class table '
                             f'{self.spec.num_classes}')

    def warm_up(self) -> None:
        """Run once on a blank image and check the outputs (done by the loader)."""
        raw = self._run(self.preprocess(np.zeros((self.preprocess.height,
                                                  self.preprocess.width, 3), np.uint8)))
        self._check_raw(raw)

    # -- inference ----------------------------------------------------------------------------
    @abstractmethod
    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the network on a preprocessed input; return every output by name."""

    def run_network(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the network alone on a preprocessed input (as :meth:`infer` does, for timing)."""
        return self._run(x)

    def infer_network(self, image_rgb: np.ndarray) -> SegmenterOutput:
        """Segment an RGB uint8 image; outputs stay at the network's output resolution.

        MetaFusion runs there (the node enlarges only its final label maps): the softmax is
        never enlarged.
        """
        return self.infer_input(self.preprocess(image_rgb))

    def infer_input(self, x: np.ndarray) -> SegmenterOutput:
        """Run the network on a preprocessed input; return its softmax ``(h, w, C)``."""
        raw = self._run(x)
        self._check_raw(raw)  # a model with dynamic shapes may change them at run time
        out = raw[self.output_name][0]
        if self.spec.output.layout == 'NCHW':
            out = out.transpose(1, 2, 0)
        if self.spec.output.kind == 'logits':
            out = softmax(out, axis=-1)
        return SegmenterOutput(probs=np.ascontiguousarray(out, np.float32))

    def infer(self, image_rgb: np.ndarray) -> SegmenterOutput:
        """Segment an RGB uint8 image; outputs are resized to the image's resolution.

        For the offline tools, which score against labels at the image's resolution.
        """
        out = self.infer_network(image_rgb)
        return SegmenterOutput(probs=resize_maps(out.probs, image_rgb.shape[:2]))
