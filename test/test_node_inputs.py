"""The node's inputs and diagnostics as a process over DDS: bad headers, stage times, QoS trouble.

One node (tiny network, reliable input, fast diagnostics) serves the tests in file order.
"""
from diagnostic_msgs.msg import DiagnosticStatus
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from test_node_harness import domain_for, image_msg, NodeUnderTest, SCENE, write_files, \
    with_stamp

from metafusion_ros.ros.stats import STAGES

DOMAIN = domain_for(76)
NAME = 'inputs'


@pytest.fixture(scope='module')
def node(tmp_path_factory):
    """Start the node with reliable input and 0.2 s diagnostics; yield it; kill it."""
    folder = tmp_path_factory.mktemp('inputs')
    files = write_files(folder)
    under_test = NodeUnderTest.start(DOMAIN, folder / 'log', {
        'model_path': files['model'], 'priors_path': files['priors'],
        'meta_model_path': files['meta'], 'warn_throttle_s': 0.0, 'diagnostics_period_s': 0.2,
        'qos.reliability': 'reliable', 'diagnostics_window_s': 3.0}, NAME)
    yield under_test
    under_test.close()


def status(node):
    """Return the newest /diagnostics status of the node (None before the first)."""
    for array in reversed(node.diagnostics):
        for item in array.status:
            if item.name.startswith(f'/{NAME}'):
                return item
    return None


def wait_status(node, condition, timeout=30.0):
    """Wait until the node's newest status satisfies ``condition``; return it."""
    assert node.tester.spin_until(lambda: status(node) is not None and condition(status(node)),
                                  timeout=timeout), status(node)
    return status(node)


def test_stage_times_are_published(node):
    """Every per-frame stage has its median time in /diagnostics (the fixture has candidates)."""
    node.process(image_msg(SCENE, 11), 11)
    found = wait_status(node, lambda s: any(kv.key == 'stage_ms_fusion_p50' for kv in s.values))
    keys = {kv.key for kv in found.values}
    assert {f'stage_ms_{stage}_p50' for stage in STAGES} <= keys
    assert {'frame_rate_hz', 'input_rate_hz', 'dropped_or_lost_pct', 'window_s'} <= keys


def test_stamp_zero_and_empty_frame_id_warn_then_clear(node):
    """A frame stamped 0 without frame_id is processed, counted and turns diagnostics WARN."""
    msg = image_msg(SCENE, 0, frame_id='')
    msg.header.stamp.nanosec = 0
    assert node.tester.spin_until(lambda: with_stamp(node.masks, 0),
                                  every=lambda: node.pub.publish(msg))
    found = wait_status(node, lambda s: s.level == DiagnosticStatus.WARN)
    assert 'stamped 0' in found.message and 'empty frame_id' in found.message
    assert node.counter('stamps_zero') >= 1 and node.counter('frame_ids_empty') >= 1
    good = image_msg(SCENE, 12)  # frames keep coming (silence is a problem of its own)
    assert node.tester.spin_until(lambda: status(node).level == DiagnosticStatus.OK,
                                  every=lambda: node.pub.publish(good), period=0.5), status(node)


def test_incompatible_publisher_is_named_in_diagnostics(node):
    """A best-effort publisher cannot feed the reliable input: counted and WARN, never silent."""
    tester = node.tester
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    pub = tester.node.create_publisher(Image, f'/{NAME}/input/image', qos)
    try:
        found = wait_status(node, lambda s: 'incompatible QoS' in s.message)
        assert found.level == DiagnosticStatus.WARN
        assert node.counter('qos_incompatible') >= 1
        found = wait_status(node, lambda s: 'no frame for' in s.message)
        assert 'publisher(s) matched' in found.message
    finally:
        tester.node.destroy_publisher(pub)


def test_node_exits_cleanly(node):
    """After all of the above every frame is accounted for and SIGTERM exits with 0."""
    node.stop_cleanly()
