"""The in-graph MetaFusion head equals the core's numpy path (golden frames and random models)."""
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
import onnxruntime as ort
import pytest
from tiny_onnx import tiny_model

from metafusion_ros.core import classes, heatmaps, rules
from metafusion_ros.core.priors import interpolate, Priors
from metafusion_ros.segmenter.base import graph_io, GraphIO, inspect_onnx
from metafusion_ros.segmenter.head import add_head, add_head_file
from metafusion_ros.segmenter.preprocess import Preprocess
from metafusion_ros.segmenter.spec import ModelSpec, OutputSpec

GOLDEN = Path(__file__).resolve().parents[1].parent / 'shared' / 'golden'
CHAIN_FILES = sorted(p.name for p in GOLDEN.glob('chain_*.npz')) or ['chain_missing']


def identity_model(shape: list[int]) -> onnx.ModelProto:
    """Return a graph whose output ``probs`` is its input ``x`` (feeds golden softmaxes)."""
    graph = helper.make_graph(
        [helper.make_node('Identity', ['x'], ['probs'])], 'identity',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info('probs', TensorProto.FLOAT, shape)])
    return onnx.shape_inference.infer_shapes(
        tiny_model(graph))


def conv_model(num_classes: int, size: tuple[int, int], layout: str, kind: str,
               seed: int) -> onnx.ModelProto:
    """Return a random 3x3-conv 'segmentation network' with the given output layout/kind."""
    rng = np.random.default_rng(seed)
    h, w = size
    weight = numpy_helper.from_array(
        (rng.normal(size=(num_classes, 3, 3, 3)) * 2).astype(np.float32), 'w')
    nodes = [helper.make_node('Conv', ['image', 'w'], ['logits_nchw'], pads=[1, 1, 1, 1])]
    last = 'logits_nchw'
    if kind == 'softmax':
        nodes.append(helper.make_node('Softmax', [last], ['sm'], axis=1))
        last = 'sm'
    out_shape = [1, num_classes, h, w]
    if layout == 'NHWC':
        nodes.append(helper.make_node('Transpose', [last], ['t'], perm=[0, 2, 3, 1]))
        last, out_shape = 't', [1, h, w, num_classes]
    nodes.append(helper.make_node('Identity', [last], ['out']))
    graph = helper.make_graph(
        nodes, 'conv', [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, out_shape)], [weight])
    return tiny_model(graph)


def io_of(model: onnx.ModelProto) -> GraphIO:
    """Return the GraphIO of an in-memory model after shape inference."""
    return graph_io(onnx.shape_inference.infer_shapes(model))


def run(model: onnx.ModelProto, feeds: dict) -> dict:
    """Run ``model`` with ONNX Runtime; return outputs by name."""
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def core_path(probs: np.ndarray, priors: Priors, alpha: float, table) -> dict:
    """Return the core's Bayes, ML masks, ML probabilities and heatmaps for ``probs``."""
    prior_alpha = interpolate(priors.class_priors(), alpha)
    probs_ml = rules.ml_probabilities(probs, prior_alpha, table)
    e, m, v = heatmaps.heatmaps(probs_ml)
    return {'pred_bayes': rules.bayes_rule(rules.merge_classes(probs, table)),
            'pred_ml': rules.bayes_rule(probs_ml), 'entropy': e, 'margin': m, 'variation': v,
            'probs_ml': probs_ml}


def assert_head_matches(out: dict, ref: dict, mask_tolerance: int = 0) -> None:
    """Masks equal (up to ``mask_tolerance`` pixels), heatmaps and ML probabilities close."""
    for key in ('pred_bayes', 'pred_ml'):
        assert out[key].dtype == np.uint8
        assert np.count_nonzero(out[key][0] != ref[key]) <= mask_tolerance, key
    for key in ('entropy', 'margin', 'variation'):
        np.testing.assert_allclose(out[key][0], ref[key], atol=2e-6, err_msg=key)
    if 'probs_ml' in out:
        np.testing.assert_allclose(out['probs_ml'][0], ref['probs_ml'], atol=2e-6)


@pytest.fixture(params=CHAIN_FILES)
def golden(request, shared_dir):
    """Return a golden chain file with its category priors."""
    with np.load(shared_dir / 'golden' / request.param, allow_pickle=False) as data:
        g = {k: data[k] for k in data.files if not k.startswith(('metric', 'mlvs'))}
    table = classes.cityscapes_table()
    np.testing.assert_array_equal(g['category_of_class'], table.category_of_class)
    return g, Priors(g['prior_category'], table, level='category'), table


@pytest.mark.parametrize('mode', ['constant', 'alpha-input', 'input'])
def test_head_matches_golden_chain(golden, mode):
    """Head masks equal the reference's; heatmaps and ML probabilities equal the core's."""
    g, priors, table = golden
    alpha = float(g['alpha'])
    h, w, c = g['probs'].shape
    spec = ModelSpec(Preprocess(w, h), OutputSpec('probs', 'softmax', 'NCHW'), table)
    model = identity_model([1, c, h, w])
    headed, new_spec = add_head(model, io_of(model), spec, priors, alpha=alpha, mode=mode,
                                probs_ml=True)
    feeds = {'x': np.ascontiguousarray(g['probs'].transpose(2, 0, 1)[None])}
    if mode == 'alpha-input':
        feeds['alpha'] = np.array([alpha], np.float32)
    if mode == 'input':
        pa = interpolate(priors.class_priors(), alpha)
        feeds['prior_alpha'] = np.ascontiguousarray(pa.transpose(2, 0, 1)[None])
    out = run(headed, feeds)
    ref = core_path(g['probs'], priors, alpha, table)
    np.testing.assert_array_equal(out['pred_bayes'][0], g['pred_bayes'])
    np.testing.assert_array_equal(out['pred_ml'][0], g['pred_ml'])
    np.testing.assert_allclose(out['probs_ml'][0], g['probs_ml'], atol=2e-5)
    assert_head_matches(out, ref)
    assert new_spec.head.priors == mode and new_spec.head.resolution == (h, w)


@pytest.mark.parametrize('layout', ['NCHW', 'NHWC'])
@pytest.mark.parametrize('kind', ['logits', 'softmax'])
@pytest.mark.parametrize('merge', [False, True])
def test_head_matches_core_on_random_models(layout, kind, merge):
    """On random conv models, every head output equals the core on the model's softmax."""
    seed = ['NCHW', 'NHWC'].index(layout) * 4 + ['logits', 'softmax'].index(kind) * 2 + merge
    rng = np.random.default_rng(seed)
    num_classes, size = 5, (12, 16)
    table = classes.ClassTable('toy', tuple(f'c{i}' for i in range(num_classes)), 255, 1,
                               tuple((i, i, i) for i in range(num_classes)),
                               merge=((4, 1),) if merge else ())
    raw = rng.random((24, 32, num_classes)).astype(np.float32) ** 3  # coarser, zeros likely
    raw[:3, :5, 2] = 0
    priors = Priors(raw / raw.sum(-1, keepdims=True), table)
    spec = ModelSpec(Preprocess(size[1], size[0]), OutputSpec('out', kind, layout), table)
    model = conv_model(num_classes, size, layout, kind, seed)
    alpha = 0.95
    headed, _ = add_head(model, io_of(model), spec, priors, alpha=alpha, probs_ml=True)
    image = rng.normal(size=(1, 3, *size)).astype(np.float32)
    net = run(model, {'image': image})['out'][0]
    net = net.transpose(1, 2, 0) if layout == 'NCHW' else net
    probs = net if kind == 'softmax' else np.exp(net) / np.exp(net).sum(-1, keepdims=True)
    ref = core_path(probs.astype(np.float32), priors.resized(size), alpha, table)
    assert_head_matches(run(headed, {'image': image}), ref)


def test_head_file_round_trip_and_errors(tmp_path):
    """add_head_file writes model + spec; bad requests are clear errors before any run."""
    table = classes.camvid_table()
    c, size = table.num_classes, (8, 10)
    model = conv_model(c, size, 'NCHW', 'softmax', 0)
    src = tmp_path / 'net.onnx'
    onnx.save(model, str(src))
    spec = ModelSpec(Preprocess(size[1], size[0]), OutputSpec('out'), table)
    priors = Priors(np.full((4, 5, c), 1.0 / c, np.float32), table)
    new_spec = add_head_file(src, tmp_path / 'head.onnx', spec, priors, alpha=1.0)
    assert ModelSpec.load(tmp_path / 'head.json').head == new_spec.head
    _, io = inspect_onnx(tmp_path / 'head.onnx')
    assert list(io.outputs) == ['pred_bayes', 'pred_ml', 'entropy', 'margin', 'variation']
    wrong = Priors(np.full((4, 5, 19), 1 / 19, np.float32), classes.cityscapes_table())
    with pytest.raises(ValueError, match='priors'):
        add_head_file(src, tmp_path / 'x.onnx', spec, wrong)
    with pytest.raises(ValueError, match='needs a priors file'):
        add_head_file(src, tmp_path / 'x.onnx', spec, None)
    with pytest.raises(ValueError, match='alpha'):
        add_head_file(src, tmp_path / 'x.onnx', spec, priors, alpha=1.5)
    with pytest.raises(ValueError, match='already carries'):
        add_head_file(tmp_path / 'head.onnx', tmp_path / 'x.onnx', new_spec, priors)
    bad_classes = ModelSpec(Preprocess(size[1], size[0]), OutputSpec('out'), None, 7)
    with pytest.raises(ValueError, match='has 11 classes'):
        add_head_file(src, tmp_path / 'x.onnx', bad_classes, None, mode='input')
