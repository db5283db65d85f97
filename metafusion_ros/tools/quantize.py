"""Static INT8 quantization of a segmentation network with ONNX Runtime's quantization tools.

The fp32 ONNX model is prepared (``quant_pre_process``: shape inference and ONNX Runtime's basic
graph optimisations, e.g. BatchNormalization folded into the convolution before it), calibrated
on camera frames fed through the model's own spec preprocessing (:class:`CalibrationReader`,
one frame at a time), and written as a QDQ (or QOperator) model with ``quantize_static``:
per-channel symmetric INT8 weights, activation ranges from ``minmax``, ``entropy`` or
``percentile`` calibration. Nodes named by :func:`float_nodes` stay in float. The INT8 spec
beside the model is the fp32 spec plus a ``quantization`` record: the fp32 source's file name
and SHA-256 (which :func:`~metafusion_ros.runtime.segmenter.precision.check_int8_source`
checks at load time), the calibration frames (dataset, split, drives, count, a digest of their
names), the settings and the ONNX Runtime version.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
import fnmatch
import hashlib
import io
from pathlib import Path
import shutil
import tempfile
from typing import Any, Iterable, TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from metafusion_ros.tools.data.datasets import DATASETS, open_dataset
from metafusion_ros.tools.data.frame import DatasetError, read_rgb_png

if TYPE_CHECKING:  # onnx, ONNX Runtime's tools, the segmenter: imported when quantizing
    import onnx
    from metafusion_ros.runtime.segmenter.preprocess import Preprocess
    from metafusion_ros.runtime.segmenter.spec import ModelSpec

__all__ = ['METHODS', 'FORMATS', 'TYPES', 'KEEP_FLOAT', 'QuantSettings', 'CalibrationFrames',
           'calibration_frames', 'CalibrationReader', 'float_nodes', 'quantize_network']

# ONNX Runtime's CalibrationMethod, QuantFormat and QuantType members by their names here.
METHODS = {'minmax': 'MinMax', 'entropy': 'Entropy', 'percentile': 'Percentile'}
FORMATS = {'qdq': 'QDQ', 'qoperator': 'QOperator'}
TYPES = {'uint8': 'QUInt8', 'int8': 'QInt8'}
# Groups of nodes :func:`float_nodes` keeps in float besides op types and node names.
KEEP_FLOAT = ('first', 'last', 'tail')
# Always in float: ONNX Runtime has no integer BatchNormalization (those left after
# quant_pre_process follow a Concat or Add), so quantizing one only rounds its scales to one
# per-tensor INT8 step and its output to 8 bits (measured on ESPNet: 37 % of the pixels changed
# their label instead of 17 %).
ALWAYS_FLOAT = ('BatchNormalization',)
_CONVS = ('Conv', 'ConvTranspose')


@dataclass(frozen=True)
class QuantSettings:
    """How to quantize: calibration method, format, types, per-channel weights, float nodes."""

    method: str = 'percentile'
    quant_format: str = 'qdq'
    activation_type: str = 'uint8'
    weight_type: str = 'int8'
    per_channel: bool = True
    reduce_range: bool = False
    keep_float: tuple[str, ...] = ('tail',)
    percentile: float = 99.9

    def __post_init__(self) -> None:
        for name, value, known in (('method', self.method, METHODS),
                                   ('format', self.quant_format, FORMATS),
                                   ('activation type', self.activation_type, TYPES),
                                   ('weight type', self.weight_type, TYPES)):
            if value not in known:
                raise ValueError(f'quantization {name} {value!r}: not one of '
                                 f'{", ".join(known)}')
        if not 0 < self.percentile <= 100:
            raise ValueError(f'percentile {self.percentile} is outside (0, 100]')
        object.__setattr__(self, 'keep_float', tuple(self.keep_float))


@dataclass(frozen=True)
class CalibrationFrames:
    """The calibration images and where they come from (recorded in the INT8 spec)."""

    paths: tuple[Path, ...]
    dataset: str
    split: str
    drives: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """Return the spec's ``calibration`` record: source, count and a digest of the names."""
        names = '\n'.join(path.name for path in self.paths)
        return {'dataset': self.dataset, 'split': self.split, 'drives': list(self.drives),
                'frames': len(self.paths),
                'names_sha256': hashlib.sha256(names.encode()).hexdigest(),
                'first': self.paths[0].name, 'last': self.paths[-1].name}


def calibration_frames(dataset: str, root: str | Path, split: str,
                       drives: Iterable[str] = (), count: int | None = None) -> CalibrationFrames:
    """Return ``count`` frames of ``drives`` (all drives when empty) of a dataset split.

    The frames are spread evenly over the selection in drive order (all of them when ``count``
    is None or larger). A split, drive or folder without frames is a :class:`DatasetError`
    naming it.
    """
    if dataset not in DATASETS:
        raise ValueError(f'unknown dataset {dataset!r}; known: {", ".join(DATASETS)}')
    files = open_dataset(dataset, root, split, images=False).files
    drives = tuple(drives)
    found = sorted({item.sequence for item in files})
    chosen = [item for item in files if not drives or item.sequence in drives]
    missing = [drive for drive in drives if drive not in found]
    if missing or not chosen:
        raise DatasetError(f'calibration: {dataset} {split} folder {Path(root) / split} has no '
                           f'frames of drive {", ".join(missing or drives)} (its drives: '
                           f'{", ".join(found)})')
    if count is not None:
        if count < 1:
            raise ValueError(f'calibration frames: need at least 1, got {count}')
        if count < len(chosen):
            picks = np.unique(np.linspace(0, len(chosen) - 1, count).round().astype(int))
            chosen = [chosen[k] for k in picks]
    return CalibrationFrames(tuple(item.image for item in chosen), dataset, split,
                             drives or tuple(found))


class CalibrationReader:
    """Feed calibration frames, preprocessed as the model's spec declares, one at a time.

    An ONNX Runtime ``CalibrationDataReader`` (which recognises it by its ``get_next``).

    ``set_range`` and ``len`` let ``quantize_static`` calibrate in chunks
    (``CalibStridedMinMax``), so the histogram methods hold one frame's activations at a time.
    """

    def __init__(self, paths: Iterable[Path], preprocess: 'Preprocess', input_name: str,
                 progress: bool = True) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.input_name = input_name
        self._next, self._end = 0, len(self.paths)
        self._bar = tqdm(total=len(self.paths), desc='calibrating', unit='frame',
                         disable=not progress)

    def __len__(self) -> int:
        return len(self.paths)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Feed the frames ``start_index`` to ``end_index`` (exclusive) next."""
        self._next, self._end = start_index, min(end_index, len(self.paths))

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Return the next frame's network input, or None after the range's last."""
        if self._next >= self._end:
            return None
        image = read_rgb_png(self.paths[self._next])
        self._next += 1
        self._bar.update(1)
        return {self.input_name: self.preprocess(image)}

    def close(self) -> None:
        """Close the progress bar."""
        self._bar.close()


def _consumers(graph: 'onnx.GraphProto') -> dict[str, list['onnx.NodeProto']]:
    """Return the nodes reading each tensor."""
    readers: dict[str, list['onnx.NodeProto']] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _after(graph: 'onnx.GraphProto', node: 'onnx.NodeProto') -> list['onnx.NodeProto']:
    """Return every node downstream of ``node`` (its outputs' readers, transitively)."""
    readers = _consumers(graph)
    seen: dict[str, 'onnx.NodeProto'] = {}
    todo = list(node.output)
    while todo:
        for reader in readers.get(todo.pop(), []):
            if reader.name not in seen:
                seen[reader.name] = reader
                todo.extend(reader.output)
    return list(seen.values())


def _named(model: 'onnx.ModelProto') -> 'onnx.ModelProto':
    """Name every unnamed node ``<op type>_<index>`` (exclusions and ranges go by node name)."""
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f'{node.op_type}_{index}'
    return model


def float_nodes(model: 'onnx.ModelProto', keep_float: Iterable[str]) -> list[str]:
    """Return the names of the nodes to leave in float.

    Besides the op types of :data:`ALWAYS_FLOAT`, each entry of ``keep_float`` is ``first``
    (the convolutions reading the graph input), ``last`` (the last convolution, which writes the
    class scores), ``tail`` (every node after it: the softmax), an op type (``Resize``) or a
    node name, which may hold shell-style wildcards (``/net/encoder/level2*``); an entry
    matching nothing is a ``ValueError``.
    """
    graph = model.graph
    convs = [node for node in graph.node if node.op_type in _CONVS]
    inputs = {value.name for value in graph.input}
    groups = {'first': [n for n in convs if inputs & set(n.input)],
              'last': convs[-1:], 'tail': _after(graph, convs[-1]) if convs else []}
    names = [n.name for n in graph.node if n.op_type in ALWAYS_FLOAT]
    for entry in keep_float:
        found = groups.get(entry) or [n for n in graph.node if n.op_type == entry
                                      or fnmatch.fnmatchcase(n.name, entry)]
        if not found and entry != 'tail':
            raise ValueError(f'keep-float {entry!r}: no such node or op type in the model '
                             f'(groups: {", ".join(KEEP_FLOAT)})')
        names += [n.name for n in found if n.name not in names]
    return names


def quantize_network(model_path: str | Path, frames: CalibrationFrames,
                     settings: QuantSettings = QuantSettings(), out: str | Path | None = None,
                     progress: bool = True) -> tuple[Path, 'ModelSpec']:
    """Write the static INT8 model of ``model_path`` and its spec; return the path and spec.

    ``out`` defaults to the INT8 sibling ``<stem>.int8.onnx``; the spec goes beside it as
    ``.json``.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from metafusion_ros.runtime.segmenter import resolve_spec
    from metafusion_ros.runtime.segmenter.base import file_sha256
    from metafusion_ros.runtime.segmenter.precision import int8_sibling
    from metafusion_ros.runtime.segmenter.spec import ModelSpec

    model_path = Path(model_path)
    out = int8_sibling(model_path) if out is None else Path(out)
    if out.resolve() == model_path.resolve():
        raise ValueError(f'quantize: the output {out} would overwrite the fp32 model')
    spec = resolve_spec(model_path, None)
    with tempfile.TemporaryDirectory(prefix='metafusion-quantize-') as tmp:
        prepared = Path(tmp) / 'prepared.onnx'
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        prepared_model = _named(onnx.load(str(prepared)))
        onnx.save(prepared_model, str(prepared))
        excluded = float_nodes(prepared_model, settings.keep_float)
        input_name = prepared_model.graph.input[0].name
        reader = CalibrationReader(frames.paths, spec.preprocess, input_name, progress)
        extra = {'CalibStridedMinMax': 1, 'CalibPercentile': settings.percentile}
        written = Path(tmp) / 'int8.onnx'
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram collector prints
                q.quantize_static(
                    str(prepared), str(written), reader,
                    quant_format=q.QuantFormat[FORMATS[settings.quant_format]],
                    activation_type=q.QuantType[TYPES[settings.activation_type]],
                    weight_type=q.QuantType[TYPES[settings.weight_type]],
                    calibrate_method=q.CalibrationMethod[METHODS[settings.method]],
                    per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                    nodes_to_exclude=excluded, extra_options=extra)
        finally:
            reader.close()
        record = {'source': {'file': model_path.name, 'sha256': file_sha256(model_path)},
                  'calibration': frames.record(), 'settings': asdict(settings),
                  'float_nodes': excluded, 'onnxruntime': ort.__version__,
                  'onnx': onnx.__version__}
        extra_keys = {k: v for k, v in spec.extra.items() if k != 'check'}  # fp32-only check
        int8_spec = ModelSpec(spec.preprocess, spec.output, spec.table, spec.num_classes,
                              {**extra_keys, 'quantization': record})
        out.parent.mkdir(parents=True, exist_ok=True)
        int8_spec.save(out.with_suffix('.json'))
        shutil.move(written, out)  # after its spec: a new INT8 file never has an old spec
    return out, int8_spec
