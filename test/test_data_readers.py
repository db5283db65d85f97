"""Cityscapes and CamVid readers: round trip, real CamVid drives, and every bad input."""
from pathlib import Path
import shutil

import numpy as np
from PIL import Image
import pytest

from metafusion_ros.core.classes import camvid_table, ClassTable, cityscapes_labelid_lut
from metafusion_ros.tools.data.camvid import iter_camvid
from metafusion_ros.tools.data.cityscapes import (cityscapes_paths, iter_cityscapes,
                                                  iter_cityscapes_sequence)
from metafusion_ros.tools.data.datasets import open_dataset, parse_size
from metafusion_ros.tools.data.frame import DatasetError
from metafusion_ros.tools.data.synth import CITY, generate_drives, render_drive

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
CAMVID = SHARED / 'data' / 'camvid'
SIZE = (96, 48)
FRAMES = 3


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    """Write a tiny synthetic data set: one drive each in train and val."""
    root = tmp_path_factory.mktemp('synth')
    generate_drives(root, {'train': 1, 'val': 1}, FRAMES, SIZE, seed=5)
    return root


def _copy(src: Path, dst: Path) -> Path:
    """Copy a data set so a test can break it."""
    shutil.copytree(src, dst)
    return dst


def test_synthetic_drive_round_trips_through_the_cityscapes_reader(synth_root):
    """The reader returns exactly the pixels and labels (as trainIds) the generator wrote."""
    frames = list(iter_cityscapes(synth_root, 'train'))
    expected = list(render_drive(5, 'train', 0, FRAMES, SIZE))
    assert len(frames) == FRAMES
    lut = cityscapes_labelid_lut()
    for frame, (index, image, label_ids) in zip(frames, expected):
        assert frame.sequence == f'{CITY}_000000' and frame.index == index
        assert frame.name == f'{CITY}_000000_{index:06d}_leftImg8bit.png'
        np.testing.assert_array_equal(frame.image, image)
        np.testing.assert_array_equal(frame.labels, lut[label_ids])
        np.testing.assert_array_equal(frame.ignore, lut[label_ids] == 255)
        assert frame.image.shape == (SIZE[1], SIZE[0], 3) and frame.image.dtype == np.uint8
        assert frame.labels.dtype == np.uint8
        assert frame.ignore.any(), 'the ego vehicle is labelled and must be ignore'
    first_label = cityscapes_paths(synth_root, 'train', CITY, 0, 0)[1]
    trainids = np.asarray(Image.open(first_label.with_name(
        f'{CITY}_000000_000000_gtFine_labelTrainIds.png')))
    np.testing.assert_array_equal(trainids, frames[0].labels)


def test_labels_only_reading_skips_pixels_but_keeps_labels(synth_root):
    """With images=False the labels are the same and the source is sized."""
    full = list(iter_cityscapes(synth_root, 'val'))
    light = iter_cityscapes(synth_root, 'val', images=False)
    assert len(light) == FRAMES
    for a, b in zip(full, light):
        assert b.image is None
        np.testing.assert_array_equal(a.labels, b.labels)
    maps = light.label_maps()
    assert len(maps) == FRAMES and len(list(maps)) == FRAMES


def test_sequence_layout_has_no_labels_and_keeps_frame_order(synth_root, tmp_path):
    """leftImg8bit_sequence frames come unlabelled, ordered by frame number."""
    for frame in (2, 0, 1):
        src = cityscapes_paths(synth_root, 'train', CITY, 0, frame)[0]
        dst = tmp_path / 'leftImg8bit_sequence' / 'train' / 'aachen' / \
            f'aachen_000007_{19 + frame:06d}_leftImg8bit.png'
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    frames = list(iter_cityscapes_sequence(tmp_path, 'train'))
    assert [f.index for f in frames] == [19, 20, 21]
    assert all(f.labels is None and f.ignore is None for f in frames)
    assert {f.sequence for f in frames} == {'aachen_000007'}
    with pytest.raises(DatasetError, match='frame has no label map'):
        list(iter_cityscapes_sequence(tmp_path, 'train').label_maps())


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f'shared CamVid data absent ({CAMVID})')
def test_camvid_splits_have_the_documented_frames_and_drives():
    """The CamVid splits have 367/101/62 frames in the documented drives, in frame order."""
    expected = {'train': (367, {'0001TP': 62, '0006R0': 101, '0016E5': 204}),
                'val': (101, {'0016E5': 101}), 'test': (62, {'0001TP': 62})}
    for split, (count, drives) in expected.items():
        source = iter_camvid(CAMVID, split, images=False)
        assert len(source) == count
        seen = {}
        for item in source.files:
            seen[item.sequence] = seen.get(item.sequence, 0) + 1
        assert seen == drives
        for drive in drives:
            indices = [f.index for f in source.files if f.sequence == drive]
            assert indices == sorted(indices) and len(set(indices)) == len(indices)
    frame = next(iter(iter_camvid(CAMVID, 'val')))
    assert frame.image.shape == (360, 480, 3) and frame.labels.shape == (360, 480)
    np.testing.assert_array_equal(frame.ignore, frame.labels == camvid_table().ignore_label)


def test_open_dataset_and_parse_size():
    """Unknown dataset names and malformed sizes are refused."""
    with pytest.raises(ValueError, match='unknown dataset'):
        open_dataset('kitti', '.', 'train')
    assert parse_size('1024x512') == (1024, 512)
    for bad in ('1024', 'x512', '0x5', 'axb'):
        with pytest.raises(ValueError, match='WIDTHxHEIGHT'):
            parse_size(bad)


# -- bad input ------------------------------------------------------------------------------

def test_missing_and_empty_folders_are_named(tmp_path):
    """A missing or empty split folder is an error naming the folder."""
    with pytest.raises(DatasetError, match=f'{tmp_path / "gtFine" / "train"}.*does not exist'):
        iter_cityscapes(tmp_path, 'train')
    (tmp_path / 'gtFine' / 'train').mkdir(parents=True)
    (tmp_path / 'leftImg8bit' / 'train' / 'city').mkdir(parents=True)
    with pytest.raises(DatasetError, match='leftImg8bit/train.*holds no'):
        iter_cityscapes(tmp_path, 'train')
    with pytest.raises(DatasetError, match=f'{tmp_path / "train"}.*does not exist'):
        iter_camvid(tmp_path, 'train')
    (tmp_path / 'val').mkdir()
    with pytest.raises(DatasetError, match=f'{tmp_path / "val"}.*holds no'):
        iter_camvid(tmp_path, 'val')


def test_image_without_label_is_named_or_skipped(synth_root, tmp_path):
    """An image without label is named, or skipped and counted with skip_bad."""
    root = _copy(synth_root, tmp_path / 'd')
    image, label = cityscapes_paths(root, 'train', CITY, 0, 1)
    label.unlink()
    with pytest.raises(DatasetError, match=f'{image}: image has no label map {label}'):
        iter_cityscapes(root, 'train')
    source = iter_cityscapes(root, 'train', skip_bad=True)
    assert len(source) == FRAMES - 1
    assert source.skipped == [(str(image), f'{image}: image has no label map {label}')]


def test_label_of_another_size_is_named(synth_root, tmp_path):
    """A label map whose size differs from its image is named."""
    root = _copy(synth_root, tmp_path / 'd')
    label = cityscapes_paths(root, 'train', CITY, 0, 2)[1]
    Image.fromarray(np.full((10, 20), 7, np.uint8)).save(label)
    with pytest.raises(DatasetError, match=f'{label}: label map is 20x10 but its image'):
        list(iter_cityscapes(root, 'train'))
    source = iter_cityscapes(root, 'train', skip_bad=True)
    assert len(list(source)) == FRAMES - 1 and len(source.skipped) == 1


def test_unknown_label_values_are_named(synth_root, tmp_path):
    """Label ids outside the official table are named with the file."""
    root = _copy(synth_root, tmp_path / 'd')
    label = cityscapes_paths(root, 'train', CITY, 0, 0)[1]
    raw = np.asarray(Image.open(label)).copy()
    raw[0, :3] = 40
    Image.fromarray(raw).save(label)
    with pytest.raises(DatasetError, match=f'{label}: labelIds 40 are not Cityscapes'):
        list(iter_cityscapes(root, 'train'))


def test_unreadable_and_wrong_mode_pngs_are_named(synth_root, tmp_path):
    """Broken PNGs and RGB label PNGs are named (or skipped and counted)."""
    root = _copy(synth_root, tmp_path / 'd')
    image, label = cityscapes_paths(root, 'train', CITY, 0, 0)
    image.write_bytes(b'not a png at all')
    with pytest.raises(DatasetError, match=f'{image}: unreadable PNG'):
        list(iter_cityscapes(root, 'train'))
    with pytest.raises(DatasetError, match=f'{image}: unreadable PNG'):
        list(iter_cityscapes(root, 'train', images=False))
    image2, label2 = cityscapes_paths(root, 'train', CITY, 0, 1)
    Image.fromarray(np.zeros((SIZE[1], SIZE[0], 3), np.uint8)).save(label2)
    source = iter_cityscapes(root, 'train', skip_bad=True)
    assert len(list(source)) == FRAMES - 2
    reasons = dict(source.skipped)
    assert 'unreadable PNG' in reasons[str(image)]
    assert 'must be 8-bit single channel' in reasons[str(image2)]


def test_bad_names_and_tables_are_rejected(synth_root, tmp_path):
    """File names outside the layout and class tables of another data set are refused."""
    root = _copy(synth_root, tmp_path / 'd')
    odd = root / 'leftImg8bit' / 'train' / CITY / 'frame_leftImg8bit.png'
    shutil.copy(cityscapes_paths(root, 'train', CITY, 0, 0)[0], odd)
    with pytest.raises(DatasetError, match=f'{odd}: not a Cityscapes image name'):
        iter_cityscapes(root, 'train')
    with pytest.raises(ValueError, match='19 trainIds'):
        iter_cityscapes(synth_root, 'train', camvid_table())
    three = ClassTable('three', ('a', 'b', 'c'), 255, 0, ((0, 0, 0),) * 3)
    with pytest.raises(ValueError, match="no label mapping from the classes of table 'camvid'"):
        iter_camvid(synth_root, 'train', three)


def _camvid(tmp_path: Path, labels: np.ndarray) -> Path:
    """Write a one-frame CamVid-layout data set."""
    (tmp_path / 'train').mkdir()
    (tmp_path / 'trainannot').mkdir()
    image = np.zeros(labels.shape + (3,), np.uint8)
    Image.fromarray(image).save(tmp_path / 'train' / 'Seq05VD_f00030.png')
    Image.fromarray(labels).save(tmp_path / 'trainannot' / 'Seq05VD_f00030.png')
    return tmp_path


def test_camvid_void_is_ignore_and_unknown_values_are_named(tmp_path):
    """The CamVid void index is the ignore label; values above void are named."""
    labels = np.array([[0, 9, 11], [10, 3, 11]], np.uint8)
    frame = next(iter(iter_camvid(_camvid(tmp_path, labels), 'train')))
    assert frame.sequence == 'Seq05VD' and frame.index == 30
    np.testing.assert_array_equal(frame.labels, labels)
    np.testing.assert_array_equal(frame.ignore, labels == 11)
    bad = labels.copy()
    bad[0, 0] = 200
    Image.fromarray(bad).save(tmp_path / 'trainannot' / 'Seq05VD_f00030.png')
    with pytest.raises(DatasetError, match='Seq05VD_f00030.png: label values 200 are outside'):
        list(iter_camvid(tmp_path, 'train'))
    source = iter_camvid(tmp_path, 'train', skip_bad=True)
    assert list(source) == [] and len(source.skipped) == 1
