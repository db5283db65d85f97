"""The core reproduces the authors' reference outputs in ../shared/golden (spec §8)."""
from pathlib import Path

import numpy as np
import pytest

from metafusion_ros.core import classes, features, heatmaps, rules, segments
from metafusion_ros.core.fusion import fuse
from metafusion_ros.core.pipeline import MetaFusion
from metafusion_ros.core.priors import interpolate, Priors
import oracle

GOLDEN = Path(__file__).resolve().parents[1].parent / 'shared' / 'golden'
FEATURE_FILES = sorted(p.name for p in GOLDEN.glob('features_*.npz')) or ['features_missing']
CHAIN_FILES = sorted(p.name for p in GOLDEN.glob('chain_*.npz')) or ['chain_missing']


def load(name: str, shared_dir: Path) -> dict:
    """Load a golden file without pickle."""
    with np.load(shared_dir / 'golden' / name, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def plain_table(num_classes: int) -> classes.ClassTable:
    """Return a table of ``num_classes`` unnamed classes (features_* files use raw indices)."""
    return classes.ClassTable('plain', tuple(str(i) for i in range(num_classes)), 255, 0,
                              tuple((0, 0, 0) for _ in range(num_classes)))


def golden_name(name: str) -> str:
    """Map our feature names to the reference's (``M`` is the reference's ``D``)."""
    if name.startswith('ndist_'):
        return 'ndist' + name[len('ndist_'):]
    return 'D' + name[1:] if name.startswith('M') else name


def ndist_index(table: classes.ClassTable, name: str) -> str:
    """Return the reference's ``ndist<y>`` key of ``ndist_<class name>``."""
    return f'ndist{table.class_names.index(name[len("ndist_"):])}'


def assert_features_match(computed: np.ndarray, golden: dict, table, rows=None) -> None:
    """Compare every feature with the reference's tolerances (spec §8)."""
    names = features.feature_names(table)
    rows = np.arange(computed.shape[0]) if rows is None else rows
    col = {n: computed[:, i] for i, n in enumerate(names)}
    for name in names:
        key = ndist_index(table, name) if name.startswith('ndist_') else golden_name(name)
        expected = golden['metric__' + key][rows].astype(np.float64)
        got = col[name]
        if '_var' in name:
            scale = col['S_rel_in'] if name.endswith('_rel_in') else (
                col['S_rel'] if name.endswith('_rel') else 1.0)
            np.testing.assert_array_less(np.abs(got - expected), 1e-6 * np.maximum(scale, 1),
                                         err_msg=name)
        elif name.startswith(('S', 'mean_', 'ndist')):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9, err_msg=name)


@pytest.mark.parametrize('name', FEATURE_FILES)
def test_segments_partition_and_boundary(name, shared_dir):
    """Components (8-connected, raster order) and the interior/boundary split match."""
    g = load(name, shared_dir)
    pred = rules.bayes_rule(g['probs'])
    seg = oracle.label_segments(pred)
    np.testing.assert_array_equal(seg.signed(), g['components'])
    assert seg.count == len(g['metric__S'])


@pytest.mark.parametrize('name', FEATURE_FILES)
def test_every_feature_of_every_segment(name, shared_dir):
    """All 30 heatmap, 5 size, 2 centre and C neighbourhood features match (eq. 6-10)."""
    g = load(name, shared_dir)
    table = plain_table(g['probs'].shape[2])
    pred = rules.bayes_rule(g['probs'])
    seg = oracle.label_segments(pred)
    computed = oracle.segment_features(seg.labels, pred, heatmaps.heatmaps(g['probs']), table)
    assert computed.shape == (seg.count, 30 + 5 + 2 + table.num_classes)
    assert_features_match(computed, g, table)


@pytest.fixture(params=CHAIN_FILES)
def chain(request, shared_dir):
    """Return one golden chain file and a MetaFusion set up like the reference run."""
    g = load(request.param, shared_dir)
    table = classes.cityscapes_table()
    np.testing.assert_array_equal(g['category_of_class'], table.category_of_class)
    priors = Priors(g['prior_category'], table, level='category')
    return g, MetaFusion(priors, alpha=float(g['alpha']))


def test_chain_bayes_and_ml_masks(chain):
    """Bayes (eq. 1, rider merged) and ML (eq. 16) masks match the reference exactly."""
    g, mf = chain
    result = mf.process(g['probs'])
    np.testing.assert_array_equal(result.pred_bayes, g['pred_bayes'])
    np.testing.assert_array_equal(result.pred_ml, g['pred_ml'])


def test_chain_ml_probabilities(chain):
    """The ML probabilities (prior division, rider zeroed, renormalised) match."""
    g, mf = chain
    prior_alpha = interpolate(mf.priors.class_priors(), mf.alpha)
    probs_ml = rules.ml_probabilities(g['probs'], prior_alpha, mf.table)
    np.testing.assert_allclose(probs_ml, g['probs_ml'], atol=2e-5)


def test_chain_ml_segment_features(chain):
    """Every feature of every ML segment, heatmaps on the ML probabilities, matches."""
    g, mf = chain
    seg = oracle.label_segments(g['pred_ml'])
    np.testing.assert_array_equal(seg.signed(), g['components_ml'])
    prior_alpha = interpolate(mf.priors.class_priors(), mf.alpha)
    heat = heatmaps.heatmaps(rules.ml_probabilities(g['probs'], prior_alpha, mf.table))
    computed = oracle.segment_features(seg.labels, g['pred_ml'], heat, mf.table)
    assert_features_match(computed, g, mf.table)


def test_chain_candidate_set(chain):
    """The disagreeing person candidates with S_in > 0 (eq. 11) are the reference's."""
    g, mf = chain
    result = mf.process(g['probs'])
    reference = np.abs(g['components_ml_vs_bayes'])
    ids = list(g['candidate_ids'])
    assert result.candidates.count == len(ids)
    for new_id, ref_id in enumerate(ids, start=1):
        np.testing.assert_array_equal(result.candidates.labels == new_id, reference == ref_id)
        assert result.candidates.sizes[new_id - 1] == g['mlvsbayes__S'][ref_id - 1]
    rows = np.array(ids, dtype=int) - 1
    if rows.size:
        assert_features_match(result.features, g, mf.table, rows=rows)


@pytest.mark.parametrize('name', CHAIN_FILES)
def test_chain_fusion_reference_and_literal(name, shared_dir):
    """The authors' fusion (spec §5) matches ``fusion_*.npz``; the literal eq. 14 keeps Bayes."""
    g = load(name, shared_dir)
    golden = load(name.replace('chain_', 'fusion_'), shared_dir)
    table = classes.cityscapes_table()
    candidates = segments.disagreeing_candidates(g['pred_ml'], g['pred_bayes'], table.target)
    every, none = np.ones(candidates.count, bool), np.zeros(candidates.count, bool)
    np.testing.assert_array_equal(fuse(g['pred_bayes'], candidates, every, table.target),
                                  golden['fusion_keep_all'])
    np.testing.assert_array_equal(fuse(g['pred_bayes'], candidates, none, table.target),
                                  golden['fusion_drop_candidates'])
    literal = fuse(g['pred_bayes'], candidates, every, table.target, 'literal')
    expected = g['pred_bayes'].copy()
    expected[candidates.labels > 0] = table.target
    np.testing.assert_array_equal(literal, expected)
    assert np.array_equal(fuse(g['pred_bayes'], candidates, none, table.target, 'literal'),
                          g['pred_bayes'])
    agreeing = np.flatnonzero(np.isin(np.abs(g['components_ml']), golden['agreeing_ids']))
    np.testing.assert_array_equal(np.sort(candidates.agreeing), agreeing)
