"""Training code (optional PyTorch extra): network, class weights, export, a tiny real run."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='PyTorch (the optional train extra) not installed')

from metafusion_ros.core.classes import camvid_table  # noqa: E402
from metafusion_ros.segmenter import load_segmenter  # noqa: E402
from metafusion_ros.segmenter.net import count_parameters, StreetNet  # noqa: E402
from metafusion_ros.segmenter.train import (  # noqa: E402
    class_weights, group_iou, TrainConfig, train)

CAMVID = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'camvid'


def test_streetnet_shapes_and_size():
    """Logits at the input resolution for odd sizes; the default net stays small (< 2 M)."""
    net = StreetNet(11).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 45, 61)).shape == (1, 11, 45, 61)
    assert count_parameters(net) < 2_000_000


def test_class_weights_favour_rare_classes():
    """Weigh rare classes more (ENet: 1 / ln(1.02 + f)); ignore is not counted."""
    labels = np.array([0] * 90 + [1] * 10 + [255] * 50, np.uint8)
    w = class_weights(labels, 3, 255)
    assert w[1] > w[0] and w[2] == pytest.approx(1 / np.log(1.02))


def test_tiny_training_run_exports_a_loadable_model(tmp_path):
    """A few steps on 8 CamVid images: ONNX + JSON with scores, loadable by the segmenter."""
    if not CAMVID.is_dir():
        pytest.skip(f'CamVid not beside the checkout: {CAMVID}')
    torch.manual_seed(0)
    cfg = TrainConfig(dataset='camvid', root=str(CAMVID), output=str(tmp_path / 'c.onnx'),
                      input_size=(96, 72), crop_size=(64, 48), widths=(4, 8, 8, 8),
                      batch_size=4, epochs=1, val_every=1, max_images=8, threads=1)
    spec = train(cfg, camvid_table())
    assert set(spec['scores']) == {'val', 'test'}
    assert 0.0 <= spec['scores']['test']['miou'] <= 1.0
    seg = load_segmenter(tmp_path / 'c.onnx')
    out = seg.infer(np.zeros((360, 480, 3), np.uint8))
    assert out.probs.shape == (360, 480, 11)
    assert spec['training']['epochs_done'] == 1 and (tmp_path / 'c.ckpt' / 'best.pt').is_file()


def test_group_iou_reads_merged_classes_as_one():
    """Score person + rider as human: confusions between them are not errors."""
    conf = np.array([[50, 0, 5], [0, 10, 2], [5, 3, 20]])  # rows: gt; classes 0, 1, 2
    assert group_iou(conf, [1, 2]) == pytest.approx((10 + 2 + 3 + 20) / (35 + 5 + 5))
