"""Node benchmark: drives offered at 2x the rate the node sustains; one JSON line per row.

1. Write a short synthetic drive as a bag (the demo's generator) at the priors' resolution
   (rgb8: the first row); then render the drive at each camera size of ``--cameras`` (default
   1280x720, 1920x1080, 3840x2160) as bgr8 frames (one row each).
2. For each row start ``metafusion_node`` as its own process with ``models/synthetic_toy*``
   (``--models``; if those are not there yet, the tiny fixture network over the Cityscapes
   table; the JSON says which). Node and client use the shipped Fast DDS profile for large
   frames, as ``fusion.launch.py`` does (``dds_profile``).
3. Measure the sustainable rate in lock-step (median end-to-end latency of 16 frames) and the
   node's processing time there (``~/output/processing_time_ms``: receipt to publication), next
   to the network alone (ONNX Runtime on one preprocessed frame in this process, once after
   each lock-step frame, so that both see the same host load):
   ``target_processing_le_network_plus_30ms`` compares the p50s; ``stage_ms_p50`` are the
   node's per-stage p50s of those frames (its diagnostics).
4. Offer the frames (fresh stamps, looping) at twice that rate, ``--warmup`` seconds unmeasured
   (the node's buffers reach their high-water mark), then ``--duration`` seconds, and report
   frames offered / processed / dropped (the node's counter), latency p50/p99 and the node's RSS
   at the start and end of the measured run and its peak: memory must stay flat (the growth
   from the first to the last quarter of the run under ``FLAT_MIB``; ``memory_flat`` says so)
   and the peak under ``PEAK_MIB`` (``target_peak_rss_le_1gib``).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'test')]  # the tiny test network (test/fixtures.py)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
import fixtures  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from metafusion_ros.core.classes import cityscapes_table  # noqa: E402
from metafusion_ros.core.priors import Priors  # noqa: E402
from metafusion_ros.ros.bag import DriveBag, IMAGE_TOPIC, write_drive  # noqa: E402
from metafusion_ros.ros.conversions import array_to_image  # noqa: E402
from metafusion_ros.ros.dds import use_large_frames_profile  # noqa: E402
from metafusion_ros.ros.process import peak_rss_kib, rss_kib, start_node, stop_node  # noqa: E402

NODE = '/metafusion_node'
MIB = 1024.0
FLAT_MIB = 8.0
PEAK_MIB = 1024.0


def _models(folder: Path, models: Path) -> tuple[dict[str, str], str]:
    """Return the node's file parameters and a label: ``models`` if complete, else the fixture."""
    model, priors = models / 'synthetic_toy.onnx', models / 'synthetic_toy_priors.npz'
    if model.is_file() and priors.is_file():
        meta = models / 'synthetic_toy_meta.json'
        return ({'model_path': str(model), 'priors_path': str(priors),
                 'meta_model_path': str(meta) if meta.is_file() else ''},
                f'{models}/synthetic' + ('' if meta.is_file() else ' (no meta model: keep all)'))
    table = cityscapes_table()
    return ({'model_path': str(fixtures.write_model(folder / 'tiny.onnx', (256, 512), table)),
             'priors_path': str(fixtures.write_priors(folder / 'tiny.npz', (256, 512), table)),
             'meta_model_path': ''}, 'tiny fixture (models/synthetic_toy.onnx missing)')


def _frames(folder: Path, priors: str, count: int) -> list[Image]:
    """Write the demo-style drive as a bag and return its images as rclpy messages."""
    from metafusion_ros.tools.data.datasets import open_dataset
    from metafusion_ros.tools.data.synth import generate_drives

    height, width = Priors.load(priors).resolution
    generate_drives(folder / 'synth', {'test': 1}, frames=count, size=(width, height))
    source = open_dataset('synthetic', folder / 'synth', 'test')
    write_drive(iter(source), folder / 'drive', source.table)
    return [deserialize_message(d, Image) for _, _, d in
            DriveBag(folder / 'drive').messages([IMAGE_TOPIC])]


def _camera_frames(size: tuple[int, int], count: int) -> list[Image]:
    """Render the test drive at the camera size ``(W, H)`` as bgr8 messages."""
    from metafusion_ros.tools.data.synth import render_drive

    return [array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), 'bgr8')
            for _, rgb, _ in render_drive(0, 'test', 0, count, size=size)]


def _network(model: str, frame: Image) -> Callable[[], float]:
    """Return a callable timing (ms) one run of the network alone on ``frame`` (preprocessed)."""
    from metafusion_ros.ros.conversions import image_to_rgb
    from metafusion_ros.runtime.segmenter import load_segmenter

    segmenter = load_segmenter(model)
    x = segmenter.preprocess(image_to_rgb(frame))

    def run() -> float:
        start = time.perf_counter()
        segmenter.run_network(x)
        return (time.perf_counter() - start) * 1e3
    return run


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
        self.processing_ms: list[float] = []
        self.node.create_subscription(Float32, f'{NODE}/output/processing_time_ms',
                                      lambda msg: self.processing_ms.append(msg.data), 10)
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


def _sustainable_ms(offer: Offer, frames: int, network: Callable[[], float]
                    ) -> tuple[float, float, float]:
    """Return the median lock-step latency, node processing time and network time (ms).

    After each frame's mask is back the network runs once here, while the node is idle: both
    times sample the same load on the host.
    """
    deadline, ok = time.monotonic() + 120, False
    while not ok and time.monotonic() < deadline:  # discovery: resend until one comes back
        first = offer.send()
        ok = offer.spin_until(lambda: first in offer.latency, 2.0)
    if not ok:
        raise SystemExit('bench_node: the node did not answer within 120 s')
    samples, network_ms = [], []
    offer.processing_ms.clear()
    for _ in range(frames):
        stamp = offer.send()
        if offer.spin_until(lambda: stamp in offer.latency, 60.0):
            samples.append(offer.latency[stamp])
        offer.spin_until(lambda: False, 0.05)  # the processing time follows the mask
        network_ms.append(network())
    offer.spin_until(lambda: len(offer.processing_ms) >= len(samples), 2.0)
    return (float(np.median(samples)), float(np.median(offer.processing_ms)),
            float(np.median(network_ms)))


def _stages(offer: Offer) -> dict[str, float]:
    """Return the node's per-stage p50s (ms) from its newest diagnostics."""
    offer.diag.clear()
    offer.spin_until(lambda: bool(offer.diag), 3.0)
    return {key[len('stage_ms_'):-len('_p50')]: float(value)
            for key, value in offer.diag.items()
            if key.startswith('stage_ms_') and key.endswith('_p50')}


def _offer(offer: Offer, pid: int, offered_hz: float, duration: float) -> list[int]:
    """Publish at ``offered_hz`` for ``duration`` s; return the node's RSS (KiB) at each send."""
    rss = [rss_kib(pid)]
    start = time.monotonic()
    next_send = start
    while time.monotonic() - start < duration:
        if time.monotonic() >= next_send:
            offer.send()
            next_send += 1.0 / offered_hz
            rss.append(rss_kib(pid))
        offer.executor.spin_once(timeout_sec=max(0.0, min(0.01, next_send - time.monotonic())))
    return rss


def _overload(offer: Offer, pid: int, step_ms: float, duration: float, warmup: float) -> dict:
    """Offer frames at twice the sustainable rate: ``warmup`` s, then ``duration`` s measured."""
    offered_hz = 2 * 1000.0 / step_ms
    _offer(offer, pid, offered_hz, warmup)
    offer.sent.clear()
    offer.latency.clear()
    offer.spin_until(lambda: False, 1.0)
    dropped_before = int(offer.diag.get('frames_dropped', 0))
    rss = _offer(offer, pid, offered_hz, duration)
    offer.spin_until(lambda: False, 3.0)
    latency = np.asarray(list(offer.latency.values()))
    quarter = max(1, len(rss) // 4)
    result = {
        'sustainable_hz': round(1000.0 / step_ms, 2), 'offered_hz': round(offered_hz, 2),
        'warmup_s': warmup, 'duration_s': duration, 'frames_offered': len(offer.sent),
        'frames_processed': int(latency.size),
        'frames_dropped': int(offer.diag.get('frames_dropped', 0)) - dropped_before,
        'latency_ms_p50': round(float(np.percentile(latency, 50)), 1),
        'latency_ms_p99': round(float(np.percentile(latency, 99)), 1),
        'rss_mib_first_quarter': round(max(rss[:quarter]) / MIB, 1),
        'rss_mib_last_quarter': round(max(rss[-quarter:]) / MIB, 1),
        'peak_rss_mib': round(peak_rss_kib(pid) / MIB, 1),
    }
    growth = result['rss_mib_last_quarter'] - result['rss_mib_first_quarter']
    result.update(rss_growth_mib=round(growth, 1), memory_flat=bool(growth < FLAT_MIB),
                  target_peak_rss_le_1gib=result['peak_rss_mib'] <= PEAK_MIB)
    return result


def run_row(folder: Path, params: dict[str, str], label: str, frames: list[Image],
            duration: float, warmup: float, domain: int) -> dict:
    """Start a node, measure lock-step and 2x overload on ``frames``; return the JSON record."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(folder / 'log'))
    params = dict(params, **{'qos.reliability': 'reliable'})  # drops are the node's
    network = _network(params['model_path'], frames[0])
    proc = start_node(params, env=env, remap={'~/input/image': '/camera/image_raw'},
                      log=folder / 'node.log')
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    offer = Offer(context, frames)
    result = {'bench': 'node', 'model': label,
              'frame': f'{frames[0].width}x{frames[0].height} {frames[0].encoding}'}
    try:
        step_ms, processing_ms, network_ms = _sustainable_ms(offer, 16, network)
        result.update(network_ms_p50=round(network_ms, 1),
                      processing_ms_p50=round(processing_ms, 1),
                      target_processing_le_network_plus_30ms=processing_ms <= network_ms + 30,
                      stage_ms_p50=_stages(offer))
        result.update(_overload(offer, proc.pid, step_ms, duration, warmup))
    finally:
        offer.executor.shutdown()
        offer.node.destroy_node()
        rclpy.try_shutdown(context=context)
        result['node_exit_code'] = stop_node(proc)
    return result


def _size(text: str) -> tuple[int, int]:
    """Parse ``WxH``."""
    width, height = (int(v) for v in text.lower().split('x'))
    return width, height


def main() -> int:
    """Run the benchmark and print one JSON line per row."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--duration', type=float, default=120.0, help='offered-load seconds')
    parser.add_argument('--warmup', type=float, default=30.0,
                        help='offered-load seconds before the measured ones (memory settles)')
    parser.add_argument('--frames', type=int, default=8, help='frames in the drive')
    parser.add_argument('--models', type=Path, default=REPO / 'models',
                        help='folder with synthetic_toy.onnx, _priors.npz, _meta.json')
    parser.add_argument('--cameras', default='1280x720,1920x1080,3840x2160',
                        help="camera sizes of the bgr8 rows, comma-separated ('' for none)")
    parser.add_argument('--no-bag-row', action='store_true', help='only the camera rows')
    parser.add_argument('--domain', type=int, default=150 + os.getpid() % 60,
                        help='ROS domain of the node and the client')
    args = parser.parse_args()
    profile = use_large_frames_profile()  # as the launch file does, for the node and the client
    folder = Path(tempfile.mkdtemp(prefix='bench_node_'))
    params, label = _models(folder, args.models)
    code = 0
    rows = [] if args.no_bag_row else [lambda: _frames(folder, params['priors_path'],
                                                       args.frames)]
    rows += [lambda size=_size(s): _camera_frames(size, args.frames)
             for s in args.cameras.split(',') if s]
    for frames in rows:
        result = run_row(folder, params, label, frames(), args.duration, args.warmup,
                         args.domain)
        result['dds_profile'] = profile or 'none (not Fast DDS)'
        print(json.dumps(result), flush=True)
        code |= result['node_exit_code'] != 0
    return code


if __name__ == '__main__':
    sys.exit(main())
