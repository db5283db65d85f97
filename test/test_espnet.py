"""ESPNet (torch extra): both decoder variants, strict loading, SHA-256, torch vs ONNX Runtime.

Tests that need PyTorch skip inside the test (fixture ``torch``) when it is not installed; the
shipped ONNX models are checked without it in ``test_espnet_data.py``.
"""
from pathlib import Path
import shutil

import numpy as np
import pytest

from metafusion_ros.tools.data.frame import read_rgb_png

MODELS = Path(__file__).resolve().parents[1] / 'models'


@pytest.fixture
def torch():
    """Return the torch module, or skip: the ESPNet code is part of the optional train extra."""
    return pytest.importorskip('torch', reason='ESPNet needs PyTorch (the train extra)')


@pytest.fixture
def espnet_dir(shared_dir):
    """Return ../shared/pretrained/espnet, or skip when the weights are not there."""
    folder = shared_dir / 'pretrained' / 'espnet'
    if not (folder / 'espnet_p_2_q_8.pth').is_file():
        pytest.skip(f'ESPNet weights are not in {folder}')
    return folder


@pytest.mark.parametrize('skip,classes', [(16, 20), (19, 12)])
def test_variants_give_full_resolution_logits(torch, skip, classes):
    """Both decoders map (1, 3, H, W) to (1, C, H, W); the CamVid one widens the last conv."""
    from metafusion_ros.tools.training.espnet import ESPNet
    net = ESPNet(classes, p=2, q=8, decoder_skip=skip).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 48, 64))
    assert tuple(out.shape) == (1, classes, 48, 64)
    assert tuple(net.conv.conv.weight.shape) == (classes, classes + skip, 3, 3)
    with pytest.raises(ValueError, match='decoder_skip must be 16 or 19'):
        ESPNet(classes, decoder_skip=17)


def test_authors_files_load_strictly_into_their_variant(torch, espnet_dir):
    """Each file fills every parameter of its variant and does not fit the other one."""
    from metafusion_ros.tools.training.espnet import ESPNet
    from metafusion_ros.tools.training.espnet_export import load_pretrained, PRETRAINED
    for which in PRETRAINED.values():
        net = load_pretrained(espnet_dir / which.file, which)
        assert not net.training and net.decoder_skip == which.decoder_skip
        state = torch.load(espnet_dir / which.file, map_location='cpu', weights_only=True)
        assert len(state) == 189
        other = ESPNet(which.outputs, decoder_skip=35 - which.decoder_skip)
        with pytest.raises(RuntimeError, match='conv.conv.weight'):
            other.load_state_dict(state, strict=True)


def test_weights_with_another_sha256_are_refused(torch, espnet_dir, tmp_path):
    """A changed or missing weights file is a clear error naming it, before torch.load."""
    from metafusion_ros.tools.training.espnet_export import load_pretrained, PRETRAINED
    which = PRETRAINED['camvid']
    changed = tmp_path / which.file
    shutil.copy(espnet_dir / which.file, changed)
    with open(changed, 'ab') as fh:
        fh.write(b'\0')
    with pytest.raises(ValueError, match=f'{changed}: sha256 .* expected {which.sha256}'):
        load_pretrained(changed, which)
    with pytest.raises(FileNotFoundError, match='do not exist'):
        load_pretrained(tmp_path / 'none.pth', which)
    with pytest.raises(ValueError, match='sha256'):
        load_pretrained(espnet_dir / PRETRAINED['cityscapes'].file, which)


@pytest.mark.parametrize('name', ['cityscapes_espnet', 'camvid_espnet'])
def test_shipped_onnx_equals_torch(torch, espnet_dir, shared_dir, name):
    """The shipped ONNX model and the torch network agree on a real CamVid frame (< 1e-4)."""
    from metafusion_ros.runtime.segmenter import resolve_spec
    from metafusion_ros.tools.training.espnet_export import (Deployed, load_pretrained,
                                                             max_abs_difference, PRETRAINED)
    which = PRETRAINED[name.split('_')[0]]
    path = MODELS / f'{name}.onnx'
    spec = resolve_spec(path, None)
    model = Deployed(load_pretrained(espnet_dir / which.file, which), spec.num_classes).eval()
    image = read_rgb_png(shared_dir / 'data' / 'camvid' / 'test' / '0001TP_008550.png')
    x = spec.preprocess(image)
    assert x.shape == (1, 3, *which.input_size[::-1])
    diff = max_abs_difference(model, path, x)
    assert diff < 1e-4
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)  # void dropped, then the softmax


def test_preprocessing_is_the_authors(torch):
    """The spec's normalisation equals ((BGR - mean) / std) / 255 with BGR statistics."""
    from metafusion_ros.tools.training.espnet_export import CITYSCAPES_STATS, preprocess_for
    mean, std = CITYSCAPES_STATS
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    x = preprocess_for((24, 16), mean, std)(image)[0]
    bgr = image[..., ::-1].astype(np.float64)
    expected = ((bgr - np.array(mean)) / np.array(std) / 255).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expected, atol=1e-5)


def test_export_command_writes_a_loadable_model(torch, espnet_dir, shared_dir, tmp_path, capsys):
    """``metafusion espnet`` exports at a chosen size; the spec records source and check."""
    from metafusion_ros.tools.cli import main
    from metafusion_ros.runtime.segmenter import load_segmenter
    out = tmp_path / 'cs.onnx'
    image = shared_dir / 'data' / 'camvid' / 'test' / '0001TP_008550.png'
    assert main(['espnet', 'cityscapes', '--weights', str(espnet_dir / 'espnet_p_2_q_8.pth'),
                 '--output', str(out), '--size', '96x64', '--check-image', str(image)]) == 0
    assert 'max |torch - onnxruntime|' in capsys.readouterr().out
    seg = load_segmenter(out)
    assert seg.input_size == (96, 64) and seg.num_classes == 19
    extra = seg.spec.extra
    assert extra['check']['max_abs_diff_torch_onnxruntime'] < 1e-4
    assert extra['pretrained']['sha256'].startswith('343b0e77')
    assert main(['espnet', 'cityscapes', '--weights', str(espnet_dir / 'espnet_p_2_q_8.pth'),
                 '--output', str(out), '--size', '100x64', '--force']) == 2
    assert 'multiples of 8' in capsys.readouterr().err
    assert main(['espnet', 'camvid', '--weights', str(espnet_dir / 'espnet_p_2_q_8.pth'),
                 '--output', str(out), '--force']) == 2
    assert 'sha256' in capsys.readouterr().err
