"""``metafusion train`` command line: bad input."""
import pytest

from metafusion_ros.tools.cli import main


def test_train_command_rejects_bad_sizes(capsys):
    """A malformed --input-size is an argparse error before anything is loaded."""
    with pytest.raises(SystemExit):
        main(['train', '--dataset', 'camvid', '--root', '.', '--output', 'x.onnx',
              '--input-size', '480by360'])
    assert 'expected WIDTHxHEIGHT' in capsys.readouterr().err
