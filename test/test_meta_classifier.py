"""The meta classifier: training, JSON/UBJ + manifest round trip, refusal of mismatched models."""
import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from metafusion_ros.core.classes import camvid_table, cityscapes_table
from metafusion_ros.core.features import feature_names
from metafusion_ros.meta.classifier import (check_training_set, manifest_path, MetaClassifier,
                                            MetaParams, ModelContext)
from metafusion_ros.ros import fixtures

TABLE = camvid_table()
NAMES = feature_names(TABLE)


def separable(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return features whose first column (E) separates the labels, 1:4 imbalanced."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.2
    features = rng.normal(size=(n, len(NAMES)))
    features[:, 0] += np.where(labels, -2.0, 2.0)
    return features, labels


def context(alpha: float = 1.0, table=TABLE, names=NAMES, digest='abc') -> ModelContext:
    """Return a model context for the CamVid schema."""
    return ModelContext(tuple(names), table, alpha, digest)


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


@pytest.mark.parametrize('suffix', ['.json', '.ubj'])
def test_round_trip_json_and_ubj(model, tmp_path, suffix):
    """Saved booster + manifest reload to identical predictions; the manifest is plain JSON."""
    path, manifest = model.save(tmp_path / f'meta{suffix}')
    assert manifest == manifest_path(path) == tmp_path / 'meta.manifest.json'
    data = json.loads(manifest.read_text())
    assert data['feature_names'] == list(NAMES)
    assert data['class_table'] == TABLE.to_dict() and data['target_name'] == 'Pedestrian'
    assert data['alpha'] == 1.0 and data['priors_digest'] == 'abc'
    assert data['training']['candidates'] == 200 and 'xgboost' in data['versions']
    features = separable(seed=2)[0]
    for handle in (path, manifest):
        loaded = MetaClassifier.load(handle, context())
        np.testing.assert_allclose(loaded.predict_proba(features), model.predict_proba(features),
                                   rtol=1e-6)


def test_standardisation_is_stored(tmp_path):
    """With standardisation the mean and scale travel in the manifest."""
    features, labels = separable()
    model = MetaClassifier.fit(features, labels, context(), MetaParams(standardize=True))
    path, _ = model.save(tmp_path / 'std.json')
    loaded = MetaClassifier.load(path)
    np.testing.assert_allclose(loaded.mean, features.mean(axis=0))
    np.testing.assert_allclose(loaded.predict_proba(features), model.predict_proba(features),
                               rtol=1e-6)


@pytest.mark.parametrize('standardize', [{'mean': [0.0], 'scale': [1.0]}, {'mean': []},
                                         'scale', None])
def test_load_refuses_malformed_standardisation(tmp_path, standardize):
    """Means / scales of the wrong length, zero or negative scales, or no mapping: one line."""
    features, labels = separable()
    model = MetaClassifier.fit(features, labels, context(), MetaParams(standardize=True))
    path, manifest = model.save(tmp_path / 'std.json')
    data = json.loads(manifest.read_text())
    if standardize is None:  # right length, but a zero scale
        standardize = dict(data['standardize'], scale=[0.0] * features.shape[1])
    data['standardize'] = standardize
    manifest.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f'manifest {manifest}: malformed'):
        MetaClassifier.load(path)


def test_load_refuses_a_manifest_of_another_booster(model, tmp_path):
    """A booster copied beside a copy of another booster's manifest is not loaded."""
    path, manifest = model.save(tmp_path / 'meta.json')
    other = tmp_path / 'other.json'
    other.write_bytes(path.read_bytes())
    manifest_path(other).write_bytes(manifest.read_bytes())
    with pytest.raises(ValueError, match="describes the booster 'meta.json', not 'other.json'"):
        MetaClassifier.load(other)


@pytest.mark.parametrize('runtime, message', [
    (context(names=NAMES[:-1]), 'feature schema differs'),
    (context(names=NAMES[1:] + NAMES[:1]), 'feature schema order differs from position 0'),
    (context(table=cityscapes_table(), names=feature_names(cityscapes_table())),
     'feature schema differs.*class table differs'),
    (context(table=TABLE.with_target('Car')), 'target class differs'),
    (context(alpha=0.9), 'alpha differs: model fitted at 1, runtime 0.9'),
    (context(digest='other'), 'priors differ'),
])
def test_load_refuses_mismatch(model, tmp_path, runtime, message):
    """Loading against another schema, table, target, α or priors says which differs."""
    path, _ = model.save(tmp_path / 'meta.json')
    with pytest.raises(ValueError, match=message):
        MetaClassifier.load(path, runtime)


def test_load_bad_files(model, tmp_path):
    """Missing, tampered or malformed files raise errors naming the file."""
    with pytest.raises(FileNotFoundError, match='does not exist'):
        MetaClassifier.load(tmp_path / 'none.json')
    path, manifest = model.save(tmp_path / 'meta.json')
    path.write_text(path.read_text().replace('"27"', '"26"', 1) + ' ')
    with pytest.raises(ValueError, match='does not match the SHA-256'):
        MetaClassifier.load(path)
    manifest.write_text('{not json')
    with pytest.raises(ValueError, match='not valid JSON'):
        MetaClassifier.load(path)
    manifest.write_text(json.dumps({'format': 'pickle'}))
    with pytest.raises(ValueError, match='unknown format'):
        MetaClassifier.load(path)
    with pytest.raises(ValueError, match='use a .json or .ubj'):
        model.save(tmp_path / 'meta.pkl')


def test_loading_a_model_does_not_import_scikit_learn(tmp_path):
    """The node's path (load + predict) leaves scikit-learn alone: 1.2-1.3 s of start-up."""
    priors = fixtures.write_priors(tmp_path / 'priors.npz')
    model = fixtures.write_meta_model(tmp_path / 'meta.json', priors)
    probe = (f'import sys, numpy as np\n'
             f'from metafusion_ros.meta.classifier import MetaClassifier\n'
             f'model = MetaClassifier.load({str(model)!r})\n'
             f'p = model.predict_proba(np.zeros((2, len(model.context.feature_names))))\n'
             f'print(p.shape, "sklearn" in sys.modules)\n')
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split('\n')[0] == '(2,) False'
