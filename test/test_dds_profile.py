"""The shipped Fast DDS profile for large frames: delivery between processes, who applies it.

The delivery test runs two helper processes (``dds_frames.py``): a best-effort (SensorDataQoS)
publisher of 1920x1080 bgr8 frames at 10 Hz and a plain subscriber, both with the profile.
"""
import json
import os
from pathlib import Path
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import rclpy
from test_bag import drive_frames
from test_node_harness import domain_for

from metafusion_ros import cli
from metafusion_ros.ros import fixtures
from metafusion_ros.ros.bag import write_drive
from metafusion_ros.ros.dds import large_frames_profile, PROFILE_ENV, use_large_frames_profile

DOMAIN = domain_for(77)
HELPER = Path(__file__).with_name('dds_frames.py')
NS = {'dds': 'http://www.eprosima.com'}


def test_profile_is_shared_memory_with_32_mib_segments_plus_udp():
    """The XML names SHM (32 MiB segments) and UDPv4 as the only transports of a participant."""
    root = ET.parse(large_frames_profile()).getroot()
    kinds = {d.findtext('dds:transport_id', namespaces=NS): (
        d.findtext('dds:type', namespaces=NS), d.findtext('dds:segment_size', namespaces=NS))
        for d in root.iterfind('.//dds:transport_descriptor', NS)}
    assert sorted(kinds.values()) == [('SHM', str(32 * 2**20)), ('UDPv4', None)]
    participant = root.find('.//dds:participant', NS)
    assert participant.get('is_default_profile') == 'true'
    assert participant.findtext('.//dds:useBuiltinTransports', namespaces=NS) == 'false'
    used = [t.text for t in participant.iterfind('.//dds:userTransports/dds:transport_id', NS)]
    assert sorted(used) == sorted(kinds)


def test_large_best_effort_frames_arrive_with_the_profile(tmp_path):
    """20 best-effort 1920x1080 bgr8 frames at 10 Hz: at least 95 % reach the other process."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(tmp_path), RMW_IMPLEMENTATION='rmw_fastrtps_cpp')
    env[PROFILE_ENV] = str(large_frames_profile().resolve())
    sub = subprocess.Popen([sys.executable, str(HELPER), 'sub', '/frames', '120'], env=env,
                           stdout=subprocess.PIPE, text=True)
    try:
        subprocess.run([sys.executable, str(HELPER), 'pub', '/frames', '1920', '1080', '20', '10'],
                       env=env, check=True, timeout=180)
        out, _ = sub.communicate(timeout=180)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert json.loads(out.splitlines()[-1])['received'] >= 19, out


def test_bag_play_applies_the_profile_before_it_starts_ros(tmp_path, monkeypatch):
    """`metafusion bag play` sets FASTDDS_DEFAULT_PROFILES_FILE before rclpy.init (if unset)."""
    bag = tmp_path / 'drive'
    write_drive(drive_frames(), bag, fixtures.tiny_table())
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.delenv('RMW_IMPLEMENTATION', raising=False)
    seen = []

    def init(*args, **kwargs):
        seen.append(os.environ.get(PROFILE_ENV))
        raise KeyboardInterrupt  # stop before any DDS traffic

    monkeypatch.setattr(rclpy, 'init', init)
    with pytest.raises(KeyboardInterrupt):
        cli.main(['bag', 'play', str(bag)])
    assert seen == [str(large_frames_profile().resolve())]


def test_a_profile_the_user_exported_is_kept():
    """An exported profile wins; another RMW gets none."""
    env = {PROFILE_ENV: '/etc/my_profile.xml'}
    assert use_large_frames_profile(env) == '/etc/my_profile.xml'
    assert use_large_frames_profile({'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}) == ''
