"""A tiny, deterministic network and priors for the node's tests, benchmark and smoke runs.

The network is one 1x1 convolution and a softmax (ONNX, NCHW, built with ``onnx.helper``) over a
three-class table (road, person, car): grey is road, red is person, blue is car, and *dim red*
(:data:`DIM_RED`) is road under Bayes (eq. 1) but person under ML (eq. 3) with the flat priors
of :func:`write_priors` (person 0.05 everywhere). So each dim red block of a frame from
:func:`scene` is one candidate segment at α = 1 and none at α <= 0.5.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.priors import Priors

__all__ = ['tiny_table', 'write_model', 'write_retrained_model', 'write_faulty_model',
           'with_fault', 'write_priors', 'scene', 'FAULTS', 'GREY', 'RED', 'DIM_RED', 'BLUE',
           'SIZE']

SIZE = (48, 64)
GREY, RED, DIM_RED, BLUE = (128, 128, 128), (255, 0, 0), (178, 102, 102), (0, 0, 255)
# 1x1 convolution on [0, 1] RGB: logits road = 3, person = 8R - 8G - 1.6, car = 8B - 8R - 1.6.
_WEIGHTS = np.array([[0, 0, 0], [8, -8, 0], [-8, 0, 8]], dtype=np.float32)
_BIAS = np.array([3.0, -1.6, -1.6], dtype=np.float32)
# Faults of :func:`write_faulty_model`; fault k is triggered by a pure red pixel (0, k).
FAULTS = ('nan', 'inf', 'negative', 'unnormalised', 'two_classes')


def tiny_table() -> ClassTable:
    """Return the three-class table of the tiny network (target: person, ignore 255)."""
    return ClassTable(name='tiny', class_names=('road', 'person', 'car'), ignore_label=255,
                      target=1, palette=((128, 64, 128), (220, 20, 60), (0, 0, 142)))


def _roles(table: ClassTable) -> list[int]:
    """Return the class indices playing road, person (the target) and car in ``table``."""
    return [table.index('road'), table.target, table.index('car')]


def write_model(path: str | Path, size: tuple[int, int] = SIZE,
                table: ClassTable | None = None) -> Path:
    """Write the tiny ONNX network and its ``.json`` description; return the model path.

    With another ``table`` (which must name road and car) the three roles map onto its classes
    and every other class gets a logit of -20.
    """
    import onnx
    from onnx import helper, TensorProto

    path = Path(path)
    table = tiny_table() if table is None else table
    height, width = size
    classes = table.num_classes
    weights = np.zeros((classes, 3), dtype=np.float32)
    bias = np.full(classes, -20.0, dtype=np.float32)
    weights[_roles(table)], bias[_roles(table)] = _WEIGHTS, _BIAS
    graph = helper.make_graph(
        [helper.make_node('Conv', ['image', 'w', 'b'], ['logits']),
         helper.make_node('Softmax', ['logits'], ['probs'], axis=1)],
        'tiny_segmenter',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info('probs', TensorProto.FLOAT,
                                       [1, classes, height, width])],
        [helper.make_tensor('w', TensorProto.FLOAT, [classes, 3, 1, 1], weights.ravel()),
         helper.make_tensor('b', TensorProto.FLOAT, [classes], bias)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    meta = {'format': 'metafusion-segmenter/1', 'table': table.to_dict(),
            'output': {'name': 'probs', 'kind': 'softmax', 'layout': 'NCHW'},
            'preprocess': {'width': width, 'height': height, 'mean': [0.0, 0.0, 0.0],
                           'std': [1.0, 1.0, 1.0], 'scale': 1 / 255, 'channel_order': 'RGB',
                           'layout': 'NCHW'}}
    path.with_suffix('.json').write_text(json.dumps(meta, indent=1))
    return path


def write_retrained_model(path: str | Path) -> Path:
    """Write the tiny network with one weight changed (another file of the same graph)."""
    import onnx

    path = write_model(path)
    model = onnx.load(str(path))
    weights = next(init for init in model.graph.initializer if init.name == 'w')
    weights.float_data[0] = 0.5
    onnx.save(model, str(path))
    return path


def write_faulty_model(path: str | Path, size: tuple[int, int] = SIZE) -> Path:
    """Write the tiny network with a fault per pure red pixel in row 0 (see :data:`FAULTS`).

    Without a trigger it computes exactly :func:`write_model`'s softmax; a pure red pixel at
    ``(0, k)`` (:func:`with_fault`) makes the whole output NaN, +Inf, negative (negated),
    unnormalised (square root) or drops the last class (the class axis is symbolic, so the
    model loads and warms up normally).
    """
    import onnx
    from onnx import helper, TensorProto

    path = write_model(path, size)
    model = onnx.load(str(path))
    graph = model.graph
    graph.node[-1].output[0] = 'out'
    for k, fault in enumerate(FAULTS):
        graph.node.extend(_fault_nodes(k, fault, 'out' if k == 0 else f'out{k - 1}'))
        graph.initializer.extend([
            helper.make_tensor(f'start{k}', TensorProto.INT64, [4], [0, 0, 0, k]),
            helper.make_tensor(f'end{k}', TensorProto.INT64, [4], [1, 3, 1, k + 1])])
    graph.node[-1].output[0] = 'probs'
    graph.initializer.extend([
        helper.make_tensor('pure_red', TensorProto.FLOAT, [1, 3, 1, 1], [1.0, -1.0, -1.0]),
        helper.make_tensor('threshold', TensorProto.FLOAT, [], [0.99]),
        helper.make_tensor('nan', TensorProto.FLOAT, [], [np.nan]),
        helper.make_tensor('inf', TensorProto.FLOAT, [], [np.inf]),
        helper.make_tensor('classes', TensorProto.INT64, [1], [tiny_table().num_classes]),
        helper.make_tensor('zero', TensorProto.INT64, [1], [0]),
        helper.make_tensor('one', TensorProto.INT64, [1], [1])])
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = 'classes'
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _fault_nodes(k: int, fault: str, current: str) -> list:
    """Return the ONNX nodes applying ``fault`` to ``current`` when pixel (0, k) is pure red."""
    from onnx import helper, TensorProto

    nodes = [helper.make_node('Slice', ['image', f'start{k}', f'end{k}'], [f'pixel{k}']),
             helper.make_node('Mul', [f'pixel{k}', 'pure_red'], [f'weighted{k}']),
             helper.make_node('ReduceSum', [f'weighted{k}'], [f'redness{k}'], keepdims=0),
             helper.make_node('Greater', [f'redness{k}', 'threshold'], [f'flag{k}'])]
    if fault == 'two_classes':
        return nodes + [
            helper.make_node('Cast', [f'flag{k}'], [f'drop{k}'], to=TensorProto.INT64),
            helper.make_node('Sub', ['classes', f'drop{k}'], [f'class_end{k}']),
            helper.make_node('Slice', [current, 'zero', f'class_end{k}', 'one'], [f'out{k}'])]
    bad = fault if fault in ('nan', 'inf') else f'bad{k}'
    if bad != fault:
        unary = {'negative': 'Neg', 'unnormalised': 'Sqrt'}[fault]
        nodes.append(helper.make_node(unary, [current], [bad]))
    return nodes + [helper.make_node('Where', [f'flag{k}', bad, current], [f'out{k}'])]


def with_fault(image: np.ndarray, fault: str) -> np.ndarray:
    """Return a copy of ``image`` with the pure red pixel that triggers ``fault``."""
    image = image.copy()
    image[0, FAULTS.index(fault)] = RED
    return image


def write_priors(path: str | Path, size: tuple[int, int] = SIZE,
                 table: ClassTable | None = None) -> Path:
    """Write flat priors (road 0.9, person 0.05, car 0.05, others 0) for ``table``."""
    table = tiny_table() if table is None else table
    probs = np.zeros(size + (table.num_classes,), dtype=np.float32)
    probs[:, :, _roles(table)] = (0.9, 0.05, 0.05)
    Priors(probs, table, 'class', num_images=1, dataset='tiny').save(path)
    return Path(path)


def scene(blocks: dict[tuple[int, int], tuple[int, int, int]] | None = None,
          size: tuple[int, int] = SIZE, block: int = 8) -> np.ndarray:
    """Return a grey RGB frame with ``block``-sized squares of colour at the given corners.

    The default puts a red (Bayes person), a blue (car) and two dim red (candidate) blocks.
    """
    if blocks is None:
        blocks = {(4, 4): RED, (4, 40): BLUE, (30, 8): DIM_RED, (30, 44): DIM_RED}
    image = np.empty(size + (3,), dtype=np.uint8)
    image[:] = GREY
    for (row, col), colour in blocks.items():
        image[row:row + block, col:col + block] = colour
    return image
