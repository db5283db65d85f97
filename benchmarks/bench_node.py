"""Node benchmark: the demo drive offered at 2x the rate the node sustains; one JSON line.

1. Write a short synthetic drive as a bag (the demo's generator) at the priors' resolution.
2. Start ``metafusion_node`` as its own process with ``models/synthetic*`` (``--models``; if those
   are not there yet, the tiny fixture network over the Cityscapes table; the JSON says which).
3. Measure the sustainable rate in lock-step (median end-to-end latency of 8 frames).
4. Offer the bag's frames (fresh stamps, looping) at twice that rate for ``--duration`` seconds,
   then report frames offered / processed / dropped (the node's counter), latency p50/p99 and the
   node's RSS at the start and end of the run and its peak: memory must stay flat (the growth
   from the first to the last quarter of the run under ``FLAT_MIB``; ``memory_flat`` says so).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import tempfile
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from metafusion_ros.core.classes import cityscapes_table  # noqa: E402
from metafusion_ros.core.priors import Priors  # noqa: E402
from metafusion_ros.ros import fixtures  # noqa: E402
from metafusion_ros.ros.bag import DriveBag, IMAGE_TOPIC, write_drive  # noqa: E402
from metafusion_ros.ros.process import peak_rss_kib, rss_kib, start_node, stop_node  # noqa: E402

NODE = '/metafusion_node'
MIB = 1024.0
FLAT_MIB = 8.0


def _models(folder: Path, models: Path) -> tuple[dict[str, str], str]:
    """Return the node's file parameters and a label: ``models`` if complete, else the fixture."""
    model, priors = models / 'synthetic.onnx', models / 'synthetic_priors.npz'
    if model.is_file() and priors.is_file():
        meta = models / 'synthetic_meta.json'
        return ({'model_path': str(model), 'priors_path': str(priors),
                 'meta_model_path': str(meta) if meta.is_file() else ''},
                f'{models}/synthetic' + ('' if meta.is_file() else ' (no meta model: keep all)'))
    table = cityscapes_table()
    return ({'model_path': str(fixtures.write_model(folder / 'tiny.onnx', (256, 512), table)),
             'priors_path': str(fixtures.write_priors(folder / 'tiny.npz', (256, 512), table)),
             'meta_model_path': ''}, 'tiny fixture (models/synthetic.onnx missing)')


def _frames(folder: Path, priors: str, count: int) -> list[Image]:
    """Write the demo-style drive as a bag and return its images as rclpy messages."""
    from metafusion_ros.data.datasets import open_dataset
    from metafusion_ros.data.synth import generate_drives

    height, width = Priors.load(priors).resolution
    generate_drives(folder / 'synth', {'test': 1}, frames=count, size=(width, height))
    source = open_dataset('synthetic', folder / 'synth', 'test')
    write_drive(iter(source), folder / 'drive', source.table)
    return [deserialize_message(d, Image) for _, _, d in
            DriveBag(folder / 'drive').messages([IMAGE_TOPIC])]


class Offer:
    """Publishes frames with fresh stamps and records when each mask comes back."""

    def __init__(self, context: rclpy.Context, frames: list[Image]) -> None:
        self.node = rclpy.create_node('bench_node_client', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.frames = frames
        self.pub = self.node.create_publisher(Image, '/camera/image_raw', 10)
        self.sent: dict[int, float] = {}
        self.latency: dict[int, float] = {}
        self.diag: dict[str, str] = {}
        self.node.create_subscription(Image, f'{NODE}/output/mask', self._mask, 10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics, 10)
        self.count = 0

    def _mask(self, msg: Image) -> None:
        """Record the latency of a mask by its stamp."""
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if stamp in self.sent and stamp not in self.latency:
            self.latency[stamp] = (time.monotonic() - self.sent[stamp]) * 1e3

    def _diagnostics(self, msg: DiagnosticArray) -> None:
        """Keep the node's newest diagnostics values."""
        for status in msg.status:
            if status.name.startswith(NODE):
                self.diag = {kv.key: kv.value for kv in status.values}

    def send(self) -> int:
        """Publish the next frame with a fresh stamp; return the stamp."""
        msg = self.frames[self.count % len(self.frames)]
        self.count += 1
        stamp = self.count * 1000
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        self.sent[stamp] = time.monotonic()
        self.pub.publish(msg)
        return stamp

    def spin_until(self, done, timeout: float) -> bool:
        """Spin until ``done()`` or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done():
            self.executor.spin_once(timeout_sec=0.01)
        return done()


def _sustainable_ms(offer: Offer, frames: int) -> float:
    """Return the median lock-step latency (ms) over ``frames`` frames after discovery."""
    deadline, ok = time.monotonic() + 120, False
    while not ok and time.monotonic() < deadline:  # discovery: resend until one comes back
        first = offer.send()
        ok = offer.spin_until(lambda: first in offer.latency, 2.0)
    if not ok:
        raise SystemExit('bench_node: the node did not answer within 120 s')
    samples = []
    for _ in range(frames):
        stamp = offer.send()
        if offer.spin_until(lambda: stamp in offer.latency, 60.0):
            samples.append(offer.latency[stamp])
    return float(np.median(samples))


def main() -> int:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--duration', type=float, default=120.0, help='offered-load seconds')
    parser.add_argument('--frames', type=int, default=8, help='frames in the drive')
    parser.add_argument('--models', type=Path, default=REPO / 'models',
                        help='folder with synthetic.onnx, _priors.npz, _meta.json')
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix='bench_node_'))
    params, label = _models(folder, args.models)
    frames = _frames(folder, params['priors_path'], args.frames)
    domain = 150 + os.getpid() % 60
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(folder / 'log'))
    params['qos.reliability'] = 'reliable'  # drops are then the node's, not the transport's
    proc = start_node(params, env=env, remap={'~/input/image': '/camera/image_raw'},
                      log=folder / 'node.log')
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    offer = Offer(context, frames)
    try:
        step_ms = _sustainable_ms(offer, 8)
        offered_hz = 2 * 1000.0 / step_ms
        offer.sent.clear()
        offer.latency.clear()
        offer.spin_until(lambda: False, 1.0)
        dropped_before = int(offer.diag.get('frames_dropped', 0))
        rss = [rss_kib(proc.pid)]
        start = time.monotonic()
        next_send = start
        while time.monotonic() - start < args.duration:
            if time.monotonic() >= next_send:
                offer.send()
                next_send += 1.0 / offered_hz
                rss.append(rss_kib(proc.pid))
            offer.executor.spin_once(timeout_sec=max(0.0, min(0.01, next_send - time.monotonic())))
        offer.spin_until(lambda: False, 3.0)
        latency = np.asarray(list(offer.latency.values()))
        quarter = max(1, len(rss) // 4)
        result = {
            'bench': 'node', 'model': label, 'frame': f'{frames[0].width}x{frames[0].height}',
            'sustainable_hz': round(1000.0 / step_ms, 2), 'offered_hz': round(offered_hz, 2),
            'duration_s': args.duration, 'frames_offered': len(offer.sent),
            'frames_processed': int(latency.size),
            'frames_dropped': int(offer.diag.get('frames_dropped', 0)) - dropped_before,
            'latency_ms_p50': round(float(np.percentile(latency, 50)), 1),
            'latency_ms_p99': round(float(np.percentile(latency, 99)), 1),
            'rss_mib_first_quarter': round(max(rss[:quarter]) / MIB, 1),
            'rss_mib_last_quarter': round(max(rss[-quarter:]) / MIB, 1),
            'peak_rss_mib': round(peak_rss_kib(proc.pid) / MIB, 1),
        }
        growth = result['rss_mib_last_quarter'] - result['rss_mib_first_quarter']
        result.update(rss_growth_mib=round(growth, 1), memory_flat=bool(growth < FLAT_MIB))
    finally:
        offer.executor.shutdown()
        offer.node.destroy_node()
        rclpy.try_shutdown(context=context)
        result_code = stop_node(proc)
    result['node_exit_code'] = result_code
    print(json.dumps(result))
    return 0 if result_code == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
