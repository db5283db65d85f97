"""use_sim_time over real DDS: diagnostics without /clock, and ``metafusion bag play --clock``.

With ``use_sim_time`` ROS time stands at 0 until /clock arrives; the node's diagnostics run on
a steady clock, so they are published anyway, with a WARN naming the missing /clock. ``bag play
--clock`` publishes the bag time on /clock; the node then follows it (diagnostics stamped with
the bag's last time) and the warning goes.
"""
import signal
import subprocess
import sys

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from test_bag import drive_frames
from test_node_harness import (domain_for, node_output, Peer, REPO, ros_env, start_node,
                               stop_node, write_files)

import fixtures
from metafusion_ros.ros.bag import DriveBag, IMAGE_TOPIC, write_drive

DOMAIN = domain_for(93)
NAME = 'simfusion'
FRAMES, RATE = 12, 4.0


def status_of(arrays: list) -> tuple:
    """Return ``(stamp ns, level, message, values)`` of the node's newest diagnostics."""
    for array in reversed(arrays):
        for status in array.status:
            if status.name == f'/{NAME}: fusion':
                stamp = array.header.stamp.sec * 10**9 + array.header.stamp.nanosec
                return (stamp, status.level, status.message,
                        {kv.key: kv.value for kv in status.values})
    return None, None, '', {}


def test_diagnostics_warn_without_clock_and_follow_bag_play_clock(tmp_path):
    """No /clock: WARN diagnostics at stamp 0; after bag play --clock: OK at the bag's end."""
    files = write_files(tmp_path)
    bag_path = tmp_path / 'drive'
    write_drive(drive_frames(FRAMES), bag_path, fixtures.tiny_table(), rate=RATE)
    bag_times = [stamp for stamp, _, _ in DriveBag(bag_path).messages([IMAGE_TOPIC])]
    env = ros_env(DOMAIN, tmp_path / 'log')
    proc = start_node(env, {'model_path': files['model'], 'priors_path': files['priors'],
                            'use_sim_time': True, 'qos.reliability': 'reliable'},
                      name=NAME, remap={'~/input/image': IMAGE_TOPIC})
    tester = Peer(DOMAIN)
    try:
        arrays = tester.subscribe('/diagnostics', DiagnosticArray)
        clocks = tester.subscribe('/clock', Clock)
        masks = tester.subscribe(f'/{NAME}/output/mask', Image)
        assert tester.spin_until(lambda: status_of(arrays)[3].get('model_state') == 'active',
                                 timeout=90.0), node_output(proc)[-3000:]
        stamp, level, message, values = status_of(arrays)
        assert (stamp, level) == (0, DiagnosticStatus.WARN)
        assert message == 'active; use_sim_time is true and no /clock has arrived'
        assert values['clock'] == 'sim, no /clock yet'
        play = subprocess.Popen(
            [sys.executable, '-m', 'metafusion_ros.tools.cli', 'bag', 'play', str(bag_path),
             '--clock'], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        assert tester.spin_until(lambda: play.poll() is not None, timeout=60.0)
        assert play.returncode == 0, play.stdout.read()
        assert tester.spin_until(lambda: status_of(arrays)[0] == bag_times[-1], timeout=30.0), \
            status_of(arrays)
        _, level, message, values = status_of(arrays)
        assert (level, message, values['clock']) == (DiagnosticStatus.OK, 'active', 'sim')
        times = [c.clock.sec * 10**9 + c.clock.nanosec for c in clocks]
        assert times == sorted(times) and bag_times[0] <= times[0] and times[-1] == bag_times[-1]
        assert len(times) > FRAMES  # also while waiting between frames, not only at each one
        assert masks and {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                          for m in masks} <= set(bag_times)
    finally:
        tester.close()
        code, output = stop_node(proc, signal.SIGTERM)
    assert code == 0 and 'Traceback' not in output, output[-2000:]
