"""Start-up benchmark: seconds from starting ``metafusion_node`` to its first mask; one JSON line.

The node (the launch default chain, ``--chain`` another) is started as a process again and again;
a client publishes one 1280x720 camera frame (``bench_node.camera_messages``) every 0.1 s until
the mask comes back. The first run uses an empty numba cache (``cold_s``), the next ``--runs``
reuse it (``warm_s_median``, target <= 3 s; ``warm_configured_s_median``: until the node logs
that it is configured, i.e. imports, loading and warm-up). Baseline of the same run: a bare
interpreter importing rclpy (``baseline_rclpy_import_s``). Run it from the repository root (the
node is started as ``python -m metafusion_ros.ros.executable``), as ``make bench`` does.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from bench_node import camera_messages, NODE  # noqa: I100 - beside this script
from sensor_msgs.msg import Image  # noqa: I100

from metafusion_ros.ros.process import start_node, stop_node  # noqa: E402
from metafusion_ros.runtime.chains import DEFAULT_CHAIN  # noqa: E402

TARGET_S = 3.0


def _first_mask_s(params: dict, env: dict, frame: Image, client,
                  log: Path) -> tuple[float, float]:
    """Start the node and send ``frame`` until its mask is back; return two durations (s).

    To that mask, and to the node's 'configured' log line (imports, loading, warm-up done).
    """
    node, executor, pub, masks = client
    frame.header.stamp.sec += 1  # only this run's mask counts (an old node may still publish)
    wanted = frame.header.stamp.sec
    masks.clear()
    start, wall = time.monotonic(), time.time()
    proc = start_node(params, env=env, remap={'~/input/image': '/camera/image_raw'}, log=log)
    try:
        next_send = start
        while wanted not in masks and time.monotonic() - start < 120.0:
            if time.monotonic() >= next_send:
                pub.publish(frame)
                next_send += 0.1
            executor.spin_once(timeout_sec=0.01)
        elapsed = time.monotonic() - start
    finally:
        stop_node(proc)
    if wanted not in masks:
        raise SystemExit(f'bench_startup: no mask within 120 s ({log})')
    configured = re.search(r'\[(\d+\.\d+)\] \[[^]]*\]: configured:', log.read_text())
    return elapsed, float(configured.group(1)) - wall if configured else float('nan')


def _baseline_s() -> float:
    """Return the seconds a fresh interpreter needs to import rclpy."""
    start = time.monotonic()
    subprocess.run([sys.executable, '-c', 'import rclpy'], check=True)
    return time.monotonic() - start


def main() -> int:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--runs', type=int, default=5, help='warm-cache runs')
    parser.add_argument('--chain', default=DEFAULT_CHAIN, help='chain (default %(default)s)')
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix='bench_startup_'))
    params = {'model_path': args.chain, 'qos.reliability': 'reliable'}
    frame = camera_messages((1280, 720), 1)[0][0]
    domain = 150 + os.getpid() % 60
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(folder / 'log'), NUMBA_CACHE_DIR=str(folder / 'numba'))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node('bench_startup_client', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    masks: set[int] = set()  # stamps (s) of the masks received
    node.create_subscription(Image, f'{NODE}/output/mask',
                             lambda msg: masks.add(msg.header.stamp.sec), 10)
    pub = node.create_publisher(Image, '/camera/image_raw',
                                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    client = (node, executor, pub, masks)
    try:
        cold, _ = _first_mask_s(params, env, frame, client, folder / 'cold.log')
        runs = [_first_mask_s(params, env, frame, client, folder / f'warm{i}.log')
                for i in range(args.runs)]
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    warm = [first for first, _ in runs]
    median = float(np.median(warm))
    print(json.dumps({
        'bench': 'startup', 'chain': args.chain, 'frame': f'{frame.width}x{frame.height}',
        'cold_s': round(cold, 2), 'warm_s': [round(t, 2) for t in warm],
        'warm_s_median': round(median, 2),
        'warm_configured_s_median': round(float(np.median([c for _, c in runs])), 2),
        'target_s': TARGET_S,
        'target_met': bool(median <= TARGET_S),
        'baseline_rclpy_import_s': round(_baseline_s(), 2)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
