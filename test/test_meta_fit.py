"""Candidate collection (eq. 13), the per-frame cache, drive-grouped CV and `metafusion fit`."""
import json

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from toy_data import toy_drives

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.features import feature_names
from metafusion_ros.core.segments import disagreeing_candidates
from metafusion_ros.runtime.classifier import MetaBundle, ModelContext
from metafusion_ros.tools.cli import main
from metafusion_ros.tools.meta.collect import (ArraySource, at_labels, candidate_labels,
                                               candidate_set, collect, NpzSource)
from metafusion_ros.tools.meta.fit import cross_validate, drive_folds, fit_bundle


@pytest.fixture(scope='module')
def toy():
    """Return the toy table, priors and 3 drives x 4 frames."""
    return toy_drives(seed=0, drives=3, frames=4)


def small_table(merge=()) -> ClassTable:
    """Return classes a, b, c, d with target c = 2 and ignore 255."""
    return ClassTable('toy', ('a', 'b', 'c', 'd'), 255, 2, ((0, 0, 0),) * 4, merge=merge)


class CountingSource(ArraySource):
    """An array source that counts how often a frame is loaded."""

    loads = 0

    def load(self, ref):
        """Count and load."""
        CountingSource.loads += 1
        return super().load(ref)


def test_candidate_labels_eq13_by_hand():
    """Label 1 iff at least one candidate pixel has ground truth c (rider read as person)."""
    ml = np.zeros((7, 12), np.uint8)
    ml[1:6, 1:4] = 2     # candidate 1: one GT-c pixel
    ml[1:6, 6:9] = 2     # candidate 2: none
    bayes = np.zeros_like(ml)
    gt = np.zeros_like(ml)
    gt[5, 3] = 2
    gt[1, 10] = 2        # GT c outside every candidate
    cand = disagreeing_candidates(ml, bayes, 2)
    assert cand.count == 2
    np.testing.assert_array_equal(candidate_labels(cand, gt, small_table()), [True, False])
    merged = small_table(merge=((3, 2),))
    gt[5, 3] = 3
    np.testing.assert_array_equal(candidate_labels(cand, gt, merged), [True, False])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=4, max_size=60), st.integers(2, 6))
def test_folds_never_mix_drives(drives, max_folds):
    """Never put a drive in both the training and the test part of a fold.

    Each candidate is tested exactly once; with fewer drives than folds it is leave-one-drive-out.
    """
    groups = np.array([f'drive{d}' for d in drives])
    if np.unique(groups).size < 2:
        with pytest.raises(ValueError, match='at least 2 drives'):
            drive_folds(groups, max_folds)
        return
    folds = drive_folds(groups, max_folds)
    tested = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tested), np.arange(groups.size))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    assert len(folds) == min(max_folds, np.unique(groups).size)
    if np.unique(groups).size <= max_folds:
        assert all(np.unique(groups[test]).size == 1 for _, test in folds)


def test_collect_caches_and_fit_end_to_end(toy, tmp_path):
    """Collect -> candidate set -> grouped CV -> model; a second collect loads no frame."""
    table, priors, items = toy
    source = CountingSource(items)
    folder = collect(source, priors, table, [1.0], tmp_path)
    assert CountingSource.loads == len(items)
    collect(source, priors, table, [1.0], tmp_path)
    assert CountingSource.loads == len(items)
    collect(source, priors, table, [0.9, 1.0], tmp_path)
    assert CountingSource.loads == 2 * len(items)
    names = feature_names(table)
    candidates = candidate_set(folder, 1.0, names)
    assert candidates.features.shape == (candidates.size, len(names))
    assert 0 < candidates.labels.sum() < candidates.size
    assert set(candidates.groups) == {'drive0', 'drive1', 'drive2'}
    context = ModelContext(names, table, 1.0, priors.digest)
    collect(source, priors, table, [0.95], tmp_path)
    bundle, validations = fit_bundle(folder, context, [0.9, 0.95, 1.0])
    assert bundle.alphas == (0.95, 1.0)
    assert 'all 7 candidates are true positives' in bundle.skipped[0.9]
    # at 0.95 drives 1 and 2 hold true positives only: a fold cannot be trained
    assert bundle.members[0.95].info['metrics']['cv'] == 'impossible'
    assert 'true positives' in bundle.members[0.95].info['metrics']['reason']
    model, validation = bundle.members[1.0], validations[1.0]
    assert validation.metrics()['cv'] == 'leave-one-drive-out'
    assert len(validation.auc) == 3 and validation.importances.shape == (3, len(names))
    for k in range(3):
        tested = np.unique(candidates.groups[validation.fold_of == k])
        assert list(tested) == validation.test_drives[k]
    assert model.info['training']['drives']['drive0']['candidates'] > 0
    assert model.info['metrics']['auc_per_fold'] == [
        None if np.isnan(a) else round(a, 4) for a in validation.auc]
    assert model.info['metrics']['auc_pooled'] == round(
        roc_auc_score(candidates.labels, validation.scores), 4)
    assert bundle.members[0.95].context.alpha == 0.95
    assert bundle.members[0.95].info['training']['candidates'] == candidate_set(
        folder, 0.95, names).size == 12


def test_fit_bundle_skips_an_alpha_without_both_labels(toy, tmp_path):
    """α = 0 has no candidates: no member, the reason kept; no α at all fittable: refused."""
    table, priors, items = toy
    folder = collect(ArraySource(items), priors, table, [0.0, 1.0], tmp_path)
    context = ModelContext(feature_names(table), table, 1.0, priors.digest)
    bundle, _ = fit_bundle(folder, context, [0.0, 1.0])
    assert bundle.alphas == (1.0,) and 'no candidate segments' in bundle.skipped[0.0]
    with pytest.raises(ValueError, match='no alpha of the grid has candidates of both labels: '
                                         'alpha 0: .*no candidate segments'):
        fit_bundle(folder, context, [0.0])


def test_empty_candidate_set_is_a_clear_error(toy, tmp_path):
    """α = 0 (Bayes) has no candidates: a clear message, no crash, nothing trained."""
    table, priors, items = toy
    folder = collect(ArraySource(items), priors, table, [0.0], tmp_path)
    candidates = candidate_set(folder, 0.0, feature_names(table))
    assert candidates.size == 0
    with pytest.raises(ValueError, match='no candidate segments'):
        cross_validate(candidates, ModelContext(feature_names(table), table, 0.0))


def test_single_drive_is_refused(toy, tmp_path):
    """Out-of-fold numbers need a second drive."""
    table, priors, items = toy
    one = [(k, 'same', p, g) for k, _, p, g in items]
    folder = collect(ArraySource(one), priors, table, [1.0], tmp_path)
    with pytest.raises(ValueError, match='at least 2 drives, got 1 \\(same\\)'):
        cross_validate(candidate_set(folder, 1.0, feature_names(table)),
                       ModelContext(feature_names(table), table, 1.0))


def write_npz_folder(items, folder):
    """Save frames as the --softmax layout: <drive>_<n>.npz with probs and gt."""
    folder.mkdir()
    for key, group, probs, gt in items:
        np.savez(folder / f'{key}.npz', probs=probs, gt=gt, sequence=np.array(group))
    return folder


def test_fit_command(toy, tmp_path, capsys):
    """`metafusion fit --softmax DIR` writes a bundle over the grid that loads in its context."""
    table, priors, items = toy
    frames = write_npz_folder(items, tmp_path / 'frames')
    priors.save(tmp_path / 'priors.npz')
    out = tmp_path / 'meta.json'
    code = main(['fit', '--softmax', str(frames), '--priors', str(tmp_path / 'priors.npz'),
                 '--cache', str(tmp_path / 'cache'), '--out', str(out),
                 '--alphas', '0.95', '1'])
    text = capsys.readouterr().out
    assert code == 0 and 'ROC AUC' in text and 'leave-one-drive-out' in text
    assert 'alpha 0.95: ' in text and 'pooled out-of-fold ROC AUC' in text
    manifest = json.loads(out.read_text())
    assert [m['alpha'] for m in manifest['members']] == [0.95, 1.0]
    assert manifest['members'][1]['metrics']['cv'] == 'leave-one-drive-out'
    assert manifest['members'][1]['training']['frames'] == len(items)
    assert manifest['network_digest'] == '' and 'saved softmax' in manifest['source']
    assert (tmp_path / 'meta.a0.95.json').is_file() and (tmp_path / 'meta.a1.json').is_file()
    bundle = MetaBundle.load(out, ModelContext(feature_names(table), table, 0.9, priors.digest))
    assert bundle.select(0.9).alpha == 0.95


def test_fit_command_bad_input(toy, tmp_path, capsys):
    """Bad sources give one-line errors naming the problem and exit code 2."""
    table, priors, items = toy
    priors.save(tmp_path / 'priors.npz')
    args = ['fit', '--priors', str(tmp_path / 'priors.npz'), '--out', str(tmp_path / 'm.json'),
            '--cache', str(tmp_path / 'cache')]
    assert main(args) == 2
    assert 'exactly one frame source' in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    assert main(args + ['--softmax', str(tmp_path / 'empty')]) == 2
    assert 'holds no .npz files' in capsys.readouterr().err
    bad = tmp_path / 'bad'
    bad.mkdir()
    np.savez(bad / 'd0_000.npz', probs=items[0][2])
    assert main(args + ['--softmax', str(bad)]) == 2
    assert 'needs arrays probs and gt' in capsys.readouterr().err
    np.savez(bad / 'd0_000.npz', probs=items[0][2], gt=items[0][3][None])
    assert main(args + ['--softmax', str(bad), '--cache', str(tmp_path / 'cache3d')]) == 2
    assert 'frame d0_000: ground truth (1, 48, 64) is not (H, W)' in capsys.readouterr().err
    frames = write_npz_folder(items[:4], tmp_path / 'one_drive')
    assert main(args + ['--softmax', str(frames), '--alphas', '0']) == 2
    assert 'no candidate segments' in capsys.readouterr().err


def test_npz_source_groups_by_file_prefix(toy, tmp_path):
    """Without a `sequence` array the drive is the file name up to the first underscore."""
    folder = tmp_path / 'f'
    folder.mkdir()
    _, _, items = toy
    for name in ('0016E5_07959', '0001TP_006690'):
        np.savez(folder / f'{name}.npz', probs=items[0][2], gt=items[0][3])
    assert [(r.key, r.group) for r in NpzSource(folder).frames()] == [
        ('0001TP_006690', '0001TP'), ('0016E5_07959', '0016E5')]


def test_segmenter_source_keys_and_drives_per_split(toy):
    """Keys carry the split; synthetic drives (numbered per split) are grouped per split."""
    from pathlib import Path

    from metafusion_ros.tools.data.frame import FrameFile, FrameSource
    from metafusion_ros.tools.meta.collect import SegmenterSource

    def split(name):
        image = Path(f'/data/{name}/synth_000000_000001_leftImg8bit.png')
        return FrameSource([FrameFile(image, None, 'synth_000000', 1)], toy[0], None)
    for per_split, groups in ((True, ['val/synth_000000', 'test/synth_000000']),
                              (False, ['synth_000000', 'synth_000000'])):
        source = SegmenterSource({'val': split('val'), 'test': split('test')}, np.asarray, 't',
                                 drives_per_split=per_split)
        assert [(r.key, r.group) for r in source.frames()] == [
            ('val_synth_000000_000001_leftImg8bit', groups[0]),
            ('test_synth_000000_000001_leftImg8bit', groups[1])]


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 12), st.integers(4, 12), st.integers(3, 30), st.integers(3, 30),
       st.integers(0, 2**31))
def test_candidate_labels_at_the_labels_size(h, w, big_h, big_w, seed):
    """With labels of another size, a candidate is a TP iff its enlarged mask meets GT c."""
    rng = np.random.default_rng(seed)
    ml = np.where(rng.random((h, w)) < 0.4, 2, 0).astype(np.uint8)
    cand = disagreeing_candidates(ml, np.zeros_like(ml), 2)
    gt = np.where(rng.random((big_h, big_w)) < 0.1, 2, 0).astype(np.uint8)
    ids = np.zeros(h * w, np.int64)
    ids[cand.pixels] = cand.pixel_ids
    enlarged = at_labels(ids.reshape(h, w).astype(np.uint8), gt)  # < 256 candidates here
    expected = [bool((gt[enlarged == k] == 2).any()) for k in range(1, cand.count + 1)]
    np.testing.assert_array_equal(candidate_labels(cand, gt, small_table()), expected)
