"""The end-to-end demo (chain -> drive bag -> node process -> score -> strip), small."""
import json
import os
import subprocess
import sys

from test_chains import tiny_chain
from test_node_harness import domain_for, REPO, ros_env

from metafusion_ros.core.classes import cityscapes_table
from metafusion_ros.runtime.chains import DEFAULT_CHAIN
from metafusion_ros.tools.commands.models import write_chain
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


def _cityscapes_chain(models):
    """Write a Cityscapes-table tiny chain without a meta bundle (the synthetic drive's table)."""
    table = cityscapes_table()
    models.mkdir()
    network = fixtures.write_model(models / 'street.onnx', (32, 64), table)
    priors = fixtures.write_priors(models / 'street_priors.npz', (32, 64), table)
    write_chain('street', network, priors, None, 'street', trained_on='a hand-set convolution')


def test_demo_runs_end_to_end_and_degrades_without_meta_model(tmp_path):
    """No CamVid: a synthetic drive through the chain's node; no bundle: every candidate kept."""
    _cityscapes_chain(tmp_path / 'models')
    done = _demo(tmp_path, tmp_path / 'models', '--chain', 'street',
                 '--camvid', str(tmp_path / 'no camvid'))
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'keeping every candidate' in done.stdout
    assert 'chain street on a generated 64x32 synthetic drive of 3 frames (no CamVid at ' \
        in done.stdout
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['frames_sent'] == summary['frames_scored'] == 3
    assert summary['node_exit_code'] == 0 and summary['meta_model'] is None
    assert summary['chain'] == 'street'
    assert set(summary['rules']) == {'bayes', 'ml', 'metafusion'}
    assert (tmp_path / 'out' / 'strip.png').stat().st_size > 0
    assert 'p50' in done.stdout and 'metafusion' in done.stdout
    assert 'chain street (street)' in (tmp_path / 'out' / 'node.log').read_text()


def test_demo_on_camvid_maps_the_labels_to_the_chain(tmp_path, shared_dir):
    """With ../shared: a stretch of CamVid test, its labels mapped to the chain's table, scored."""
    _cityscapes_chain(tmp_path / 'models')
    done = _demo(tmp_path, tmp_path / 'models', '--chain', 'street', '--camvid',
                 str(shared_dir / 'data' / 'camvid'), '--start', '2')
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['frames'].startswith('3 CamVid test frames (0001TP_') and \
        summary['frames'].endswith('labels mapped camvid->cityscapes')
    assert summary['frames_scored'] == 3
    assert f"chain street on {summary['frames']}" in done.stdout


def test_demo_with_an_unknown_chain_fails_with_one_clear_line(tmp_path):
    """A chain the folder does not hold: exit code 1 and one line naming the folder's chains."""
    tiny_chain(tmp_path / 'models')
    done = _demo(tmp_path, tmp_path / 'models')
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1
    assert lines[0].startswith(f"demo: unknown chain '{DEFAULT_CHAIN}': the chains in ")
    assert lines[0].endswith('are tiny (or give the path of an ONNX file)')
    assert not os.path.exists(tmp_path / 'out' / 'summary.json')
