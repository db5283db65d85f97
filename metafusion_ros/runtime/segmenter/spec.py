"""Model description: what goes into a segmentation network and what comes out of it.

A :class:`ModelSpec` travels with every model as a JSON (or YAML) file beside it
(``model.onnx`` -> ``model.json``), or is given explicitly for a user's own export (for example a
DeepLabV3+ ONNX file): the preprocessing, the output tensor (name, softmax or logits, NCHW or
NHWC) and the class table.

Example YAML for a user's Cityscapes DeepLabV3+ export::

    preprocess: {width: 1024, height: 512, mean: [0.485, 0.456, 0.406],
                 std: [0.229, 0.224, 0.225], channel_order: RGB, layout: NCHW}
    output: {name: logits, kind: logits, layout: NCHW}
    table: cityscapes
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
from typing import Any

import yaml

from metafusion_ros.core.classes import ClassTable, table_by_name
from metafusion_ros.core.files import check_depth, naming, read_text
from metafusion_ros.runtime.segmenter.preprocess import Preprocess

__all__ = ['OutputSpec', 'ModelSpec', 'sidecar_path', 'read_yaml', 'yaml_error']

FORMAT = 'metafusion-segmenter/1'


@dataclass(frozen=True)
class OutputSpec:
    """The network output the segmenter reads: name, softmax/logits, layout."""

    name: str | None = None  # None: the graph's first output
    kind: str = 'softmax'
    layout: str = 'NCHW'

    def __post_init__(self) -> None:
        if self.kind not in ('softmax', 'logits'):
            raise ValueError(f"output kind must be 'softmax' or 'logits', got {self.kind!r}")
        if self.layout not in ('NCHW', 'NHWC'):
            raise ValueError(f"output layout must be 'NCHW' or 'NHWC', got {self.layout!r}")

    @property
    def class_axis(self) -> int:
        """Return the axis of the class dimension in the 4-d output."""
        return 1 if self.layout == 'NCHW' else 3


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to run a segmentation ONNX model and read its outputs."""

    preprocess: Preprocess
    output: OutputSpec = field(default_factory=OutputSpec)
    table: ClassTable | None = None
    num_classes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.table is not None:
            if self.num_classes not in (None, self.table.num_classes):
                raise ValueError(f'spec: num_classes {self.num_classes} but table '
                                 f'{self.table.name!r} has {self.table.num_classes} classes')
            object.__setattr__(self, 'num_classes', self.table.num_classes)

    def to_dict(self) -> dict[str, Any]:
        """Serialise to JSON-compatible data (``extra`` keys are kept at the top level)."""
        data = dict(self.extra)
        data.update({
            'format': FORMAT, 'preprocess': self.preprocess.to_dict(),
            'output': {'name': self.output.name, 'kind': self.output.kind,
                       'layout': self.output.layout},
            'table': None if self.table is None else self.table.to_dict(),
            'num_classes': self.num_classes,
        })
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = 'spec') -> 'ModelSpec':
        """Build a spec from parsed JSON/YAML; ``source`` names the file in errors."""
        if not isinstance(data, dict):
            raise ValueError(f'{source}: expected a mapping, got {type(data).__name__}')
        if 'preprocess' not in data:
            raise ValueError(f'{source}: missing the "preprocess" section')
        try:
            table = data.get('table')
            if isinstance(table, str):
                table = table_by_name(table)
            elif table is not None:
                table = ClassTable.from_dict(table)
            if data.get('head') is not None:  # written by the removed in-graph head
                raise ValueError('the in-graph MetaFusion head is no longer supported; use the '
                                 'plain model (softmax or logits out)')
            known = {'format', 'preprocess', 'output', 'table', 'num_classes', 'head'}
            return cls(preprocess=Preprocess.from_dict(data['preprocess']),
                       output=OutputSpec(**(data.get('output') or {})), table=table,
                       num_classes=data.get('num_classes'),
                       extra={k: v for k, v in data.items() if k not in known})
        except (TypeError, ValueError) as exc:
            raise ValueError(f'{source}: {exc}') from exc

    @classmethod
    def load(cls, path: str | Path) -> 'ModelSpec':
        """Read a spec from a JSON or YAML file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'model spec {path} does not exist')
        with naming('model spec', path):
            return cls.from_dict(read_yaml(path, 'model spec', 'JSON/YAML'), str(path))

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))


def read_yaml(path: Path, what: str, kind: str = 'YAML') -> Any:
    """Parse the YAML (or JSON) file ``path``, its size and flow nesting bounded first."""
    text = read_text(path, what)
    check_depth(text, f'{what} {path}')
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f'{what} {path}: not valid {kind}{yaml_error(exc)}') from exc


def yaml_error(exc: Exception) -> str:
    """Return where and why YAML parsing failed, on one line: `` at line L, column C (why)``."""
    mark = getattr(exc, 'problem_mark', None)
    where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''
    lines = str(exc).splitlines() or [type(exc).__name__]
    return f'{where} ({getattr(exc, "problem", None) or lines[0]})'


def sidecar_path(model_path: str | Path) -> Path | None:
    """Return the spec file beside ``model_path`` (``.json``, ``.yaml``, ``.yml``) if any."""
    model_path = Path(model_path)
    for suffix in ('.json', '.yaml', '.yml'):
        candidate = model_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
