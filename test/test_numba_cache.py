"""Where the compiled kernels are cached: a writable per-user folder, or none (never a crash)."""
import json
import os
from pathlib import Path
import subprocess
import sys

from metafusion_ros.core.jit import candidate_dirs, choose_cache_dir

REPO = Path(__file__).resolve().parents[1]
# Imports the kernels, runs both on a tiny frame and prints where numba caches.
PROBE = '''
import json
import numpy as np
from metafusion_ros.core import jit, kernels
probs = np.full((4, 8, 3), 1 / 3, np.float32)
kernels.decision_rules(probs, None, np.arange(3), ())
kernels.disagreeing_pixels(np.zeros((4, 8), np.uint8), np.zeros((4, 8), np.uint8), 1)
print(json.dumps({'cache': jit.CACHE, 'dir': str(jit.CACHE_DIR)}))
'''


def run_probe(env):
    """Run the probe in a fresh interpreter with ``env``; return its JSON line."""
    base = {k: v for k, v in os.environ.items()
            if k not in ('HOME', 'ROS_HOME', 'XDG_CACHE_HOME', 'NUMBA_CACHE_DIR')}
    result = subprocess.run([sys.executable, '-c', PROBE], env={**base, **env,
                            'PYTHONPATH': str(REPO)}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_preference_order_and_unwritable_folders_are_passed_over(tmp_path):
    """NUMBA_CACHE_DIR, then ROS_HOME, then the XDG cache; a folder under a file is skipped."""
    blocker = tmp_path / 'a file'
    blocker.write_text('x')
    env = {'NUMBA_CACHE_DIR': str(blocker / 'numba'), 'ROS_HOME': str(tmp_path / 'ros'),
           'HOME': str(tmp_path / 'home')}
    assert candidate_dirs(env) == [blocker / 'numba', tmp_path / 'ros/metafusion_ros/numba',
                                   tmp_path / 'home/.cache/metafusion_ros/numba']
    assert choose_cache_dir(env) == tmp_path / 'ros/metafusion_ros/numba'
    assert choose_cache_dir({'HOME': str(blocker)}) is None
    assert choose_cache_dir({}) is None


def test_kernels_cache_in_the_xdg_folder(tmp_path):
    """With a writable XDG cache the compiled kernels land there, not beside the modules."""
    found = run_probe({'XDG_CACHE_HOME': str(tmp_path / 'xdg'), 'HOME': str(tmp_path)})
    folder = tmp_path / 'xdg' / 'metafusion_ros' / 'numba'
    assert found == {'cache': True, 'dir': str(folder)}
    assert list(folder.rglob('*.nbi')), list(folder.rglob('*'))


def test_nothing_writable_compiles_without_cache(tmp_path):
    """A HOME that cannot hold a folder and no ROS_HOME / XDG: kernels compile, no crash."""
    blocker = tmp_path / 'not a folder'
    blocker.write_text('x')
    found = run_probe({'HOME': str(blocker / 'home')})
    assert found == {'cache': False, 'dir': 'None'}
