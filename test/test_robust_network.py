"""Robustness of the network-output surface: bad values, wrong classes, layout and resolution.

Core and engine level: a softmax with NaN, Inf, negative or unnormalised values, or with another
class count, is a clear error at run time (``ValueError`` in the core, ``BadNetworkOutput`` in
the engine); a wrong output layout or rank fails when the model is loaded (one line naming the
model); an output at another resolution than the priors is processed (the priors are resized).

Process level: a node runs :func:`~fixtures.write_faulty_model`, whose
output turns bad when a frame carries a fault's trigger pixel. Each such frame is counted as
``skipped_bad_network_output``, warned about with the core's reason and publishes nothing; the
next valid frame gives the clean network's mask. A node given a wrongly laid out network exits
with code 1 and one line.
"""
import json
import re
import signal

import numpy as np
import onnx
from onnx import helper
import pytest
from test_node_harness import (domain_for, image_msg, node_output, NodeUnderTest, ros_env,
                               start_node, stop_node, with_stamp)

from metafusion_ros.core.pipeline import MetaFusion
from metafusion_ros.core.priors import Priors
import fixtures
from metafusion_ros.ros.conversions import image_to_mask
from metafusion_ros.runtime.engine import (BadNetworkOutput, ConfigurationError, EngineConfig,
                                           FusionEngine)

DOMAIN = domain_for(82)
NAME = 'faulty'
SCENE = fixtures.scene()
# What the core (the class count: the segmenter's per-frame check) says of each fault (a pattern).
REASON = {'nan': 'softmax contains NaN or Inf', 'inf': 'softmax contains NaN or Inf',
          'negative': r'softmax contains \d+ negative', 'unnormalised': 'is not normalised',
          'two_classes': 'output has 2 classes, the class table 3'}


def write_relaid_model(path, layout):
    """Write the tiny network with its output transposed to NHWC or squeezed to rank 3.

    Its ``.json`` still declares NCHW, except for ``'nchw_declared_nhwc'`` (output NCHW, spec
    NHWC).
    """
    path = fixtures.write_model(path)
    if layout == 'nchw_declared_nhwc':
        spec = path.with_suffix('.json')
        data = json.loads(spec.read_text())
        data['output']['layout'] = 'NHWC'
        spec.write_text(json.dumps(data))
        return path
    model = onnx.load(str(path))
    graph = model.graph
    graph.node[-1].output[0] = 'softmax'
    dims = graph.output[0].type.tensor_type.shape.dim
    if layout == 'nhwc_declared_nchw':
        graph.node.append(helper.make_node('Transpose', ['softmax'], ['probs'],
                                           perm=[0, 2, 3, 1]))
        order = [dims[0].dim_value, dims[2].dim_value, dims[3].dim_value, dims[1].dim_value]
    else:
        graph.node.append(helper.make_node('Squeeze', ['softmax', 'batch'], ['probs']))
        graph.initializer.append(helper.make_tensor('batch', onnx.TensorProto.INT64, [1], [0]))
        order = [d.dim_value for d in dims[1:]]
    graph.ClearField('output')
    graph.output.append(helper.make_tensor_value_info('probs', onnx.TensorProto.FLOAT, order))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Write the faulty, clean, low-resolution and wrongly laid out networks and the priors."""
    folder = tmp_path_factory.mktemp('robust_network')
    files = {'folder': folder, 'priors': fixtures.write_priors(folder / 'priors.npz'),
             'faulty': fixtures.write_faulty_model(folder / 'faulty.onnx'),
             'clean': fixtures.write_model(folder / 'clean.onnx'),
             'low_res': fixtures.write_model(folder / 'low_res.onnx', size=(24, 32))}
    for layout in ('nhwc_declared_nchw', 'nchw_declared_nhwc', 'rank_3'):
        files[layout] = write_relaid_model(folder / f'{layout}.onnx', layout)
    return files


def load(files, model, **settings):
    """Load an engine on network ``model`` and the flat priors."""
    return FusionEngine.load(EngineConfig(str(files[model]), str(files['priors']), **settings))


@pytest.fixture(scope='module')
def reference(files):
    """Return the clean network's fused mask of the scene (no meta model: all candidates)."""
    return load(files, 'clean').process(SCENE).result.fused


# -- core and engine -----------------------------------------------------------------------------
@pytest.mark.parametrize('fault', fixtures.FAULTS)
def test_engine_refuses_each_fault_then_processes_valid_frames(files, reference, fault):
    """The faulty network's bad output is a BadNetworkOutput naming it; the next frame is fine."""
    engine = load(files, 'faulty')
    with pytest.raises(BadNetworkOutput, match=REASON[fault]) as info:
        engine.process(fixtures.with_fault(SCENE, fault))
    assert info.value.reason == 'bad_network_output'
    np.testing.assert_array_equal(engine.process(SCENE).result.fused, reference)


@pytest.mark.parametrize('layout,message', [
    ('nhwc_declared_nchw', '48 classes on axis 1 (NCHW), the class table 3'),
    ('nchw_declared_nhwc', '64 classes on axis 3 (NHWC), the class table 3'),
    ('rank_3', 'has rank 3, expected 4'),
], ids=['nhwc_declared_nchw', 'nchw_declared_nhwc', 'rank_3'])
def test_wrong_output_layout_fails_at_load_naming_the_model(files, layout, message):
    """A layout other than the declared one, or a rank-3 output, fails before the first frame."""
    with pytest.raises(ConfigurationError, match=re.escape(message)) as info:
        load(files, layout)
    assert str(files[layout]) in str(info.value) and '\n' not in str(info.value)


def _half_priors():
    """Return 8x8 priors: person rare on the left half (0.01), common on the right (0.5)."""
    table = fixtures.tiny_table()
    probs = np.empty((8, 8, 3), np.float32)
    probs[:, :4], probs[:, 4:] = (0.9, 0.01, 0.09), (0.4, 0.5, 0.1)
    return Priors(probs, table, 'class', num_images=1, dataset='halves')


@pytest.mark.parametrize('shape,match', [((3, 4, 4), '4 classes'), ((1, 4, 4, 3), 'rank 3')],
                         ids=['channel_first', 'batched'])
def test_core_refuses_channel_first_or_batched_softmax(shape, match):
    """A softmax left in NCHW (C, H, W) or with its batch axis is refused, naming the shape."""
    probs = np.full(shape, 1 / 3, np.float32)
    with pytest.raises(ValueError, match=match):
        MetaFusion(_half_priors()).process(probs)


def test_core_resizes_priors_to_a_softmax_of_another_resolution():
    """A 4x4 softmax with 8x8 priors: priors resized, so ML picks person on the left half only.

    Every pixel is (road 0.6, person 0.3, car 0.1): Bayes says road; ML (eq. 3) divides by the
    priors: left 0.3 / 0.01 beats 0.6 / 0.9, right 0.6 / 0.4 beats 0.3 / 0.5.
    """
    probs = np.empty((4, 4, 3), np.float32)
    probs[:] = (0.6, 0.3, 0.1)
    result = MetaFusion(_half_priors()).process(probs)
    assert result.pred_bayes.shape == (4, 4) and (result.pred_bayes == 0).all()
    expected = np.zeros((4, 4), np.uint8)
    expected[:, :2] = 1
    np.testing.assert_array_equal(result.pred_ml, expected)


@pytest.mark.parametrize('resize_mode', ['resize', 'refuse'])
def test_network_at_another_resolution_than_the_priors(files, reference, resize_mode):
    """A network exported at 32x24 with 64x48 priors and frames: the mask at the frame's size.

    MetaFusion runs at 32x24 (priors resized to it); the fused mask is enlarged to the frame.
    ``refuse`` concerns the frame against the priors, not the network's own resolution.
    """
    processed = load(files, 'low_res', resize_mode=resize_mode).process(SCENE)
    assert processed.result.fused.shape == (24, 32)
    fused = processed.to_camera.labels(processed.result.fused)
    assert fused.shape == reference.shape
    for row, col in ((4, 4), (4, 40), (30, 8), (30, 44)):  # block interiors
        np.testing.assert_array_equal(fused[row + 2:row + 6, col + 2:col + 6],
                                      reference[row + 2:row + 6, col + 2:col + 6])
    assert np.mean(fused == reference) > 0.95


# -- process level -------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def wrong_layout(files):
    """Start a node on the NHWC network declared NCHW (it fails at configure); stop it at last."""
    proc = start_node(ros_env(DOMAIN, files['folder'] / 'log'),
                      {'model_path': files['nhwc_declared_nchw'],
                       'priors_path': files['priors']}, name='wrong_layout')
    yield proc
    stop_node(proc, signal.SIGKILL)


@pytest.fixture(scope='module')
def node(files, reference, wrong_layout):
    """Start a node on the faulty network (while the wrongly laid out one fails) and a tester."""
    under_test = NodeUnderTest.start(DOMAIN, files['folder'] / 'log', {
        'model_path': files['faulty'], 'priors_path': files['priors'], 'warn_throttle_s': 0.0,
        'diagnostics_period_s': 0.1, 'qos.reliability': 'reliable'}, NAME, 'network_tester')
    np.testing.assert_array_equal(image_to_mask(with_stamp(under_test.masks, 1)[0]), reference)
    yield under_test
    under_test.close()


def _warnings(node):
    """Return the node's warnings about bad network outputs so far."""
    return [line for line in node_output(node.proc).splitlines()
            if 'skipped frame (bad_network_output' in line]


@pytest.mark.parametrize('fault', fixtures.FAULTS)
def test_node_skips_bad_network_output_and_stays_correct(node, reference, fault):
    """A bad output: one counted skip, one warning with the reason, no mask; then alive."""
    key = 'skipped_bad_network_output'
    before, warned = node.counter(key), len(_warnings(node))
    stamp = next(node.stamps)
    node.pub.publish(image_msg(fixtures.with_fault(SCENE, fault), stamp))
    node.wait_counter(key, before + 1)
    node.check_alive_and_correct(reference)  # the worker warned before taking this frame
    assert not with_stamp(node.masks, stamp)
    assert node.counter(key) == before + 1
    new = _warnings(node)[warned:]
    assert len(new) == 1 and re.search(REASON[fault], new[0]), new
    assert node.proc.poll() is None


def test_node_with_wrongly_laid_out_network_exits_with_one_line(wrong_layout, files):
    """NHWC output declared NCHW: configure fails, exit code 1, one line naming the model."""
    wrong_layout.wait(timeout=120)
    lines = [line for line in node_output(wrong_layout).splitlines() if line.strip()]
    assert wrong_layout.returncode == 1 and len(lines) == 1, lines
    assert 'configure failed' in lines[0] and str(files['nhwc_declared_nchw']) in lines[0]
    assert 'classes on axis 1 (NCHW)' in lines[0]


def test_node_exits_cleanly_after_the_faults(node):
    """After the faults the node is active, has accounted for every frame and exits 0."""
    node.stop_cleanly()
