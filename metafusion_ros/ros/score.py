"""Score a running ``metafusion_node`` on a drive bag: replay it, record the masks, count FP/FN.

The bag's images go to the node (``/camera/image_raw`` by default, as ``fusion.launch.py``
remaps); its fused, Bayes and ML masks are matched to the ground truth by header stamp and scored
with the reference semantics of :mod:`metafusion_ros.core.evaluation` (segment FP/FN of class c,
Δ of eq. 17). In lock-step mode the next frame is sent only when the previous one's masks came
back (or timed out), so every frame is scored however slow the node is.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import json
import time
from typing import Any, Callable

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_msgs.msg import String

from metafusion_ros.core.evaluation import added_tp_share, delta, segment_counts, SegmentCounts
from metafusion_ros.ros.bag import (BagError, cdr_problem, deserialize, DriveBag, GT_TOPIC,
                                    header_stamp, IMAGE_TOPIC, publishers, replay, unknown_topics)
from metafusion_ros.ros.conversions import check_image, image_to_mask, ImageError

__all__ = ['Score', 'score_bag', 'image_problem', 'RULES']

# Node output -> rule name in the report.
RULES = {'mask_bayes': 'bayes', 'mask_ml': 'ml', 'mask': 'metafusion'}
Stamp = tuple[int, int]
# Lock-step: a frame without answer after this many seconds is sent again (same stamp).
RESEND_S = 3.0


@dataclass
class Score:
    """Counts per rule, frame bookkeeping and end-to-end latencies of one scored replay."""

    counts: dict[str, SegmentCounts] = field(
        default_factory=lambda: {rule: SegmentCounts() for rule in RULES.values()})
    frames_sent: int = 0
    frames_scored: int = 0
    resent: int = 0
    latency_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        """Return the report: frames, latency percentiles, FP/FN/TP per rule, Δ, kept share."""
        bayes = self.counts['bayes']
        latency = np.asarray(self.latency_ms) if self.latency_ms else np.full(1, np.nan)
        rules = {rule: {'tp': c.tp, 'fp': c.fp, 'fn': c.fn, 'f1': _round(c.f1)}
                 for rule, c in self.counts.items()}
        for rule in ('ml', 'metafusion'):
            rules[rule]['delta'] = _round(delta(self.counts[rule], bayes))
        return {
            'frames_sent': self.frames_sent, 'frames_scored': self.frames_scored,
            'frames_resent': self.resent,
            'messages_skipped': dict(sorted(self.skipped.items())),
            'latency_ms': {f'p{q}': _round(float(np.percentile(latency, q)))
                           for q in (50, 90, 99)},
            'rules': rules,
            'kept_share_of_ml_added_tp': _round(added_tp_share(
                self.counts['metafusion'], bayes, self.counts['ml'])),
            'wall_s': round(self.wall_s, 2),
        }


def _round(value: float) -> float | None:
    """Return ``value`` rounded for the report (None for nan)."""
    return None if np.isnan(value) else round(float(value), 4)


class _Recorder:
    """Collects the node's three masks (and segment reports) per stamp and scores full sets."""

    def __init__(self, truth: dict[Stamp, np.ndarray], table: Any, score: Score,
                 on_frame: Callable[[Stamp, dict[str, np.ndarray], dict], None] | None) -> None:
        self.truth, self.table, self.score, self.on_frame = truth, table, score, on_frame
        self.pending: dict[Stamp, dict[str, Any]] = {}
        self.sent_at: dict[Stamp, float] = {}
        self.done: set[Stamp] = set()

    def mask(self, output: str, msg: Image) -> None:
        """Store one output mask; score the frame when all three are in."""
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp in self.done or stamp not in self.truth:
            return
        entry = self.pending.setdefault(stamp, {})
        if output == 'mask' and stamp in self.sent_at and 'mask' not in entry:
            self.score.latency_ms.append((time.monotonic() - self.sent_at[stamp]) * 1e3)
        entry[output] = image_to_mask(msg).copy()
        if all(key in entry for key in RULES) and (self.on_frame is None or 'segments' in entry):
            self._finish(stamp, entry)

    def segments(self, msg: String) -> None:
        """Store one frame's segment report (only recorded when ``on_frame`` wants it)."""
        report = json.loads(msg.data)
        stamp = (int(report['stamp']['sec']), int(report['stamp']['nanosec']))
        if stamp in self.done or stamp not in self.truth:
            return
        entry = self.pending.setdefault(stamp, {})
        entry['segments'] = report
        if all(key in entry for key in RULES):
            self._finish(stamp, entry)

    def _finish(self, stamp: Stamp, entry: dict[str, Any]) -> None:
        """Score a complete frame against its ground truth and release it."""
        gt = self.truth[stamp]
        for output, rule in RULES.items():
            self.score.counts[rule] += segment_counts(entry[output], gt, self.table)
        self.score.frames_scored += 1
        self.done.add(stamp)
        del self.pending[stamp]
        if self.on_frame is not None:
            self.on_frame(stamp, {k: entry[k] for k in RULES}, entry['segments'])


def image_problem(data: bytes) -> str:
    """Return why an Image message's CDR bytes are not a frame the node reads, or ''."""
    msg = deserialize(data, 'sensor_msgs/msg/Image')
    if msg is None:
        return 'corrupt_cdr'
    try:
        check_image(msg)
    except ImageError as exc:
        return exc.reason
    return ''


def _wait(executor: Any, condition: Callable[[], bool], timeout: float,
          alive: Callable[[], bool] = lambda: True) -> bool:
    """Spin until ``condition()`` or ``timeout`` seconds; raise if ``alive()`` turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not alive():
            raise BagError('the node exited while being scored')
        executor.spin_once(timeout_sec=0.05)
    return condition()


def score_bag(bag: DriveBag, node: str = '/metafusion_node', rate: float = 1.0,
              lockstep: bool = True, timeout: float = 30.0, image_topic: str = IMAGE_TOPIC,
              on_frame: Callable[[Stamp, dict[str, np.ndarray], dict], None] | None = None,
              context: Any = None, alive: Callable[[], bool] = lambda: True,
              domain_id: int | None = None) -> Score:
    """Replay ``bag`` to the node named ``node`` and score its masks against the ground truth.

    ``on_frame(stamp, masks, segment_report)`` sees every scored frame (the demo draws them);
    ``alive()`` False (e.g. the node process died) aborts the waits. Without a ``context`` it
    uses one of its own, in ROS domain ``domain_id`` (default: ``ROS_DOMAIN_ID``).
    Image messages the node could not read (corrupt CDR, unreadable layout) are not sent but
    counted in :attr:`Score.skipped`. Raise :class:`BagError` when the bag has no ground truth,
    no images or no node answers in ``timeout``.
    """
    truth, table = bag.ground_truth(), bag.table()
    if not bag.counts()[image_topic]:
        raise BagError(f'bag {bag.path} has no messages on {image_topic}; nothing to score')
    score = Score()
    recorder = _Recorder(truth, table, score, on_frame)
    own = context is None
    if own:
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain_id)
    ros = rclpy.create_node('metafusion_bag_score', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(ros)
    try:
        outputs = [o for o in RULES] + (['segments'] if on_frame is not None else [])
        for output in outputs:
            kind, callback = ((String, recorder.segments) if output == 'segments' else
                              (Image, lambda msg, o=output: recorder.mask(o, msg)))
            ros.create_subscription(kind, f'{node}/output/{output}', callback, 50)
        kinds = bag.topics()
        pubs = publishers(ros, bag, [t for t in kinds if t != GT_TOPIC])
        score.skipped.update(unknown_topics(bag, [t for t in kinds if t != GT_TOPIC]))
        if not _wait(executor, lambda: pubs[image_topic].get_subscription_count() > 0 and all(
                ros.count_publishers(f'{node}/output/{o}') > 0 for o in outputs), timeout, alive):
            raise BagError(f'no {node} is subscribed to {image_topic} and publishing its '
                           f'outputs within {timeout:g} s; start metafusion_node first')
        start = time.monotonic()

        def sent(topic: str, data: bytes) -> None:
            """Note the send time of each image; in lock-step wait for its masks."""
            if topic != image_topic:
                return
            stamp = header_stamp(data)
            recorder.sent_at[stamp] = time.monotonic()
            score.frames_sent += 1
            if lockstep and stamp in truth:
                deadline = time.monotonic() + timeout
                while not _wait(executor, lambda: stamp in recorder.done,
                                min(RESEND_S, deadline - time.monotonic()), alive) and \
                        time.monotonic() < deadline:
                    pubs[topic].publish(data)  # lost before discovery completed: send again
                    recorder.sent_at[stamp] = time.monotonic()
                    score.resent += 1

        def check(topic: str, data: bytes) -> str:
            """Return why a message is not sent: corrupt, or an image the node cannot read."""
            if topic == image_topic:
                return image_problem(data)
            return cdr_problem(data, kinds[topic])

        replay(executor, bag, pubs, rate=rate, after_publish=sent, check=check,
               skipped=score.skipped)
        _wait(executor, lambda: not recorder.pending and len(recorder.done) >= min(
            score.frames_sent, len(truth)), min(timeout, 5.0))
        score.wall_s = time.monotonic() - start
    finally:
        executor.shutdown()
        ros.destroy_node()
        if own:
            rclpy.try_shutdown(context=context)
    return score
