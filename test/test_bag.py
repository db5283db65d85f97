"""Drive bags: write (mcap, sqlite3), read back, replay (bad bags: test_robust_bags.py)."""
from pathlib import Path
import time
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image

from metafusion_ros.tools.cli import main as cli
import fixtures
from metafusion_ros.ros.bag import (BagError, DriveBag, GT_TOPIC, header_stamp, IMAGE_TOPIC,
                                    INFO_TOPIC, publishers, replay, write_drive)
from metafusion_ros.ros.conversions import image_to_rgb
from test_node_harness import domain_for

DOMAIN = domain_for(72)


def drive_frames(n=3):
    """Return ``n`` tiny frames: scene image and its label map (dim red A is a person)."""
    labels = np.zeros(fixtures.SIZE, np.uint8)
    labels[4:12, 4:12] = 1
    labels[30:38, 8:16] = 1
    labels[4:12, 40:48] = 2
    return [SimpleNamespace(image=fixtures.scene(), labels=labels.copy()) for _ in range(n)]


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_write_and_read_back(tmp_path, storage):
    """Images, camera info and ground truth come back with equal stamps 1/rate apart."""
    out = tmp_path / 'drive'
    assert write_drive(drive_frames(), out, fixtures.tiny_table(), storage=storage,
                       rate=20.0) == 3
    bag = DriveBag(out)
    assert bag.topics() == {IMAGE_TOPIC: 'sensor_msgs/msg/Image',
                            INFO_TOPIC: 'sensor_msgs/msg/CameraInfo',
                            GT_TOPIC: 'sensor_msgs/msg/Image'}
    assert bag.table() == fixtures.tiny_table()
    images = [deserialize_message(d, Image) for _, _, d in bag.messages([IMAGE_TOPIC])]
    infos = [deserialize_message(d, CameraInfo) for _, _, d in bag.messages([INFO_TOPIC])]
    np.testing.assert_array_equal(image_to_rgb(images[2]), fixtures.scene())
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in images]
    assert np.diff(stamps).tolist() == [50_000_000, 50_000_000]
    assert [i.header for i in infos] == [i.header for i in images]
    assert (infos[0].width, infos[0].height) == (64, 48)
    truth = bag.ground_truth()
    assert sorted(truth) == sorted((m.header.stamp.sec, m.header.stamp.nanosec) for m in images)
    np.testing.assert_array_equal(next(iter(truth.values())), drive_frames()[0].labels)
    assert [p.name for p in tmp_path.iterdir()] == ['drive']


def test_write_refuses_existing_bag_and_bad_options(tmp_path):
    """An existing bag is never overwritten; unknown storage and bad rates are refused."""
    (tmp_path / 'drive').mkdir()
    with pytest.raises(BagError, match='already exists'):
        write_drive(drive_frames(), tmp_path / 'drive', fixtures.tiny_table())
    with pytest.raises(BagError, match='storage'):
        write_drive(drive_frames(), tmp_path / 'x', fixtures.tiny_table(), storage='rosbag1')
    with pytest.raises(BagError, match='rate'):
        write_drive(drive_frames(), tmp_path / 'y', fixtures.tiny_table(), rate=0)


def test_cli_make_from_a_synthetic_drive(tmp_path, capsys):
    """``metafusion bag make --dataset synthetic`` writes every frame with its labels."""
    from metafusion_ros.tools.data.synth import generate_drives

    generate_drives(tmp_path / 'synth', {'val': 1}, frames=2, size=(64, 32))
    out = tmp_path / 'bag'
    assert cli(['bag', 'make', '--dataset', 'synthetic', '--root', str(tmp_path / 'synth'),
                '--out', str(out), '--storage', 'sqlite3']) == 0
    assert len(DriveBag(out).ground_truth()) == 2
    assert cli(['bag', 'make', '--dataset', 'synthetic', '--root', str(tmp_path / 'synth'),
                '--out', str(out)]) == 2
    assert 'already exists' in capsys.readouterr().err


def _bag(tmp_path: Path, storage='mcap') -> Path:
    """Write a 3-frame bag and return its path."""
    out = tmp_path / f'drive_{storage}'
    write_drive(drive_frames(), out, fixtures.tiny_table(), storage=storage)
    return out


def test_missing_or_empty_bag_folder(tmp_path):
    """A missing bag and a folder without metadata are clear errors."""
    with pytest.raises(BagError, match='does not exist'):
        DriveBag(tmp_path / 'nope').topics()
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagError, match='empty'):
        DriveBag(tmp_path / 'empty').topics()


def test_header_stamp_of_cdr_and_garbage():
    """Stamps are read from the CDR header; garbage is refused."""
    from rclpy.serialization import serialize_message

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 5, 6
    assert header_stamp(serialize_message(msg)) == (5, 6)
    with pytest.raises(BagError):
        header_stamp(b'\x00\x07')


def test_replay_publishes_bytes_in_order_with_timing(tmp_path):
    """Replay publishes each stored message unchanged, paced by the bag's stamps / rate."""
    out = _bag(tmp_path)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    node = rclpy.create_node('replay_test', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    got = []
    node.create_subscription(Image, '/replayed', got.append, 10)
    try:
        bag = DriveBag(out)
        pubs = publishers(node, bag, [IMAGE_TOPIC], remap={IMAGE_TOPIC: '/replayed'})
        deadline = time.monotonic() + 30
        while not pubs[IMAGE_TOPIC].get_subscription_count() and \
                time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        start = time.monotonic()
        assert replay(executor, bag, pubs, rate=2.0) == 3
        elapsed = time.monotonic() - start
        while len(got) < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        with pytest.raises(BagError, match='no topic'):
            publishers(node, bag, ['/nope'])
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert elapsed >= 0.1  # 2 gaps of 0.1 s at 10 Hz, played at 2x
    assert [m.header.stamp.nanosec for m in got] == [0, 100_000_000, 200_000_000]
    np.testing.assert_array_equal(image_to_rgb(got[0]), fixtures.scene())


SHARED = Path(__file__).resolve().parents[1].parent / 'shared'


@pytest.mark.skipif(not (SHARED / 'data' / 'camvid').is_dir(),
                    reason='../shared/data/camvid is absent')
def test_cli_make_from_camvid(tmp_path):
    """A CamVid split becomes a bag whose ground truth uses the CamVid table (void = 11)."""
    out = tmp_path / 'camvid'
    assert cli(['bag', 'make', '--dataset', 'camvid', '--root', str(SHARED / 'data' / 'camvid'),
                '--split', 'test', '--max-frames', '2', '--out', str(out)]) == 0
    bag = DriveBag(out)
    assert bag.table().name == 'camvid'
    truth = list(bag.ground_truth().values())
    assert len(truth) == 2 and truth[0].shape == (360, 480) and truth[0].max() <= 11


def test_play_waits_for_subscribers_and_names_the_lonely_topics(tmp_path):
    """With nobody subscribed, ``bag play`` waits ``--wait`` s, names the topics, then plays."""
    import subprocess
    import sys

    from test_node_harness import REPO, ros_env

    out = tmp_path / 'drive'
    write_drive(drive_frames(2), out, fixtures.tiny_table(), rate=20.0)
    env = ros_env(domain_for(75), tmp_path / 'log')
    for wait, lonely in (('0.5', True), ('0', False)):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, '-m', 'metafusion_ros.tools.cli', 'bag', 'play',
                               str(out), '--wait', wait], env=env, cwd=REPO, text=True,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f'published 4 messages from {out}' in proc.stdout
        warning = (f'no subscriber on {INFO_TOPIC}, {IMAGE_TOPIC} after {wait} s; '
                   f'playing anyway')
        assert (warning in proc.stderr) == lonely, proc.stderr
        if lonely:
            assert time.monotonic() - start >= 0.5


def test_looping_play_counts_what_it_published_when_interrupted(tmp_path):
    """``bag play --loop`` until Ctrl-C prints the messages it published (was: 0), exits 0."""
    import re
    import signal
    import subprocess
    import sys

    from test_node_harness import Peer, REPO, ros_env

    out = tmp_path / 'drive'
    write_drive(drive_frames(2), out, fixtures.tiny_table(), rate=20.0)
    peer = Peer(domain_for(75))
    images = peer.subscribe(IMAGE_TOPIC, Image)
    log = tmp_path / 'play.out'
    with log.open('w') as sink:
        proc = subprocess.Popen([sys.executable, '-m', 'metafusion_ros.tools.cli', 'bag', 'play',
                                 str(out), '--loop', '--rate', '4'], cwd=REPO, stdout=sink,
                                stderr=subprocess.STDOUT, text=True,
                                env=ros_env(domain_for(75), tmp_path / 'log'))
    try:
        assert peer.spin_until(lambda: len(images) >= 6, timeout=60.0), log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30.0) == 0, log.read_text()
    finally:
        proc.kill()
        peer.close()
    published = re.search(rf'published (\d+) messages from {re.escape(str(out))}$',
                          log.read_text(), re.MULTILINE)
    assert published is not None, log.read_text()
    assert int(published[1]) >= len(images) >= 6  # images and camera infos, three passes and more
