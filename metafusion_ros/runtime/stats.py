"""The node's frame bookkeeping without ROS: the one-slot mailbox and the diagnostics counters.

:class:`LatestFrame` hands the newest frame from the subscription callback to the worker.
:class:`InputLog` counts input trouble (skipped frames, bad stamps and headers) with throttled
warnings.
:class:`Stats` keeps totals since start-up and, for honest diagnostics, the events of the last
``window_s`` seconds: rates, the share of frames dropped or lost, bad stamps and the per-stage
times are computed over that window only, so a pause or an old burst does not hide what happens
now.
"""
from __future__ import annotations

from collections import Counter, deque
import threading
import time
from typing import Any, Callable

import numpy as np

__all__ = ['LatestFrame', 'Stats', 'InputLog', 'problems', 'STAGES', 'WINDOW_EVENTS']

# Per-frame stages timed by the node and the core, in processing order.
STAGES = ('conversion', 'preprocess', 'network', 'rules', 'segments', 'features', 'classifier',
          'fusion', 'publish')
# Events counted over the window (``<event>_window`` in diagnostics).
WINDOW_EVENTS = ('received', 'processed', 'dropped', 'lost', 'skipped', 'stamp_zero',
                 'frame_id_empty', 'qos_incompatible')
MAX_EVENTS = 100_000  # bounds the window's memory under a flood of messages


class LatestFrame:
    """A one-slot mailbox: ``put`` replaces an unprocessed frame (counted), ``take`` waits."""

    def __init__(self) -> None:
        self._item: Any = None
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, item: Any) -> int:
        """Store ``item``; return 1 if an older unprocessed item (or this, once closed) fell."""
        with self._cond:
            if self.closed:
                self.dropped += 1
                return 1
            dropped = int(self._item is not None)
            self.dropped += dropped
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout: float = 0.2) -> Any:
        """Return the newest item (and empty the slot), or None after ``timeout`` / close."""
        with self._cond:
            if self._item is None and not self.closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake the consumer and make it stop; a pending item is dropped (and counted)."""
        with self._cond:
            if self._item is not None:
                self.dropped += 1
                self._item = None
            self.closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept items again (after a deactivate / activate cycle); counts are kept."""
        with self._cond:
            self.closed = False


class Stats:
    """Totals and windowed events for /diagnostics (shared by callback and worker threads).

    ``clock`` returns seconds (monotonic); tests pass a fake one.
    """

    def __init__(self, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.window_s = float(window_s)
        self.clock = clock
        self.started = clock()
        self.counts: Counter[str] = Counter()
        self.latency_ms: deque[float] = deque(maxlen=500)
        self.last_candidates = 0
        self.last_frame_at: float | None = None
        self._events: deque[tuple[float, str, int]] = deque(maxlen=MAX_EVENTS)
        self._stages: deque[tuple[float, dict[str, float]]] = deque(maxlen=MAX_EVENTS)

    def add(self, **counts: int) -> None:
        """Add to named totals (not windowed)."""
        with self.lock:
            self.counts.update(counts)

    def event(self, kind: str, count: int = 1) -> None:
        """Record ``count`` events of ``kind`` (one of :data:`WINDOW_EVENTS`) now."""
        if count <= 0:
            return
        now = self.clock()
        with self.lock:
            self._events.append((now, kind, count))
            if kind == 'received':
                self.last_frame_at = now

    def frame_done(self, latency_ms: float, candidates: int,
                   stages: dict[str, float] | None = None) -> None:
        """Record one processed frame with its end-to-end latency and stage times (ms)."""
        now = self.clock()
        with self.lock:
            self.latency_ms.append(latency_ms)
            self.last_candidates = candidates
            self.counts['frames_processed'] += 1
            self._events.append((now, 'processed', 1))
            self._stages.append((now, dict(stages or {})))

    def _prune(self, now: float) -> None:
        """Forget events older than the window (lock held)."""
        horizon = now - self.window_s
        for queue in (self._events, self._stages):
            while queue and queue[0][0] < horizon:
                queue.popleft()

    def window(self) -> dict[str, int]:
        """Return the number of each event kind within the window."""
        with self.lock:
            self._prune(self.clock())
            counts = Counter({kind: 0 for kind in WINDOW_EVENTS})
            for _, kind, count in self._events:
                counts[kind] += count
        return dict(counts)

    def span(self) -> float:
        """Return the seconds the window covers: ``window_s``, or the uptime if shorter."""
        return max(min(self.window_s, self.clock() - self.started), 1e-9)

    def silent_for(self) -> float:
        """Return the seconds since the last received frame (since start-up if none came)."""
        with self.lock:
            last = self.started if self.last_frame_at is None else self.last_frame_at
        return self.clock() - last

    def loss_share(self, window: dict[str, int]) -> float:
        """Return the share of the window's frames that were dropped or lost in transport."""
        offered = window['received'] + window['lost']
        return (window['dropped'] + window['lost']) / offered if offered else 0.0

    def snapshot(self) -> dict[str, Any]:
        """Return totals, windowed counts and rates, latency and per-stage time percentiles."""
        window = self.window()
        span = self.span()
        with self.lock:
            latency = np.asarray(self.latency_ms, dtype=np.float64)
            stages = [times for _, times in self._stages]
            values: dict[str, Any] = dict(self.counts)
            values['candidates_last'] = self.last_candidates
        values.update({f'{kind}_window': count for kind, count in window.items()})
        values['window_s'] = round(span, 3)
        values['frame_rate_hz'] = round(window['processed'] / span, 3)
        values['input_rate_hz'] = round(window['received'] / span, 3)
        values['dropped_or_lost_pct'] = round(100.0 * self.loss_share(window), 1)
        if latency.size:
            values['latency_ms_p50'] = round(float(np.percentile(latency, 50)), 3)
            values['latency_ms_p99'] = round(float(np.percentile(latency, 99)), 3)
        for stage in STAGES:
            times = [t[stage] for t in stages if stage in t]
            if times:
                values[f'stage_ms_{stage}_p50'] = round(float(np.median(times)), 3)
                values[f'stage_ms_{stage}_max'] = round(float(np.max(times)), 3)
        return values


class InputLog:
    """Counts of input trouble in ``stats``, each with a warning at most once per throttle period.

    ``warn`` logs one line; ``throttle_s`` returns the current minimum seconds between warnings
    of one kind (the node's ``warn_throttle_s``); ``clock`` returns monotonic seconds.
    """

    def __init__(self, stats: Stats, warn: Callable[[str], Any],
                 throttle_s: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stats, self.warn, self.throttle_s, self.clock = stats, warn, throttle_s, clock
        self._warned: dict[str, float] = {}
        self._last_stamp: tuple[int, int] | None = None

    def count_and_warn(self, key: str, text: Callable[[int], str]) -> None:
        """Add 1 to counter ``key``; warn ``text(total)`` unless ``key`` warned too recently."""
        self.stats.add(**{key: 1})
        now = self.clock()
        with self.stats.lock:
            due = now - self._warned.get(key, -1e9) >= self.throttle_s()
            if due:
                self._warned[key] = now
            total = self.stats.counts[key]
        if due:
            self.warn(text(total))

    def skip(self, exc: Exception) -> None:
        """Count a skipped frame under its reason (``exc.reason``) and warn (throttled)."""
        reason = getattr(exc, 'reason', 'processing_error')
        self.stats.event('skipped')
        self.count_and_warn(f'skipped_{reason}', lambda total: (
            f'skipped frame ({reason}, {total} so far): {exc}'))

    def lost(self, count: int) -> None:
        """Count frames the middleware reports lost in transport (never seen by the node)."""
        self.stats.add(frames_lost=count)
        self.stats.event('lost', count)

    def incompatible_qos(self, policy: str) -> None:
        """Count a publisher whose QoS (``policy``) cannot match the input's: it sends nothing."""
        self.stats.event('qos_incompatible')
        self.count_and_warn('qos_incompatible', lambda total: (
            f'a publisher on the image input offers a QoS that cannot match this subscription '
            f'({policy}); set qos.reliability to match the camera driver\'s ({total} so far)'))

    def check_header(self, header: Any) -> None:
        """Count (and warn about) a zero stamp, an empty ``frame_id``, a stamp not newer.

        The frame is processed in each case: a zero stamp or an empty ``frame_id`` breaks every
        consumer that looks the frame up in time or in tf (diagnostics turn WARN while they
        arrive); frames are independent, so one going back in time (a looping bag, a restarted
        driver) keeps its header and only ``stamps_non_monotonic`` counts it.
        """
        stamp = (header.stamp.sec, header.stamp.nanosec)
        if stamp == (0, 0):
            self.stats.event('stamp_zero')
            self.count_and_warn('stamps_zero', lambda total: (
                f'frame stamp is 0 (the camera driver does not stamp its images; {total} so '
                f'far); processed anyway'))
        if not header.frame_id:
            self.stats.event('frame_id_empty')
            self.count_and_warn('frame_ids_empty', lambda total: (
                f'frame_id is empty (outputs cannot be placed in tf; {total} so far); '
                f'processed anyway'))
        last, self._last_stamp = self._last_stamp, stamp
        if last is not None and stamp <= last:
            self.count_and_warn('stamps_non_monotonic', lambda total: (
                f'frame stamp {stamp[0]}.{stamp[1]:09d} is not newer than the previous '
                f'{last[0]}.{last[1]:09d}; processed anyway ({total} so far)'))


def problems(values: dict[str, Any], max_loss_pct: float = 10.0) -> list[str]:
    """Return what is wrong within the window of a :meth:`Stats.snapshot` (empty: healthy)."""
    span = f'in the last {values["window_s"]:g} s'
    found = []
    if values['dropped_or_lost_pct'] > max_loss_pct:
        found.append(f'{values["dropped_or_lost_pct"]:g} % of frames dropped or lost {span} '
                     f'({values["dropped_window"]} dropped, {values["lost_window"]} lost)')
    texts = {'skipped': 'frames skipped (unreadable)', 'stamp_zero': 'frames stamped 0',
             'frame_id_empty': 'frames with an empty frame_id',
             'qos_incompatible': 'publisher(s) with an incompatible QoS'}
    for kind, text in texts.items():
        if values[f'{kind}_window']:
            found.append(f'{values[f"{kind}_window"]} {text} {span}')
    return found
