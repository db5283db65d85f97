"""The node's inputs and diagnostics as a process over DDS: bad headers, stage times, QoS trouble.

One node (tiny network, reliable input, fast diagnostics) serves the tests in file order.
"""
import json
import signal

from diagnostic_msgs.msg import DiagnosticStatus
from fixtures import tiny_table
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from test_node_harness import domain_for, image_msg, node_output, NodeUnderTest, Peer, \
    ros_env, SCENE, start_node, stop_node, with_stamp, write_files
from test_robust_compressed import CASES

from metafusion_ros.ros.conversions import (compressed_to_rgb, image_to_array, image_to_mask,
                                            rgb_to_compressed)
from metafusion_ros.ros.views import class_report, overlay
from metafusion_ros.runtime.stats import STAGES

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


def send_compressed(node, msg, stamp):
    """Publish the CompressedImage ``msg`` with ``stamp`` until its mask is back; return it."""
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = 'camera', stamp, 7
    pub = node.tester.publisher(f'/{NAME}/input/image/compressed', CompressedImage)
    return image_to_mask(node.resend_until_mask(msg, publisher=pub))


@pytest.mark.parametrize('kind,stamp', [('png', 21), ('jpeg', 22)])
def test_compressed_input_gives_the_mask_of_the_decoded_image(node, kind, stamp):
    """A jpeg / png frame on ~/input/image/compressed gives the mask of its decoded pixels."""
    msg = rgb_to_compressed(SCENE, kind)
    mask = send_compressed(node, msg, stamp)
    reference = node.process(image_msg(compressed_to_rgb(msg), stamp + 100), stamp + 100)
    np.testing.assert_array_equal(mask, image_to_mask(reference))


@pytest.mark.parametrize('case,reason', [
    ('jpeg_truncated_half', 'corrupt_compressed'), ('png_truncated_half', 'corrupt_compressed'),
    ('unknown_format_tiff', 'unknown_compression'),
    ('random_bytes_as_jpeg', 'corrupt_compressed')])
def test_bad_compressed_payload_is_a_counted_skip(node, case, reason):
    """Each bad payload adds exactly one skip under its reason; the next frame is correct."""
    fmt, data, _, _ = CASES[case]
    before = node.counter(f'skipped_{reason}')
    node.tester.publisher(f'/{NAME}/input/image/compressed', CompressedImage).publish(
        CompressedImage(format=fmt, data=data))
    node.wait_counter(f'skipped_{reason}', before + 1)
    node.check_alive_and_correct(image_to_mask(with_stamp(node.masks, 1)[-1]))
    assert node.counter(f'skipped_{reason}') == before + 1


def test_compressed_frame_of_another_size_than_camera_info_is_skipped(node):
    """Camera info says 128x96 (the node warms up there), the png is 64x48: a counted skip."""
    info = node.tester.publisher(f'/{NAME}/input/camera_info', CameraInfo)
    before = node.counter('skipped_camera_info_mismatch')
    big = CameraInfo(width=128, height=96)
    msg = rgb_to_compressed(SCENE, 'png')
    pub = node.tester.publisher(f'/{NAME}/input/image/compressed', CompressedImage)
    assert node.tester.spin_until(lambda: node.values().get('camera_info') == 'yes',
                                  every=lambda: info.publish(big))
    node.wait_counter('warm_ups', 1)  # a size not seen before: one blank frame at 128x96
    assert 'warmed up at the camera size 128x96' in node_output(node.proc)
    assert node.tester.spin_until(lambda: node.counter('skipped_camera_info_mismatch') > before,
                                  every=lambda: pub.publish(msg), period=1.0), node.values()
    info.publish(CameraInfo(width=64, height=48))
    assert send_compressed(node, msg, 41).shape == (48, 64)


def test_overlay_is_the_mask_blended_on_the_frame_and_only_when_subscribed(node):
    """~/output/overlay = views.overlay of the frame and its mask; unsubscribed: not computed."""
    tester = node.tester
    topic = f'/{NAME}/output/overlay'
    assert 'computed_overlay' not in node.values()
    overlays = tester.subscribe(topic, Image)
    assert tester.spin_until(lambda: tester.node.count_publishers(topic) > 0)
    mask = image_to_mask(node.resend_until_mask(image_msg(SCENE, 51)))
    assert tester.spin_until(lambda: with_stamp(overlays, 51), timeout=10.0)
    got = with_stamp(overlays, 51)[-1]
    assert (got.encoding, got.header.frame_id) == ('rgb8', 'camera')
    expected = overlay(SCENE, mask, tiny_table(), 0.5)
    np.testing.assert_array_equal(image_to_array(got), expected)
    tester.unsubscribe(topic)
    node.wait_counter('computed_overlay', 1)


def test_class_table_is_latched_for_late_subscribers(node):
    """A subscriber that comes long after start-up still receives the class table, once."""
    tester = node.tester
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    received = []
    tester.node.create_subscription(String, f'/{NAME}/output/classes', received.append, qos)
    assert tester.spin_until(lambda: received, timeout=30.0)
    tester.spin_for(1.0)
    assert len(received) == 1
    assert json.loads(received[0].data) == class_report(tiny_table())


def test_node_exits_cleanly(node):
    """After all of the above every frame is accounted for and SIGTERM exits with 0."""
    node.stop_cleanly()


def test_second_sigint_during_shutdown_exits_zero_without_traceback(tmp_path):
    """SIGINT while a large frame is processed, then SIGINT again (as ros2 launch does): exit 0."""
    files = write_files(tmp_path)
    env = ros_env(DOMAIN, tmp_path / 'log')
    proc = start_node(env, {'model_path': files['model'], 'priors_path': files['priors'],
                            'qos.reliability': 'reliable'}, name='twice')
    peer = Peer(DOMAIN, 'sigint_tester')
    try:
        big = image_msg(np.repeat(np.repeat(SCENE, 16, axis=0), 16, axis=1), 5)
        pub = peer.publisher('/twice/input/image')
        masks = peer.subscribe('/twice/output/mask', Image)
        assert peer.spin_until(lambda: masks, every=lambda: pub.publish(big), period=1.0)
        pub.publish(big)  # the worker is busy with this one when the signals come
        peer.spin_for(0.3)
        proc.send_signal(signal.SIGINT)
        peer.spin_for(0.2)
        code, output = stop_node(proc, signal.SIGINT)
    finally:
        peer.close()
        stop_node(proc, signal.SIGKILL)
    assert code == 0 and 'Traceback' not in output, output[-3000:]
