"""The meta classifier: training, the per-α bundle round trip, its α policy, refusals."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from toy_data import write_meta_model

from metafusion_ros.core.classes import camvid_table, cityscapes_table
from metafusion_ros.core.features import feature_names
from metafusion_ros.runtime.classifier import (ALPHA_REACH, check_training_set, MetaBundle,
                                               MetaClassifier, MetaParams, ModelContext)
import fixtures

TABLE = camvid_table()
NAMES = feature_names(TABLE)


def separable(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return features whose first column (E) separates the labels, 1:4 imbalanced."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.2
    features = rng.normal(size=(n, len(NAMES)))
    features[:, 0] += np.where(labels, -2.0, 2.0)
    return features, labels


GRID = (0.9, 0.95, 0.975, 0.99, 0.995, 1.0)


def context(alpha: float = 1.0, table=TABLE, names=NAMES, digest='abc', network='net'
            ) -> ModelContext:
    """Return a model context for the CamVid schema."""
    return ModelContext(tuple(names), table, alpha, digest, network)


@pytest.fixture(scope='module')
def model() -> MetaClassifier:
    """Return a classifier fitted on the separable set."""
    return MetaClassifier.fit(*separable(), context())


def test_fit_separates_and_balances(model):
    """A learnable signal gives AUC-like separation; the minority label is re-weighted."""
    features, labels = separable(seed=1)
    p = model.predict_proba(features)
    assert p.shape == labels.shape and np.all((p >= 0) & (p <= 1))
    assert roc_auc_score(labels, p) > 0.9
    assert p[labels].mean() > p[~labels].mean() + 0.4
    assert model.info['training']['scale_pos_weight'] == pytest.approx(
        (~separable()[1]).sum() / separable()[1].sum())
    assert model.booster.num_boosted_rounds() == 27


def test_empty_candidates_predict_empty(model):
    """No candidates: an empty score vector, no call into XGBoost with 0 rows."""
    assert model.predict_proba(np.zeros((0, len(NAMES)))).shape == (0,)


def test_wrong_feature_count_is_refused(model):
    """Features of another schema width raise a ValueError naming the expected shape."""
    with pytest.raises(ValueError, match=f'expects \\(n, {len(NAMES)}\\)'):
        model.predict_proba(np.zeros((3, 5)))


def test_empty_and_single_class_training_sets_are_refused():
    """Empty or single-label training sets are reported, not silently trained."""
    with pytest.raises(ValueError, match='no candidate segments'):
        MetaClassifier.fit(np.zeros((0, len(NAMES))), np.zeros(0, bool), context())
    with pytest.raises(ValueError, match='all 4 candidates are false positives'):
        MetaClassifier.fit(np.ones((4, len(NAMES))), np.zeros(4, bool), context())
    with pytest.raises(ValueError, match='all 3 candidates are true positives'):
        check_training_set(np.ones((3, 2)), np.ones(3, bool))
    with pytest.raises(ValueError, match='NaN or Inf'):
        check_training_set(np.array([[np.nan], [1.0]]), np.array([0, 1]))


@pytest.fixture(scope='module')
def bundle(model) -> MetaBundle:
    """Return a bundle over the paper's grid (members differ: their seeds follow α)."""
    features, labels = separable()
    members = {a: MetaClassifier.fit(features, labels, context(a), MetaParams(seed=0))
               for a in GRID[:-1]}
    members[1.0] = model
    return MetaBundle(members, {0.5: 'all 10 candidates are false positives'}, 'toy')


def saved(bundle, folder) -> Path:
    """Save ``bundle`` into ``folder`` and return the manifest path."""
    return bundle.save(folder / 'meta.json')[-1]


def test_round_trip(bundle, tmp_path):
    """One manifest + one XGBoost JSON per α; reloaded members predict identically."""
    written = bundle.save(tmp_path / 'meta.json')
    manifest = written[-1]
    assert [p.name for p in written[:-1]] == [f'meta.a{a:g}.json' for a in GRID]
    data = json.loads(manifest.read_text())
    assert data['format'] == 'metafusion-meta-bundle/1' and 'alpha' not in data
    assert data['feature_names'] == list(NAMES) and data['network_digest'] == 'net'
    assert data['class_table'] == TABLE.to_dict() and data['target_name'] == 'Pedestrian'
    assert [m['alpha'] for m in data['members']] == list(GRID)
    assert data['members'][-1]['training']['candidates'] == 200
    assert data['skipped'] == [{'alpha': 0.5, 'reason': 'all 10 candidates are false positives'}]
    assert 'xgboost' in data['versions'] and data['priors_digest'] == 'abc'
    loaded = MetaBundle.load(manifest, context(0.99))
    assert loaded.alphas == GRID and loaded.skipped == bundle.skipped
    features = separable(seed=2)[0]
    for alpha in GRID:
        np.testing.assert_allclose(loaded.members[alpha].predict_proba(features),
                                   bundle.members[alpha].predict_proba(features), rtol=1e-6)


@pytest.mark.parametrize('alpha, member, exact', [
    (1.0, 1.0, True), (0.99, 0.99, True), (0.97, 0.975, False), (0.98, 0.975, False),
    (0.992, 0.99, False), (0.8, 0.9, False), (0.85, 0.9, False), (0.999, 1.0, False),
])
def test_runtime_alpha_uses_the_nearest_member(bundle, alpha, member, exact):
    """α on the grid uses its own member; between or below it (within reach) the nearest."""
    choice = bundle.select(alpha)
    assert (choice.alpha, choice.exact) == (member, exact)
    assert choice.describe() == ('exact' if exact else f'nearest grid point to alpha {alpha:g}')
    assert bundle.classifier(alpha) is bundle.members[member]


@pytest.mark.parametrize('alpha', [float('nan'), -0.1, 1.5])
def test_alpha_outside_zero_one_is_refused(bundle, alpha):
    """An α of NaN or outside [0, 1] is never served by a member."""
    with pytest.raises(ValueError, match='alpha must lie in \\[0, 1\\]'):
        bundle.select(alpha)


@pytest.mark.parametrize('alpha', [0.0, 0.5, 0.79])
def test_runtime_alpha_out_of_reach_is_refused(bundle, tmp_path, alpha):
    """Farther than ALPHA_REACH from every member: refused at selection and at load."""
    assert ALPHA_REACH == 0.1
    with pytest.raises(ValueError, match=f'has no classifier for alpha {alpha:g}: its grid is '
                                         f'0.9, 0.95, 0.975, 0.99, 0.995, 1'):
        bundle.select(alpha)
    path = saved(bundle, tmp_path)
    with pytest.raises(ValueError, match=f'bundle {path} has no classifier for alpha {alpha:g}'):
        MetaBundle.load(path, context(alpha))


def test_standardisation_is_stored(tmp_path):
    """With standardisation the mean and scale travel in the member's manifest entry."""
    features, labels = separable()
    model = MetaClassifier.fit(features, labels, context(), MetaParams(standardize=True))
    loaded = MetaBundle.load(saved(MetaBundle({1.0: model}), tmp_path)).members[1.0]
    np.testing.assert_allclose(loaded.mean, features.mean(axis=0))
    np.testing.assert_allclose(loaded.predict_proba(features), model.predict_proba(features),
                               rtol=1e-6)


@pytest.mark.parametrize('standardize', [{'mean': [0.0], 'scale': [1.0]}, {'mean': []},
                                         'scale', None])
def test_load_refuses_malformed_standardisation(tmp_path, standardize):
    """Means / scales of the wrong length, zero or negative scales, or no mapping: one line."""
    features, labels = separable()
    model = MetaClassifier.fit(features, labels, context(), MetaParams(standardize=True))
    manifest = saved(MetaBundle({1.0: model}), tmp_path)
    data = json.loads(manifest.read_text())
    if standardize is None:  # right length, but a zero scale
        standardize = dict(data['members'][0]['standardize'], scale=[0.0] * features.shape[1])
    data['members'][0]['standardize'] = standardize
    manifest.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f'bundle {manifest}: malformed member'):
        MetaBundle.load(manifest)


def test_members_must_share_their_context(model):
    """A bundle cannot mix members of other priors (or schema, table, network)."""
    features, labels = separable()
    other = MetaClassifier.fit(features, labels, context(0.9, digest='other'))
    with pytest.raises(ValueError, match='member for alpha 1 belongs to another'):
        MetaBundle({0.9: other, 1.0: model})


@pytest.mark.parametrize('runtime, message', [
    (context(names=NAMES[:-1]), 'feature schema differs'),
    (context(names=NAMES[1:] + NAMES[:1]), 'feature schema order differs from position 0'),
    (context(table=cityscapes_table(), names=feature_names(cityscapes_table())),
     'feature schema differs.*class table differs'),
    (context(table=TABLE.with_target('Car')), 'target class differs'),
    (context(digest='other'), 'priors differ'),
    (context(network='f' * 64), 'network differs: model fitted on the outputs of network net'),
])
def test_load_refuses_mismatch(bundle, tmp_path, runtime, message):
    """Loading against another schema, table, target, priors or network says which differs."""
    path = saved(bundle, tmp_path)
    with pytest.raises(ValueError, match=f'bundle {path} does not match the runtime '
                                         f'configuration: {message}'):
        MetaBundle.load(path, runtime)


def test_unrecorded_network_is_not_checked(model, tmp_path):
    """A bundle fitted on saved softmax files (no network digest) loads with any network."""
    features, labels = separable()
    plain = MetaClassifier.fit(features, labels, context(network=''))
    path = saved(MetaBundle({1.0: plain}), tmp_path)
    assert MetaBundle.load(path, context(network='f' * 64)).alphas == (1.0,)


def test_load_bad_files(bundle, tmp_path):
    """Missing, tampered or malformed files raise one line naming the file and the member."""
    with pytest.raises(FileNotFoundError, match='does not exist'):
        MetaBundle.load(tmp_path / 'none.json')
    manifest = saved(bundle, tmp_path)
    member = tmp_path / 'meta.a0.95.json'
    member.write_text(member.read_text().replace('"27"', '"26"', 1) + ' ')
    with pytest.raises(ValueError, match=f'member for alpha 0.95: file {member} does not match '
                                         f'the SHA-256'):
        MetaBundle.load(manifest)
    member.unlink()
    with pytest.raises(FileNotFoundError, match=f'bundle {manifest}, member for alpha 0.95: '
                                                f'booster file {member} does not exist'):
        MetaBundle.load(manifest, context())
    with pytest.raises(ValueError, match='bare XGBoost booster'):
        MetaBundle.load(tmp_path / 'meta.a1.json')
    text = manifest.read_text()
    manifest.write_text(text.replace('"meta.a0.9.json"', '"../meta.a0.9.json"'))
    with pytest.raises(ValueError, match="model_file '../meta.a0.9.json' is not a file name"):
        MetaBundle.load(manifest)
    manifest.write_text('{not json')
    with pytest.raises(ValueError, match='not valid JSON'):
        MetaBundle.load(manifest)
    manifest.write_text(json.dumps({'format': 'metafusion-meta/1'}))
    with pytest.raises(ValueError, match='older version: refit it with metafusion fit'):
        MetaBundle.load(manifest)
    manifest.write_text(json.dumps(dict(json.loads(text), members=[])))
    with pytest.raises(ValueError, match='lists no members'):
        MetaBundle.load(manifest)
    with pytest.raises(ValueError, match='use a .json file name'):
        bundle.save(tmp_path / 'meta.ubj')


def test_loading_a_model_does_not_import_scikit_learn(tmp_path):
    """The node's path (load + predict) leaves scikit-learn alone: 1.2-1.3 s of start-up."""
    priors = fixtures.write_priors(tmp_path / 'priors.npz')
    model = write_meta_model(tmp_path / 'meta.json', priors)
    probe = (f'import sys, numpy as np\n'
             f'from metafusion_ros.runtime.classifier import MetaBundle\n'
             f'model = MetaBundle.load({str(model)!r}).classifier(1.0)\n'
             f'p = model.predict_proba(np.zeros((2, len(model.context.feature_names))))\n'
             f'print(p.shape, "sklearn" in sys.modules)\n')
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split('\n')[0] == '(2,) False'
