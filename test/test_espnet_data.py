"""Label mappings, category priors from CamVid labels, ``metafusion miou`` and the shipped ESPNets.

No PyTorch needed: the shipped networks run through ONNX Runtime.
"""
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
from PIL import Image
import pytest
from tiny_onnx import tiny_model

from metafusion_ros.core.classes import camvid_table, ClassTable, cityscapes_table
from metafusion_ros.core.mapping import (CAMVID_TO_CITYSCAPES, CITYSCAPES_TO_CAMVID,
                                         LabelMapping, mapping_between)
from metafusion_ros.core.priors import estimate_priors, Priors
from metafusion_ros.runtime.segmenter import load_segmenter
from metafusion_ros.runtime.segmenter.preprocess import Preprocess
from metafusion_ros.runtime.segmenter.spec import ModelSpec, OutputSpec
from metafusion_ros.tools.cli import main
from metafusion_ros.tools.data.datasets import open_dataset
from metafusion_ros.tools.training.scoring import score_splits, target_group

MODELS = Path(__file__).resolve().parents[1] / 'models'
CAMVID, CITY = camvid_table(), cityscapes_table()
H, W = 36, 48


def write_camvid(root: Path, split: str, labels: list[np.ndarray]) -> Path:
    """Write a CamVid-layout split (random images, the given label maps) under ``root``."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f'{split}annot').mkdir(exist_ok=True)
    rng = np.random.default_rng(len(labels))
    for i, lab in enumerate(labels):
        name = f'0001TP_{8550 + 30 * i:06d}.png'
        Image.fromarray(rng.integers(0, 256, lab.shape + (3,), dtype=np.uint8)).save(
            root / split / name)
        Image.fromarray(lab).save(root / f'{split}annot' / name)
    return root


def random_labels(n: int, seed: int = 0) -> list[np.ndarray]:
    """Return ``n`` CamVid label maps with every class and void."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 12, (H, W), dtype=np.uint8) for _ in range(n)]


def constant_model(path: Path, table: ClassTable, winner: int) -> None:
    """Write an ONNX model whose softmax picks class ``winner`` everywhere, with its spec."""
    c = table.num_classes
    bias = np.zeros(c, np.float32)
    bias[winner] = 5.0
    nodes = [helper.make_node('Conv', ['image', 'w', 'b'], ['z']),
             helper.make_node('Softmax', ['z'], ['probs'], axis=1)]
    graph = helper.make_graph(
        nodes, 'constant', [helper.make_tensor_value_info('image', TensorProto.FLOAT,
                                                          [1, 3, 8, 8])],
        [helper.make_tensor_value_info('probs', TensorProto.FLOAT, [1, c, 8, 8])],
        [numpy_helper.from_array(np.zeros((c, 3, 1, 1), np.float32), 'w'),
         numpy_helper.from_array(bias, 'b')])
    onnx.save(tiny_model(graph), str(path))
    ModelSpec(Preprocess(8, 8), OutputSpec('probs', 'softmax', 'NCHW'), table).save(
        path.with_suffix('.json'))


def test_camvid_categories_are_those_of_the_mapped_cityscapes_classes():
    """Each CamVid class lies in the Cityscapes category of the class it is read as."""
    for camvid_class, city_class in enumerate(CAMVID_TO_CITYSCAPES.to):
        assert CAMVID.category_of_class[camvid_class] == CITY.category_of_class[city_class]
    assert CAMVID.category_names == CITY.category_names
    assert [CAMVID.class_names[c] for c in target_group(CAMVID)] == ['Pedestrian', 'Bicyclist']
    assert [CITY.class_names[c] for c in target_group(CITY)] == ['person', 'rider']
    rows = dict(CITYSCAPES_TO_CAMVID.rows())
    assert rows['rider'] == 'Bicyclist' and rows['terrain'] == 'Tree' and rows['bus'] == 'Car'


def test_mapping_applies_and_names_values_outside_it():
    """Labels map class by class and ignore to ignore; other values name the file."""
    labels = np.array([[0, 9, 10, 11]], np.uint8)
    np.testing.assert_array_equal(CAMVID_TO_CITYSCAPES.apply(labels), [[10, 11, 12, 255]])
    with pytest.raises(ValueError, match=r'^x.png: label value 12 is not in the mapping '
                                         r'camvid->cityscapes \(classes 0..10, ignore 11\)$'):
        CAMVID_TO_CITYSCAPES.apply(np.array([[3, 12, 40]], np.uint8), 'x.png')
    assert mapping_between(CAMVID, camvid_table()) is None
    assert mapping_between(CITY, CAMVID).name == 'cityscapes->camvid'
    three = ClassTable('three', ('a', 'b', 'c'), 255, 0, ((0, 0, 0),) * 3)
    with pytest.raises(ValueError, match='no label mapping'):
        mapping_between(three, CAMVID)
    with pytest.raises(ValueError, match='target ids outside'):
        LabelMapping(CAMVID, three, (5,) * 11)


def test_category_priors_agree_in_both_class_spaces(tmp_path):
    """Priors from CamVid labels read as Cityscapes trainIds equal the CamVid ones per category."""
    root = write_camvid(tmp_path, 'train', random_labels(3))
    as_camvid = estimate_priors(open_dataset('camvid', root, 'train', images=False).label_maps(),
                                CAMVID, categories=True, smoothing=60)
    as_city = estimate_priors(
        open_dataset('camvid', root, 'train', CITY, images=False).label_maps(), CITY,
        categories=True, smoothing=60)
    np.testing.assert_allclose(as_camvid.probs, as_city.probs, atol=1e-7)
    human = CITY.category_names.index('human')
    labels = random_labels(3)
    share = np.mean([np.isin(lab, (9, 10)) for lab in labels], axis=0)
    valid = np.sum([lab != 11 for lab in labels], axis=0)
    frequency = sum(np.isin(lab, (9, 10)).sum() for lab in labels) / valid.sum()
    expected = (share * 3 + 60 * frequency) / (valid + 60)
    np.testing.assert_allclose(as_city.probs[..., human], expected, atol=1e-6)


def test_priors_command_records_where_they_came_from(tmp_path, capsys):
    """`priors --table cityscapes` reads CamVid through the mapping, records the label digest."""
    root = write_camvid(tmp_path / 'd', 'train', random_labels(2))
    out = tmp_path / 'p.npz'
    args = ['priors', '--dataset', 'camvid', '--root', str(root), '--split', 'train',
            '--categories', '--smoothing', '60', '--table', 'cityscapes', '--out', str(out)]
    assert main(args) == 0
    priors = Priors.load(out)
    first = priors.provenance
    assert priors.table.name == 'cityscapes' and priors.level == 'category'
    assert first['labels_read_as'] == 'camvid->cityscapes' and first['smoothing'] == 60
    assert first['split'] == 'train' and first['label_files'] == 2
    labels = random_labels(2)
    labels[1][0, 0] = (labels[1][0, 0] + 1) % 11
    write_camvid(root, 'train', labels)
    assert main(args + ['--force']) == 0  # over the first priors
    assert Priors.load(out).provenance['labels_sha256'] != first['labels_sha256']
    assert Priors.load(out).resized((9, 12)).provenance == Priors.load(out).provenance


@pytest.mark.parametrize('table', [None, 'cityscapes'])
def test_label_values_outside_the_mapping_are_one_line(tmp_path, capsys, table):
    """A label value outside the table or mapping stops the command: one line naming it."""
    labels = random_labels(1)
    labels[0][5, 5] = 12
    root = write_camvid(tmp_path, 'train', labels)
    extra = [] if table is None else ['--table', table]
    assert main(['priors', '--dataset', 'camvid', '--root', str(root), '--split', 'train',
                 '--categories', '--out', str(tmp_path / 'p.npz'), *extra]) == 2
    err = _error_line(capsys.readouterr().err)
    assert 'trainannot/0001TP_008550.png: label value' in err and ' 12 ' in err
    assert main(['miou', '--dataset', 'camvid', '--root', str(root), '--split', 'train',
                 '--model', str(MODELS / 'camvid_espnet.onnx')]) == 2
    assert '0001TP_008550.png: label values 12' in _error_line(capsys.readouterr().err)


def _error_line(err: str) -> str:
    """Return the one error line of a command's stderr (progress bars aside), no traceback."""
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if ': error: ' in line]
    assert len(lines) == 1
    return lines[0]


def test_score_splits_counts_pixels_per_split_and_overall():
    """mIoU, per-class and human IoU of a known prediction, per split and together."""
    labels = np.array([[9, 9, 10, 3], [3, 3, 11, 0]], np.uint8)
    pred = np.array([[9, 10, 10, 3], [3, 0, 9, 0]], np.uint8)

    class Frame:
        image, table = None, CAMVID

    frame = Frame()
    frame.labels = labels
    source = [frame]
    scores = score_splits(lambda image: pred, {'a': _Source(source), 'b': _Source(source * 2)},
                          None, progress=False)
    iou = scores['all']['iou']
    assert iou['Pedestrian'] == pytest.approx(1 / 2) and iou['Bicyclist'] == pytest.approx(1 / 2)
    assert iou['Road'] == pytest.approx(2 / 3) and iou['Sky'] == pytest.approx(1 / 2)
    assert iou['Car'] is None
    assert scores['all']['target_group_iou'] == pytest.approx(3 / 3)
    assert scores['all']['miou'] == pytest.approx(np.mean([1 / 2, 1 / 2, 2 / 3, 1 / 2]))
    assert scores['a']['images'] == 1 and scores['b']['images'] == 2
    assert scores['all']['images'] == 3


class _Source(list):
    """A list of frames standing in for a FrameSource (its table and length)."""

    table = CAMVID


def test_miou_command_maps_a_cityscapes_network_into_camvid(tmp_path, capsys):
    """A network always saying 'rider' scores Bicyclist IoU = its pixel share, on one drive."""
    labels = random_labels(2)
    root = write_camvid(tmp_path / 'd', 'test', labels)
    constant_model(tmp_path / 'rider.onnx', CITY, CITY.index('rider'))
    out = tmp_path / 'scores.json'
    assert main(['miou', '--dataset', 'camvid', '--root', str(root), '--split', 'test',
                 '--model', str(tmp_path / 'rider.onnx'), '--out', str(out)]) == 0
    assert 'predictions mapped cityscapes->camvid' in capsys.readouterr().out
    report = json.loads(out.read_text())
    stacked = np.stack(labels)
    valid = (stacked != 11).sum()
    scores = report['all']
    assert scores['iou']['Bicyclist'] == pytest.approx((stacked == 10).sum() / valid)
    assert scores['iou']['Pedestrian'] == 0 and scores['images'] == 2
    assert scores['target_group_iou'] == pytest.approx(np.isin(stacked, (9, 10)).sum() / valid)
    assert report['mapping'] == 'cityscapes->camvid' and report['input_size'] == [8, 8]
    three = ClassTable('three', ('a', 'b', 'c'), 255, 0, ((0, 0, 0),) * 3)
    constant_model(tmp_path / 'three.onnx', three, 1)
    assert main(['miou', '--dataset', 'camvid', '--root', str(root), '--split', 'test',
                 '--model', str(tmp_path / 'three.onnx')]) == 2
    assert 'no label mapping' in capsys.readouterr().err


V2 = ['cityscapes_espnetv2_s2_768x384', 'cityscapes_espnetv2_s2_512x256',
      'cityscapes_espnetv2_s1p5']


@pytest.mark.parametrize('name,classes,size,family', [
    ('cityscapes_espnet', 19, (1024, 512), 'ESPNet'), ('camvid_espnet', 11, (480, 360), 'ESPNet'),
    (V2[0], 19, (768, 384), 'ESPNetv2'), (V2[1], 19, (512, 256), 'ESPNetv2'),
    (V2[2], 19, (384, 192), 'ESPNetv2')])
def test_shipped_espnets_load_and_carry_their_provenance(name, classes, size, family):
    """The shipped models load unchanged, give a softmax over the real classes, name sources."""
    seg = load_segmenter(MODELS / f'{name}.onnx')
    assert seg.num_classes == classes and seg.input_size == size
    probs = seg.infer(np.full((60, 80, 3), 128, np.uint8)).probs
    assert probs.shape == (60, 80, classes)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    extra = seg.spec.extra
    assert extra['void_output']['index'] == classes
    assert extra['architecture']['name'] == family
    assert extra['check']['max_abs_diff_torch_onnxruntime'] < 1e-4
    licence = extra['pretrained']['licence']
    assert 'MIT' in (MODELS / licence.split('see ')[-1]).read_text()


@pytest.mark.parametrize('name', V2)
def test_shipped_espnetv2_scores_belong_to_the_shipped_files(name):
    """Each shipped ESPNetv2's CamVid val + test scores were measured on that very file.

    ``docs/results/camvid_<model>_miou.json`` is what ``metafusion miou --out`` wrote; its digest
    must be the shipped file's, and its human IoU above the shipped ESPNet's 21.0.
    """
    from metafusion_ros.runtime.segmenter.base import file_sha256
    report = json.loads((MODELS.parent / 'docs' / 'results' / f'camvid_{name}_miou.json')
                        .read_text())
    assert report['model_sha256'] == file_sha256(MODELS / f'{name}.onnx')
    assert report['splits'] == ['val', 'test'] and report['all']['images'] == 163
    assert report['mapping'] == 'cityscapes->camvid'
    assert report['all']['target_group_iou'] > 0.21


@pytest.mark.parametrize('model,priors', [('cityscapes_espnet', 'cityscapes_category_priors'),
                                          ('camvid_espnet', 'camvid_category_priors'),
                                          ('camvid', 'camvid_category_priors')])
def test_shipped_category_priors_fit_their_network(shared_dir, model, priors):
    """Each network's category priors come from the CamVid train labels in ../shared (λ = 60)."""
    loaded = Priors.load(MODELS / f'{priors}.npz')
    assert loaded.level == 'category' and loaded.provenance['smoothing'] == 60
    assert loaded.provenance['split'] == 'train' and loaded.num_images == 367
    train = open_dataset('camvid', shared_dir / 'data' / 'camvid', 'train', loaded.table,
                         images=False)
    assert loaded.provenance['labels_sha256'] == train.labels_sha256()
    seg = load_segmenter(MODELS / f'{model}.onnx', priors=loaded)  # classes checked at load
    human = loaded.table.category_names.index('human')
    targets = [loaded.table.class_names[c] for c in target_group(loaded.table)]
    assert targets in (['person', 'rider'], ['Pedestrian', 'Bicyclist'])
    assert seg.num_classes == loaded.table.num_classes
    assert 0.05 < loaded.probs[..., human].max() < 0.5


@pytest.mark.parametrize('name,floor', [('camvid_espnet', 0.45), ('cityscapes_espnet', 0.2),
                                        *((v2, 0.35) for v2 in V2)])
def test_shipped_espnets_segment_real_camvid_frames(shared_dir, tmp_path, name, floor):
    """On three CamVid test frames every network segments far above chance (one drive)."""
    out = tmp_path / 'scores.json'
    assert main(['miou', '--dataset', 'camvid', '--root', str(shared_dir / 'data' / 'camvid'),
                 '--split', 'test', '--limit', '3', '--model', str(MODELS / f'{name}.onnx'),
                 '--out', str(out)]) == 0
    scores = json.loads(out.read_text())['test']
    assert scores['images'] == 3 and scores['miou'] > floor
    assert scores['iou']['Road'] > 0.6
