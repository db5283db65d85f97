"""The node's parameters, defined once: name, default (and so type), range or choices, run time.

Pure Python (no ROS import): the node builds its parameter descriptors from :data:`SPECS` and
checks new values with :meth:`Spec.problem`; ``launch_args.py`` takes its choices and ranges from
it; ``test_node_parameters_doc.py`` checks ``config/fusion.yaml`` against it and that the table
in ``docs/node.md`` equals :func:`markdown_table` (``python -m metafusion_ros.ros.parameters``
prints it).
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Union

from metafusion_ros.core.defaults import ALPHA, FUSION, FUSION_MODES, SUPPORT, TAU
from metafusion_ros.runtime.chains import DEFAULT_CHAIN

__all__ = ['Spec', 'SPECS', 'OPTIONAL_OUTPUTS', 'DEFAULTS', 'RUNTIME', 'markdown_table']

Value = Union[bool, int, float, str]
# Optional outputs: parameter ``outputs.<key>`` switches them; published only when subscribed.
OPTIONAL_OUTPUTS = ('mask_bayes', 'mask_ml', 'color_mask', 'confidence', 'heatmaps',
                    'segments', 'overlay')
UNIT = (0.0, 1.0)


@dataclass(frozen=True)
class Spec:
    """One parameter: ``default`` fixes its type; ``note`` and ``runtime_note`` are docs only."""

    name: str
    default: Value
    description: str
    range: tuple[float, float] | None = None  # inclusive
    choices: tuple[str, ...] = ()
    runtime: bool = False  # applied while configured; else refused until cleanup
    note: str = ''
    runtime_note: str = ''

    def problem(self, value: Value) -> str:
        """Return why ``value`` does not fit this parameter (type, choices, range), or ''."""
        kind = type(self.default)
        if not (type(value) is kind or (kind is float and type(value) is int)):
            return f'{value!r} is not of type {kind.__name__}'
        if self.choices and value not in self.choices:
            return f'{value!r} is not one of {", ".join(self.choices)}'
        if self.range is not None and not (
                math.isfinite(value) and self.range[0] <= value <= self.range[1]):
            return f'{value!r} is outside [{self.range[0]:g}, {self.range[1]:g}]'
        return ''

    def values_text(self) -> str:
        """Return the docs' "range / values" cell: choices, range or type, then the note."""
        if self.choices:
            text = ', '.join(f'`{choice}`' for choice in self.choices)
        elif self.range is not None:
            text = f'{self.range[0]:g} … {self.range[1]:g}'
        else:
            text = 'bool' if isinstance(self.default, bool) else ''
        return ': '.join(part for part in (text, self.note) if part)


SPECS: dict[str, Spec] = {spec.name: spec for spec in [
    Spec('model_path', '', "chain name (models/<name>.chain.json) or ONNX network; '' = the "
         'default chain',
         note=f"a chain name (`metafusion models`; `''`: `{DEFAULT_CHAIN}`) or an ONNX file "
              '(spec `.json`/`.yaml` beside it; the chain that lists it gives the empty priors '
              'and meta paths); with `backend: tensorrt` its engine is built and cached '
              '(`$METAFUSION_TRT_CACHE`)'),
    Spec('backend', 'onnxruntime', 'inference backend',
         choices=('onnxruntime', 'onnxruntime-cpu', 'onnxruntime-cuda', 'tensorrt'),
         note="ONNX Runtime's CUDA provider where `onnxruntime-gpu` offers it, else the CPU; "
              '`-cpu` the CPU even there; `-cuda` the CUDA provider or exit 1 with the reason '
              '(ONNX Runtime alone would fall back to the CPU without a word)'),
    Spec('precision', 'fp32', 'inference precision', choices=('fp32', 'fp16', 'int8'),
         note='`int8` with ONNX Runtime: the static INT8 network `<stem>.int8.onnx` beside '
              '`model_path` (`metafusion quantize`), refused (exit 1) when missing or quantized '
              'from another network; `fp16` needs `tensorrt`'),
    Spec('priors_path', '', "position-specific priors .npz (eq. 5); '' = the chain's",
         note="priors `.npz` (`metafusion priors`); `''`: the chain's (a network of no chain "
              'needs one)'),
    Spec('meta_model_path', '', 'meta classifier bundle (manifest .json, one XGBoost JSON per '
         "alpha); '' = the chain's, none keeps every candidate (plain ML for class c)",
         note="`metafusion fit`: manifest `.json`, one XGBoost JSON per α beside it; `''`: the "
              "chain's (none for a network of no chain); `none`: keep all candidates"),
    Spec('alpha', ALPHA, 'prior interpolation alpha (eq. 15); 0 = Bayes, 1 = ML', UNIT,
         runtime=True,
         runtime_note="the bundle member fitted at α scores; an α off the bundle's grid uses "
                      'the nearest member within 0.1 (one WARN per change, `meta_alpha_choice` '
                      'in diagnostics); farther is refused (at start-up: exit 1)'),
    Spec('tau', TAU, 'meta classifier threshold: keep a candidate if P(TP) >= tau', UNIT,
         runtime=True),
    Spec('fusion', FUSION, 'fusion reading (spec §5)', choices=FUSION_MODES,
         runtime=True,
         note="`reference` (the authors' `fuse_mask_i`): the ML extent of every human segment "
              'with `S_in > 0` that is not dropped, agreeing segments included; `literal` '
              '(eq. 14 read literally): kept candidates only; `support`: kept candidates, and '
              'each agreeing segment\'s Bayes extent grown through its pixels where '
              f'`p_c >= {SUPPORT:g} max p_other` (docs/meta.md)'),
    Spec('target_class', '', "target class c by name; '' = the priors' table default",
         note="class name of *c*; `''` = the priors' table default"),
    Spec('resize_mode', 'resize', 'images of another resolution than the priors: resize the '
         'priors or refuse the frame', choices=('resize', 'refuse')),
    Spec('output_resolution', 'camera', 'size of the published masks and heatmaps',
         choices=('camera', 'network'), runtime=True,
         note='`camera`: the final label maps enlarged to the image (nearest); `network`: the '
              'network output size, at which MetaFusion always runs'),
    Spec('max_input_pixels', 1 << 24, 'larger images (width * height) are refused, a counted '
         'skip (8K is 33 Mpx)', (1, 1 << 30), runtime=True,
         note='larger frames are `too_large` skips'),
    Spec('qos.reliability', 'best_effort', 'input QoS reliability',
         choices=('best_effort', 'reliable')),
    Spec('qos.depth', 5, 'input QoS history depth', (1, 1000)),
    Spec('outputs.markers', True, 'publish ~/output/markers', runtime=True),
    *(Spec(f'outputs.{key}', True, f'compute ~/output/{key} when someone subscribes',
           runtime=True) for key in OPTIONAL_OUTPUTS),
    Spec('overlay_opacity', 0.5, 'weight of the class colours in ~/output/overlay', UNIT,
         runtime=True),
    Spec('marker_scale', 0.01, 'marker size in metres per image pixel', (1e-6, 100.0),
         runtime=True),
    Spec('warn_throttle_s', 5.0, 'minimum seconds between warnings of one kind', (0.0, 3600.0),
         runtime=True),
    Spec('diagnostics_period_s', 1.0, 'period of /diagnostics', (0.05, 60.0),
         runtime_note='applied at the next configure'),
    Spec('diagnostics_window_s', 10.0, 'seconds over which /diagnostics computes rates, shares '
         'and stage times', (1.0, 3600.0), runtime_note='applied at the next configure'),
    Spec('autostart', True, 'configure and activate on start-up (no lifecycle manager)'),
]}
DEFAULTS = {name: spec.default for name, spec in SPECS.items()}
RUNTIME = frozenset(name for name, spec in SPECS.items() if spec.runtime)


def _default_text(value: Value) -> str:
    """Return a default as the docs table shows it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'`{value!r}`' if value == '' else f'`{value}`'
    return str(value)


def markdown_table() -> str:
    """Return the parameter table of ``docs/node.md``, generated from :data:`SPECS`."""
    rows = ['| name | default | range / values | run-time | meaning |', '|---|---|---|---|---|']
    for spec in SPECS.values():
        runtime = ': '.join(part for part in ('yes' if spec.runtime else 'no',
                                              spec.runtime_note) if part)
        rows.append(f'| `{spec.name}` | {_default_text(spec.default)} | {spec.values_text()} | '
                    f'{runtime} | {spec.description} |')
    return '\n'.join(rows)


if __name__ == '__main__':
    print(markdown_table())
