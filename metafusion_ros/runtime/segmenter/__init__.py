"""Segmentation networks: ONNX Runtime and TensorRT backends, the softmax out.

:func:`load_segmenter` is the one entry point: it reads the model's spec (the JSON/YAML file
beside it, or the one given), checks the model, the spec and the priors against each other and
returns a ready :class:`~metafusion_ros.runtime.segmenter.base.Segmenter` (warm-up run done).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from metafusion_ros.core.priors import Priors
from metafusion_ros.runtime.segmenter.base import check_not_engine, Segmenter, SegmenterOutput
from metafusion_ros.runtime.segmenter.precision import check_int8_source, network_file
from metafusion_ros.runtime.segmenter.spec import ModelSpec, sidecar_path

__all__ = ['load_segmenter', 'resolve_spec', 'Segmenter', 'SegmenterOutput', 'ModelSpec',
           'BACKENDS']

BACKENDS = ('onnxruntime', 'onnxruntime-cpu', 'onnxruntime-cuda', 'tensorrt')


def resolve_spec(model_path: str | Path, spec: ModelSpec | dict | str | Path | None) -> ModelSpec:
    """Return ``spec`` as a :class:`ModelSpec`; by default the file beside the model."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        return ModelSpec.from_dict(spec, f'spec for {model_path}')
    if spec is not None:
        return ModelSpec.load(spec)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f'ONNX model {model_path} does not exist')
    found = sidecar_path(model_path)
    if found is None:
        raise ValueError(f'ONNX model {model_path}: no spec file beside it '
                         f'({model_path.with_suffix(".json").name} or .yaml); pass one '
                         f'(preprocess, output, table)')
    return ModelSpec.load(found)


def load_segmenter(model_path: str | Path, backend: str = 'onnxruntime',
                   spec: ModelSpec | dict | str | Path | None = None,
                   priors: Priors | str | Path | None = None, precision: str | None = None,
                   **backend_options: Any) -> Segmenter:
    """Load and check a segmentation model; every mismatch is a ``ValueError`` here.

    ``backend`` is ``onnxruntime`` (CUDA where present, else CPU), ``onnxruntime-cpu`` (the CPU
    even where CUDA is present), ``onnxruntime-cuda`` (ONNX Runtime's CUDA provider or a
    ``ValueError``) or ``tensorrt``; ``priors`` (a :class:`Priors` or a ``.npz`` path) are
    checked against the model's classes. ``precision`` (default: the backend's, fp32 for ONNX
    Runtime): ``int8`` runs the INT8 sibling of the fp32 ``model_path`` on ONNX Runtime
    (:func:`~metafusion_ros.runtime.segmenter.precision.network_file`), checked to be quantized
    from it; TensorRT takes ``fp32`` or ``fp16`` and builds its engine from ``model_path``.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown segmenter backend {backend!r}; known: {", ".join(BACKENDS)}')
    check_not_engine(model_path)
    network = network_file(model_path, precision or 'fp32', backend)
    if network != Path(model_path):  # the INT8 sibling, with its own spec
        spec = resolve_spec(network, None)
        check_int8_source(network, spec.extra, model_path)
        model_path = network
    elif precision is not None and backend == 'tensorrt':
        backend_options['precision'] = precision
    spec = resolve_spec(model_path, spec)
    if priors is not None and not isinstance(priors, Priors):
        priors = Priors.load(priors)
    if backend.startswith('onnxruntime'):
        from metafusion_ros.runtime.segmenter.onnx_backend import OnnxSegmenter
        if backend == 'onnxruntime-cpu':
            backend_options['providers'] = ['CPUExecutionProvider']
        return OnnxSegmenter(model_path, spec, priors, require_cuda=backend == 'onnxruntime-cuda',
                             **backend_options)
    from metafusion_ros.runtime.segmenter.tensorrt_backend import TensorRTSegmenter
    return TensorRTSegmenter(model_path, spec, priors, **backend_options)
