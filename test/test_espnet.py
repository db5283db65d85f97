"""ESPNet and ESPNetv2 (torch extra): networks, strict loading, SHA-256, torch vs ONNX Runtime.

Tests that need PyTorch skip inside the test (fixture ``torch``) when it is not installed, those
that need the authors' weights or CamVid when ``../shared`` lacks them; the shipped ONNX models
are checked without torch in ``test_espnet_data.py``.
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


@pytest.fixture
def espnetv2_dir(shared_dir):
    """Return ../shared/pretrained/espnetv2, or skip when its three files are not there."""
    from metafusion_ros.tools.training.espnet_export import PRETRAINED
    folder = shared_dir / 'pretrained' / 'espnetv2'
    missing = [w.file for w in PRETRAINED.values() if w.s and not (folder / w.file).is_file()]
    if missing:
        pytest.skip(f'ESPNetv2 weights {missing} are not in {folder}')
    return folder


def _weights(shared_dir: Path, which) -> Path:
    """Return where ``../shared`` keeps the authors' file of ``which``, or skip."""
    path = shared_dir / 'pretrained' / which.family.lower() / which.file
    if not path.is_file():
        pytest.skip(f'{which.family} weights {path} are not there')
    return path


V2 = ['cityscapes-v2-s2.0', 'cityscapes-v2-s1.0', 'cityscapes-v2-s1.5']
CAMVID_FRAME = Path('data') / 'camvid' / 'test' / '0001TP_008550.png'


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
    for which in (PRETRAINED['cityscapes'], PRETRAINED['camvid']):
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


SHIPPED = ['cityscapes_espnet', 'camvid_espnet', 'cityscapes_espnetv2_s2_768x384',
           'cityscapes_espnetv2_s2_512x256', 'cityscapes_espnetv2_s1p5']


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_onnx_equals_torch(torch, shared_dir, name):
    """The shipped ONNX model and the torch network agree on a real CamVid frame (< 1e-4)."""
    from metafusion_ros.runtime.segmenter import resolve_spec
    from metafusion_ros.tools.training.espnet_export import (Deployed, load_pretrained,
                                                             max_abs_difference, PRETRAINED)
    path = MODELS / f'{name}.onnx'
    spec = resolve_spec(path, None)
    which = next(w for w in PRETRAINED.values() if w.file == spec.extra['pretrained']['file'])
    model = Deployed(load_pretrained(_weights(shared_dir, which), which), spec.num_classes,
                     spec.output.layout)
    assert spec.output.layout == which.output_layout  # ESPNetv2 NHWC, ESPNet NCHW
    image = read_rgb_png(shared_dir / CAMVID_FRAME)
    x = spec.preprocess(image)
    assert x.shape == (1, 3, spec.preprocess.height, spec.preprocess.width)
    diff = max_abs_difference(model.eval(), path, x)
    assert diff < 1e-4
    assert spec.extra['check']['max_abs_diff_torch_onnxruntime'] < 1e-4
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(probs.sum(spec.output.class_axis), 1, atol=1e-5)  # void dropped


def test_deployed_nhwc_is_the_nchw_softmax_transposed(torch):
    """Both layouts drop the void output and give the same softmax, NHWC the NCHW transposed."""
    from metafusion_ros.tools.training.espnet_export import Deployed
    logits = torch.from_numpy(np.random.default_rng(0).normal(0, 4, (1, 5, 6, 7)).astype('f4'))
    nchw = Deployed(torch.nn.Identity(), 4, 'NCHW')(logits)
    nhwc = Deployed(torch.nn.Identity(), 4, 'NHWC')(logits)
    assert tuple(nchw.shape) == (1, 4, 6, 7) and tuple(nhwc.shape) == (1, 6, 7, 4)
    np.testing.assert_allclose(nhwc.numpy(), nchw.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(nhwc.sum(-1).numpy(), 1, atol=1e-6)
    with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC'"):
        Deployed(torch.nn.Identity(), 4, 'NWHC')


def test_preprocessing_is_the_authors(torch):
    """The spec's normalisation equals ((BGR - mean) / std) / 255 with BGR statistics."""
    from metafusion_ros.tools.training.espnet_export import normalisation
    norm = normalisation('cityscapes')
    mean, std = norm.mean, norm.std
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    x = norm.preprocess((24, 16))(image)[0]
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


def test_espnetv2_adaptive_pooling_is_pytorchs(torch):
    """The exportable adaptive average pooling has PyTorch's bins, also where sizes do not divide.

    Covers what the pyramid modules meet: 1.5x and 2x enlarged maps pooled back, maps pooled to
    half and to a tenth (at least 5), mixed bin lengths (32 -> 5: 7 and 8; 128 -> 13: 10 and 11).
    """
    from torch.nn import functional as F
    from metafusion_ros.tools.training.espnetv2 import adaptive_avg_pool
    gen = torch.Generator().manual_seed(0)
    for (h, w), out in [((24, 48), (16, 32)), ((32, 64), (16, 32)), ((16, 32), (5, 5)),
                        ((64, 128), (7, 13)), ((8, 16), (5, 8)), ((5, 5), (16, 32)),
                        ((48, 36), (48, 36))]:
        x = torch.randn(1, 10, h, w, generator=gen)
        torch.testing.assert_close(adaptive_avg_pool(x, out), F.adaptive_avg_pool2d(x, out),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize('size', [(64, 32), (96, 64), (80, 48)])
def test_espnetv2_takes_multiples_of_16(torch, size):
    """Logits at the input size for sides that are multiples of 16 (2:1, 3:2, 5:3), not of 8.

    Four halvings must be undone by the decoder's doublings: a side of 8 (mod 16) ends at an odd
    size at 1/16 and the skip connection no longer fits.
    """
    from metafusion_ros.tools.training.espnetv2 import ESPNetv2
    net = ESPNetv2(20, s=1.0).eval()
    with torch.no_grad():
        assert tuple(net(torch.zeros(1, 3, size[1], size[0])).shape) == (1, 20, *size[::-1])
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 3, size[1] + 8, size[0]))
    with pytest.raises(ValueError, match='scale s must be one of'):
        ESPNetv2(20, s=3.0)


def test_espnetv2_files_load_strictly(torch, espnetv2_dir):
    """Each of the three files fills all 526 entries of its width; no file fits another width."""
    from metafusion_ros.tools.training.espnet_export import load_pretrained, PRETRAINED
    from metafusion_ros.tools.training.espnetv2 import ESPNetv2
    widths = {name: PRETRAINED[name].s for name in V2}
    for name, s in widths.items():
        which = PRETRAINED[name]
        net = load_pretrained(espnetv2_dir / which.file, which)
        assert not net.training and net.s == s
        state = torch.load(espnetv2_dir / which.file, map_location='cpu', weights_only=True)
        assert len(state) == len(net.state_dict()) == 526
        assert tuple(state['bu_dec_l4.merge_layer.3.weight'].shape) == (20, 10, 1, 1)
        for other in set(widths.values()) - {s}:
            with pytest.raises(RuntimeError, match='size mismatch'):
                ESPNetv2(20, s=other).load_state_dict(state, strict=True)


def test_espnetv2_sha256_mismatch_is_one_line(torch, espnetv2_dir, tmp_path, capsys):
    """A changed file is refused before torch.load by the loader and the CLI (exit 2, one line)."""
    from metafusion_ros.tools.cli import main
    from metafusion_ros.tools.training.espnet_export import load_pretrained, PRETRAINED
    which = PRETRAINED['cityscapes-v2-s1.0']
    changed = tmp_path / which.file
    changed.write_bytes((espnetv2_dir / which.file).read_bytes()[:-1] + b'\0')
    with pytest.raises(ValueError, match=f'ESPNetv2 weights {changed}: sha256 .* expected '
                                         f'{which.sha256}') as err:
        load_pretrained(changed, which)
    assert '\n' not in str(err.value)
    other = espnetv2_dir / PRETRAINED['cityscapes-v2-s2.0'].file
    assert main(['espnet', which.name, '--weights', str(other),
                 '--output', str(tmp_path / 'm.onnx')]) == 2
    err = capsys.readouterr().err.strip()
    assert 'sha256' in err and which.sha256 in err and len(err.splitlines()) == 1
    assert not (tmp_path / 'm.onnx').exists()


def test_espnetv2_bad_size_or_statistics_refused(torch, tmp_path, capsys):
    """Sides that are not multiples of 16, or ESPNet's BGR statistics, are one line (exit 2)."""
    from metafusion_ros.tools.cli import main
    weights = tmp_path / 'never_read.pth'  # refused before the file is opened
    for extra, message in [(['--size', '1000x512'], 'positive multiples of 16'),
                           (['--size', '1024x520'], 'positive multiples of 16'),
                           (['--size', '1024x504'], 'positive multiples of 16'),
                           (['--stats', 'cityscapes'], 'takes the statistics imagenet')]:
        assert main(['espnet', 'cityscapes-v2-s1.5', '--weights', str(weights), '--output',
                     str(tmp_path / 'm.onnx'), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_espnetv2_preprocessing_is_the_authors(torch):
    """The spec's preprocessing equals EdgeNets' transform: PIL bilinear, to_tensor, normalise.

    ``data_transform`` in their ``test_segmentation.py``: ``img.resize(size, BILINEAR)``,
    ``to_tensor`` (RGB, / 255) and ``normalize(MEAN, STD)`` with the ImageNet statistics.
    """
    from PIL import Image
    from metafusion_ros.tools.training.espnet_export import normalisation, PRETRAINED
    image = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    which = PRETRAINED['cityscapes-v2-s1.5']
    pre = normalisation(which.stats).preprocess(which.input_size)
    assert (pre.channel_order, pre.layout, pre.width, pre.height) == ('RGB', 'NCHW', 512, 256)
    resized = Image.fromarray(image).resize(which.input_size, Image.BILINEAR)
    theirs = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float().div(255)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    theirs = theirs.sub(mean[:, None, None]).div(std[:, None, None])
    np.testing.assert_allclose(pre(image)[0], theirs.numpy(), atol=1e-6, rtol=0)


def test_espnetv2_export_bounds_torch_vs_onnxruntime(torch, espnetv2_dir, shared_dir, tmp_path):
    """``metafusion espnet`` exports s = 1.5 at a 4:3 size; ONNX Runtime = torch on CamVid (1e-4).

    The spec records the file's digest, the ImageNet statistics and the measured difference; the
    segmenter loads it and its labels are the torch network's on the real frame.
    """
    from metafusion_ros.runtime.segmenter import load_segmenter
    from metafusion_ros.tools.cli import main
    from metafusion_ros.tools.training.espnet_export import (Deployed, load_pretrained,
                                                             max_abs_difference, PRETRAINED)
    which = PRETRAINED['cityscapes-v2-s1.5']
    out = tmp_path / 'v2.onnx'
    frame = shared_dir / CAMVID_FRAME
    assert main(['espnet', which.name, '--weights', str(espnetv2_dir / which.file),
                 '--output', str(out), '--size', '320x240', '--check-image', str(frame)]) == 0
    seg = load_segmenter(out)
    assert seg.input_size == (320, 240) and seg.num_classes == 19
    extra = seg.spec.extra
    assert extra['check']['max_abs_diff_torch_onnxruntime'] < 1e-4
    assert extra['pretrained']['sha256'] == which.sha256
    assert extra['architecture']['name'] == 'ESPNetv2' and extra['architecture']['s'] == 1.5
    assert extra['normalisation']['statistics'] == 'imagenet'
    assert seg.spec.output.layout == 'NHWC'  # ONNX Runtime's Softmax over the last axis
    model = Deployed(load_pretrained(espnetv2_dir / which.file, which), 19, 'NHWC').eval()
    x = seg.spec.preprocess(read_rgb_png(frame))
    assert max_abs_difference(model, out, x) < 1e-4
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).numpy()[0].argmax(-1)
    ours = seg.infer_network(read_rgb_png(frame)).probs.argmax(-1)
    assert (ours == labels).mean() > 0.999
