"""The synthetic drive generator: determinism, label content, human minority, coherence."""
from pathlib import Path

import numpy as np
import pytest

from metafusion_ros.core.classes import CITYSCAPES_LABELID_TO_TRAINID
from metafusion_ros.tools.cli import main
from metafusion_ros.tools.data.synth import generate_drives, parse_drives, render_drive
from metafusion_ros.tools.data.synth_world import LABEL_IDS

SIZE = (128, 64)


def _files(root: Path) -> dict[str, bytes]:
    """Return every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    """The same seed writes byte-identical files; another seed does not."""
    a = _files(generate_drives(tmp_path / 'a', {'train': 1, 'test': 1}, 2, SIZE, 11).out)
    b = _files(generate_drives(tmp_path / 'b', {'train': 1, 'test': 1}, 2, SIZE, 11).out)
    c = _files(generate_drives(tmp_path / 'c', {'train': 1, 'test': 1}, 2, SIZE, 12).out)
    assert len(a) == 2 * 2 * 3          # 2 splits x 2 frames x (image, labelIds, trainIds)
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_adding_drives_leaves_existing_drives_unchanged():
    """Each drive depends only on (seed, split, drive)."""
    one = [img for _, img, _ in render_drive(3, 'val', 1, 2, SIZE)]
    again = [img for _, img, _ in render_drive(3, 'val', 1, 2, SIZE)]
    other = [img for _, img, _ in render_drive(3, 'val', 2, 2, SIZE)]
    assert all(np.array_equal(x, y) for x, y in zip(one, again))
    assert not np.array_equal(one[0], other[0])


def test_a_longer_drive_starts_with_the_frames_of_a_shorter_one():
    """The world does not depend on the number of frames asked for."""
    short = list(render_drive(6, 'train', 0, 2, SIZE))
    long = list(render_drive(6, 'train', 0, 5, SIZE))
    for (_, img_a, lab_a), (_, img_b, lab_b) in zip(short, long):
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(lab_a, lab_b)


def test_labels_are_official_label_ids_and_humans_are_a_minority():
    """Labels are official labelIds, all main classes occur, humans are rare."""
    valid = set(CITYSCAPES_LABELID_TO_TRAINID) | {LABEL_IDS['ego vehicle']}
    human = total = 0
    seen = set()
    for drive in range(4):
        for _, image, labels in render_drive(0, 'train', drive, 3, (256, 128)):
            assert image.shape == (128, 256, 3) and image.dtype == np.uint8
            assert labels.shape == (128, 256) and labels.dtype == np.uint8
            seen |= set(np.unique(labels).tolist())
            human += int(np.isin(labels, (LABEL_IDS['person'], LABEL_IDS['rider'])).sum())
            total += labels.size
    assert seen <= valid
    for name in ('road', 'sidewalk', 'building', 'sky', 'car', 'pole', 'person'):
        assert LABEL_IDS[name] in seen, name
    assert 0 < human / total < 0.03


def test_drives_move_coherently_from_frame_to_frame():
    """Consecutive frames share most labels but the scene moves."""
    frames = [labels for _, _, labels in render_drive(2, 'train', 0, 6, SIZE)]
    for prev, cur in zip(frames, frames[1:]):
        agree = np.mean(prev == cur)
        assert 0.6 < agree < 1.0, agree


def test_sky_road_and_vegetation_have_distinguishable_colours():
    """Sky, road and vegetation differ clearly in mean colour."""
    sums = {name: np.zeros(3) for name in ('road', 'sky', 'vegetation')}
    counts = dict.fromkeys(sums, 0)
    for drive in range(3):
        _, image, labels = next(render_drive(1, 'train', drive, 1, (256, 128)))
        for name in sums:
            mask = labels == LABEL_IDS[name]
            sums[name] += image[mask].sum(axis=0)
            counts[name] += int(mask.sum())
    means = {name: sums[name] / max(counts[name], 1) for name in sums}
    assert all(counts.values()), counts
    for a, b in (('road', 'sky'), ('road', 'vegetation'), ('sky', 'vegetation')):
        assert np.abs(means[a] - means[b]).max() > 20, (a, b, means)


def test_parse_drives_and_bad_arguments():
    """Drive specs parse; malformed specs and tiny sizes are refused."""
    assert parse_drives(2) == {'train': 2, 'val': 2, 'test': 2}
    assert parse_drives('3') == {'train': 3, 'val': 3, 'test': 3}
    assert parse_drives('train=4,val=1') == {'train': 4, 'val': 1}
    for bad in ('train', 'train=x', '0', 'train=-1'):
        with pytest.raises(ValueError, match='drives'):
            parse_drives(bad)
    with pytest.raises(ValueError, match='size >= 32x16'):
        next(render_drive(0, 'train', 0, 1, (8, 8)))


def test_synth_command_writes_the_cityscapes_layout(tmp_path, capsys):
    """The CLI writes the layout and names a malformed size."""
    out = tmp_path / 'cs'
    assert main(['synth', '--out', str(out), '--drives', 'train=1', '--frames', '2',
                 '--size', '64x32', '--seed', '4']) == 0
    assert 'wrote 2 frames (train 2) of 64x32' in capsys.readouterr().out
    names = sorted(p.name for p in (out / 'gtFine' / 'train' / 'synth').iterdir())
    assert names[0] == 'synth_000000_000000_gtFine_labelIds.png'
    assert main(['synth', '--out', str(out), '--size', '64by32']) == 2
    assert 'WIDTHxHEIGHT' in capsys.readouterr().err


def test_shipped_synthetic_priors_come_from_the_committed_generator(tmp_path):
    """The shipped synthetic priors record the label files the committed generator writes.

    The first frame of every train drive, generated now as `make results` does (seed 0,
    1024x512), has the label file the shipped priors recorded (else: run `make results`).
    """
    from metafusion_ros.core.classes import cityscapes_table
    from metafusion_ros.core.priors import Priors
    from metafusion_ros.tools.data.datasets import open_dataset

    shipped = Priors.load(Path(__file__).resolve().parents[1] / 'models'
                          / 'synthetic_toy_priors.npz')
    recorded = shipped.provenance['label_file_sha256']
    drives = {name.split('_')[1] for name in recorded}
    assert shipped.provenance['label_files'] == len(recorded) == 30 * len(drives)
    generate_drives(tmp_path, {'train': len(drives)}, frames=1, size=(1024, 512), seed=0)
    fresh = open_dataset('synthetic', tmp_path, 'train', cityscapes_table()).label_digests()
    assert len(fresh) == len(drives)
    assert {name: recorded.get(name) for name in fresh} == fresh
