"""``benchmarks/bench_ops.py``: ONNX Runtime's profile of a network, grouped, and the INT8 bound.

Run on the shipped ESPNet fp32 / INT8 pair (one profiled run each): the groups add up to the
kernel time, the fp32 file has no integer operator and the INT8 file runs QLinearConv with
Quantize/DequantizeLinear around it, and the target line pairs the two by the INT8 file's source.
"""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks' / 'bench_ops.py'


@pytest.fixture(scope='module')
def bench_ops():
    """Import the benchmark script as a module."""
    spec = importlib.util.spec_from_file_location('bench_ops', BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def rows(bench_ops):
    """Profile the shipped ESPNet network in fp32 and INT8 (one run each, after a warm-up)."""
    return [bench_ops.profile('cityscapes_espnet', precision, runs=1, threads=2)
            for precision in ('fp32', 'int8')]


def test_kernel_time_leaves_out_the_warm_up(bench_ops):
    """Kernels of the runs before the first measured ``model_run`` do not count."""
    def run(ts):
        return {'cat': 'Session', 'name': 'model_run', 'ts': ts, 'dur': 90}

    def kernel(ts, op, dur):
        return {'cat': 'Node', 'name': f'{op}_kernel_time', 'ts': ts, 'dur': dur,
                'args': {'op_name': op}}
    events = [run(0), kernel(1, 'Conv', 50_000), kernel(2, 'Add', 9_000),
              run(100), kernel(101, 'Conv', 4_000), kernel(102, 'Add', 1_000),
              run(200), kernel(201, 'Conv', 2_000), {'cat': 'Session', 'name': 'other', 'ts': 5}]
    assert bench_ops.kernel_ms(events, warmup=1) == {'Conv': 3.0, 'Add': 0.5}
    assert bench_ops.kernel_ms(events, warmup=0) == pytest.approx({'Conv': 56 / 3, 'Add': 10 / 3})


def test_groups_add_up_to_the_kernel_time(rows):
    """Every profiled kernel falls in one group; the shares and the bound follow from them."""
    for row in rows:
        assert sum(row['groups_ms'].values()) == pytest.approx(row['kernels_ms'], abs=0.05)
        share = row['groups_ms']['convolution'] / row['kernels_ms']
        assert row['convolution_share'] == pytest.approx(share, abs=1e-3)
        assert 0 < share < 1
    fp32, int8 = rows
    assert fp32['int8_bound'] == pytest.approx(1 / (1 - fp32['convolution_share']), abs=0.02)
    assert 'int8_bound' not in int8  # a bound on quantizing is about the fp32 file


def test_int8_file_runs_integer_convolutions(rows):
    """fp32: Conv and no quantization; INT8: QLinearConv, Quantize/DequantizeLinear, no Conv."""
    fp32, int8 = rows
    assert (fp32['precision'], int8['precision']) == ('fp32', 'int8')
    assert int8['file'] == 'cityscapes_espnet.int8.onnx'
    assert int8['fp32_file'] == fp32['file'] == 'cityscapes_espnet.onnx'
    assert 'Conv' in fp32['top_ops_ms'] and fp32['groups_ms']['quantization'] == 0
    assert 'QLinearConv' in int8['top_ops_ms'] and 'Conv' not in int8['top_ops_ms']
    assert int8['groups_ms']['quantization'] > 0


def test_target_line_pairs_fp32_with_its_int8_file(bench_ops, rows):
    """The target line holds the fp32 bound and the measured speed-ups of the pair."""
    fp32, int8 = rows
    line = bench_ops.target_line(rows)
    entry = line['models']['cityscapes_espnet.onnx']
    assert line['target_speedup'] == 2.0 and list(line['models']) == ['cityscapes_espnet.onnx']
    assert entry['within_bound'] == (fp32['int8_bound'] >= 2.0)
    assert entry['measured_speedup'] == pytest.approx(fp32['median_ms'] / int8['median_ms'],
                                                      abs=0.01)
    conv = fp32['groups_ms']['convolution'] / int8['groups_ms']['convolution']
    assert entry['group_speedup']['convolution'] == pytest.approx(conv, abs=0.01)
    assert 'quantization' not in entry['group_speedup']  # fp32 spends nothing there
    alone = bench_ops.target_line(rows[:1])['models']['cityscapes_espnet.onnx']
    assert set(alone) == {'int8_bound', 'within_bound'}
