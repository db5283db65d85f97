"""Evaluation (Table 2), out-of-fold or with a fixed bundle, the report, `operating-point`."""
import csv
import hashlib
import json
from pathlib import Path
import shutil

import numpy as np
import pytest
from tiny_onnx import tiny_model
from toy_data import toy_drives
import yaml

from metafusion_ros.core.evaluation import added_tp_share, delta, SegmentCounts, segment_counts
from metafusion_ros.core.features import feature_names
from metafusion_ros.core.fusion import FUSION_MODES
from metafusion_ros.core.pipeline import MetaFusion
from metafusion_ros.runtime.classifier import MetaBundle, ModelContext
from metafusion_ros.runtime.segmenter.preprocess import Nearest
from metafusion_ros.tools.cli import build_parser, main
from metafusion_ros.tools.meta import evaluate as evaluate_module
from metafusion_ros.tools.meta.collect import ArraySource, collect
from metafusion_ros.tools.meta.evaluate import evaluate
from metafusion_ros.tools.meta.fit import fit_bundle
from metafusion_ros.tools.meta.operating_point import (choose, OperatingPoint, read_rows,
                                                       write_config)
from metafusion_ros.tools.meta.report import JSON_FIELDS, write_report
from metafusion_ros.tools.meta.sources import build_setup

ALPHAS = (0.0, 0.9, 1.0)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """Return table, priors, frames, the filled cache folder and the evaluation at τ 0, 0.5."""
    table, priors, items = toy_drives(seed=1, drives=3, frames=4)
    folder = collect(ArraySource(items), priors, table, ALPHAS, tmp_path_factory.mktemp('c'))
    result = evaluate(folder, table, feature_names(table), priors.digest, ALPHAS, (0.5, 0.0))
    return table, priors, items, folder, result


def test_bayes_and_ml_rows_match_core_counts(toy):
    """Bayes and ML rows are the core's segment counts summed over the frames."""
    table, priors, items, _, result = toy
    fusion = MetaFusion(priors, table, 1.0)
    bayes, ml = SegmentCounts(), SegmentCounts()
    for _, _, probs, gt in items:
        frame = fusion.process(probs, None)
        bayes = bayes + segment_counts(frame.pred_bayes, gt, table)
        ml = ml + segment_counts(frame.pred_ml, gt, table)
    assert result.bayes.counts == bayes and result.ml[1.0].counts == ml
    assert result.ml[0.0].counts == bayes


@pytest.mark.parametrize('mode', FUSION_MODES)
def test_metafusion_row_matches_the_pipeline(toy, mode):
    """Fusing cached candidates with out-of-fold scores equals MetaFusion.process per frame."""
    table, priors, items, _, result = toy
    scores = result.validation[1.0].scores
    fusion = MetaFusion(priors, table, 1.0, tau=0.5, fusion=mode)
    total, offset = SegmentCounts(), 0
    for _, _, probs, gt in items:
        count = fusion.process(probs, None).candidates.count
        frame_scores = scores[offset:offset + count]
        frame = fusion.process(probs, lambda features, s=frame_scores: s)
        total = total + segment_counts(frame.fused, gt, table)
        offset += count
    row = result.fusion[(1.0, 0.5, mode)]
    assert row.counts == total and row.fusion == mode
    assert row.kept == int((scores >= 0.5).sum()) and row.candidates == scores.size


@pytest.mark.parametrize('mode', FUSION_MODES)
def test_decomposition_accounts_for_every_fused_pixel(toy, mode):
    """The pixels a reading turns to c, by source and ground truth, and the FN it removes."""
    table, priors, items, _, result = toy
    scores = result.validation[1.0].scores
    fusion = MetaFusion(priors, table, 1.0, tau=0.5, fusion=mode)
    changed, offset = np.zeros((2, table.num_classes), np.int64), 0
    for _, _, probs, gt in items:
        count = fusion.process(probs, None).candidates.count
        frame = fusion.process(probs, lambda features, s=scores[offset:offset + count]: s)
        offset += count
        new = (frame.fused == table.target) & (frame.pred_bayes != table.target) & (
            gt != table.ignore_label)
        kept = np.isin(np.arange(gt.size), frame.candidates.pixels[
            frame.keep[frame.candidates.pixel_ids - 1]]).reshape(gt.shape)
        for source, mask in enumerate((new & ~kept, new & kept)):
            changed[source] += np.bincount(gt[mask], minlength=table.num_classes)
    row = result.fusion[(1.0, 0.5, mode)]
    np.testing.assert_array_equal(row.changed, changed)
    assert sum(row.recovered) == result.bayes.counts.fn - row.counts.fn
    if mode == 'literal':
        assert row.changed[0].sum() == 0 and row.recovered[0] == row.recovered[2] == 0
    if mode == 'reference':
        assert row.changed[0].sum() > 0, 'the toy must have agreeing ML extent to fuse'
    rows = {(r['alpha'], r['tau'], r['fusion']): r for r in result.rows()}
    assert sum(rows[(1.0, 0.5, mode)]['fused_pixels']['candidates'].values()) == changed[1].sum()


def test_reference_fusion_keeps_at_least_what_literal_keeps(toy):
    """The authors' fusion adds the agreeing ML segments: never more false negatives."""
    _, _, _, _, result = toy
    for (alpha, tau, mode), row in result.fusion.items():
        if mode == 'reference' and row.counts.fn >= 0:
            assert row.counts.fn <= result.fusion[(alpha, tau, 'literal')].counts.fn


def test_rows_delta_share_and_tau_zero(toy):
    """Δ and the kept share come from core.evaluation; τ = 0 keeps every candidate."""
    _, _, _, _, result = toy
    rows = {(r['rule'], r['alpha'], r['tau'] if r['rule'] == 'MetaFusion' else None,
             r['fusion']): r for r in result.rows()}
    bayes, ml = result.bayes.counts, result.ml[1.0].counts
    fused = result.fusion[(1.0, 0.5, 'reference')].counts
    row = rows[('MetaFusion', 1.0, 0.5, 'reference')]
    assert row['delta'] == pytest.approx(delta(fused, bayes), nan_ok=True)
    assert row['added_tp_kept'] == pytest.approx(added_tp_share(fused, bayes, ml), nan_ok=True)
    everything = result.fusion[(1.0, 0.0, 'reference')]
    assert everything.kept == everything.candidates > 0
    assert everything.counts.fn <= fused.fn
    assert ml.fn < bayes.fn, 'the toy network must hide pedestrians from the Bayes rule'


def test_alpha_zero_has_no_candidates(toy):
    """α = 0 is the Bayes rule: no candidates, MetaFusion = Bayes, and the reason is noted."""
    _, _, _, _, result = toy
    row = result.fusion[(0.0, 0.5, 'reference')]
    assert row.candidates == 0 and row.counts == result.bayes.counts
    assert 'no candidates' in row.note and 'no candidate segments' in result.notes[0.0]


def test_report_and_cached_scores(toy, tmp_path, monkeypatch):
    """The report has the table, CV and figures; another τ reuses the cached scores."""
    table, priors, _, folder, result = toy
    md = write_report(result, folder, table, feature_names(table), tmp_path, 'toy',
                      'metafusion evaluate ...', 'toy frames', 0.5)
    text = md.read_text()
    assert '| MetaFusion | reference | 1 | 0.5 |' in text and 'leave-one-drive-out' in text
    assert '| MetaFusion | literal | 1 | 0.5 |' in text and '| ML |  | 1 | – |' in text
    assert '| MetaFusion | support | 1 | 0.5 |' in text
    where = text[text.index('## Where the mIoU goes (α = 1, τ = 0.5)'):]
    assert '| class | Bayes | reference | literal | support |' in where
    reference = result.fusion[(1.0, 0.5, 'reference')]
    assert f'| reference | {reference.changed[0].sum()} (' in where
    assert f'| **mIoU** | {result.bayes.miou:.3f} | {reference.miou:.3f} (' in where
    for suffix in ('_fp_fn.png', '_importance.png', '_collage.png', '.csv'):
        assert (tmp_path / f'toy{suffix}').stat().st_size > 0
    with open(tmp_path / 'toy.csv', newline='') as fh:
        assert len(list(csv.DictReader(fh))) == len(result.rows())

    def no_training(*args, **kwargs):
        raise AssertionError('cross-validation ran again')
    monkeypatch.setattr(evaluate_module, 'cross_validate', no_training)
    again = evaluate(folder, table, feature_names(table), priors.digest, ALPHAS, (0.7,))
    assert again.fusion[(1.0, 0.7, 'reference')].kept == int(
        (result.validation[1.0].scores >= 0.7).sum())


def test_single_class_candidates_are_reported(toy, tmp_path):
    """Ground truth without pedestrians: every candidate is false, MetaFusion is not trained."""
    table, priors, items, _, _ = toy
    no_people = [(k, g, p, np.where(gt == table.target, 1, gt).astype(np.uint8))
                 for k, g, p, gt in items]
    folder = collect(ArraySource(no_people), priors, table, [1.0], tmp_path)
    result = evaluate(folder, table, feature_names(table), priors.digest, [1.0], [0.5])
    row = result.fusion[(1.0, 0.5, 'reference')]
    assert 'not trained' in row.note and 'false positives' in row.note
    assert any(r['rule'] == 'MetaFusion' and r['fp'] == -1 for r in result.rows())


ROWS = [
    {'rule': 'Bayes', 'alpha': 0.0, 'tau': float('nan'), 'fp': 5, 'fn': 40},
    {'rule': 'ML', 'alpha': 1.0, 'tau': float('nan'), 'fp': 1, 'fn': 1},
    {'rule': 'MetaFusion', 'alpha': 0.0, 'tau': 0.5, 'fp': 5, 'fn': 40},
    {'rule': 'MetaFusion', 'alpha': 0.9, 'tau': 0.5, 'fp': 12, 'fn': 20},
    {'rule': 'MetaFusion', 'alpha': 1.0, 'tau': 0.5, 'fp': 20, 'fn': 15},
    {'rule': 'MetaFusion', 'alpha': 1.0, 'tau': 0.3, 'fp': 30, 'fn': 10},
]


def test_choose_operating_point():
    """--max-fn: fewest FP within the bound; --fn-weight: smallest FP + w FN; ML rows ignored."""
    assert choose(ROWS, max_fn=20) == OperatingPoint(0.9, 0.5, 12, 20, 'MetaFusion')
    assert choose(ROWS, max_fn=10).tau == 0.3
    assert choose(ROWS, max_fn=100).alpha == 0.0
    assert choose(ROWS, fn_weight=0.0).alpha == 0.0
    assert choose(ROWS, fn_weight=2.0) == OperatingPoint(1.0, 0.3, 30, 10, 'MetaFusion')
    assert choose(ROWS, fn_weight=0.5, alphas=(1.0,)).tau == 0.5
    with pytest.raises(ValueError, match='at most 5 false negatives \\(the fewest is 10\\)'):
        choose(ROWS, max_fn=5)
    with pytest.raises(ValueError, match='exactly one criterion'):
        choose(ROWS)
    with pytest.raises(ValueError, match='no evaluated operating points at alpha 0.5, 0.6'):
        choose(ROWS, fn_weight=1.0, alphas=(0.5, 0.6))


def test_write_config_keeps_other_parameters(tmp_path):
    """Write alpha and tau under <node>: ros__parameters; keep other keys; name bad YAML."""
    path = tmp_path / 'node.yaml'
    path.write_text('metafusion_node:\n  ros__parameters:\n    model_path: m.onnx\n    tau: 0.1\n')
    write_config(path, OperatingPoint(0.99, 0.4, 1, 2, 'MetaFusion'))
    params = yaml.safe_load(path.read_text())['metafusion_node']['ros__parameters']
    assert params == {'model_path': 'm.onnx', 'tau': 0.4, 'alpha': 0.99, 'fusion': 'reference'}
    path.write_text('metafusion_node: [1, 2]\n')
    with pytest.raises(ValueError, match='ros__parameters must be a mapping'):
        write_config(path, OperatingPoint(1.0, 0.5, 1, 2, 'MetaFusion'))
    path.write_text('a: [1,\n')
    with pytest.raises(ValueError, match='not valid YAML'):
        write_config(path, OperatingPoint(1.0, 0.5, 1, 2, 'MetaFusion'))


def evaluate_softmax(items, priors, tmp_path, name, *options) -> int:
    """Save ``items`` as a --softmax folder and run `metafusion evaluate` at τ 0.5, 0.2."""
    frames = tmp_path / 'frames'
    frames.mkdir()
    for key, group, probs, gt in items:
        np.savez(frames / f'{key}.npz', probs=probs, gt=gt, sequence=np.array(group))
    priors.save(tmp_path / 'priors.npz')
    return main(['evaluate', '--softmax', str(frames), '--priors', str(tmp_path / 'priors.npz'),
                 '--cache', str(tmp_path / 'cache'), *options, '--tau', '0.5', '0.2',
                 '--out', str(tmp_path / 'out'), '--name', name])


def test_evaluate_and_operating_point_commands(toy, tmp_path, capsys):
    """The CLI writes the report and a YAML the node reads; bad results files are named."""
    table, priors, items, _, _ = toy
    code = evaluate_softmax(items, priors, tmp_path, 'toy', '--alphas', '0', '1')
    assert code == 0 and '| Bayes |  | 0 |' in capsys.readouterr().out
    results = tmp_path / 'out' / 'toy.csv'
    assert len(read_rows(results)) == 1 + 2 * (1 + 2 * len(FUSION_MODES))
    config = tmp_path / 'op.yaml'
    assert main(['operating-point', '--results', str(results), '--fn-weight', '1000',
                 '--config', str(config)]) == 0
    params = yaml.safe_load(config.read_text())['metafusion_node']['ros__parameters']
    best = choose(read_rows(results), fn_weight=1000)
    assert params == {'alpha': best.alpha, 'tau': best.tau, 'fusion': 'reference'}
    (tmp_path / 'bad.csv').write_text('x,y\n1,2\n')
    assert main(['operating-point', '--results', str(tmp_path / 'bad.csv'), '--max-fn', '3',
                 '--config', str(config), '--force']) == 2
    assert 'needs columns' in capsys.readouterr().err


def tiny_network(path, classes: int, size: tuple[int, int]) -> None:
    """Write a seeded 3x3-conv + softmax ONNX 'network' and its spec beside it."""
    from onnx import helper, numpy_helper, save, TensorProto

    from metafusion_ros.runtime.segmenter.preprocess import Preprocess
    from metafusion_ros.runtime.segmenter.spec import ModelSpec, OutputSpec

    weight = numpy_helper.from_array(np.random.default_rng(3).normal(
        size=(classes, 3, 3, 3)).astype(np.float32), 'w')
    nodes = [helper.make_node('Conv', ['image', 'w'], ['z'], pads=[1, 1, 1, 1]),
             helper.make_node('Softmax', ['z'], ['probs'], axis=1)]
    h, w = size
    graph = helper.make_graph(
        nodes, 'tiny', [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info('probs', TensorProto.FLOAT, [1, classes, h, w])],
        [weight])
    save(tiny_model(graph), str(path))
    ModelSpec(Preprocess(w, h), OutputSpec('probs', 'softmax', 'NCHW'),
              toy_drives()[0]).save(path.with_suffix('.json'))


def test_evaluate_runs_a_network_over_a_dataset(toy, tmp_path, capsys):
    """--dataset camvid --model: frames go through the segmenter, then into the cache."""
    from PIL import Image

    table, _, items, _, _ = toy
    root = tmp_path / 'camvid'
    rng = np.random.default_rng(0)
    for split in ('val', 'valannot', 'test', 'testannot'):
        (root / split).mkdir(parents=True)
    for k, (_, _, _, gt) in enumerate(items[:4]):
        split, name = ('val', f'0016E5_{k:05d}.png') if k < 2 else ('test', f'0001TP_{k:05d}.png')
        Image.fromarray(rng.integers(0, 256, gt.shape + (3,), dtype=np.uint8)).save(
            root / split / name)
        Image.fromarray(gt).save(root / f'{split}annot' / name)
    tiny_network(tmp_path / 'net.onnx', table.num_classes, (24, 32))
    toy[1].save(tmp_path / 'priors.npz')
    args = ['evaluate', '--dataset', 'camvid', '--root', str(root), '--split', 'val,test',
            '--model', str(tmp_path / 'net.onnx'), '--priors', str(tmp_path / 'priors.npz'),
            '--cache', str(tmp_path / 'cache'), '--alphas', '0', '1',
            '--out', str(tmp_path / 'out'), '--name', 'net']
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'camvid split(s) val, test' in out
    cached = list((tmp_path / 'cache').rglob('*.base.npz'))
    assert sorted(p.name for p in cached) == ['test_0001TP_00002.base.npz',
                                              'test_0001TP_00003.base.npz',
                                              'val_0016E5_00000.base.npz',
                                              'val_0016E5_00001.base.npz']
    assert main(args[:1] + ['--dataset', 'camvid', '--root', str(root), '--split', 'val',
                            '--priors', str(tmp_path / 'priors.npz'), '--name', 'x']) == 2
    assert '--dataset needs --model' in capsys.readouterr().err
    setup = build_setup(build_parser().parse_args(args))
    network = hashlib.sha256((tmp_path / 'net.onnx').read_bytes()).hexdigest()
    assert setup.context(0.9) == ModelContext(feature_names(table), table, 0.9, toy[1].digest,
                                              network), 'fit records the network it ran'


def test_rules_fp_at_fn_interpolates_the_curve():
    """The adjusted rules' FP at a given FN: linear between neighbouring α, best branch."""
    from metafusion_ros.tools.meta.evaluate import rules_fp_at_fn

    curve = [SegmentCounts(0, 10, 50), SegmentCounts(0, 30, 30), SegmentCounts(0, 80, 10),
             SegmentCounts(0, 90, 10)]
    assert rules_fp_at_fn(curve, 40) == pytest.approx(20.0)
    assert rules_fp_at_fn(curve, 20) == pytest.approx(55.0)
    assert rules_fp_at_fn(curve, 10) == pytest.approx(80.0)
    assert np.isnan(rules_fp_at_fn(curve, 5)) and np.isnan(rules_fp_at_fn(curve, 51))


def test_cache_writers_never_share_a_temporary_name(tmp_path):
    """``fit`` and ``evaluate`` filling one cache at once: each writes its own temporary file."""
    from metafusion_ros.tools.meta import collect as collect_module
    path = tmp_path / 'frame.base.npz'
    another = tmp_path / 'frame.base.partial'  # the name every writer used before
    another.write_bytes(b'half written by another process')
    collect_module._save(path, gt=np.arange(3))
    assert another.read_bytes() == b'half written by another process'
    np.testing.assert_array_equal(np.load(path)['gt'], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['frame.base.npz', 'frame.base.partial']


@pytest.fixture(scope='module')
def fixed(toy, tmp_path_factory):
    """Fit a bundle (α 0.95, 1) on the toy drives; return it, its path and a fresh drive."""
    table, priors, items, folder, _ = toy
    folder = collect(ArraySource(items), priors, table, [0.95, 1.0], folder.parent)
    context = ModelContext(feature_names(table), table, 1.0, priors.digest)
    bundle, _ = fit_bundle(folder, context, [0.95, 1.0])
    path = tmp_path_factory.mktemp('bundle') / 'toy_meta.json'
    bundle.save(path)
    _, _, new = toy_drives(seed=5, drives=1, frames=5)
    return MetaBundle.load(path), path, new


def test_fixed_bundle_scores_one_drive(toy, fixed, tmp_path):
    """A fixed bundle on one new drive: MetaFusion rows equal the pipeline with its member."""
    table, priors, _, _, _ = toy
    bundle, _, new = fixed
    folder = collect(ArraySource(new), priors, table, [0.97, 1.0], tmp_path)
    result = evaluate(folder, table, feature_names(table), priors.digest, [0.97, 1.0], [0.5],
                      bundle=bundle)
    assert result.validation == {} and result.mode.startswith('fixed bundle')
    assert result.scores[0.97].member == 0.95 and 'nearest' in result.notes[0.97]
    for alpha, member in ((0.97, 0.95), (1.0, 1.0)):
        fusion = MetaFusion(priors, table, alpha, tau=0.5)
        total, kept = SegmentCounts(), 0
        for _, _, probs, gt in new:
            frame = fusion.process(probs, bundle.members[member].predict_proba)
            total = total + segment_counts(frame.fused, gt, table)
            kept += int(frame.keep.sum())
        row = result.fusion[(alpha, 0.5, 'reference')]
        assert row.counts == total and row.kept == kept and row.candidates > 0
    with pytest.raises(ValueError, match='no classifier for alpha 0.5'):
        evaluate(folder, table, feature_names(table), priors.digest, [0.5], [0.5],
                 bundle=bundle)


def test_evaluate_command_with_a_fixed_bundle(toy, fixed, tmp_path, capsys):
    """--meta-model: one drive is enough; N.json holds the documented rows."""
    table, priors, _, _, _ = toy
    _, path, new = fixed
    code = evaluate_softmax(new, priors, tmp_path, 'fixed', '--meta-model', str(path))
    text = capsys.readouterr().out
    assert code == 0 and 'The fixed meta model on these frames' in text
    rows = json.loads((tmp_path / 'out' / 'fixed.json').read_text())
    fused_rows = 2 * len(FUSION_MODES)
    assert [r['rule'] for r in rows] == ['bayes'] + (['ml'] + ['metafusion'] * fused_rows) * 2
    assert {(r['tau'], r['fusion']) for r in rows[2:2 + fused_rows]} == {
        (t, f) for t in (0.2, 0.5) for f in FUSION_MODES}
    assert all(list(r) == list(JSON_FIELDS) for r in rows)
    bayes, ml = rows[0], rows[2 + fused_rows]
    fused = next(r for r in rows if r['rule'] == 'metafusion' and (
        r['alpha'], r['tau'], r['fusion']) == (1.0, 0.5, 'literal'))
    assert (ml['alpha'], fused['meta_alpha'], rows[1]['meta_alpha']) == (1.0, 1.0, None)
    assert ml['fusion'] is None and bayes['fusion'] is None
    assert bayes['tau'] is None and bayes['kept_share'] is None
    assert fused['candidates'] == ml['candidates'] > 0
    assert 0 < fused['candidate_tp'] == ml['candidate_tp'] < fused['candidates']
    assert fused['kept_tp'] <= fused['kept'] <= fused['candidates']
    assert bayes['target_iou'] == bayes['class_iou']['Pedestrian']
    assert bayes['miou'] == pytest.approx(np.nanmean(
        [v for v in bayes['class_iou'].values() if v is not None]))
    assert fused['delta'] == pytest.approx((fused['fp'] - bayes['fp'])
                                           / (bayes['fn'] - fused['fn']))
    with open(tmp_path / 'out' / 'fixed.csv', newline='') as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)


def _bad_bundle(path: Path, folder: Path, **changes) -> Path:
    """Copy the bundle at ``path`` into ``folder`` with its manifest changed."""
    folder.mkdir()
    for member in path.parent.glob(f'{path.stem}.a*.json'):
        shutil.copy(member, folder / member.name)
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    (folder / path.name).write_text(json.dumps(manifest))
    return folder / path.name


@pytest.mark.parametrize('case, message', [
    ('alpha', 'has no classifier for alpha 0.5: its grid is 0.95, 1'),
    ('priors', 'does not match the runtime configuration: priors differ'),
    ('table', 'class table differs'),
    ('member', 'member for alpha 1: booster file'),
    ('network', 'does not match the runtime configuration: network differs'),
])
def test_evaluate_command_refuses_a_bad_bundle(toy, fixed, tmp_path, capsys, case, message):
    """Bundle without the α, of other priors / table / network, missing member: exit 2."""
    from PIL import Image

    table, priors, _, _, _ = toy
    _, path, new = fixed
    root = tmp_path / 'camvid'
    for split in ('test', 'testannot'):
        (root / split).mkdir(parents=True)
    for key, _, probs, gt in new:
        Image.fromarray(np.zeros(gt.shape + (3,), np.uint8)).save(root / 'test' / f'{key}.png')
        Image.fromarray(gt).save(root / 'testannot' / f'{key}.png')
    tiny_network(tmp_path / 'net.onnx', table.num_classes, (24, 32))
    priors.save(tmp_path / 'priors.npz')
    changes = {'priors': {'priors_digest': '0' * 16}, 'network': {'network_digest': 'f' * 64},
               'table': {'class_table': dict(table.to_dict(), name='other')}}.get(case, {})
    bundle = _bad_bundle(path, tmp_path / 'bad bundle', **changes)
    if case == 'member':
        (bundle.parent / 'toy_meta.a1.json').unlink()
    args = ['evaluate', '--dataset', 'camvid', '--root', str(root), '--split', 'test',
            '--model', str(tmp_path / 'net.onnx'), '--priors', str(tmp_path / 'priors.npz'),
            '--cache', str(tmp_path / 'cache'), '--meta-model', str(bundle),
            '--out', str(tmp_path / 'out'), '--name', 'bad']
    if case == 'alpha':
        args += ['--alphas', '1', '0.5']
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and str(bundle) in err and message in err, err
    assert not list((tmp_path / 'cache').rglob('*.npz')), 'refused before any frame ran'
    assert not (tmp_path / 'out').exists()


def test_evaluate_scores_what_the_node_publishes(tmp_path):
    """`evaluate --meta-model` counts the masks the node publishes, at the labels' size.

    Generated frames at 1024x512 go through the shipped 512x256 network both ways: the
    offline tools (MetaFusion at the network's size, masks enlarged to the labels) and the
    node's engine (the same, then ``to_camera``); every Bayes, ML and MetaFusion count agrees.
    """
    from metafusion_ros.tools.data.datasets import open_dataset
    from metafusion_ros.runtime.engine import EngineConfig, FusionEngine

    models = Path(__file__).resolve().parents[1] / 'models'
    files = [str(models / name) for name in ('synthetic_toy.onnx', 'synthetic_toy_priors.npz',
                                             'synthetic_toy_meta.json')]
    root = tmp_path / 'synth'
    assert main(['synth', '--out', str(root), '--drives', 'test=1', '--frames', '3',
                 '--size', '1024x512', '--seed', '2']) == 0
    assert main(['evaluate', '--dataset', 'synthetic', '--root', str(root), '--split', 'test',
                 '--model', files[0], '--priors', files[1], '--meta-model', files[2],
                 '--alphas', '1', '--tau', '0.5', '--fusion', 'reference', '--cache',
                 str(tmp_path / 'cache'), '--out', str(tmp_path / 'out'), '--name', 'n']) == 0
    rows = {r['rule']: r for r in json.loads((tmp_path / 'out' / 'n.json').read_text())}
    engine = FusionEngine.load(EngineConfig(*files, alpha=1.0, tau=0.5, fusion='reference'))
    totals = {rule: SegmentCounts() for rule in rows}
    frames = open_dataset('synthetic', root, 'test', engine.table)
    for frame in map(frames.read, frames.files):
        processed = engine.process(frame.image)
        assert processed.result.fused.shape == (256, 512) and frame.labels.shape == (512, 1024)
        to_camera = Nearest.between(processed.result.fused.shape, frame.labels.shape)
        for rule, pred in (('bayes', processed.result.pred_bayes),
                           ('ml', processed.result.pred_ml),
                           ('metafusion', processed.result.fused)):
            totals[rule] += segment_counts(to_camera.labels(pred), frame.labels, engine.table)
    assert totals['ml'].tp > totals['bayes'].tp or totals['ml'].fp > totals['bayes'].fp
    for rule, counts in totals.items():
        assert (rows[rule]['tp'], rows[rule]['fp'], rows[rule]['fn']) == (
            counts.tp, counts.fp, counts.fn), rule
