"""The end-to-end demo (synthetic drive -> bag -> node process -> score -> strip), small."""
import json
import os
import subprocess
import sys

from test_node_harness import domain_for, REPO, ros_env

from metafusion_ros.core.classes import cityscapes_table
import fixtures

DOMAIN = domain_for(74)


def _demo(tmp_path, models, *extra):
    """Run the demo as ``make demo`` does (its own process); return the completed process."""
    env = ros_env(DOMAIN, tmp_path / 'log')
    return subprocess.run([sys.executable, '-m', 'metafusion_ros.tools.demo',
                           '--models', str(models),
                           '--out', str(tmp_path / 'out'), '--frames', '3', '--timeout', '60',
                           *extra], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_demo_runs_end_to_end_and_degrades_without_meta_model(tmp_path):
    """With a Cityscapes-table fixture model and no meta model the demo scores every frame."""
    models = tmp_path / 'models'
    models.mkdir()
    table = cityscapes_table()
    fixtures.write_model(models / 'synthetic.onnx', (32, 64), table)
    fixtures.write_priors(models / 'synthetic_priors.npz', (32, 64), table)
    done = _demo(tmp_path, models)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'keeping every candidate' in done.stdout
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['frames_sent'] == summary['frames_scored'] == 3
    assert summary['node_exit_code'] == 0 and summary['meta_model'] is None
    assert set(summary['rules']) == {'bayes', 'ml', 'metafusion'}
    assert (tmp_path / 'out' / 'strip.png').stat().st_size > 0
    assert 'p50' in done.stdout and 'metafusion' in done.stdout


def test_demo_without_model_fails_with_one_clear_line(tmp_path):
    """Missing default model and priors: exit code 1 and a line naming both."""
    done = _demo(tmp_path, tmp_path)
    assert done.returncode == 1
    assert 'synthetic.onnx' in done.stderr and 'synthetic_priors.npz' in done.stderr
    assert 'Traceback' not in done.stderr
    assert not os.path.exists(tmp_path / 'out' / 'summary.json')
