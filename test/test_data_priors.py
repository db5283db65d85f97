"""``metafusion priors`` and ``metafusion stats`` on tiny data sets (and on CamVid if present)."""
import json
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from metafusion_ros.core.priors import Priors
from metafusion_ros.tools.cli import main
from metafusion_ros.tools.data.cityscapes import cityscapes_paths
from metafusion_ros.tools.data.synth import generate_drives

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
CAMVID = SHARED / 'data' / 'camvid'

# labelIds: 7 road (trainId 0), 24 person (11), 25 rider (12, merged into person), 26 car (13),
# 1 ego vehicle and 0 unlabeled (ignore).
HAND = [np.array([[7, 24, 0], [26, 26, 1]], np.uint8),
        np.array([[7, 25, 26], [26, 7, 1]], np.uint8),
        np.array([[24, 7, 26], [7, 7, 1]], np.uint8)]


def _hand_dataset(root: Path) -> Path:
    """Write the three hand-made label maps in the Cityscapes layout."""
    for frame, labels in enumerate(HAND):
        image, label = cityscapes_paths(root, 'train', 'hand', 0, frame)
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros(labels.shape + (3,), np.uint8)).save(image)
        Image.fromarray(labels).save(label)
    return root


def test_priors_match_a_hand_computation(tmp_path, capsys):
    """Priors equal hand-counted shares (rider merged, ignore excluded)."""
    root = _hand_dataset(tmp_path / 'hand')
    out = tmp_path / 'p.npz'
    assert main(['priors', '--dataset', 'cityscapes', '--root', str(root), '--out', str(out),
                 '--png', str(tmp_path / 'human.png')]) == 0
    assert 'from 3 label maps' in capsys.readouterr().out
    priors = Priors.load(out)
    probs = priors.probs
    road, person, rider, car = 0, 11, 12, 13
    assert priors.num_images == 3 and probs.shape == (2, 3, 19)
    np.testing.assert_allclose(probs[0, 0, [road, person]], [2 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(probs[0, 1, [road, person, rider]], [1 / 3, 2 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(probs[0, 2, car], 1.0, atol=1e-6)     # ignore excluded
    np.testing.assert_allclose(probs[1, 0, car], 2 / 3, atol=1e-6)
    np.testing.assert_allclose(probs[1, 2], np.full(19, 1 / 19), atol=1e-6)  # never labelled
    np.testing.assert_array_equal(priors.counts, [[3, 3, 2], [3, 3, 0]])
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    assert Image.open(tmp_path / 'human.png').size[0] > 100


def test_priors_of_a_generated_drive_sum_to_one_and_resize(tmp_path, capsys):
    """Class and category priors of a drive sum to 1 per pixel and resize."""
    root = generate_drives(tmp_path / 'syn', {'train': 1}, 3, (128, 64), seed=2).out
    out = tmp_path / 'p.npz'
    assert main(['priors', '--dataset', 'synthetic', '--root', str(root), '--out', str(out),
                 '--categories', '--size', '64x32']) == 0
    priors = Priors.load(out)
    assert priors.level == 'category' and priors.resolution == (32, 64)
    assert priors.names[6] == 'human' and priors.num_images == 3
    np.testing.assert_allclose(priors.probs.sum(axis=2), 1.0, atol=1e-5)
    assert main(['priors', '--dataset', 'synthetic', '--root', str(root), '--out', str(out),
                 '--force']) == 0  # over the category priors
    priors = Priors.load(out)
    seen = priors.counts > 0
    np.testing.assert_allclose(priors.probs.sum(axis=2)[seen], 1.0, atol=1e-5)
    assert priors.probs[:, :, 10].max() > 0.9      # sky at the top
    assert not seen[-1].any()                       # the ego vehicle is ignore everywhere
    capsys.readouterr()


def test_priors_command_names_bad_paths_and_files(tmp_path, capsys):
    """Bad roots and files are named; no priors are written; skip-bad counts."""
    missing = tmp_path / 'nowhere'
    assert main(['priors', '--dataset', 'camvid', '--root', str(missing),
                 '--out', str(tmp_path / 'p.npz')]) == 2
    assert f'{missing / "train"} does not exist' in capsys.readouterr().err
    root = _hand_dataset(tmp_path / 'hand')
    label = cityscapes_paths(root, 'train', 'hand', 0, 1)[1]
    label.write_bytes(b'\x89PNG broken')
    args = ['priors', '--dataset', 'cityscapes', '--root', str(root), '--out',
            str(tmp_path / 'p.npz')]
    assert main(args) == 2
    assert f'{label}: unreadable PNG' in capsys.readouterr().err
    assert not (tmp_path / 'p.npz').exists(), 'no prior may be written from a bad data set'
    assert main(args + ['--skip-bad']) == 0
    assert '2 label maps (1 skipped)' in capsys.readouterr().out


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f'shared CamVid data absent ({CAMVID})')
def test_camvid_statistics_match_the_documented_numbers(tmp_path, capsys):
    """On CamVid train: 0.64 % pedestrians, 1,483 segments, median 103 px."""
    out = tmp_path / 'camvid.json'
    assert main(['stats', '--dataset', 'camvid', '--root', str(CAMVID), '--json', str(out)]) == 0
    numbers = json.loads(out.read_text())
    assert numbers['frames'] == 367
    assert numbers['class_percent']['Pedestrian'] == pytest.approx(0.64, abs=0.005)
    assert numbers['class_percent']['ignore'] == pytest.approx(3.95, abs=0.005)
    assert numbers['human_segments'] == 1483
    assert numbers['median_segment_px'] == 103
    assert sum(numbers['size_histogram'].values()) == 1483
    assert 'Pedestrian' in capsys.readouterr().out
