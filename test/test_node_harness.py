"""Helpers (no tests) for the node's process-level tests: start the node, talk to it over DDS.

Each test module gets its own ROS domain, localhost-only discovery and a private log folder.
Nothing here sleeps for a fixed time: every wait polls a condition with a generous timeout.
"""
from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import time
from typing import Any, Callable

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from metafusion_ros.ros import fixtures, process
from metafusion_ros.ros.conversions import array_to_image, rgb_to_image

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0


def ros_env(domain: int, log_dir: Path) -> dict[str, str]:
    """Return the environment of a node process in ``domain`` (localhost only)."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(log_dir), PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')])))
    return env


def write_files(folder: Path) -> dict[str, Path]:
    """Write the tiny model, priors and meta model into ``folder``; return their paths."""
    files = {'model': fixtures.write_model(folder / 'tiny model.onnx'),
             'priors': fixtures.write_priors(folder / 'tiny_priors.npz')}
    files['meta'] = fixtures.write_meta_model(folder / 'tiny_meta.json', files['priors'])
    return files


def start_node(env: dict[str, str], params: dict[str, Any], name: str = 'fusion',
               remap: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the node with the package config and ``params``; its output goes to a file.

    Never to a pipe nobody reads: a node that logs a lot would block once the pipe is full.
    """
    log = Path(env['ROS_LOG_DIR']) / f'{name}.out'
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = process.start_node(params, env=env, name=name, remap=remap, log=log)
    proc.log = log
    return proc


def node_output(proc: subprocess.Popen) -> str:
    """Return what the node process has printed so far."""
    return proc.log.read_text()


def stop_node(proc: subprocess.Popen, sig: int = signal.SIGTERM,
              timeout: float = 30.0) -> tuple[int, str]:
    """Signal ``proc`` and return its exit code and its output."""
    return process.stop_node(proc, timeout, sig), node_output(proc)


class Peer:
    """An rclpy node in its own context and domain that publishes frames and records topics."""

    def __init__(self, domain: int, name: str = 'tester') -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = {}
        self._pubs: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}

    def close(self) -> None:
        """Destroy the node and shut its context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def subscribe(self, topic: str, kind: type) -> list[Any]:
        """Record every message on ``topic``; return the (live) list."""
        if topic not in self._subs:
            self.received[topic] = []
            self._subs[topic] = self.node.create_subscription(
                kind, topic, self.received[topic].append, 50)
        return self.received[topic]

    def unsubscribe(self, topic: str) -> None:
        """Stop recording ``topic``."""
        self.node.destroy_subscription(self._subs.pop(topic))

    def publisher(self, topic: str, kind: type = Image) -> Any:
        """Return a (cached) reliable publisher on ``topic``."""
        if topic not in self._pubs:
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            self._pubs[topic] = self.node.create_publisher(kind, topic, qos)
        return self._pubs[topic]

    def spin_until(self, done: Callable[[], bool], timeout: float = START_TIMEOUT,
                   every: Callable[[], None] | None = None, period: float = 0.25) -> bool:
        """Spin until ``done()``; call ``every()`` each ``period`` s (e.g. to republish)."""
        deadline = time.monotonic() + timeout
        next_call = 0.0
        while time.monotonic() < deadline:
            if every is not None and time.monotonic() >= next_call:
                every()
                next_call = time.monotonic() + period
            self.executor.spin_once(timeout_sec=0.05)
            if done():
                return True
        return False

    def spin_for(self, seconds: float) -> None:
        """Spin for ``seconds`` (to collect anything still in flight)."""
        self.spin_until(lambda: False, timeout=seconds)


def image_msg(image: np.ndarray, stamp: int, frame_id: str = 'camera',
              encoding: str = 'rgb8') -> Image:
    """Return ``image`` (RGB) as an Image with ``stamp`` seconds and 7 ns."""
    if encoding in ('rgb8', 'bgr8'):
        msg = rgb_to_image(image, encoding=encoding)
    else:
        msg = array_to_image(image, encoding)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 7
    return msg


def with_stamp(messages: list[Any], stamp: int) -> list[Any]:
    """Return the messages whose header stamp is ``stamp`` s."""
    return [m for m in messages if _header(m).stamp.sec == stamp]


def _header(msg: Any) -> Any:
    """Return the header of an Image or of a MarkerArray's first marker."""
    return msg.markers[0].header if hasattr(msg, 'markers') else msg.header


def diagnostics_values(messages: list[Any], node: str) -> dict[str, str]:
    """Return the key/values of the newest /diagnostics status of ``node``."""
    for array in reversed(messages):
        for status in array.status:
            if status.name.startswith(node):
                return {kv.key: kv.value for kv in status.values}
    return {}
