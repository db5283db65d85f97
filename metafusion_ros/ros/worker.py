"""The node's processing thread: the newest frame from the mailbox through the engine to publish.

The subscription callbacks :meth:`Worker.put` frames into a one-slot mailbox (an unprocessed
older frame is dropped and counted); the thread takes the newest, converts it, runs the engine
and hands the result to ``publish``. Bad input is a counted skip (:class:`~.stats.InputLog`);
the thread survives any error. The first time the camera info announces a size, it runs one
blank frame at that size (the warm-up).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Protocol

import numpy as np
from sensor_msgs.msg import CameraInfo

from metafusion_ros.ros.conversions import ImageError
from metafusion_ros.ros.inputs import Message, ProcessingError, to_rgb
from metafusion_ros.runtime.engine import (BadNetworkOutput, FusionEngine, Processed,
                                           ResolutionMismatch)
from metafusion_ros.runtime.stats import InputLog, LatestFrame, Stats

__all__ = ['Log', 'Publish', 'Worker']


class Log(Protocol):
    """The node's logger, as far as the worker uses it."""

    def info(self, message: str) -> object:
        """Log ``message`` at INFO."""

    def warning(self, message: str) -> object:
        """Log ``message`` at WARN."""

    def error(self, message: str) -> object:
        """Log ``message`` at ERROR."""


class Publish(Protocol):
    """Publishes the outputs of one processed frame; raises when publishing fails."""

    def __call__(self, msg: Message, rgb: np.ndarray, processed: Processed,
                 engine: FusionEngine, latency_ms: float) -> None:
        """Publish ``processed`` (from ``msg`` / ``rgb``) and the latency."""


class Worker:
    """A thread processing the newest frame (started on activate, stopped on deactivate)."""

    def __init__(self, engine: Callable[[], FusionEngine | None], publish: Publish,
                 stats: Stats, inputs: InputLog, log: Log,
                 alive: Callable[[], bool]) -> None:
        self.engine, self.publish, self.stats, self.inputs, self.log, self.alive = (
            engine, publish, stats, inputs, log, alive)
        self.frames = LatestFrame()
        self.camera_info: CameraInfo | None = None
        self.warm_sizes: set[tuple[int, int]] = set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the mailbox and start the thread."""
        self.frames.reopen()
        self._thread = threading.Thread(target=self._run, name='metafusion-worker', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the mailbox and join the thread (the frame in flight completes)."""
        self.frames.close()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None

    def put(self, msg: Message) -> None:
        """Store ``msg`` for the thread; an unprocessed older frame is dropped (counted)."""
        self.stats.event('dropped', self.frames.put((msg, time.perf_counter())))

    def _run(self) -> None:
        """Process the newest frame until the mailbox closes."""
        frames = self.frames
        while not frames.closed:
            self._warm_up_at_camera_size()
            item = frames.take()
            if item is not None:
                self._process(*item)

    def _warm_up_at_camera_size(self) -> None:
        """Run one blank frame at the camera info's size the first time that size is seen.

        The first real frame at another size than the priors would otherwise pay for resizing
        the priors and sizing the kernels' buffers (seconds on a large camera).
        """
        info, engine = self.camera_info, self.engine()
        if info is None or engine is None or not info.width or not info.height:
            return
        size = (info.height, info.width)
        if size in self.warm_sizes:
            return
        self.warm_sizes.add(size)
        start = time.perf_counter()
        try:
            engine.warm_up(size)
        except Exception as exc:  # noqa: B902 - e.g. resize_mode refuse: the frames will say so
            self.log.warning(f'warm-up at the camera size {size[1]}x{size[0]} failed: {exc}')
            return
        self.stats.add(warm_ups=1)
        self.log.info(f'warmed up at the camera size {size[1]}x{size[0]} in '
                      f'{time.perf_counter() - start:.2f} s')

    def _process(self, msg: Message, received: float) -> None:
        """Run the engine on one message and publish; bad input is a counted skip."""
        engine = self.engine()
        if engine is None:
            return
        start = time.perf_counter()
        try:
            rgb = to_rgb(msg, self.camera_info)
            converted = time.perf_counter()
            processed = engine.process(rgb)
        except (ImageError, ResolutionMismatch, BadNetworkOutput) as exc:
            self.inputs.skip(exc)
            return
        except Exception as exc:  # noqa: B902 - the worker must survive anything, loudly
            self.inputs.skip(ProcessingError(f'{type(exc).__name__}: {exc}'))
            return
        done = time.perf_counter()
        latency = (done - received) * 1e3
        try:
            self.publish(msg, rgb, processed, engine, latency)
        except Exception as exc:  # noqa: B902 - publishing after shutdown must not kill us
            if self.alive():
                self.log.error(f'publishing failed: {exc}')
            return
        result = processed.result
        self.stats.add(candidates=result.candidates.count,
                       candidates_kept=int(result.keep.sum()),
                       candidates_dropped=int((~result.keep).sum()))
        self.stats.frame_done(latency, result.candidates.count, {
            'conversion': (converted - start) * 1e3, **processed.stages_ms,
            'publish': (time.perf_counter() - done) * 1e3})
