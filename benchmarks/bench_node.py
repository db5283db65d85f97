"""Node benchmark: the shipped chains on camera frames at 2x the sustainable rate; JSON lines.

Each row (``--rows``, default :data:`ROWS`) is a chain, a precision and a camera size: what a
user runs. ``default`` is the launch default (``runtime.chains.DEFAULT_CHAIN``).

1. Camera frames: CamVid test frames resized to the camera size as bgr8 (real streets, real
   candidates), or generated ones where ``../shared`` is absent (``frames`` in the JSON says
   which).
2. Start ``metafusion_node`` as its own process with the row's chain and precision. Node and
   client use the shipped Fast DDS profile for large frames, as ``fusion.launch.py`` does
   (``dds_profile``).
3. Measure the sustainable rate in lock-step (median end-to-end latency of 16 frames) and the
   node's processing time there (``~/output/processing_time_ms``: receipt to publication), next
   to the network alone (ONNX Runtime on one preprocessed frame in this process, once after
   each lock-step frame, so that both see the same host load):
   ``target_processing_le_network_plus_30ms`` compares the p50s; ``stage_ms_p50`` are the
   node's per-stage p50s of those frames (its diagnostics).
4. Offer the frames (fresh stamps, looping) at twice that rate, ``--warmup`` seconds unmeasured
   (the node's buffers reach their high-water mark), then ``--duration`` seconds, and report
   frames offered / processed (``processed_hz``) / dropped (the node's counter), latency
   p50/p99 and the node's RSS at the start and end of the measured run and its peak: memory must
   stay flat (the growth from the first to the last quarter of the run under ``FLAT_MIB``;
   ``memory_flat`` says so) and the peak under ``PEAK_MIB`` (``target_peak_rss_le_1gib``).

A row whose chain has no network of that precision prints ``skipped`` with the reason.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402
from timing import street_frames  # noqa: E402

from metafusion_ros.ros.conversions import array_to_image, image_to_rgb  # noqa: E402
from metafusion_ros.ros.dds import use_large_frames_profile  # noqa: E402
from metafusion_ros.ros.process import peak_rss_kib, rss_kib, start_node, stop_node  # noqa: E402
from metafusion_ros.runtime.chains import DEFAULT_CHAIN  # noqa: E402
from metafusion_ros.runtime.engine import EngineConfig, FusionEngine  # noqa: E402

NODE = '/metafusion_node'
MIB = 1024.0
FLAT_MIB = 8.0
PEAK_MIB = 1024.0
# chain:precision@camera; 'default' is the launch default chain. INT8 where a chain ships it
# (a row without prints the reason): ESPNet's beside its fp32 row; the fastest chain at 1080p.
ROWS = ('default:fp32@1280x720,default:fp32@1920x1080,default:int8@1920x1080,'
        'default:fp32@3840x2160,cityscapes_espnetv2_s1p5:fp32@1920x1080,'
        'cityscapes_espnet:fp32@1920x1080,cityscapes_espnet:int8@1920x1080')


def camera_messages(size: tuple[int, int], count: int) -> tuple[list[Image], str]:
    """Return ``count`` bgr8 camera frames of ``size`` (W, H) and where they come from."""
    frames, source = street_frames(size, count)
    messages = [array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), 'bgr8') for rgb in frames]
    return messages, source


def _network(params: dict[str, str], frame: Image) -> Callable[[], float]:
    """Return a callable timing (ms) one run of the row's network alone on ``frame``."""
    engine = FusionEngine.load(EngineConfig(params['model_path'], '', 'none',
                                            precision=params['precision']))
    x = engine.segmenter.preprocess(image_to_rgb(frame))

    def run() -> float:
        start = time.perf_counter()
        engine.segmenter.run_network(x)
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
        'processed_hz': round(latency.size / duration, 2),
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


def run_row(folder: Path, params: dict[str, str], frames: list[Image], duration: float,
            warmup: float, domain: int) -> dict:
    """Start a node, measure lock-step and 2x overload on ``frames``; return the JSON record."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(folder / 'log'))
    params = dict(params, **{'qos.reliability': 'reliable'})  # drops are the node's
    network = _network(params, frames[0])
    proc = start_node(params, env=env, remap={'~/input/image': '/camera/image_raw'},
                      log=folder / 'node.log')
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    offer = Offer(context, frames)
    result = {'bench': 'node', 'chain': params['model_path'], 'precision': params['precision'],
              'camera': f'{frames[0].width}x{frames[0].height} {frames[0].encoding}'}
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


def parse_rows(text: str) -> list[tuple[str, str, tuple[int, int]]]:
    """Parse ``chain:precision@WxH,...`` (``default``: the launch default chain)."""
    rows = []
    for row in filter(None, text.split(',')):
        chain, rest = row.split(':')
        precision, size = rest.split('@')
        width, height = (int(v) for v in size.lower().split('x'))
        rows.append((DEFAULT_CHAIN if chain == 'default' else chain, precision, (width, height)))
    return rows


def main() -> int:
    """Run the benchmark and print one JSON line per row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--duration', type=float, default=120.0, help='offered-load seconds')
    parser.add_argument('--warmup', type=float, default=30.0,
                        help='offered-load seconds before the measured ones (memory settles)')
    parser.add_argument('--frames', type=int, default=8, help='camera frames, looped')
    parser.add_argument('--rows', default=ROWS,
                        help='chain:precision@WxH,... (default %(default)s)')
    parser.add_argument('--domain', type=int, default=150 + os.getpid() % 60,
                        help='ROS domain of the node and the client')
    args = parser.parse_args()
    profile = use_large_frames_profile()  # as the launch file does, for the node and the client
    folder = Path(tempfile.mkdtemp(prefix='bench_node_'))
    code = 0
    for chain, precision, size in parse_rows(args.rows):
        params = {'model_path': chain, 'precision': precision}
        frames, source = camera_messages(size, args.frames)
        base = {'bench': 'node', 'chain': chain, 'precision': precision,
                'camera': f'{size[0]}x{size[1]} bgr8'}
        try:
            result = run_row(folder, params, frames, args.duration, args.warmup, args.domain)
        except ValueError as exc:  # e.g. no INT8 network in the chain: the reason, one line
            print(json.dumps({**base, 'skipped': str(exc)}), flush=True)
            continue
        result.update(frames=source, dds_profile=profile or 'none (not Fast DDS)')
        print(json.dumps(result), flush=True)
        code |= result['node_exit_code'] != 0
    return code


if __name__ == '__main__':
    sys.exit(main())
