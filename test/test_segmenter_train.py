"""Training code (optional PyTorch extra): network, class weights, export, a tiny real run.

Without PyTorch every test here is skipped by the ``torch`` fixture (never at module level: a
ROS install's launch_testing plugin imports every test module at collection, and a module-level
skip there would skip the whole test directory).
"""
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from metafusion_ros.core.classes import camvid_table

CAMVID = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'camvid'


@pytest.fixture(scope='module')
def torch() -> ModuleType:
    """Return PyTorch, or skip the test where the optional train extra is not installed."""
    return pytest.importorskip('torch', reason='PyTorch (the optional train extra) not installed')


def test_streetnet_shapes_and_size(torch):
    """Logits at the input resolution for odd sizes; the default net stays small (< 2 M)."""
    from metafusion_ros.tools.training.net import count_parameters, StreetNet

    net = StreetNet(11).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 45, 61)).shape == (1, 11, 45, 61)
    assert count_parameters(net) < 2_000_000


def test_class_weights_favour_rare_classes(torch):
    """Weigh rare classes more (ENet: 1 / ln(1.02 + f)); ignore is not counted."""
    from metafusion_ros.tools.training.train import class_weights

    labels = np.array([0] * 90 + [1] * 10 + [255] * 50, np.uint8)
    w = class_weights(labels, 3, 255)
    assert w[1] > w[0] and w[2] == pytest.approx(1 / np.log(1.02))


def test_tiny_training_run_exports_a_loadable_model(torch, tmp_path):
    """A few steps on 8 CamVid images: ONNX + JSON with scores, loadable by the segmenter."""
    from metafusion_ros.runtime.segmenter import load_segmenter
    from metafusion_ros.tools.training.train import TrainConfig, train

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


def test_group_iou_reads_merged_classes_as_one(torch):
    """Score person + rider as human: confusions between them are not errors."""
    from metafusion_ros.core.evaluation import group_iou

    conf = np.array([[50, 0, 5], [0, 10, 2], [5, 3, 20]])  # rows: gt; classes 0, 1, 2
    assert group_iou(conf, [1, 2]) == pytest.approx((10 + 2 + 3 + 20) / (35 + 5 + 5))
