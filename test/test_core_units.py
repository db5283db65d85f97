"""Hand-made cases for each equation of the core, edge cases and bad input."""
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra.numpy import arrays
import numpy as np
import pytest

from metafusion_ros.core import classes, evaluation, features, heatmaps, kernels, rules, segments
from metafusion_ros.core.fusion import fuse, support_at
from metafusion_ros.core.pipeline import MetaFusion
from metafusion_ros.core.priors import estimate_priors, interpolate, Priors
import oracle


def table(num_classes: int = 3, target: int = 2, merge=()) -> classes.ClassTable:
    """Return a small class table: classes a, b, c, ... with ignore 255."""
    names = tuple('abcdefgh'[:num_classes])
    return classes.ClassTable('toy', names, 255, target, ((0, 0, 0),) * num_classes,
                              merge=merge)


def onehot(labels: np.ndarray, num_classes: int, confidence: float = 0.9) -> np.ndarray:
    """Return a softmax that puts ``confidence`` on ``labels`` and spreads the rest."""
    rest = (1 - confidence) / (num_classes - 1)
    probs = np.full(labels.shape + (num_classes,), rest, dtype=np.float32)
    np.put_along_axis(probs, labels[..., None].astype(np.int64), np.float32(confidence), axis=2)
    return probs


# ---- priors (eq. 5, 15) -------------------------------------------------------------------

def test_priors_hand_computation_ignore_excluded():
    """p_z(y) is the share of images labelled y at z, ignore excluded per pixel (eq. 5)."""
    maps = [np.array([[0, 1], [2, 255]], np.uint8), np.array([[0, 0], [255, 255]], np.uint8),
            np.array([[1, 0], [2, 0]], np.uint8)]
    priors = estimate_priors(maps, table())
    expected = np.array([[[2 / 3, 1 / 3, 0], [2 / 3, 1 / 3, 0]],
                         [[0, 0, 1], [1, 0, 0]]], np.float32)
    np.testing.assert_allclose(priors.probs, expected, rtol=1e-6)
    np.testing.assert_array_equal(priors.counts, [[3, 3], [2, 1]])
    assert priors.num_images == 3


def test_priors_without_any_label_are_uniform_and_sum_to_one():
    """A pixel that is ignore in every image gets 1/K, so priors always sum to 1."""
    priors = estimate_priors([np.array([[255, 1]], np.uint8)], table())
    np.testing.assert_allclose(priors.probs[0, 0], [1 / 3] * 3)
    np.testing.assert_allclose(priors.probs.sum(axis=2), 1, rtol=1e-6)


def test_smoothing_lifts_zero_priors_towards_the_overall_frequency():
    """λ pseudo-images: p = (n_z(y) + λ f(y)) / (n_z + λ); λ = 0 is eq. 5; λ < 0 fails."""
    maps = [np.array([[0, 1]], np.uint8), np.array([[0, 0]], np.uint8)]
    plain = estimate_priors(maps, table())
    smooth = estimate_priors(maps, table(), smoothing=2.0)
    frequency = np.array([3, 1, 0]) / 4
    np.testing.assert_allclose(smooth.probs[0, 0], (np.array([2, 0, 0]) + 2 * frequency) / 4)
    np.testing.assert_allclose(smooth.probs[0, 1], (np.array([1, 1, 0]) + 2 * frequency) / 4)
    assert plain.probs[0, 0, 1] == 0 and smooth.probs[0, 0, 1] > 0
    np.testing.assert_allclose(smooth.probs.sum(axis=2), 1, rtol=1e-6)
    with pytest.raises(ValueError, match='smoothing'):
        estimate_priors(maps, table(), smoothing=-1)


def test_category_priors_and_rider_merge():
    """Person and rider share the human category prior; rider counts for person (§6)."""
    cs = classes.cityscapes_table()
    person, rider = cs.index('person'), cs.index('rider')
    maps = [np.array([[person, rider]], np.uint8), np.array([[0, rider]], np.uint8)]
    by_class = estimate_priors(maps, cs)
    assert by_class.probs[0, 1, person] == 1 and by_class.probs[0, 1, rider] == 0
    by_category = estimate_priors(maps, cs, categories=True)
    human = cs.category_names.index('human')
    np.testing.assert_allclose(by_category.probs[0, :, human], [0.5, 1.0])
    per_class = by_category.class_priors()
    assert per_class.shape == (1, 2, 19)
    np.testing.assert_allclose(per_class[0, :, rider], per_class[0, :, person])


def test_priors_save_load_resize(tmp_path):
    """The .npz round-trips with its metadata; resizing keeps a distribution per pixel."""
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 3, (8, 12)).astype(np.uint8) for _ in range(5)]
    priors = estimate_priors(maps, table(), dataset='toy')
    priors.save(tmp_path / 'p.npz')
    loaded = Priors.load(tmp_path / 'p.npz')
    np.testing.assert_array_equal(loaded.probs, priors.probs)
    assert loaded.names == ('a', 'b', 'c') and loaded.num_images == 5
    assert loaded.table == priors.table and loaded.digest == priors.digest
    resized = loaded.resized((16, 6))
    assert resized.probs.shape == (16, 6, 3)
    np.testing.assert_allclose(resized.probs.sum(axis=2), 1, rtol=1e-5)


def test_priors_bad_input(tmp_path):
    """Empty data, mixed sizes, unknown labels and broken files get clear errors."""
    with pytest.raises(ValueError, match='empty'):
        estimate_priors([], table())
    with pytest.raises(ValueError, match='differs'):
        estimate_priors([np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8)], table())
    with pytest.raises(ValueError, match='outside'):
        estimate_priors([np.full((2, 2), 7, np.uint8)], table())
    with pytest.raises(FileNotFoundError, match='missing.npz'):
        Priors.load(tmp_path / 'missing.npz')
    (tmp_path / 'bad.npz').write_bytes(b'not a zip')
    with pytest.raises(ValueError, match='bad.npz'):
        Priors.load(tmp_path / 'bad.npz')
    good = tmp_path / 'good.npz'
    estimate_priors([np.zeros((4, 4), np.uint8)], table()).save(good)
    (tmp_path / 'cut.npz').write_bytes(good.read_bytes()[:-40])
    with pytest.raises(ValueError, match='cut.npz'):
        Priors.load(tmp_path / 'cut.npz')


def test_interpolated_priors():
    """p_{z,α} = (1 - α) + α p_z (eq. 15): α = 0 is flat, α = 1 the priors; α ∉ [0, 1] fails."""
    p = np.array([[[0.2, 0.8]]], np.float32)
    np.testing.assert_array_equal(interpolate(p, 0.0), np.ones_like(p))
    np.testing.assert_array_equal(interpolate(p, 1.0), p)
    np.testing.assert_allclose(interpolate(p, 0.5), [[[0.6, 0.9]]])
    for bad in (-0.1, 1.5, float('nan')):
        with pytest.raises(ValueError, match='alpha'):
            interpolate(p, bad)


# ---- decision rules (eq. 1, 3, 16) ----------------------------------------------------------

def test_bayes_and_ml_rules_by_hand():
    """ML divides by the priors: a rare class wins where its likelihood ratio is largest."""
    probs = np.array([[[0.6, 0.1, 0.3]]], np.float32)
    priors = np.array([[[0.8, 0.15, 0.05]]], np.float32)
    assert rules.bayes_rule(probs)[0, 0] == 0
    assert oracle.ml_rule(probs, priors)[0, 0] == 2
    ml = rules.ml_probabilities(probs, priors)
    ratio = probs / (priors + 1e-5)
    np.testing.assert_allclose(ml, ratio / ratio.sum(), rtol=1e-6)


def test_priors_with_zeros_stay_finite():
    """A zero prior is lifted by the reference's 1e-5 instead of dividing by zero."""
    probs = np.array([[[0.5, 0.5]]], np.float32)
    ml = rules.ml_probabilities(probs, np.array([[[1.0, 0.0]]], np.float32))
    assert np.all(np.isfinite(ml)) and ml[0, 0, 1] > 0.99


def test_rider_merge_renormalises():
    """The merged class gets probability 0 and the rest is renormalised (spec §1)."""
    t = table(3, target=1, merge=((2, 1),))
    merged = oracle.merge_classes(np.array([[[0.2, 0.3, 0.5]]], np.float32), t)
    np.testing.assert_allclose(merged, [[[0.4, 0.6, 0.0]]], rtol=1e-6)


def test_kernel_agrees_with_numpy():
    """The one-pass kernel and the numpy reference give identical masks on random softmaxes."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(37, 53, 8)).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    priors = rng.dirichlet(np.ones(5), size=(37, 53)).astype(np.float32)
    chmap = np.array([0, 1, 1, 2, 3, 4, 4, 0])
    for alpha in (0.0, 0.9, 1.0):
        inverse = None if alpha == 0 else 1 / (interpolate(priors, alpha) + np.float32(1e-5))
        expected = kernels.decision_rules_numpy(probs, inverse, chmap, (6,))
        got = kernels.decision_rules(probs, inverse, chmap, (6,))
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        assert not np.any(got[0] == 6) and not np.any(got[1] == 6)


@settings(max_examples=80, deadline=None)
# one padded vector (< 8), whole vectors (8, 16, 64), an overlapping last vector, numpy (> 64);
# prior channels: per class, fewer than 8, 8 to 16 (shuffled from two vectors), more (spread)
@given(num_classes=st.sampled_from([1, 2, 5, 7, 8, 9, 11, 15, 16, 17, 19, 24, 31, 64, 65]),
       channels=st.sampled_from([None, 1, 3, 8, 11, 16, 20]),
       merged=st.sampled_from([(), (-1,), (0, 'half')]),
       seed=st.integers(0, 2**16),
       alpha=st.sampled_from([0.0, 0.6, 1.0]),
       poison=st.sampled_from([None, np.nan, np.inf, -0.25]))
@example(num_classes=19, channels=8, merged=(-1,), seed=0, alpha=1.0, poison=None)
@example(num_classes=8, channels=None, merged=(), seed=1, alpha=1.0, poison=np.nan)
@example(num_classes=16, channels=11, merged=(0, 'half'), seed=2, alpha=0.6, poison=-0.25)
def test_kernel_agrees_with_numpy_for_any_class_count(num_classes, channels, merged, seed, alpha,
                                                      poison):
    """Vector loads of 1..64 classes (padded, overlapping, whole) and > 64 (numpy) agree exactly.

    Probabilities are small-integer fractions, so ties are everywhere and the first maximum
    matters; merged classes first, in the middle or last; priors per class (``channels`` None)
    or over K channels with a scrambled class -> channel map; NaN, Inf and negatives are
    reported alike. The class -> channel map and the merged classes are fixed per (C, K) so
    that the kernels compiled per layout are few and cached.
    """
    rng = np.random.default_rng(seed)
    h, w, c = int(rng.integers(1, 9)), int(rng.integers(1, 13)), num_classes
    counts = rng.integers(0, 4, size=(h, w, c))
    counts[..., 0] += counts.sum(axis=2) == 0
    probs = (counts / counts.sum(axis=2, keepdims=True)).astype(np.float32)
    merged = tuple(sorted({c // 2 if y == 'half' else y % c for y in merged})) if c > 2 else ()
    k = c if channels is None else min(channels, c)
    chmap = np.arange(c) if channels is None else np.random.default_rng(c * k).integers(0, k, c)
    priors = rng.dirichlet(np.ones(k), size=(h, w)).astype(np.float32)
    inverse = None if alpha == 0 else 1 / (interpolate(priors, alpha) + np.float32(1e-5))
    if poison is not None:
        probs[rng.integers(h), rng.integers(w), rng.integers(c)] = poison
    bayes, ml, stats = kernels.decision_rules(probs, inverse, chmap, merged)
    ref_bayes, ref_ml, ref_stats = kernels.decision_rules_numpy(probs, inverse, chmap, merged)
    assert stats.bad == ref_stats.bad
    if np.isfinite(ref_stats.max_sum_error):
        assert abs(stats.max_sum_error - ref_stats.max_sum_error) < 1e-5
        np.testing.assert_array_equal(bayes, ref_bayes)
        np.testing.assert_array_equal(ml, ref_ml)
    else:
        assert not np.isfinite(stats.max_sum_error)
        assert bayes.max() < c and ml.max() < c  # masks of a refused frame still index classes


# ---- heatmaps (eq. 6-8) ---------------------------------------------------------------------

def test_heatmaps_by_hand():
    """Uniform: E = 1, M = 1, V = 1 - 1/C; one-hot: all 0; a 0.7/0.2/0.1 split by hand."""
    uniform = np.full((1, 4), 0.25, np.float32)
    np.testing.assert_allclose(heatmaps.entropy(uniform), [1.0], rtol=1e-5)
    np.testing.assert_allclose(oracle.margin(uniform), [1.0])
    np.testing.assert_allclose(oracle.variation(uniform), [0.75])
    sure = np.array([[1.0, 0, 0]], np.float32)
    np.testing.assert_allclose(heatmaps.heatmaps(sure), [[0.0], [0.0], [0.0]], atol=1e-6)
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    e = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)) / np.log(3)
    np.testing.assert_allclose(heatmaps.entropy(p), [e], rtol=1e-5)
    np.testing.assert_allclose(oracle.margin(p), [0.5], rtol=1e-6)
    np.testing.assert_allclose(oracle.variation(p), [0.3], rtol=1e-6)
    for probs in (uniform, sure, p):  # the triple at once equals the three equations
        np.testing.assert_array_equal(heatmaps.heatmaps(probs), (
            heatmaps.entropy(probs), oracle.margin(probs), oracle.variation(probs)))


# ---- segments and features (eq. 9-11) -------------------------------------------------------

def test_one_pixel_segment_and_neighbourhood():
    """A lone pixel: S = 1, S_in = 0; every neighbour event counts once (eq. 10)."""
    pred = np.zeros((3, 3), np.uint8)
    pred[1, 1] = 1
    seg = oracle.label_segments(pred)
    assert seg.count == 2 and seg.labels[1, 1] == 2
    assert seg.boundary.sum() == 9
    t = table(2, target=1)
    heat = heatmaps.heatmaps(onehot(pred, 2))
    f = oracle.segment_features(seg.labels, pred, heat, t)
    col = dict(zip(features.feature_names(t), f.T))
    np.testing.assert_array_equal(col['S'], [8, 1])
    np.testing.assert_array_equal(col['S_in'], [0, 0])
    np.testing.assert_array_equal(col['ndist_a'], [0, 1])
    np.testing.assert_array_equal(col['ndist_b'], [1, 0])
    np.testing.assert_array_equal(col['mean_x'], [1, 1])
    np.testing.assert_array_equal(col['E_in'], [0, 0])


def test_border_alone_does_not_make_boundary_and_diagonals_connect():
    """A segment touching the border keeps interior border pixels; diagonals are 8-connected."""
    pred = np.zeros((5, 5), np.uint8)
    pred[2, 2] = pred[3, 3] = 1
    seg = oracle.label_segments(pred)
    assert seg.count == 2
    assert not seg.boundary[0, 0] and not seg.boundary[0, 4]
    assert seg.labels[2, 2] == seg.labels[3, 3]


def test_ignore_neighbours_count_only_in_denominator():
    """Ignore pixels are different labels: boundary, and in the ndist denominator only."""
    pred = np.array([[0, 0, 255]], np.uint8)
    seg = oracle.label_segments(pred, ignore_label=255)
    t = table(2, target=1)
    f = oracle.segment_features(seg.labels, pred, heatmaps.heatmaps(onehot(pred % 2, 2)), t)
    col = dict(zip(features.feature_names(t), f.T))
    assert col['S_bd'][0] == 1 and col['ndist_a'][0] == 0 and col['ndist_b'][0] == 0


def test_candidates_need_interior_and_no_bayes_pixel():
    """Disagreeing ML segments of c with S_in > 0 go on; S_in = 0 ones are dropped (eq. 11)."""
    pred_ml = np.zeros((8, 12), np.uint8)
    pred_ml[1:4, 1:4] = 2          # 3x3 blob, has interior, Bayes misses it -> candidate
    pred_ml[5:7, 1:3] = 2          # 2x2 blob, no interior -> dropped
    pred_ml[1:4, 7:10] = 2         # 3x3 blob, Bayes agrees on one pixel -> not disagreeing
    pred_bayes = np.zeros_like(pred_ml)
    pred_bayes[2, 8] = 2
    cand = segments.disagreeing_candidates(pred_ml, pred_bayes, 2)
    assert cand.count == 1 and cand.dropped == 1
    np.testing.assert_array_equal(cand.boxes[0], [1, 1, 4, 4])
    assert cand.sizes[0] == 9


def test_feature_schema():
    """45 features for 8 classes, 55 for Cityscapes' 19 with rider merged (spec §3)."""
    eight = table(8, target=6)
    assert len(features.feature_names(eight)) == 45
    names = features.feature_names(classes.cityscapes_table())
    assert len(names) == 55 and 'ndist_rider' not in names and 'ndist_person' in names
    assert names[:3] == ('E', 'E_in', 'E_bd') and names[30:35] == (
        'S', 'S_in', 'S_bd', 'S_rel', 'S_rel_in')


# ---- fusion (eq. 14) ------------------------------------------------------------------------

def test_fusion_copies_only_kept_candidates():
    """Kept candidates take class c; dropped ones and everything else stay Bayes."""
    pred_ml = np.zeros((6, 10), np.uint8)
    pred_ml[1:4, 1:4] = 2
    pred_ml[1:4, 6:9] = 2
    bayes = np.ones_like(pred_ml)
    cand = segments.disagreeing_candidates(pred_ml, bayes, 2)
    fused = fuse(bayes, cand, np.array([False, True]), 2)
    assert (fused[1:4, 6:9] == 2).all() and (fused[1:4, 1:4] == 1).all()
    assert (fused[pred_ml != 2] == 1).all()
    np.testing.assert_array_equal(fuse(bayes, cand, np.array([False, False]), 2), bayes)
    with pytest.raises(ValueError, match='keep'):
        fuse(bayes, cand, np.array([True]), 2)


def support_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return Bayes and ML masks and a softmax for the ``support`` reading (c = 2 of 3).

    A found pedestrian (Bayes c, rows 2-4, cols 1-3) inside a larger agreeing ML segment (rows
    1-5, cols 0-9); the softmax gives c more than half of the winner's probability only in a band
    beside it (cols 4-5) and in a part of the ML extent cut off from it by col 6 (cols 7-9).
    A disagreeing candidate (rows 1-4, cols 11-13) holds no Bayes-c pixel.
    """
    ratio = np.full((7, 14), 0.1)
    ratio[2:5, 1:4] = 2.0
    ratio[1:6, 4:6] = 0.6
    ratio[1:6, 7:10] = 0.9
    probs = np.zeros((7, 14, 3), np.float32)
    probs[..., 1] = 0.01
    probs[..., 0] = 0.99 / (1 + ratio)
    probs[..., 2] = 0.99 - probs[..., 0]
    pred_ml = np.zeros((7, 14), np.uint8)
    pred_ml[1:6, 0:10] = 2
    pred_ml[1:5, 11:14] = 2
    return rules.bayes_rule(probs), pred_ml, probs


def test_support_fusion_grows_the_bayes_extent_through_supported_pixels():
    """The agreeing segment keeps its Bayes extent plus the supported band attached to it.

    Its unsupported ML pixels and the supported part cut off from the Bayes extent stay Bayes;
    the kept candidate takes class c whole, as in the other readings (spec §5).
    """
    bayes, pred_ml, probs = support_frame()
    cand = segments.disagreeing_candidates(pred_ml, bayes, 2)
    assert cand.count == 1 and (bayes[2:5, 1:4] == 2).all() and (bayes[bayes != 2] == 0).all()
    support = support_at(probs, cand.agreeing, 2)
    fused = fuse(bayes, cand, np.array([True]), 2, 'support', support)
    expected = bayes.copy()
    expected[1:6, 4:6] = 2
    expected[1:5, 11:14] = 2
    np.testing.assert_array_equal(fused, expected)
    twin = oracle.supported_fusion(bayes, pred_ml, oracle.support(probs, 2), 2, 0.5)
    twin[1:5, 11:14] = 2  # the kept candidate
    np.testing.assert_array_equal(fused, twin)
    reference = fuse(bayes, cand, np.array([False]), 2, 'reference')
    assert (reference[1:6, 0:10] == 2).all() and (reference[1:5, 11:14] == 0).all()
    assert (fuse(bayes, cand, np.array([False]), 2, 'literal') == bayes).all()
    strict = fuse(bayes, cand, np.array([False]), 2, 'support', support, threshold=0.95)
    np.testing.assert_array_equal(strict, bayes)


def test_support_is_the_bayes_odds_of_c_against_its_best_rival():
    """``p_c / max_y p_y`` over the classes the Bayes rule weighs: merged ones are no rivals."""
    probs = np.array([[[0.2, 0.7, 0.1], [0.0, 0.0, 1.0], [0.6, 0.1, 0.3]]], np.float32)
    np.testing.assert_allclose(support_at(probs, np.arange(3), 2, merged=(1,)),
                               [0.5, np.inf, 0.5])
    np.testing.assert_allclose(support_at(probs, np.array([2, 0]), 2), [0.5, 0.1 / 0.7],
                               rtol=1e-6)
    np.testing.assert_allclose(support_at(probs, np.arange(3), 2, (1,)),
                               oracle.support(probs, 2, (1,)).ravel())


def test_support_fusion_refuses_a_missing_or_misaligned_support():
    """The support reading needs one support value per agreeing pixel."""
    bayes, pred_ml, probs = support_frame()
    cand = segments.disagreeing_candidates(pred_ml, bayes, 2)
    with pytest.raises(ValueError, match='support'):
        fuse(bayes, cand, np.array([True]), 2, 'support')
    with pytest.raises(ValueError, match='one value per agreeing pixel'):
        fuse(bayes, cand, np.array([True]), 2, 'support', np.ones(3, np.float32))


@settings(max_examples=80, deadline=None)
@given(pred_ml=arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 17)),
                      elements=st.sampled_from([0, 2, 2, 2])),
       seed=st.integers(0, 2**16))
def test_support_fusion_agrees_with_numpy(pred_ml, seed):
    """Any masks and supports (ties at the threshold included): sparse kernel = scipy twin."""
    rng = np.random.default_rng(seed)
    pred_bayes = np.where((pred_ml == 2) & (rng.random(pred_ml.shape) < 0.15), 2,
                          rng.integers(0, 2, pred_ml.shape)).astype(np.uint8)
    support_map = rng.choice(np.array([0.25, 0.5, 1.0], np.float32), pred_ml.shape)
    cand = segments.disagreeing_candidates(pred_ml, pred_bayes, 2)
    fused = fuse(pred_bayes, cand, np.zeros(cand.count, bool), 2, 'support',
                 support_map.ravel()[cand.agreeing])
    np.testing.assert_array_equal(fused, oracle.supported_fusion(pred_bayes, pred_ml,
                                                                 support_map, 2, 0.5))


# ---- evaluation (spec §6, eq. 17) -----------------------------------------------------------

def test_fp_fn_delta_by_hand():
    """Segment FP needs S_in > 0 and no GT-c pixel; FN is a GT segment with no predicted c."""
    t = table(3, target=2)
    gt = np.zeros((8, 16), np.uint8)
    gt[1:4, 1:4] = 2                  # person A
    gt[5:7, 12:14] = 2                # person B
    bayes = np.zeros_like(gt)
    bayes[1:4, 1:4] = 2               # finds A
    ml = bayes.copy()
    ml[5:7, 12:14] = 2                # also finds B (2x2: no interior, still a hit for FN)
    ml[1:4, 7:10] = 2                 # and a 3x3 false positive
    ml[6, 6] = 2                      # a 1-pixel false alarm without interior: not counted
    b, m = evaluation.segment_counts(bayes, gt, t), evaluation.segment_counts(ml, gt, t)
    assert (b.tp, b.fp, b.fn) == (1, 0, 1)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert evaluation.delta(m, b) == 1.0
    assert np.isnan(evaluation.delta(b, b))
    assert evaluation.added_tp_share(m, b, m) == 1.0
    assert b.f1 == pytest.approx(2 / 3)


def test_kept_share_is_defined_beyond_one_and_without_ml_gains():
    """(Bayes FN - fused FN) / (Bayes FN - ML FN), not clamped; NaN where ML removes none."""
    share = evaluation.added_tp_share
    counts = evaluation.SegmentCounts
    bayes, ml = counts(fn=15), counts(fn=8)
    assert share(counts(fn=7), bayes, ml) == pytest.approx(8 / 7)  # fewer misses than ML
    assert share(counts(fn=8), bayes, ml) == 1.0 and share(counts(fn=15), bayes, ml) == 0.0
    assert share(counts(fn=16), bayes, ml) == pytest.approx(-1 / 7)  # misses more than Bayes
    assert np.isnan(share(counts(fn=3), bayes, counts(fn=15)))
    assert np.isnan(share(counts(fn=3), bayes, counts(fn=16)))  # ML misses more than Bayes


def whole_frame_counts(pred: np.ndarray, gt: np.ndarray, t) -> evaluation.SegmentCounts:
    """Count as spec §6 words it: ignore copied into the prediction, every segment labelled."""
    c, ignore = t.target, t.ignore_label
    pred = np.where(gt == ignore, ignore, pred).astype(pred.dtype)
    seg = oracle.label_segments(pred, ignore_label=ignore)
    ids = np.unique(seg.labels[pred == c])
    counted = [i for i in ids if (~seg.boundary[seg.labels == i]).any()]
    tp = sum(bool((gt[seg.labels == i] == c).any()) for i in counted)
    gt_seg = oracle.label_segments((gt == c).astype(np.uint8))
    found = {int(i) for i in np.unique(gt_seg.labels[(gt == c) & (pred == c)])}
    missed = {int(i) for i in np.unique(gt_seg.labels[gt == c])} - found
    return evaluation.SegmentCounts(tp=tp, fp=len(counted) - tp, fn=len(missed))


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 24), st.integers(2, 24), st.integers(0, 2**32 - 1))
def test_segment_counts_match_whole_frame_labelling(height, width, seed):
    """Labelling only the class-c mask counts exactly what labelling every segment counts."""
    rng = np.random.default_rng(seed)
    t = table(3, target=2)
    pred = rng.choice(np.array([0, 1, 2], np.uint8), (height, width), p=[0.2, 0.2, 0.6])
    gt = rng.choice(np.array([0, 2, 255], np.uint8), (height, width), p=[0.4, 0.4, 0.2])
    assert evaluation.segment_counts(pred, gt, t) == whole_frame_counts(pred, gt, t)


def test_ignore_in_ground_truth_masks_prediction():
    """Predicted c on ignore pixels is neither FP nor TP (prediction set to ignore first)."""
    t = table(3, target=2)
    gt = np.full((5, 5), 255, np.uint8)
    pred = np.full((5, 5), 2, np.uint8)
    assert evaluation.segment_counts(pred, gt, t) == evaluation.SegmentCounts(0, 0, 0)


def test_confusion_and_miou():
    """Mean IoU over the classes that occur; ignore pixels excluded."""
    t = table(3)
    gt = np.array([[0, 0, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 2]], np.uint8)
    conf = evaluation.confusion(pred, gt, t)
    np.testing.assert_allclose(evaluation.iou_per_class(conf)[:2], [0.5, 0.5])
    assert evaluation.mean_iou(conf) == pytest.approx(0.5)
    with pytest.raises(ValueError, match='outside'):
        evaluation.confusion(pred, np.array([[0, 0, 9, 1]], np.uint8), t)


# ---- pipeline: edge cases and bad input -----------------------------------------------------

def pipeline(num_classes: int = 3, shape=(10, 14), alpha: float = 1.0) -> MetaFusion:
    """Return a MetaFusion whose priors make class c (2) rare everywhere."""
    t = table(num_classes, target=2)
    prior = np.full(shape + (num_classes,), 0.45, np.float32)
    prior[..., 2] = 0.1
    prior /= prior.sum(axis=2, keepdims=True)
    return MetaFusion(Priors(prior, t), alpha=alpha)


def test_alpha_zero_is_exactly_bayes():
    """α = 0 gives exactly the Bayes mask and no candidates."""
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=(10, 14)).astype(np.float32)
    result = pipeline(alpha=0.0).process(probs)
    np.testing.assert_array_equal(result.pred_ml, result.pred_bayes)
    np.testing.assert_array_equal(result.fused, result.pred_bayes)
    assert result.candidates.count == 0


def test_empty_frame_and_score_threshold():
    """A frame of one class has no candidates; τ decides which candidates are fused."""
    mf = pipeline()
    probs = onehot(np.zeros((10, 14), np.uint8), 3, 0.98)
    empty = mf.process(probs)
    assert empty.candidates.count == 0 and empty.features.shape == (0, 30 + 5 + 2 + 3)
    probs[2:6, 2:6] = [0.5, 0.2, 0.3]          # c loses under Bayes, wins under ML
    probs[2:6, 8:12] = [0.5, 0.2, 0.3]
    result = mf.process(probs, score_fn=lambda f: np.where(f[:, 30] > 6, 0.9, 0.1))
    assert result.candidates.count == 2
    assert result.keep.all() and (result.fused[2:6, 2:6] == 2).all()
    mf.tau = 0.95
    assert not mf.process(probs, score_fn=lambda f: np.full(len(f), 0.9)).keep.any()


@pytest.mark.parametrize('alpha,fusion', [(1.0, 'reference'), (0.7, 'literal'),
                                          (0.0, 'reference')])
def test_confidence_is_the_deciding_rules_probability_of_the_label(alpha, fusion):
    """Bayes pixels: merged-renormalised softmax; pixels fused from ML: the ML probability of c.

    Checked against the numpy reference of both rules (spec §1, eq. 1, 3, 16); the published
    label is the most probable class of the distribution its confidence comes from.
    """
    t = table(4, target=2, merge=((3, 2),))
    rng = np.random.default_rng(7)
    probs = onehot(rng.integers(0, 2, size=(12, 16)).astype(np.uint8), 4, 0.7)
    for row, col in ((1, 1), (1, 9), (7, 4)):  # c loses under Bayes, wins under ML
        probs[row:row + 4, col:col + 5] = [0.42, 0.12, 0.32, 0.14]
    probs *= rng.uniform(0.95, 1.05, size=probs.shape).astype(np.float32)
    probs /= probs.sum(axis=2, keepdims=True)
    prior = np.full((12, 16, 4), 0.3, np.float32)
    prior[..., 2] = 0.05
    prior /= prior.sum(axis=2, keepdims=True)
    mf = MetaFusion(Priors(prior, t), alpha=alpha, fusion=fusion)
    result = mf.process(probs, score_fn=lambda f: np.resize([0.9, 0.1], len(f)))
    got = mf.confidence(probs, result)
    bayes = oracle.merge_classes(probs, t)
    ml = rules.ml_probabilities(probs, interpolate(prior, alpha), t)
    replaced = result.fused != result.pred_bayes
    assert replaced.any() == (alpha > 0)
    if alpha > 0:
        assert result.keep.any() and not result.keep.all() and (~replaced).any()
    label = result.fused[..., None].astype(np.int64)
    expected = np.where(replaced, np.take_along_axis(ml, label, 2)[..., 0],
                        np.take_along_axis(bayes, label, 2)[..., 0])
    assert got.dtype == np.float32 and got.shape == (12, 16)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    np.testing.assert_allclose(got, np.where(replaced, ml.max(axis=2), bayes.max(axis=2)),
                               rtol=0, atol=2e-6)


def test_two_classes_only():
    """Run MetaFusion with only two classes."""
    t = table(2, target=1)
    mf = MetaFusion(Priors(np.dstack([np.full((6, 6), 0.9), np.full((6, 6), 0.1)]), t))
    probs = onehot(np.zeros((6, 6), np.uint8), 2, 0.8)
    assert (mf.process(probs).fused == 1).all()


@pytest.mark.parametrize('probs, error, match', [
    (np.zeros((10, 14)), ValueError, 'rank 3'),
    (np.zeros((10, 14, 3), np.int32), TypeError, 'floating'),
    (np.full((10, 14, 4), 0.25, np.float32), ValueError, '4 classes'),
    (np.full((10, 14, 3), np.nan, np.float32), ValueError, 'NaN'),
    (np.dstack([np.full((10, 14), 1.5), np.full((10, 14), -0.5), np.zeros((10, 14))])
     .astype(np.float32), ValueError, 'negative'),
    (np.full((10, 14, 3), 0.5, np.float32), ValueError, 'normalised'),
    ([[0.5, 0.5]], TypeError, 'numpy'),
])
def test_pipeline_rejects_bad_softmax(probs, error, match):
    """Bad softmaxes raise a clear error naming the problem."""
    with pytest.raises(error, match=match):
        pipeline().process(probs)


@pytest.mark.parametrize('value, match', [(np.nan, 'NaN'), (np.inf, 'Inf'), (-0.2, 'negative')])
def test_one_bad_pixel_in_a_large_softmax_is_found(value, match):
    """The one-pass kernel reports a single NaN, Inf or negative value anywhere in the frame."""
    mf = pipeline(shape=(120, 160))
    probs = onehot(np.zeros((120, 160), np.uint8), 3, 0.98)
    probs[77, 101, 1] = value
    with pytest.raises(ValueError, match=match):
        mf.process(probs)


def test_pipeline_rejects_bad_configuration():
    """α/τ outside [0, 1], priors for other classes and a broken score function fail clearly."""
    mf = pipeline()
    with pytest.raises(ValueError, match='alpha'):
        mf.alpha = 1.2
    with pytest.raises(ValueError, match='tau'):
        mf.tau = -1
    with pytest.raises(ValueError, match='priors are for'):
        MetaFusion(mf.priors, table=table(4))
    probs = onehot(np.zeros((10, 14), np.uint8), 3, 0.98)
    probs[2:6, 2:6] = [0.5, 0.2, 0.3]
    with pytest.raises(ValueError, match='scores'):
        mf.process(probs, score_fn=lambda f: np.zeros(5))


@settings(max_examples=60, deadline=None)
@given(pred_ml=arrays(np.uint8, st.tuples(st.integers(1, 13), st.integers(1, 19)),
                      elements=st.integers(0, 2)),
       seed=st.integers(0, 2**16))
@example(pred_ml=np.array([[2], [0], [2]], np.uint8), seed=0)  # 1 and 2 pixels wide: the pixel
@example(pred_ml=np.array([[0, 2], [0, 0], [2, 0]], np.uint8), seed=0)  # 2 rows up is no link
def test_candidate_kernel_agrees_with_numpy_on_any_mask(pred_ml, seed):
    """Any size (word tails), diagonal links and frame borders: numba and scipy twins agree."""
    pred_bayes = np.where(np.random.default_rng(seed).random(pred_ml.shape) < 0.1, 2, 0)
    pred_bayes = pred_bayes.astype(np.uint8)
    got = kernels._components_kernel(pred_ml, pred_bayes, 2)
    expected = oracle.components(pred_ml, pred_bayes, 2)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_candidate_kernel_agrees_with_scipy_labelling():
    """Sparse union-find candidates equal the scipy labelling of the target class (eq. 11)."""
    rng = np.random.default_rng(5)
    blocks = rng.random((20, 27)) < 0.3
    pred_ml = np.kron(blocks, np.ones((3, 3), bool))[:60, :80].astype(np.uint8) * 2
    pred_ml[rng.random((60, 80)) < 0.05] = 1
    pred_bayes = np.where(rng.random((60, 80)) < 0.004, 2, 0).astype(np.uint8)
    cand = segments.disagreeing_candidates(pred_ml, pred_bayes, 2)
    full = oracle.label_segments(pred_ml)
    expected_ids = []
    for sid in range(1, full.count + 1):
        region = full.labels == sid
        if pred_ml[region][0] == 2 and not (pred_bayes[region] == 2).any() and (
                region & ~full.boundary).any():
            expected_ids.append(sid)
    assert cand.count == len(expected_ids) > 3
    for new_id, sid in enumerate(expected_ids, start=1):
        np.testing.assert_array_equal(cand.labels == new_id, full.labels == sid)
        rows, cols = np.nonzero(full.labels == sid)
        np.testing.assert_array_equal(cand.boxes[new_id - 1],
                                      [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])


def test_resized_priors_cache_is_bounded_lru():
    """Frames of ever new sizes keep at most PRIORS_CACHE resized priors; the newest stay."""
    from metafusion_ros.core.pipeline import PRIORS_CACHE

    mf = pipeline()
    first = mf.priors_at((5, 7))
    for k in range(3 * PRIORS_CACHE):
        assert mf.priors_at((6 + k, 8)).resolution == (6 + k, 8)
        assert mf.priors_at((5, 7)) is first  # recently used: never evicted
        assert len(mf._cache) <= PRIORS_CACHE
    assert (6, 8) not in mf._cache and (5, 7) in mf._cache


@settings(max_examples=40, deadline=None)
@given(num_classes=st.sampled_from([2, 3, 8, 19]), channels=st.sampled_from([None, 2, 8]),
       seed=st.integers(0, 2**16), alpha=st.sampled_from([0.0, 0.6, 1.0]),
       merged=st.booleans())
def test_ml_heatmaps_kernel_agrees_with_numpy(num_classes, channels, seed, alpha, merged):
    """E, M, V of the ML probabilities, pixel by pixel, equal the numpy reference (spec §1, 3).

    M and V exactly; E within 2 ulp (numpy's float32 log is its own SIMD approximation). Ties
    (small-integer fractions) and zero priors included; full frame = the same at every pixel.
    """
    rng = np.random.default_rng(seed)
    h, w, c = int(rng.integers(1, 9)), int(rng.integers(1, 13)), num_classes
    counts = rng.integers(0, 4, size=(h, w, c))
    counts[..., 0] += counts.sum(axis=2) == 0
    probs = (counts / counts.sum(axis=2, keepdims=True)).astype(np.float32)
    k = c if channels is None else min(channels, c)
    chmap = np.arange(c) if channels is None else rng.integers(0, k, c)
    prior = rng.dirichlet(np.ones(k), size=(h, w)).astype(np.float32)
    prior[rng.random((h, w, k)) < 0.2] = 0
    merge = (c - 1,) if merged and c > 2 else ()
    pixels = rng.permutation(h * w)[:int(rng.integers(1, h * w + 1))]
    got = kernels.ml_heatmaps(probs, prior, chmap, merge, alpha, pixels)
    expected = oracle.ml_heatmaps(probs, prior, chmap, merge, alpha, pixels)
    np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=2.5e-7)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    full = kernels.ml_heatmaps(probs, prior, chmap, merge, alpha)
    for sparse, frame in zip(got, full):
        assert frame.shape == (h, w)
        np.testing.assert_array_equal(frame.ravel()[pixels], sparse)


@settings(max_examples=40, deadline=None)
@given(pred=arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 13)),
                   elements=st.sampled_from([0, 1, 2, 200])),
       seed=st.integers(0, 2**16))
def test_segment_sums_kernel_agrees_with_numpy(pred, seed):
    """One pass over the segments' pixels gives the numpy reference's sums and events exactly.

    Frame borders, labels outside the table, interior and boundary pixels.
    """
    rng = np.random.default_rng(seed)
    pixels = np.sort(rng.permutation(pred.size)[:int(rng.integers(1, pred.size + 1))])
    sid = rng.integers(1, 5, pixels.size)
    heat = tuple(rng.random(pixels.size).astype(np.float32) for _ in range(3))
    got = kernels.segment_sums(pixels, sid, pred, heat, 4, 3)
    expected = oracle.segment_sums(pixels, sid, pred, heat, 4, 3)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
