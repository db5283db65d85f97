"""The committed models load, are small, record their scores, and really segment."""
from pathlib import Path

import numpy as np
import pytest

from metafusion_ros.core.classes import camvid_table
from metafusion_ros.core.evaluation import confusion, iou_per_class
from metafusion_ros.runtime.segmenter import load_segmenter
from metafusion_ros.tools.data.camvid import iter_camvid

MODELS = Path(__file__).resolve().parents[1] / 'models'
CAMVID = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'camvid'


@pytest.mark.parametrize('name, table', [('camvid', 'camvid'), ('synthetic_toy', 'cityscapes')])
def test_committed_model_loads_with_its_record(name, table):
    """Each committed model has a spec with its class table, training record and scores."""
    path = MODELS / f'{name}.onnx'
    if not path.is_file():
        pytest.skip(f'{path} not committed yet')
    assert path.stat().st_size < 8 << 20
    seg = load_segmenter(path)
    assert seg.spec.table.name == table
    record = seg.spec.extra
    assert record['architecture']['parameters'] < 2_000_000
    assert record['training']['epochs_done'] >= 1
    for split in ('val', 'test'):
        assert 0.0 < record['scores'][split]['miou'] <= 1.0
    out = seg.infer(np.zeros((100, 130, 3), np.uint8))
    assert out.probs.shape == (100, 130, seg.num_classes)


def test_camvid_model_segments_real_test_frames():
    """On three CamVid test frames the model's pixel accuracy is far above chance."""
    path = MODELS / 'camvid.onnx'
    if not path.is_file():
        pytest.skip(f'{path} not committed yet')
    if not CAMVID.is_dir():
        pytest.skip(f'CamVid not beside the checkout: {CAMVID}')
    seg = load_segmenter(path)
    table = camvid_table()
    conf = np.zeros((11, 11), np.int64)
    for k, frame in enumerate(iter_camvid(CAMVID, 'test', table)):
        if k == 3:
            break
        pred = seg.infer(frame.image).probs.argmax(-1).astype(np.uint8)
        conf += confusion(pred, frame.labels, table)
    assert np.trace(conf) / conf.sum() > 0.75
    assert np.nanmean(iou_per_class(conf)) > 0.3
