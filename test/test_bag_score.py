"""``bag score`` against a running node process: exact FP/FN/Δ on a bag with known answers.

Each frame has a red person (found by Bayes), a dim red person (missed by Bayes, found by ML)
and a dim red block labelled road (an ML false positive): per frame Bayes has 1 TP and 1 FN,
ML 2 TP and 1 FP, so Δ(ML) = 1. Without a meta classifier MetaFusion keeps both candidates.
"""
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
from test_node_harness import domain_for, ros_env, start_node, stop_node, write_files

import fixtures
from metafusion_ros.ros.bag import BagError, DriveBag, write_drive
from metafusion_ros.ros.score import score_bag

DOMAIN = domain_for(73)


def _frames(n):
    """Return ``n`` frames with the person / missed person / false positive layout."""
    labels = np.zeros(fixtures.SIZE, np.uint8)
    labels[4:12, 4:12] = 1
    labels[30:38, 8:16] = 1
    return [SimpleNamespace(image=fixtures.scene({(4, 4): fixtures.RED, (30, 8): fixtures.DIM_RED,
                                                  (30, 44): fixtures.DIM_RED}),
                            labels=labels) for _ in range(n)]


@pytest.fixture(scope='module')
def node(tmp_path_factory):
    """Start the node on /camera/image_raw without a meta classifier; stop it afterwards."""
    folder = tmp_path_factory.mktemp('score')
    files = write_files(folder)
    proc = start_node(ros_env(DOMAIN, folder / 'log'),
                      {'model_path': files['model'], 'priors_path': files['priors']},
                      name='metafusion_node',
                      remap={'~/input/image': '/camera/image_raw'})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    yield SimpleNamespace(proc=proc, folder=folder, context=context)
    rclpy.try_shutdown(context=context)
    code, output = stop_node(proc, signal.SIGINT)
    assert code == 0, output


def test_score_counts_bayes_ml_and_fusion(node):
    """Lock-step replay scores every frame with the expected counts and Δ."""
    bag = node.folder / 'drive'
    write_drive(_frames(4), bag, fixtures.tiny_table(), rate=50.0)
    seen = []
    score = score_bag(DriveBag(bag), rate=5.0, timeout=60.0, context=node.context,
                      on_frame=lambda stamp, masks, report: seen.append(
                          (stamp, len(report['segments']))))
    summary = score.summary()
    assert summary['frames_sent'] == summary['frames_scored'] == 4
    rules = summary['rules']
    assert (rules['bayes']['tp'], rules['bayes']['fp'], rules['bayes']['fn']) == (4, 0, 4)
    assert (rules['ml']['tp'], rules['ml']['fp'], rules['ml']['fn']) == (8, 4, 0)
    assert rules['metafusion'] == rules['ml']
    assert rules['ml']['delta'] == 1.0 and summary['kept_share_of_ml_added_tp'] == 1.0
    assert summary['latency_ms']['p50'] > 0
    assert [n for _, n in seen] == [2, 2, 2, 2]


def test_score_without_a_node_times_out_clearly(node):
    """Scoring against a node that is not there names it and the topic."""
    bag = node.folder / 'drive2'
    write_drive(_frames(1), bag, fixtures.tiny_table())
    with pytest.raises(BagError, match='/nobody'):
        score_bag(DriveBag(bag), node='/nobody', timeout=1.0, context=node.context)
