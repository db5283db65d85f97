"""``metafusion add-head`` and ``metafusion train`` command lines: happy path and bad input."""
import numpy as np
import pytest

from metafusion_ros.cli import main
from metafusion_ros.core.priors import Priors
from metafusion_ros.segmenter import load_segmenter
from test_segmenter_onnx import C, image, spec_for, TABLE, write_model


def test_add_head_command(tmp_path, capsys):
    """add-head writes a headed model and its spec that the segmenter loads."""
    write_model(tmp_path / 'm.onnx')
    spec_for().save(tmp_path / 'm.json')
    Priors(np.full((6, 8, C), 1.0 / C, np.float32), TABLE).save(tmp_path / 'p.npz')
    assert main(['add-head', str(tmp_path / 'm.onnx'), '--priors', str(tmp_path / 'p.npz'),
                 '--output', str(tmp_path / 'h.onnx'), '--alpha', '0.9',
                 '--priors-mode', 'alpha-input']) == 0
    assert 'priors alpha-input' in capsys.readouterr().out
    seg = load_segmenter(tmp_path / 'h.onnx', priors=tmp_path / 'p.npz')
    assert seg.alpha == pytest.approx(0.9)
    assert seg.infer(image()).head.pred_bayes.shape == (36, 48)


def test_add_head_command_bad_input(tmp_path, capsys):
    """Missing priors, a corrupt model and mismatching priors are one-line errors (exit 2)."""
    write_model(tmp_path / 'm.onnx')
    spec_for().save(tmp_path / 'm.json')
    out = ['--output', str(tmp_path / 'h.onnx')]
    assert main(['add-head', str(tmp_path / 'm.onnx'), '--priors', str(tmp_path / 'no.npz'),
                 *out]) == 2
    assert 'no.npz does not exist' in capsys.readouterr().err
    (tmp_path / 'bad.onnx').write_bytes(b'junk')
    spec_for().save(tmp_path / 'bad.json')
    assert main(['add-head', str(tmp_path / 'bad.onnx'), '--priors-mode', 'input', *out]) == 2
    assert 'not a valid ONNX file' in capsys.readouterr().err
    Priors(np.full((4, 4, 3), 1 / 3, np.float32),
           TABLE.__class__('three', ('a', 'b', 'c'), 255, 0, ((0, 0, 0),) * 3)).save(
        tmp_path / 'p3.npz')
    assert main(['add-head', str(tmp_path / 'm.onnx'), '--priors', str(tmp_path / 'p3.npz'),
                 *out]) == 2
    assert 'do not match' in capsys.readouterr().err
    assert not (tmp_path / 'h.onnx').exists()


def test_train_command_rejects_bad_sizes(capsys):
    """A malformed --input-size is an argparse error before anything is loaded."""
    with pytest.raises(SystemExit):
        main(['train', '--dataset', 'camvid', '--root', '.', '--output', 'x.onnx',
              '--input-size', '480by360'])
    assert 'expected WIDTHxHEIGHT' in capsys.readouterr().err
