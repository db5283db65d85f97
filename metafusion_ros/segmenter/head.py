"""Append the per-pixel part of MetaFusion to a segmentation ONNX graph.

The head reads the network's output (logits or softmax, NCHW or NHWC, as the spec declares) and
computes, inside the graph, what :mod:`metafusion_ros.core.rules` and
:mod:`metafusion_ros.core.heatmaps` compute in numpy:

- softmax ``p`` (for logits); merged classes (rider) zeroed and ``p`` renormalised (spec §1);
- ``pred_bayes = argmax_y p`` (eq. 1);
- ML probabilities ``q = r / Σ_y r`` with ``r = p / (p_α + 1e-5)``, merged classes zeroed after
  the division, ``p_α = (1 - α) + α p_z(y)`` (eq. 15, 16; the reference's 1e-5, spec §1);
- ``pred_ml = argmax_y q`` (eq. 3, 16);
- heatmaps of ``q``: ``entropy`` ``E = -Σ q log(q + eps) / log C`` (eq. 6, eps = float32
  machine epsilon), ``margin`` ``M = 1 - q_(1) + q_(2)`` (eq. 7), ``variation``
  ``V = 1 - q_(1)`` (eq. 8); optionally ``probs_ml`` (1, h, w, C).

The priors are a constant initializer (``priors='constant'``, α baked in), a constant with α a
graph input ``alpha`` of shape (1,) (``'alpha-input'``), or ``p_α`` itself a graph input
``prior_alpha`` (1, C, h, w) (``'input'``). Category priors are stored per category and gathered
to the classes in the graph, which keeps the file small. Only label maps and heatmaps (and, when
asked, the ML probabilities) leave the engine. For speed, sums over classes are 1x1 convolutions
with unit weights (a GEMM instead of a strided reduction) and ``pred_ml`` is the index output of
the TopK that also yields ``q_(1)``, ``q_(2)`` (ONNX TopK puts the lower index first on ties, as
numpy's argmax does).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

from metafusion_ros.core.heatmaps import EPS
from metafusion_ros.core.priors import check_alpha, interpolate, Priors, REFERENCE_EPS
from metafusion_ros.segmenter.base import check_priors, GraphIO, inspect_onnx, output_dims
from metafusion_ros.segmenter.spec import HEAD_OUTPUTS, HeadSpec, ModelSpec

__all__ = ['add_head', 'add_head_file', 'MIN_OPSET']

MIN_OPSET = 17
_P = 'mf_head/'


class _Graph:
    """A tiny builder that appends nodes and constants with unique prefixed names."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer; return its name."""
        full = _P + name
        self.graph.initializer.append(numpy_helper.from_array(value, full))
        return full

    def scalar(self, name: str, value: float) -> str:
        """Add a float32 scalar initializer."""
        return self.const(name, np.array(value, dtype=np.float32))

    def op(self, op_type: str, inputs: list[str], name: str | None = None, outputs: int = 1,
           **attrs) -> str | list[str]:
        """Append a node; return its output name (or names when ``outputs`` > 1)."""
        self.count += 1
        base = name or f'{_P}{op_type.lower()}_{self.count}'
        names = [base] if outputs == 1 else [f'{base}_{i}' for i in range(outputs)]
        self.graph.node.append(helper.make_node(op_type, inputs, names, name=base, **attrs))
        return names[0] if outputs == 1 else names


def _upgrade_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """Return ``model`` with a default-domain opset of at least :data:`MIN_OPSET`."""
    version = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 0)
    if version >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises plain RuntimeError/ValidationError
        raise ValueError(f'{source}: opset {version} cannot be converted to {MIN_OPSET} '
                         f'({exc})') from exc


def _class_sum(g: _Graph, x: str, ones: str) -> str:
    """Return ``Σ_y x`` (1, 1, h, w) as a 1x1 convolution with unit weights (GEMM, fast)."""
    return g.op('Conv', [x, ones])


def _renormalise(g: _Graph, x: str, ones: str, floor: str) -> str:
    """Return ``x / max(Σ_y x, floor)`` over the class axis."""
    return g.op('Div', [x, g.op('Max', [_class_sum(g, x, ones), floor])])


def _argmax(g: _Graph, x: str, out: str, dtype: int) -> str:
    """Return the class argmax (first maximum, as numpy) cast to ``dtype``, named ``out``."""
    return g.op('Cast', [g.op('ArgMax', [x], axis=1, keepdims=0)], name=out, to=dtype)


def _prior_alpha(g: _Graph, priors: Priors | None, alpha: float, mode: str,
                 size: tuple[int, int], num_classes: int) -> str:
    """Return the graph value holding ``p_α`` (1, C, h, w), per ``mode``."""
    if mode == 'input':
        g.graph.input.append(helper.make_tensor_value_info(
            'prior_alpha', TensorProto.FLOAT, [1, num_classes, size[0], size[1]]))
        return 'prior_alpha'
    resized = priors.resized(size)
    channels = resized.probs  # (h, w, K): classes or categories
    gather = (np.asarray(resized.table.category_of_class, np.int64)
              if resized.level == 'category' else None)
    if mode == 'constant':
        value = g.const('prior_alpha_k', interpolate(channels, alpha).transpose(2, 0, 1)[None])
    else:
        g.graph.input.append(helper.make_tensor_value_info('alpha', TensorProto.FLOAT, [1]))
        stored = g.const('priors_k', np.ascontiguousarray(channels.transpose(2, 0, 1)[None]))
        one_minus = g.op('Sub', [g.scalar('one_a', 1.0), 'alpha'])
        value = g.op('Add', [one_minus, g.op('Mul', ['alpha', stored])])
    if gather is None:
        return value
    return g.op('Gather', [value, g.const('category_of_class', gather)], axis=1)


def _head_nodes(g: _Graph, x: str, spec: ModelSpec, num_classes: int, prior_alpha: str,
                head: HeadSpec) -> None:
    """Append softmax, merge, Bayes, prior division, ML and heatmap nodes (module docstring)."""
    label_type = TensorProto.UINT8 if head.label_dtype == 'uint8' else TensorProto.INT32
    axes = g.const('class_axis', np.array([1], np.int64))
    ones = g.const('class_ones', np.ones((1, num_classes, 1, 1), np.float32))
    floor = g.scalar('floor', 1e-30)
    if spec.output.layout == 'NHWC':
        x = g.op('Transpose', [x], perm=[0, 3, 1, 2])
    p = g.op('Softmax', [x], axis=1) if spec.output.kind == 'logits' else x
    merged = spec.table.merged_away if spec.table is not None else ()
    mask = None
    if merged:
        keep = np.ones((1, num_classes, 1, 1), np.float32)
        keep[0, list(merged)] = 0
        mask = g.const('merge_mask', keep)
        _argmax(g, _renormalise(g, g.op('Mul', [p, mask]), ones, floor), 'pred_bayes',
                label_type)
    else:
        _argmax(g, p, 'pred_bayes', label_type)
    ratio = g.op('Div', [p, g.op('Add', [prior_alpha, g.scalar('ref_eps', REFERENCE_EPS)])])
    if mask is not None:
        ratio = g.op('Mul', [ratio, mask])
    q = _renormalise(g, ratio, ones, floor)
    plogp = g.op('Mul', [q, g.op('Log', [g.op('Add', [q, g.scalar('eps', EPS)])])])
    g.op('Div', [g.op('Neg', [g.op('Squeeze', [_class_sum(g, plogp, ones), axes])]),
                 g.scalar('log_c', np.log(num_classes))], name='entropy')
    # TopK: q_(1), q_(2) and, ties to the lower index as numpy's argmax, pred_ml (eq. 3, 16)
    top, index = g.op('TopK', [q, g.const('k2', np.array([2], np.int64))], outputs=2, axis=1)
    first, second = g.op('Split', [top, g.const('split', np.array([1, 1], np.int64))],
                         outputs=2, axis=1)
    first, second = (g.op('Squeeze', [t, axes]) for t in (first, second))
    index = g.op('Slice', [index, g.const('zero', np.array([0], np.int64)),
                           g.const('one_i', np.array([1], np.int64)), axes])
    g.op('Cast', [g.op('Squeeze', [index, axes])], name='pred_ml', to=label_type)
    one = g.scalar('one', 1.0)
    variation = g.op('Sub', [one, first], name='variation')
    g.op('Add', [variation, second], name='margin')
    if head.probs_ml:
        g.op('Transpose', [q], name='probs_ml', perm=[0, 2, 3, 1])


def add_head(model: onnx.ModelProto, io: GraphIO, spec: ModelSpec, priors: Priors | None,
             alpha: float = 1.0, mode: str = 'constant', probs_ml: bool = False,
             label_dtype: str = 'uint8', source: str = 'model') -> tuple[onnx.ModelProto,
                                                                         ModelSpec]:
    """Return the model with the MetaFusion head appended and its new spec."""
    if spec.head is not None:
        raise ValueError(f'{source} already carries the MetaFusion head')
    alpha = check_alpha(alpha)
    name, dims = output_dims(spec, io, source)
    num_classes = dims[spec.output.class_axis]
    size = (dims[2], dims[3]) if spec.output.layout == 'NCHW' else (dims[1], dims[2])
    if num_classes is None or None in size:
        raise ValueError(f'{source}: output {name!r} has symbolic dims {list(dims)}; the head '
                         f'needs a fixed class count and resolution (export with fixed shapes)')
    if mode != 'input' and priors is None:
        raise ValueError(f"head with priors {mode!r} needs a priors file")
    if priors is not None:
        check_priors(priors, replace(spec, num_classes=num_classes), source)
    head = HeadSpec(priors=mode, alpha=alpha, resolution=size, probs_ml=probs_ml,
                    label_dtype=label_dtype,
                    priors_digest='' if priors is None else priors.resized(size).digest)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    model = _upgrade_opset(copy, source)
    graph = model.graph
    g = _Graph(graph)
    pa = _prior_alpha(g, priors, alpha, mode, size, num_classes)
    _head_nodes(g, name, spec, num_classes, pa, head)
    label_type = TensorProto.UINT8 if label_dtype == 'uint8' else TensorProto.INT32
    del graph.output[:]
    for out in head.outputs:
        if out == 'probs_ml':
            graph.output.append(helper.make_tensor_value_info(
                out, TensorProto.FLOAT, [1, size[0], size[1], num_classes]))
        else:
            kind = label_type if out in HEAD_OUTPUTS[:2] else TensorProto.FLOAT
            graph.output.append(helper.make_tensor_value_info(out, kind, [1, *size]))
    onnx.checker.check_model(model)
    new_spec = replace(spec, head=head, num_classes=num_classes)
    return model, new_spec


def add_head_file(src: str | Path, dst: str | Path, spec: ModelSpec,
                  priors: Priors | None, **options) -> ModelSpec:
    """Read ``src``, append the head, write ``dst`` and its spec ``dst.json``; return the spec."""
    model, io = inspect_onnx(src)
    model, new_spec = add_head(model, io, spec, priors, source=f'ONNX model {src}', **options)
    dst = Path(dst)
    onnx.save(model, str(dst))
    new_spec.save(dst.with_suffix('.json'))
    return new_spec
