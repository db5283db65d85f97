"""ONNX Runtime segmenter: preprocessing, outputs at camera resolution, load-time validation."""
import json

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
import pytest
from tiny_onnx import tiny_model

from metafusion_ros.core import classes
from metafusion_ros.core.priors import Priors
from metafusion_ros.runtime.segmenter import load_segmenter
from metafusion_ros.runtime.segmenter.preprocess import (Nearest, Preprocess, resize_image,
                                                         resize_maps)
from metafusion_ros.runtime.segmenter.spec import ModelSpec, OutputSpec

TABLE = classes.camvid_table()
C = TABLE.num_classes
IN_H, IN_W = 12, 16


def write_model(path, out_rank: int = 4, classes_out: int = C, layout: str = 'NCHW',
                kind: str = 'softmax', in_shape=(1, 3, IN_H, IN_W)) -> None:
    """Write a tiny conv 'segmentation network' (weights seeded) to ``path``."""
    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(
        rng.normal(size=(classes_out, 3, 3, 3)).astype(np.float32), 'w')
    nodes = [helper.make_node('Conv', ['image', 'w'], ['z'], pads=[1, 1, 1, 1])]
    last, shape = 'z', [1, classes_out, IN_H, IN_W]
    if kind == 'softmax':
        nodes.append(helper.make_node('Softmax', [last], ['s'], axis=1))
        last = 's'
    if layout == 'NHWC':
        nodes.append(helper.make_node('Transpose', [last], ['t'], perm=[0, 2, 3, 1]))
        last, shape = 't', [1, IN_H, IN_W, classes_out]
    if out_rank == 3:
        nodes.append(helper.make_node('ReduceMax', [last], ['r'], axes=[1], keepdims=0))
        last, shape = 'r', [1, IN_H, IN_W]
    nodes.append(helper.make_node('Identity', [last], ['probs']))
    graph = helper.make_graph(
        nodes, 'tiny', [helper.make_tensor_value_info('image', TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info('probs', TensorProto.FLOAT, shape)], [weight])
    onnx.save(tiny_model(graph), str(path))


def spec_for(layout='NCHW', kind='softmax', table=TABLE, **pre) -> ModelSpec:
    """Return the spec of the tiny model."""
    return ModelSpec(Preprocess(IN_W, IN_H, **pre), OutputSpec('probs', kind, layout), table)


def image(h=36, w=48, seed=0) -> np.ndarray:
    """Return a random RGB camera image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('layout', ['NCHW', 'NHWC'])
@pytest.mark.parametrize('kind', ['softmax', 'logits'])
def test_probs_at_camera_resolution(tmp_path, layout, kind):
    """A plain model yields a softmax (H, W, C) at the camera resolution, any layout/kind."""
    write_model(tmp_path / 'm.onnx', layout=layout, kind=kind)
    seg = load_segmenter(tmp_path / 'm.onnx', spec=spec_for(layout, kind))
    assert seg.input_size == (IN_W, IN_H) and seg.num_classes == C
    out = seg.infer(image())
    assert out.probs.shape == (36, 48, C)
    assert out.probs.dtype == np.float32
    np.testing.assert_allclose(out.probs.sum(-1), 1, atol=1e-5)
    assert out.probs.min() >= 0


def test_layouts_and_kinds_agree(tmp_path):
    """NHWC/logits exports of the same network give the same softmax as NCHW/softmax."""
    write_model(tmp_path / 'a.onnx')
    write_model(tmp_path / 'b.onnx', layout='NHWC', kind='logits')
    a = load_segmenter(tmp_path / 'a.onnx', spec=spec_for()).infer(image()).probs
    b = load_segmenter(tmp_path / 'b.onnx', spec=spec_for('NHWC', 'logits')).infer(image())
    np.testing.assert_allclose(a, b.probs, atol=1e-5)


def test_preprocess_declared_by_config():
    """Resize, scale, mean/std, BGR order and NHWC layout follow the declaration."""
    img = image(4, 6)
    pre = Preprocess(6, 4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    x = pre(img)
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 2], (img[..., 2] / 255.0 - 0.3) / 2.0, rtol=1e-6)
    bgr = Preprocess(6, 4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0), channel_order='BGR',
                     layout='NHWC')(img)
    assert bgr.shape == (1, 4, 6, 3)
    np.testing.assert_allclose(bgr[0, ..., 0], x[0, 2], rtol=1e-6)  # blue first
    assert Preprocess(3, 2)(img).shape == (1, 3, 2, 3)
    with pytest.raises(ValueError, match='RGB uint8'):
        pre(img.astype(np.float32))
    with pytest.raises(ValueError, match='layout'):
        Preprocess(6, 4, layout='CHW')
    with pytest.raises(ValueError, match='unknown keys'):
        Preprocess.from_dict({'width': 4, 'height': 4, 'colour': 'RGB'})


@pytest.mark.parametrize('order,layout', [('RGB', 'NCHW'), ('BGR', 'NHWC')])
@pytest.mark.parametrize('size', [(256, 512), (720, 1280), (2160, 3840)])
def test_preprocess_of_a_bgr_view_is_that_of_the_rgb_copy_bit_for_bit(size, order, layout):
    """A bgr8 frame read as a channel-reversed view gives the input of its RGB copy exactly.

    It is resized as BGR and reversed at the network's size; the lookup normalisation gives
    the same float32 values as ``(x * scale - mean) / std`` pixel by pixel.
    """
    rng = np.random.default_rng(size[0])
    bgr = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    view = bgr[:, :, ::-1]
    pre = Preprocess(512, 256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     channel_order=order, layout=layout)
    got = pre(view)
    np.testing.assert_array_equal(got, pre(np.ascontiguousarray(view)))
    small = resize_image(np.ascontiguousarray(view), (512, 256)).astype(np.float32)
    channels = [2, 1, 0] if order == 'BGR' else [0, 1, 2]
    mean = np.asarray(pre.mean, np.float32)[channels]
    std = np.asarray(pre.std, np.float32)[channels]
    expected = (small[:, :, channels] * np.float32(pre.scale) - mean) / std
    if layout == 'NCHW':
        expected = expected.transpose(2, 0, 1)
    np.testing.assert_array_equal(got[0], expected)


def test_resizing_labels_nearest_maps_bilinear():
    """Labels stay label values (nearest); maps are interpolated between their values."""
    labels = np.array([[0, 3], [7, 9]], np.uint8)
    big = Nearest.between(labels.shape, (4, 4)).labels(labels)
    assert set(np.unique(big)) == {0, 3, 7, 9}
    maps = resize_maps(np.array([[0, 1], [0, 1]], np.float32), (2, 8))
    assert 0 < maps[0, 3] < 1 and maps.shape == (2, 8)


@pytest.mark.parametrize('shape', [(5, 7), (5, 7, 1), (4, 9, 3), (6, 8, 19), (3, 3, 600)])
@pytest.mark.parametrize('size', [(5, 7), (10, 14), (11, 30), (2, 3), (3, 20)])
def test_resize_maps_is_pils_bilinear_at_any_size(shape, size):
    """Enlarged in OpenCV or resized in PIL, maps are PIL's bilinear maps; a softmax stays one.

    Enlarged sizes, shrunk sizes, mixed, one channel, many channels and more channels than
    OpenCV takes; the reference is PIL channel by channel.
    """
    from metafusion_ros.runtime.segmenter.preprocess import _resize_maps_pil

    logits = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    maps = np.exp(logits)
    if maps.ndim == 3:
        maps /= maps.sum(axis=2, keepdims=True)
    got = resize_maps(maps, size)
    assert got.shape == tuple(size) + shape[2:] and got.dtype == np.float32
    np.testing.assert_allclose(got, _resize_maps_pil(maps, size), atol=2e-6, rtol=1e-5)
    if maps.ndim == 3 and shape[2] > 1:
        np.testing.assert_allclose(got.sum(axis=2), 1, atol=1e-5)


def test_bad_models_fail_at_load_time(tmp_path):
    """Missing, corrupt, wrong-rank, wrong-class-count and wrong-input models: clear errors."""
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_segmenter(tmp_path / 'missing.onnx', spec=spec_for())
    (tmp_path / 'corrupt.onnx').write_bytes(b'\x08\x07not an onnx file')
    with pytest.raises(ValueError, match='corrupt.onnx: not a valid ONNX'):
        load_segmenter(tmp_path / 'corrupt.onnx', spec=spec_for())
    write_model(tmp_path / 'rank3.onnx', out_rank=3)
    with pytest.raises(ValueError, match='rank 3, expected 4'):
        load_segmenter(tmp_path / 'rank3.onnx', spec=spec_for())
    write_model(tmp_path / 'c5.onnx', classes_out=5)
    with pytest.raises(ValueError, match='has 5 classes'):
        load_segmenter(tmp_path / 'c5.onnx', spec=spec_for())
    write_model(tmp_path / 'm.onnx')
    with pytest.raises(ValueError, match='preprocess config declares'):
        load_segmenter(tmp_path / 'm.onnx', spec=ModelSpec(Preprocess(32, 24), table=TABLE))
    with pytest.raises(ValueError, match='no spec file'):
        load_segmenter(tmp_path / 'm.onnx')
    with pytest.raises(ValueError, match='unknown segmenter backend'):
        load_segmenter(tmp_path / 'm.onnx', backend='tflite', spec=spec_for())


def test_symbolic_class_count_checked_by_warm_up(tmp_path):
    """A model whose class dim is symbolic is still checked at load time (warm-up run)."""
    write_model(tmp_path / 'c5.onnx', classes_out=5)
    model = onnx.load(str(tmp_path / 'c5.onnx'))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = 'classes'
    onnx.save(model, str(tmp_path / 'sym.onnx'))
    with pytest.raises(ValueError, match='5 classes'):
        load_segmenter(tmp_path / 'sym.onnx', spec=spec_for())


def test_priors_class_mismatch_and_bad_spec_files(tmp_path):
    """Priors of another table, and malformed spec files, are load-time errors."""
    write_model(tmp_path / 'm.onnx')
    city = classes.cityscapes_table()
    wrong = Priors(np.full((4, 4, 19), 1 / 19, np.float32), city)
    with pytest.raises(ValueError, match='do not match'):
        load_segmenter(tmp_path / 'm.onnx', spec=spec_for(), priors=wrong)
    spec_for().save(tmp_path / 'm.json')
    assert load_segmenter(tmp_path / 'm.onnx').spec.table == TABLE
    (tmp_path / 'm.json').write_text(json.dumps({'output': {'name': 'probs'}}))
    with pytest.raises(ValueError, match='m.json: missing the "preprocess" section'):
        load_segmenter(tmp_path / 'm.onnx')
    (tmp_path / 'm.json').write_text('{"preprocess": [1, 2')
    with pytest.raises(ValueError, match='not valid JSON/YAML'):
        load_segmenter(tmp_path / 'm.onnx')
    (tmp_path / 'm.json').write_text(json.dumps(
        {'preprocess': {'width': IN_W, 'height': IN_H}, 'output': {'kind': 'argmax'}}))
    with pytest.raises(ValueError, match="'softmax' or 'logits'"):
        load_segmenter(tmp_path / 'm.onnx')
    (tmp_path / 'm.json').write_text(json.dumps(
        {'preprocess': {'width': IN_W, 'height': IN_H}, 'head': {'priors': 'constant'}}))
    with pytest.raises(ValueError, match='head is no longer supported'):
        load_segmenter(tmp_path / 'm.onnx')


@pytest.mark.parametrize('source,target', [((12, 16), (36, 48)), ((256, 512), (1080, 1920)),
                                           ((50, 70), (17, 23)), ((7, 9), (7, 30))])
def test_nearest_boxes_and_areas_are_those_of_the_resampled_map(source, target):
    """Areas mapped to the target are those of the candidates in the resampled map.

    So are the boxes when enlarging; when shrinking they hold the sampled pixels.
    """
    from metafusion_ros.core.segments import disagreeing_candidates
    from metafusion_ros.runtime.segmenter.preprocess import Nearest

    rng = np.random.default_rng(sum(source))
    blobs = rng.random((source[0] // 3 + 1, source[1] // 3 + 1)) < 0.3
    pred_ml = np.kron(blobs, np.ones((3, 3), np.uint8))[:source[0], :source[1]].astype(np.uint8)
    candidates = disagreeing_candidates(pred_ml, np.zeros_like(pred_ml), 1)
    assert candidates.count > 0
    nearest = Nearest.between(source, target)
    enlarging = target[0] >= source[0] and target[1] >= source[1]
    resampled = nearest.labels(pred_ml)
    assert resampled.shape == target
    np.testing.assert_array_equal(resampled, pred_ml[np.ix_(nearest.rows, nearest.cols)])
    big = candidates.labels[np.ix_(nearest.rows, nearest.cols)]  # the candidates resampled
    boxes = nearest.boxes(candidates.boxes)
    areas = nearest.areas(candidates.pixels, candidates.pixel_ids, candidates.count)
    for k in range(1, candidates.count + 1):
        rows, cols = np.nonzero(big == k)
        assert areas[k - 1] == rows.size
        r0, c0, r1, c1 = boxes[k - 1]
        if enlarging:
            assert [r0, c0, r1, c1] == [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
        elif rows.size:  # shrinking: the box holds the sampled pixels
            assert r0 <= rows.min() and rows.max() < r1 and c0 <= cols.min() and cols.max() < c1
        else:  # no target pixel samples this candidate
            assert r0 == r1 or c0 == c1


@pytest.mark.parametrize('size,exact', [((512, 1024), True), ((1080, 1920), True),
                                        ((2160, 3840), False)])
def test_preprocess_reduces_only_large_images_first(size, exact):
    """Below 3x the input size the resize is PIL's exact bilinear.

    A 4K frame is box-reduced first and stays within a few grey levels of it (sharp 16-pixel
    blocks here).
    """
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (size[0] // 16 + 1, size[1] // 16 + 1, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(np.kron(coarse, np.ones((16, 16, 1), np.uint8))[:size[0],
                                                                               :size[1]])
    pre = Preprocess(512, 256, scale=1.0)  # the shipped models' input size
    reference = np.asarray(PILImage.fromarray(rgb).resize((pre.width, pre.height),
                                                          PILImage.BILINEAR), np.float32)
    got = pre(rgb)[0].transpose(1, 2, 0)
    if exact:
        np.testing.assert_array_equal(got, reference)
    else:
        error = np.abs(got - reference)
        assert 0 < error.max() <= 4 and error.mean() < 0.5, (error.max(), error.mean())


@pytest.mark.parametrize('size', [(2160, 3840), (4320, 7680), (2160, 3841), (1440, 2560),
                                  (3000, 2000)])
def test_resize_image_is_pils_reducing_resize(size):
    """The OpenCV 2x2 reduction gives exactly PIL's reduce-then-bilinear result.

    4K, 8K, factors that do not divide the size, no reduction, a portrait frame.
    """
    from PIL import Image as PILImage

    from metafusion_ros.runtime.segmenter.preprocess import REDUCING_GAP, resize_image

    rgb = np.random.default_rng(sum(size)).integers(0, 256, size + (3,), dtype=np.uint8)
    expected = PILImage.fromarray(rgb).resize((512, 256), PILImage.BILINEAR,
                                              reducing_gap=REDUCING_GAP)
    np.testing.assert_array_equal(resize_image(rgb, (512, 256)), np.asarray(expected))


def test_cuda_backend_refuses_to_fall_back_to_the_cpu(tmp_path, monkeypatch):
    """``onnxruntime-cuda`` runs on the CUDA provider or fails with one line saying why."""
    import onnxruntime as ort
    write_model(tmp_path / 'm.onnx')
    if 'CUDAExecutionProvider' in ort.get_available_providers():  # onnxruntime-gpu on a GPU
        segmenter = load_segmenter(tmp_path / 'm.onnx', backend='onnxruntime-cuda',
                                   spec=spec_for())
        assert segmenter.providers[0] == 'CUDAExecutionProvider'
        return
    with pytest.raises(ValueError, match='needs onnxruntime-gpu; this ONNX Runtime .* offers .*'
                                         'CPUExecutionProvider'):
        load_segmenter(tmp_path / 'm.onnx', backend='onnxruntime-cuda', spec=spec_for())
    # A CUDA provider listed but not started (libraries missing): ONNX Runtime runs on the CPU.
    available = ['CUDAExecutionProvider', *ort.get_available_providers()]
    monkeypatch.setattr(ort, 'get_available_providers', lambda: available)
    with pytest.raises(ValueError, match='could not start its CUDA provider'):
        load_segmenter(tmp_path / 'm.onnx', backend='onnxruntime-cuda', spec=spec_for())
    assert load_segmenter(tmp_path / 'm.onnx', spec=spec_for()).providers[0] == (
        'CPUExecutionProvider')
