"""Where a street network's time goes, operator by operator (ONNX Runtime's CPU profiler).

For each model (default: the default chain's network and the shipped ESPNet fp32 / INT8 pair;
``--model`` for others, e.g. the ESPNetv2 INT8 files of ``scripts/int8_networks.sh``), one
ONNX Runtime session with ``--threads`` intra-op threads (default 2) and its profiler on runs a
real street frame (CamVid test, resized to the network) ``--runs`` times after a warm-up. The
profiler's kernel times are summed per operator type and per group: ``convolution`` (Conv,
QLinearConv, ConvTranspose, FusedConv), ``quantization`` (QuantizeLinear, DequantizeLinear),
``layout`` (Transpose and ONNX Runtime's NCHWc reorders) and ``other``.

``int8_bound`` is Amdahl's bound for an fp32 file: the speed-up if every convolution took no
time and every other operator kept its fp32 time, ``1 / (1 - convolution share)``. The INT8
rows show what ONNX Runtime's integer kernels actually do to each group. One JSON line per
model; the last line, ``case: int8_target``, says for each fp32 row whether the ≥ 2× INT8 target
of issue 20 is within that bound (``within_bound``) and, where its INT8 file was profiled too,
the measured speed-up of the network and of each group.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
import json
from pathlib import Path
import sys
import tempfile

import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))

from metafusion_ros.runtime.chains import DEFAULT_CHAIN, resolve  # noqa: E402
from metafusion_ros.runtime.segmenter import load_segmenter  # noqa: E402
from metafusion_ros.runtime.segmenter.onnx_backend import session_options  # noqa: E402
from timing import median_ms, street_frames  # noqa: E402

GROUPS = {'convolution': ('Conv', 'QLinearConv', 'ConvTranspose', 'FusedConv', 'NhwcConv'),
          'quantization': ('QuantizeLinear', 'DequantizeLinear'),
          'layout': ('Transpose', 'ReorderInput', 'ReorderOutput')}
TARGET = 2.0  # issue 20: INT8 network at least 2x faster than fp32


def group_of(op_type: str) -> str:
    """Return the group of an operator type (``other`` when none names it)."""
    return next((g for g, ops in GROUPS.items() if op_type in ops), 'other')


def kernel_ms(events: list[dict], warmup: int = 1) -> dict[str, float]:
    """Return the profiler's kernel time per operator type in ms per run, after ``warmup`` runs.

    The runs are the profile's ``model_run`` events; kernels that started before the first
    measured run (the warm-up's) are left out.
    """
    runs = sorted((e for e in events if e.get('name') == 'model_run'), key=lambda e: e['ts'])
    measured = runs[warmup:]
    start = measured[0]['ts']
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if (event.get('cat') == 'Node' and event.get('name', '').endswith('_kernel_time')
                and event['ts'] >= start):
            totals[event['args']['op_name']] += event['dur'] / 1e3 / len(measured)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def summary(ops: dict[str, float], bound: bool) -> dict[str, object]:
    """Return the groups' ms, the convolutions' share and (``bound``) Amdahl's INT8 bound."""
    total = sum(ops.values())
    groups = {g: 0.0 for g in (*GROUPS, 'other')}
    for op, ms in ops.items():
        groups[group_of(op)] += ms
    share = groups['convolution'] / total if total else 0.0
    return {'kernels_ms': round(total, 2),
            'groups_ms': {g: round(ms, 2) for g, ms in groups.items()},
            'convolution_share': round(share, 3),
            **({'int8_bound': round(1 / (1 - share), 2) if share < 1 else None} if bound else {})}


def profile(model: str, precision: str, runs: int, threads: int) -> dict[str, object]:
    """Profile one network (a chain name or ONNX path) on a street frame; return its JSON row."""
    seg = load_segmenter(resolve(model).model, backend='onnxruntime-cpu', threads=threads,
                         precision=precision)
    x = seg.preprocess(street_frames(seg.input_size, 1)[0][0])
    with tempfile.TemporaryDirectory(prefix='metafusion-ops-') as tmp:
        options = session_options(threads)  # the segmenter's, with the profiler on
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / 'ops')
        session = ort.InferenceSession(str(seg.model_path), options,
                                       providers=['CPUExecutionProvider'])
        feeds = {session.get_inputs()[0].name: x}
        wall_ms = median_ms(lambda: session.run(None, feeds), runs, warmup=1)
        events = json.loads(Path(session.end_profiling()).read_text())
    ops = kernel_ms(events, warmup=1)
    quantized = seg.spec.extra.get('quantization')  # an INT8 file, by :int8 or by its path
    file = Path(seg.model_path).name
    return {'case': 'network_ops', 'model': model, 'file': file,
            'precision': 'int8' if quantized else 'fp32',
            'fp32_file': quantized['source']['file'] if quantized else file,
            'input': list(seg.input_size), 'threads': threads,
            'runs': runs, 'median_ms': round(wall_ms, 1),
            **summary(ops, bound=not quantized),
            'top_ops_ms': {op: round(ms, 2) for op, ms in list(ops.items())[:8]}}


def target_line(rows: list[dict]) -> dict[str, object]:
    """Return the ``int8_target`` line: each fp32 row's bound and measured speed-ups.

    The measured speed-ups, of the network and of each group, where the fp32 file's INT8 file
    (quantized from it) was profiled too.
    """
    fp32 = {row['fp32_file']: row for row in rows if row['precision'] == 'fp32'}
    int8 = {row['fp32_file']: row for row in rows if row['precision'] == 'int8'}
    models = {}
    for model, row in fp32.items():
        entry: dict[str, object] = {'int8_bound': row['int8_bound'],
                                    'within_bound': (row['int8_bound'] or 0) >= TARGET}
        if model in int8:
            other = int8[model]
            entry['measured_speedup'] = round(row['median_ms'] / other['median_ms'], 2)
            entry['group_speedup'] = {g: round(ms / other['groups_ms'][g], 2)
                                      for g, ms in row['groups_ms'].items()
                                      if ms and other['groups_ms'][g]}
        models[model] = entry
    return {'case': 'int8_target', 'target_speedup': TARGET, 'models': models}


def main() -> int:
    """Profile the models and print one line each, then the INT8 target line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', action='append', default=None,
                        help='chain name or ONNX path, optionally :int8 (repeat)')
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    models = args.model or [DEFAULT_CHAIN, 'cityscapes_espnet', 'cityscapes_espnet:int8']
    rows = []
    for entry in models:
        name, _, precision = entry.partition(':')
        rows.append(profile(name, precision or 'fp32', args.runs, args.threads))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(target_line(rows)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
