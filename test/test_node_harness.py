"""Helpers (no tests) for the node's process-level tests: start the node, talk to it over DDS.

Each test module gets its own ROS domain, localhost-only discovery and a private log folder.
Nothing here sleeps for a fixed time: every wait polls a condition with a generous timeout.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
import signal
import subprocess
import time
from typing import Any, Callable

import fixtures
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from toy_data import write_meta_model

from metafusion_ros.ros import process
from metafusion_ros.ros.conversions import array_to_image, image_to_mask, rgb_to_image

REPO = Path(__file__).resolve().parents[1]
SCENE = fixtures.scene()
# Frames of a burst: 5x the scene (240x320 rgb8, 230 KB), more than the tiny network keeps up
# with, and below Fast DDS' default 0.5 MiB shared-memory segment. Larger best-effort frames need
# the package's large-frames profile (docs/node.md): without it, after a burst of 590 KB frames
# the transport lost every later frame of the same publisher in about 1 run of 8.
BURST_SCENE = np.repeat(np.repeat(SCENE, 5, axis=0), 5, axis=1)
STARTED: list[subprocess.Popen] = []  # every node process started by a test
START_TIMEOUT = 60.0
# Shifts every test module's ROS domain, so that two checkouts can run their suites side by side.
DOMAIN_OFFSET = int(os.environ.get('METAFUSION_TEST_DOMAIN_OFFSET', '0'))


def domain_for(base: int) -> int:
    """Return the ROS domain of a test module whose own number is ``base``."""
    return base + DOMAIN_OFFSET


def ros_env(domain: int, log_dir: Path) -> dict[str, str]:
    """Return the environment of a node process in ``domain`` (localhost only)."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(log_dir), PYTHONUNBUFFERED='1',
               RCUTILS_LOGGING_BUFFERED_STREAM='0', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')])))
    return env


def write_files(folder: Path) -> dict[str, Path]:
    """Write the tiny model, priors and meta model into ``folder``; return their paths."""
    files = {'model': fixtures.write_model(folder / 'tiny model.onnx'),
             'priors': fixtures.write_priors(folder / 'tiny_priors.npz')}
    files['meta'] = write_meta_model(folder / 'tiny_meta.json', files['priors'])
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
    STARTED.append(proc)
    return proc


def kill_leftovers() -> None:
    """Kill every node process a test started and did not stop (run at the session's end)."""
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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


# One malformed image per skip reason the node counts (diagnostics ``skipped_<reason>``).
MALFORMED = {
    'unsupported_encoding': Image(encoding='16UC1', height=2, width=2, step=4, data=bytes(8)),
    'bad_step': Image(encoding='rgb8', height=2, width=4, step=5, data=bytes(10)),
    'bad_data_length': Image(encoding='rgb8', height=48, width=64, step=192, data=bytes(100)),
    'zero_size': Image(encoding='rgb8', height=0, width=64, step=192, data=b''),
    'bad_endianness': Image(encoding='mono8', height=1, width=1, step=1, data=b'\0',
                            is_bigendian=7),
}


def skipped(values: dict[str, str]) -> int:
    """Return the total of a node's ``skipped_*`` diagnostics counters."""
    return sum(int(v) for k, v in values.items() if k.startswith('skipped_'))


def accounted(values: dict[str, str]) -> bool:
    """Return whether every received frame was processed, dropped or skipped (quiescent node)."""
    return int(values.get('frames_received', -1)) == int(values.get('frames_processed', 0)) + \
        int(values.get('frames_dropped', 0)) + skipped(values)


class NodeUnderTest:
    """A running node and a reliable tester in lock-step: one message, then wait for its effect."""

    def __init__(self, proc, tester: Peer, name: str) -> None:
        self.proc, self.tester, self.name = proc, tester, name
        self.masks = tester.subscribe(f'/{name}/output/mask', Image)
        self.diagnostics = tester.subscribe('/diagnostics', DiagnosticArray)
        self.pub = tester.publisher(f'/{name}/input/image')
        self.stamps = itertools.count(10_000, 10)  # fresh stamps of the frames it sends

    @classmethod
    def start(cls, domain: int, log_dir: Path, params: dict[str, Any], name: str,
              tester: str = 'tester') -> NodeUnderTest:
        """Start the node and a tester; return once the first frame's mask (stamp 1) is back."""
        proc = start_node(ros_env(domain, log_dir), params, name=name)
        under_test = cls(proc, Peer(domain, tester), name)
        try:
            under_test.resend_until_mask(image_msg(SCENE, 1), timeout=90.0)
        except AssertionError:
            under_test.close()  # no process outlives a failed set-up
            raise AssertionError(f'no mask from {name}: {node_output(proc)}') from None
        return under_test

    def resend_until_mask(self, msg: Image, publisher: Any = None,
                          timeout: float = START_TIMEOUT) -> Image:
        """Publish ``msg`` every 0.25 s until its mask is back; return the mask.

        ``publisher`` defaults to the tester's. Resending covers best-effort input, which may
        lose a frame, and discovery, which takes a while.
        """
        stamp, pub = msg.header.stamp.sec, publisher or self.pub
        assert self.tester.spin_until(lambda: with_stamp(self.masks, stamp), timeout=timeout,
                                      every=lambda: pub.publish(msg)), \
            f'no mask for stamp {stamp}; alive: {self.proc.poll() is None}'
        return with_stamp(self.masks, stamp)[-1]

    def close(self) -> None:
        """Close the tester and kill the node (if a test has not stopped it)."""
        self.tester.close()
        stop_node(self.proc, signal.SIGKILL)

    def values(self) -> dict[str, str]:
        """Return the newest diagnostics values of the node."""
        return diagnostics_values(self.diagnostics, f'/{self.name}')

    def counter(self, key: str) -> int:
        """Return the newest value of diagnostics counter ``key``, 0 before it exists."""
        return int(self.values().get(key, 0))

    def wait_counter(self, key: str, value: int) -> None:
        """Wait until counter ``key`` reaches ``value``."""
        assert self.tester.spin_until(lambda: self.counter(key) >= value, timeout=30.0), \
            f'{key} never reached {value}: {self.values()}; alive: {self.proc.poll() is None}'

    def mask(self, stamp: int) -> Image:
        """Wait for the mask with ``stamp`` and return it."""
        assert self.tester.spin_until(lambda: with_stamp(self.masks, stamp), timeout=30.0), \
            f'no mask for stamp {stamp}; alive: {self.proc.poll() is None}'
        return with_stamp(self.masks, stamp)[-1]

    def process(self, msg: Image, stamp: int) -> Image:
        """Publish ``msg`` with ``stamp`` once and return its mask."""
        msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = 'camera', stamp, 7
        self.pub.publish(msg)
        return self.mask(stamp)

    def stop_cleanly(self) -> None:
        """Check every frame is accounted for and the node active; SIGTERM must exit it with 0."""
        assert self.tester.spin_until(lambda: accounted(self.values()), timeout=30.0), \
            self.values()
        assert self.values()['model_state'] == 'active'
        code, output = stop_node(self.proc, signal.SIGTERM)
        assert code == 0 and 'Traceback' not in output, output[-2000:]

    def check_alive_and_correct(self, reference: np.ndarray) -> int:
        """Send a valid frame; its mask must be ``reference``; return the frame's stamp."""
        processed = self.counter('frames_processed')
        stamp = next(self.stamps)
        mask = image_to_mask(self.process(image_msg(SCENE, stamp), stamp))
        np.testing.assert_array_equal(mask, reference)
        self.wait_counter('frames_processed', processed + 1)
        return stamp
