"""Robustness, bags: truncated, mistyped, corrupt, empty or unscorable bags; interrupted writes.

Each bad bag is a clear :class:`BagError` naming the bag (and the topic), or a counted skip that
the report shows; the ``metafusion bag`` command line exits 2 with one line and no traceback.
A node process scores a bag whose unreadable frames are skipped exactly as if they were absent,
and stays alive and correct after corrupt and mistyped messages reach it over DDS. ``bag make``
writes under a hidden name and renames, so no valid name ever holds half a bag, even when the
writer is killed.
"""
from collections import Counter
import json
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg, get_typestore, Stores
from sensor_msgs.msg import Image
from std_msgs.msg import String
from test_bag import drive_frames
from test_node_harness import (domain_for, image_msg, Peer, ros_env, start_node, stop_node,
                               with_stamp, write_files)

import fixtures
from metafusion_ros.ros.bag import (BagError, DriveBag, GT_TOPIC, IMAGE_TOPIC, message_class,
                                    publishers, replay, START_NS, TABLE_KEY, TYPESTORE,
                                    unknown_topics, write_drive)
from metafusion_ros.ros.conversions import image_to_mask
from metafusion_ros.ros.score import score_bag

DOMAIN = domain_for(84)
REPO = Path(__file__).resolve().parents[1]
TABLE = fixtures.tiny_table()
GOOD, CORRUPT, MISTYPED = 'good', 'corrupt', 'mistyped'
# Images the node cannot read, as replay / score see them: reason -> message fields.
UNREADABLE = {'unsupported_encoding': dict(encoding='16UC1', height=2, width=2, step=4,
                                           data=bytes(8)),
              'bad_data_length': dict(encoding='rgb8', height=48, width=64, step=192,
                                      data=bytes(100))}


def _stamped(msg, stamp_ns):
    """Set the header stamp of ``msg`` (ns) and return it."""
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


def _image_bytes(kind, stamp_ns):
    """Return the CDR bytes of one image message of ``kind`` (good, corrupt or unreadable)."""
    if kind in UNREADABLE:
        return serialize_message(_stamped(Image(**UNREADABLE[kind]), stamp_ns))
    good = serialize_message(_stamped(image_msg(fixtures.scene(), 0), stamp_ns))
    return good if kind == GOOD else good[:60]  # cut inside the pixel data's length field


def odd_bag(out, images, ground_truth=True, table=True, storage='mcap', gt_bytes=None):
    """Write a bag with image messages of the given kinds (one per 0.1 s) and their labels.

    ``table`` True records the class table; a string is recorded as the table's JSON instead.
    """
    labels = drive_frames(1)[0].labels
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP if storage == 'mcap' else
                StoragePlugin.SQLITE3) as writer:
        if table:
            writer.set_custom_data(TABLE_KEY, table if isinstance(table, str) else
                                   json.dumps(TABLE.to_dict()))
        kind = 'std_msgs/msg/String' if MISTYPED in images else 'sensor_msgs/msg/Image'
        image_conn = writer.add_connection(IMAGE_TOPIC, kind, typestore=TYPESTORE)
        gt_conn = writer.add_connection(GT_TOPIC, 'sensor_msgs/msg/Image', typestore=TYPESTORE)
        for i, image in enumerate(images):
            stamp = START_NS + i * 10**8
            writer.write(image_conn, stamp, serialize_message(String(data='not an image'))
                         if image == MISTYPED else _image_bytes(image, stamp))
            if ground_truth:
                truth = serialize_message(_stamped(image_msg(labels, 0, encoding='mono8'), stamp))
                writer.write(gt_conn, stamp, gt_bytes or truth)
    return out


def foreign_bag(out):
    """Write a drive of two good frames plus /tf and /foo (type this/msg/Foo) messages."""
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg('string data', 'this/msg/Foo'))
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.set_custom_data(TABLE_KEY, json.dumps(TABLE.to_dict()))
        conns = {topic: writer.add_connection(topic, kind, typestore=store) for topic, kind in (
            (IMAGE_TOPIC, 'sensor_msgs/msg/Image'), ('/tf', 'tf2_msgs/msg/TFMessage'),
            ('/foo', 'this/msg/Foo'))}
        extra = {'/tf': store.serialize_cdr(store.types['tf2_msgs/msg/TFMessage'](
            transforms=[]), 'tf2_msgs/msg/TFMessage'),
            '/foo': store.serialize_cdr(store.types['this/msg/Foo'](data='x'), 'this/msg/Foo')}
        for i in range(2):
            stamp = START_NS + i * 10**8
            writer.write(conns[IMAGE_TOPIC], stamp, _image_bytes(GOOD, stamp))
            for topic, data in extra.items():
                writer.write(conns[topic], stamp, data)
    return out


def _cli(args, env, name):
    """Start ``python -m metafusion_ros.tools.cli`` with ``args``; output goes to ``name``.out."""
    log = Path(env['ROS_LOG_DIR']) / f'{name}.out'
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, '-m', 'metafusion_ros.tools.cli',
                                 *map(str, args)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    proc.log = log
    return proc


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """Write every bad bag into a folder whose name has a space; start the CLI on each at once."""
    folder = tmp_path_factory.mktemp('robust bags')
    env = ros_env(DOMAIN, folder / 'log')
    (folder / 'log').mkdir()
    paths = {}
    for storage in ('mcap', 'sqlite3'):
        out = folder / f'truncated {storage}'
        write_drive(drive_frames(), out, TABLE, storage=storage)
        data = next(p for p in out.iterdir() if p.suffix in ('.mcap', '.db3'))
        data.write_bytes(data.read_bytes()[:200])
        paths[f'truncated_{storage}'] = out
    paths['mistyped'] = odd_bag(folder / 'mistyped bag', [MISTYPED, MISTYPED])
    paths['corrupt'] = odd_bag(folder / 'corrupt bag', [GOOD, CORRUPT, GOOD])
    paths['empty'] = odd_bag(folder / 'empty bag', [])
    write_drive([SimpleNamespace(image=fixtures.scene(), labels=None)], folder / 'no truth bag',
                TABLE)
    paths['no_truth'] = folder / 'no truth bag'
    paths['no_table'] = odd_bag(folder / 'no table bag', [GOOD], table=False)
    paths['corrupt_truth'] = odd_bag(folder / 'corrupt truth bag', [GOOD], gt_bytes=b'\0\1\0\0')
    paths['missing'] = folder / 'no such bag'
    paths['foreign'] = foreign_bag(folder / 'foreign bag')
    procs = {case: _cli([*args[:2], paths[args[2]], *args[3:]], env, case)
             for case, (args, _, _) in CLI_CASES.items()}
    yield SimpleNamespace(paths=paths, procs=procs, folder=folder, env=env)
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# case -> (command line: [bag, action, bag key, options...], exit code, texts of the one line).
CLI_CASES = {
    'truncated_mcap_play': (['bag', 'play', 'truncated_mcap'], 2, ['unreadable']),
    'truncated_sqlite3_score': (['bag', 'score', 'truncated_sqlite3', '--timeout', '1'], 2,
                                ['unreadable']),
    'mistyped_play': (['bag', 'play', 'mistyped'], 2,
                      [f'{IMAGE_TOPIC} holds std_msgs/msg/String messages']),
    'mistyped_score': (['bag', 'score', 'mistyped', '--timeout', '1'], 2,
                       [f'{IMAGE_TOPIC} holds std_msgs/msg/String messages']),
    'corrupt_play': (['bag', 'play', 'corrupt', '--rate', '50', '--wait', '0'], 0,
                     ['published 2 messages', f'skipped 1 ({IMAGE_TOPIC}: corrupt_cdr x1)']),
    'empty_play': (['bag', 'play', 'empty'], 2, ['holds no messages']),
    'empty_score': (['bag', 'score', 'empty', '--timeout', '1'], 2,
                    [f'has no messages on {GT_TOPIC}']),
    'no_truth_score': (['bag', 'score', 'no_truth', '--timeout', '1'], 2,
                       [f'has no ground truth on {GT_TOPIC}', 'scoring needs it']),
    'no_table_score': (['bag', 'score', 'no_table', '--timeout', '1'], 2,
                       ['no class table recorded']),
    'corrupt_truth_score': (['bag', 'score', 'corrupt_truth', '--timeout', '1'], 2,
                            ['corrupt ground truth message']),
    'missing_play': (['bag', 'play', 'missing'], 2, ['does not exist']),
    'foreign_play': (['bag', 'play', 'foreign', '--rate', '50', '--wait', '0'], 0, [
        'published 2 messages', 'skipped 4 (/foo: unknown type this/msg/Foo x2, '
        '/tf: unknown type tf2_msgs/msg/TFMessage x2)']),
}


@pytest.mark.parametrize('case', list(CLI_CASES))
def test_cli_on_bad_bags_prints_one_line(bags, case):
    """``metafusion bag play|score`` on a bad bag: one line naming the bag, no traceback."""
    proc = bags.procs[case]
    proc.wait(timeout=120)
    output = proc.log.read_text()
    lines = [line for line in output.splitlines() if line.strip()]
    args, code, texts = CLI_CASES[case]
    assert proc.returncode == code, output
    assert len(lines) == 1 and 'Traceback' not in output, output
    assert str(bags.paths[args[2]]) in lines[0]
    assert all(text in lines[0] for text in texts), lines[0]
    if code:
        assert lines[0].startswith('metafusion bag: error: bag ')


@pytest.mark.parametrize('storage,suffix', [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_truncated_or_damaged_bag_is_a_clear_error(tmp_path, storage, suffix):
    """Cut anywhere or overwritten in places, a bag reads fully or raises BagError naming it."""
    source = tmp_path / 'source'
    write_drive(drive_frames(), source, TABLE, storage=storage)
    data = next(source.glob(f'*{suffix}')).read_bytes()
    rng = np.random.default_rng(3)
    cuts = [0, 1, 8, 200, len(data) // 4, len(data) // 2, len(data) - 100, len(data) - 1]
    damaged = [data[:cut] for cut in cuts]
    for at in rng.integers(0, len(data) - 16, 6):
        damaged.append(data[:at] + rng.bytes(16) + data[at + 16:])
    failures = 0
    for i, blob in enumerate(damaged):
        bag = tmp_path / f'damaged {i}'
        bag.mkdir()
        (bag / 'metadata.yaml').write_bytes((source / 'metadata.yaml').read_bytes())
        (bag / f'source_0{suffix}').write_bytes(blob)
        try:
            DriveBag(bag).table()
            DriveBag(bag).ground_truth()
            assert len(list(DriveBag(bag).messages())) == 9
        except BagError as exc:
            assert str(bag) in str(exc)
            failures += 1
    assert failures >= 4  # at least the cuts at 0, 1, 8 and 200 bytes


def test_foreign_types_are_never_imported_nor_published(bags):
    """A bag naming this/msg/Foo and tf2_msgs: no import by name, no publisher, counted."""
    before = set(sys.modules)
    bag = DriveBag(bags.paths['foreign'])
    assert unknown_topics(bag) == {'/foo: unknown type this/msg/Foo': 2,
                                   '/tf: unknown type tf2_msgs/msg/TFMessage': 2}
    context, node, executor = _context()
    try:
        assert list(publishers(node, bag)) == [IMAGE_TOPIC]
        with pytest.raises(BagError, match='this/msg/Foo is not one the bag tools read'):
            message_class('this/msg/Foo')
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    new = set(sys.modules) - before
    assert not [m for m in new if m == 'this' or m.startswith('tf2_msgs')], new


def _context():
    """Return an rclpy context in this module's domain with a node and an executor."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    node = rclpy.create_node('robust_bags', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return context, node, executor


def test_mistyped_image_topic_is_refused_and_corrupt_messages_are_skipped(bags):
    """A String on the image topic is a BagError; corrupt CDR is not replayed but counted."""
    context, node, executor = _context()
    got = []
    node.create_subscription(Image, '/replayed', got.append, 10)
    try:
        with pytest.raises(BagError, match=f'{IMAGE_TOPIC} holds std_msgs/msg/String'):
            publishers(node, DriveBag(bags.paths['mistyped']))
        bag = DriveBag(bags.paths['corrupt'])
        pubs = publishers(node, bag, [IMAGE_TOPIC], remap={IMAGE_TOPIC: '/replayed'})
        deadline = time.monotonic() + 30
        while not pubs[IMAGE_TOPIC].get_subscription_count() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        skipped = Counter()
        assert replay(executor, bag, pubs, rate=20.0, skipped=skipped) == 2
        while len(got) < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert skipped == {f'{IMAGE_TOPIC}: corrupt_cdr': 1}
    assert [m.header.stamp.nanosec for m in got] == [0, 200_000_000]


def test_empty_bag_and_bag_without_truth_cannot_be_scored(bags):
    """No messages, or no ground-truth topic: the BagError says which."""
    empty = DriveBag(bags.paths['empty'])
    assert empty.counts() == {IMAGE_TOPIC: 0, GT_TOPIC: 0}
    with pytest.raises(BagError, match=f'no messages on {GT_TOPIC}'):
        empty.ground_truth()
    with pytest.raises(BagError, match='no ground truth'):
        DriveBag(bags.paths['no_truth']).ground_truth()


@pytest.mark.parametrize('recorded', ['{not json', '{"name": "tiny"}', '[1, 2]'])
def test_unreadable_class_table_is_a_clear_error(tmp_path, recorded):
    """A class table that is not JSON or not a table: a BagError naming the bag."""
    path = odd_bag(tmp_path / 'bad table bag', [GOOD], table=recorded)
    with pytest.raises(BagError, match='bad table bag: unreadable class table'):
        DriveBag(path).table()


def test_failed_write_leaves_no_bag_under_the_name(tmp_path):
    """A source failing mid-way leaves neither the bag nor its temporary folder."""
    def broken():
        yield drive_frames(1)[0]
        raise OSError('disk on fire')

    with pytest.raises(OSError, match='disk on fire'):
        write_drive(broken(), tmp_path / 'drive', TABLE)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BagError, match='no frames'):
        write_drive([], tmp_path / 'empty', TABLE)
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = textwrap.dedent('''
    import sys, time
    from test_bag import drive_frames
    import fixtures
    from metafusion_ros.ros.bag import write_drive

    def frames():
        yield from drive_frames(2)
        print('written', flush=True)
        time.sleep(600)

    write_drive(frames(), sys.argv[1], fixtures.tiny_table())
''')


def test_killed_writer_leaves_no_bag_under_the_name(tmp_path):
    """SIGKILL while writing leaves only the hidden partial folder; the next write succeeds."""
    out = tmp_path / 'my drive'
    env = ros_env(DOMAIN, tmp_path / 'log')
    env['PYTHONPATH'] = f'{REPO / "test"}:{env["PYTHONPATH"]}'
    writer = subprocess.Popen([sys.executable, '-c', KILLED_WRITER, str(out)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == 'written'
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != 'log'] == ['.my drive.partial']
    assert write_drive(drive_frames(2), out, TABLE) == 2
    assert len(DriveBag(out).ground_truth()) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != 'log') == ['my drive']


def test_score_skips_unreadable_frames_and_the_node_stays_correct(bags):
    """Corrupt and unreadable frames are skipped and counted; the good ones score as alone.

    Then corrupt CDR bytes and a String reach the running node over DDS directly; it stays
    alive and still answers the next good frame.
    """
    folder = bags.folder
    (folder / 'node files').mkdir()
    files = write_files(folder / 'node files')
    proc = start_node(bags.env, {'model_path': files['model'], 'priors_path': files['priors'],
                                 'qos.reliability': 'reliable'},
                      name='metafusion_node', remap={'~/input/image': IMAGE_TOPIC})
    clean = odd_bag(folder / 'clean bag', [GOOD, GOOD])
    faulty = odd_bag(folder / 'faulty bag', [GOOD, CORRUPT, *UNREADABLE, GOOD],
                     storage='sqlite3')
    context, node, executor = _context()
    other = Peer(DOMAIN, 'mistyped')  # DDS allows one type per topic and participant
    try:
        reference = score_bag(DriveBag(clean), rate=10.0, timeout=60.0, context=context,
                              alive=lambda: proc.poll() is None).summary()
        summary = score_bag(DriveBag(faulty), rate=10.0, timeout=60.0, context=context,
                            alive=lambda: proc.poll() is None).summary()
        assert summary['frames_sent'] == summary['frames_scored'] == 2
        assert summary['messages_skipped'] == {f'{IMAGE_TOPIC}: {reason}': 1 for reason in
                                               ['corrupt_cdr', *UNREADABLE]}
        assert summary['rules'] == reference['rules'] and reference['frames_scored'] == 2
        masks = []
        node.create_subscription(Image, '/metafusion_node/output/mask', masks.append, 10)
        raw = node.create_publisher(Image, IMAGE_TOPIC, 10)
        mistyped = other.publisher(IMAGE_TOPIC, String)
        good = image_msg(fixtures.scene(), 77)
        deadline = time.monotonic() + 60
        while not with_stamp(masks, 77) and time.monotonic() < deadline:
            raw.publish(_image_bytes(CORRUPT, 5 * 10**9))
            mistyped.publish(String(data='not an image'))
            raw.publish(good)
            executor.spin_once(timeout_sec=0.2)
        assert with_stamp(masks, 77) and proc.poll() is None
        assert image_to_mask(with_stamp(masks, 77)[0])[4:12, 4:12].min() == 1  # the red person
    finally:
        other.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        code, output = stop_node(proc, signal.SIGINT)
    assert code == 0 and 'Traceback' not in output, output
