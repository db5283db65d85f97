"""The processing chain without ROS: loading, cross-checks, refuse mode, α/τ between frames."""
from pathlib import Path

import numpy as np
import pytest
from toy_data import write_meta_model

import fixtures
from metafusion_ros.runtime.engine import (ConfigurationError, EngineConfig, FusionEngine,
                                           ResolutionMismatch)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Write the tiny model, priors and a meta model."""
    folder = tmp_path_factory.mktemp('engine')
    model = fixtures.write_model(folder / 'tiny.onnx')
    priors = fixtures.write_priors(folder / 'tiny_priors.npz')
    return {'model': str(model), 'priors': str(priors), 'folder': folder,
            'meta': str(write_meta_model(folder / 'meta.json', priors))}


def _engine(files, **overrides):
    """Load an engine on the tiny files with ``overrides``."""
    return FusionEngine.load(EngineConfig(files['model'], files['priors'], **overrides))


def test_candidates_scored_kept_and_fused(files):
    """Two dim red candidates, scored by the meta model, kept at τ = 0.5 and fused as person."""
    engine = _engine(files, meta_model_path=files['meta'])
    result = engine.process(fixtures.scene()).result
    assert result.candidates.count == 2 and result.keep.all()
    assert np.all((result.scores > 0) & (result.scores < 1))
    assert result.fused[30:38, 8:16].min() == 1 and result.pred_bayes[30:38, 8:16].max() == 0


def test_alpha_and_tau_apply_from_the_next_frame(files):
    """Queued α / τ take effect at the next frame; out-of-range values are refused at once."""
    engine = _engine(files, meta_model_path=files['meta'])
    engine.set_params(tau=1.0)
    assert not engine.process(fixtures.scene()).result.keep.any()
    engine.set_params(alpha=0.5)
    assert engine.process(fixtures.scene()).result.candidates.count == 0
    for bad in ({'alpha': 1.5}, {'tau': -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            engine.set_params(**bad)
    assert engine.metafusion.alpha == 0.5


def test_meta_member_follows_alpha(files):
    """The bundle member of the current α scores; off-grid α uses the nearest, far α refused."""
    engine = _engine(files, meta_model_path=files['meta'], alpha=0.8)
    assert (engine.meta_choice.alpha, engine.meta_choice.exact) == (0.9, False)
    scene = fixtures.scene()
    members = engine.meta.members
    engine.process(scene)
    engine.set_params(alpha=1.0)
    assert engine.meta_choice.alpha == 0.9, 'applies from the next frame'
    result = engine.process(scene).result
    assert engine.meta_choice.describe() == 'exact' and engine.meta_choice.alpha == 1.0
    assert result.candidates.count == 2
    np.testing.assert_allclose(result.scores, members[1.0].predict_proba(result.features))
    assert not np.allclose(result.scores, members[0.9].predict_proba(result.features))
    engine.set_params(alpha=0.97)
    result = engine.process(scene).result
    assert engine.meta_choice.describe() == 'nearest grid point to alpha 0.97'
    np.testing.assert_allclose(result.scores, members[1.0].predict_proba(result.features))
    with pytest.raises(ValueError, match='no classifier for alpha 0.2: its grid is 0.5, 0.9, 1'):
        engine.set_params(alpha=0.2)
    engine.process(scene)
    assert engine.metafusion.alpha == 0.97 and engine.meta_choice.alpha == 1.0


def test_launch_example_starts_with_the_shipped_models():
    """`fusion.launch.py alpha:=0.8 tau:=0.4` on the package's synthetic files: it loads."""
    models = Path(__file__).resolve().parents[1] / 'models'
    engine = FusionEngine.load(EngineConfig(
        str(models / 'synthetic_toy.onnx'), str(models / 'synthetic_toy_priors.npz'),
        str(models / 'synthetic_toy_meta.json'), alpha=0.8, tau=0.4))
    assert engine.meta_choice.alpha == 0.9 and not engine.meta_choice.exact
    assert engine.meta.alphas == (0.9, 0.95, 0.975, 0.99, 0.995, 1.0)


def test_heatmaps_cover_the_frame(files):
    """E, M, V of the ML probabilities come at the frame's resolution, in [0, 1]."""
    engine = _engine(files)
    processed = engine.process(fixtures.scene())
    for heat in engine.heatmaps(processed):
        assert heat.shape == fixtures.SIZE and 0 <= heat.min() and heat.max() <= 1


def test_refuse_mode_and_resize_mode(files):
    """Another resolution is refused with resize_mode=refuse and processed otherwise."""
    big = np.repeat(fixtures.scene(), 2, axis=0)
    with pytest.raises(ResolutionMismatch, match='refuse'):
        _engine(files, resize_mode='refuse').process(big)
    processed = _engine(files).process(big)
    assert processed.result.fused.shape == fixtures.SIZE  # MetaFusion at the network's size
    assert processed.camera_size == (96, 64)
    assert processed.to_camera.labels(processed.result.fused).shape == (96, 64)


@pytest.mark.parametrize('overrides,message', [
    ({'precision': 'fp16'}, 'tensorrt'),
    ({'resize_mode': 'crop'}, 'resize_mode'),
    ({'target_class': 'unicorn'}, 'unicorn'),
    ({'backend': 'openvino'}, 'openvino'),
    ({'meta_model_path': '/nonexistent/meta.json'}, '/nonexistent/meta.json'),
    ({'priors_path': ''}, 'priors path is empty'),
])
def test_bad_configurations_fail_with_one_line(files, overrides, message):
    """Every bad setting is a one-line ConfigurationError naming the problem."""
    config = {'model_path': files['model'], 'priors_path': files['priors'], **overrides}
    with pytest.raises(ConfigurationError, match=message) as info:
        FusionEngine.load(EngineConfig(**config))
    assert '\n' not in str(info.value)


def test_model_and_priors_of_different_tables_are_refused(files):
    """A 19-class network with the 3-class priors: the class counts are named."""
    from metafusion_ros.core.classes import cityscapes_table

    other = fixtures.write_model(files['folder'] / 'cs.onnx', table=cityscapes_table())
    with pytest.raises(ConfigurationError) as info:
        FusionEngine.load(EngineConfig(str(other), files['priors']))
    assert '19' in str(info.value) and '3' in str(info.value)


def test_meta_model_of_another_schema_is_refused(files, tmp_path):
    """A meta model fitted for the Cityscapes schema does not load with the tiny priors."""
    from metafusion_ros.core.classes import cityscapes_table

    priors = fixtures.write_priors(tmp_path / 'cs.npz', table=cityscapes_table())
    meta = write_meta_model(tmp_path / 'cs_meta.json', priors)
    with pytest.raises(ConfigurationError, match='does not match'):
        _engine(files, meta_model_path=str(meta))


def test_metafusion_runs_at_the_network_size(files):
    """A camera twice the network's size: MetaFusion at the network's, labels enlarged."""
    camera = np.repeat(np.repeat(fixtures.scene(), 2, axis=0), 2, axis=1)
    plain = _engine(files, meta_model_path=files['meta']).process(camera)
    assert plain.result.fused.shape == fixtures.SIZE and plain.result.candidates.count == 2
    assert plain.to_camera.labels(plain.result.fused).shape == camera.shape[:2]
