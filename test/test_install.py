"""The built workspace: ``metafusion`` on PATH after sourcing ``install/setup.bash``."""
from pathlib import Path
import subprocess

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_metafusion_is_on_path_after_sourcing_the_install():
    """`source install/setup.bash; which metafusion` finds the wrapper, and it runs the CLI."""
    setup = REPO / 'install' / 'setup.bash'
    if not (REPO / 'install' / 'metafusion_ros' / 'bin').is_dir():
        pytest.skip(f'no built workspace with bin/ beside {setup} (run `make build`)')
    result = subprocess.run(
        ['bash', '-c', f'source "{setup}" && which metafusion && metafusion --help'],
        capture_output=True, text=True, timeout=120, cwd='/')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(REPO / 'install' / 'metafusion_ros' / 'bin' / 'metafusion')
    assert lines[1].startswith('usage: metafusion')
