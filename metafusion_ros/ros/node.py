"""``metafusion_node``: MetaFusion on a camera stream, a thin lifecycle shell over the core.

Configure loads the network, the priors and the (optional) meta classifier and checks that they
fit together and publishes the class table (latched); activate subscribes ``~/input/image`` and
``~/input/image/compressed``. A worker thread processes only the newest frame: the subscription
callback just stores it (an unprocessed older frame is dropped and counted), so a slow frame
never blocks the executor. Unreadable images are counted skips with a throttled warning; a frame
whose stamp is not newer than the previous one's, stamped 0 or without ``frame_id`` is processed
and counted. Diagnostics (:mod:`.stats`) report over a time window. See ``docs/node.md`` for
topics and parameters.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import (QoSMessageLostInfo, QoSRequestedIncompatibleQoSInfo,
                                 SubscriptionEventCallbacks)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode, State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_policy_name_from_kind, QoSProfile,
                       ReliabilityPolicy)
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import ColorRGBA, Float32, Header, String
from visualization_msgs.msg import Marker, MarkerArray

from ..core.fusion import FUSION_MODES
from .conversions import (check_compressed, check_image, check_size, compressed_to_rgb,
                          float_to_image, ImageError, image_to_rgb, mask_to_image, rgb_to_image)
from .engine import (BadNetworkOutput, ConfigurationError, EngineConfig, FusionEngine,
                     Processed, ResolutionMismatch)
from ..segmenter import BACKENDS
from ..segmenter.preprocess import resize_maps
from .memory import map_large_buffers
from .params import (mistyped_parameter, override_source, params_file_problem,
                     unknown_parameters)
from .stats import LatestFrame, problems, Stats
from .views import class_report, colour_labels, overlay

__all__ = ['MetaFusionNode', 'LatestFrame', 'main']

NODE_NAME = 'metafusion_node'
CHOICES = {
    'backend': BACKENDS,
    'precision': ('fp32', 'fp16', 'int8'),
    'resize_mode': ('resize', 'refuse'),
    'output_resolution': ('camera', 'network'),
    'qos.reliability': ('best_effort', 'reliable'),
    'fusion': FUSION_MODES,
}
# Optional outputs: parameter ``outputs.<key>`` switches them; published only when subscribed.
OPTIONAL_OUTPUTS = ('mask_bayes', 'mask_ml', 'color_mask', 'heatmaps', 'segments', 'overlay')
HEATMAP_TOPICS = ('entropy', 'margin', 'variation')
# Parameters applied while running; every other one needs a fresh configure.
RUNTIME = {'alpha', 'tau', 'fusion', 'marker_scale', 'warn_throttle_s', 'outputs.markers',
           'output_resolution', 'max_input_pixels', 'overlay_opacity'} | {
    f'outputs.{key}' for key in OPTIONAL_OUTPUTS}
SILENT_S = 3.0  # a matched image publisher this long without a frame turns diagnostics WARN
VERDICT_COLOUR = {True: (0.1, 0.9, 0.1), False: (0.95, 0.1, 0.1)}


def _descriptor(text: str, low: float | None = None, high: float | None = None,
                integer: bool = False) -> ParameterDescriptor:
    """Return a descriptor with ``text`` and an optional inclusive range."""
    descriptor = ParameterDescriptor(description=text)
    if low is not None and integer:
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    elif low is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    return descriptor


PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    'model_path': ('', _descriptor('ONNX network (TensorRT builds its engine from it)')),
    'backend': ('onnxruntime', _descriptor(
        'inference backend: onnxruntime (CUDA where present, else CPU) | onnxruntime-cpu | '
        'onnxruntime-cuda (CUDA or refuse) | tensorrt')),
    'precision': ('fp32', _descriptor('inference precision: fp32 | fp16 | int8')),
    'priors_path': ('', _descriptor('position-specific priors .npz (eq. 5)')),
    'meta_model_path': ('', _descriptor('meta classifier bundle (manifest .json, one XGBoost '
                                        'JSON per alpha); empty keeps every candidate (plain ML '
                                        'for class c)')),
    'alpha': (1.0, _descriptor('prior interpolation alpha (eq. 15); 0 = Bayes, 1 = ML', 0.0, 1.0)),
    'tau': (0.5, _descriptor('meta classifier threshold: keep a candidate if P(TP) >= tau',
                             0.0, 1.0)),
    'fusion': ('reference', _descriptor(
        "fusion reading (spec §5): 'reference' keeps the ML extent of every human segment "
        "that is not dropped (the authors' code) | 'literal' fuses kept candidates only "
        '(eq. 14)')),
    'target_class': ('', _descriptor("target class c by name; '' = the priors' table default")),
    'resize_mode': ('resize', _descriptor('images of another resolution than the priors: '
                                          'resize the priors | refuse the frame')),
    'output_resolution': ('camera', _descriptor(
        'size of the published masks and heatmaps: camera (the final label maps enlarged, '
        'nearest) | network (MetaFusion always runs at the network output size)')),
    'max_input_pixels': (1 << 24, _descriptor(
        'larger images (width * height) are refused, a counted skip (8K is 33 Mpx)',
        1, 1 << 30, integer=True)),
    'qos.reliability': ('best_effort', _descriptor('input QoS reliability: best_effort | '
                                                   'reliable')),
    'qos.depth': (5, _descriptor('input QoS history depth', 1, 1000, integer=True)),
    'outputs.markers': (True, _descriptor('publish ~/output/markers')),
    'marker_scale': (0.01, _descriptor('marker size in metres per image pixel', 1e-6, 100.0)),
    'overlay_opacity': (0.5, _descriptor('weight of the class colours in ~/output/overlay',
                                         0.0, 1.0)),
    'warn_throttle_s': (5.0, _descriptor('minimum seconds between warnings of one kind',
                                         0.0, 3600.0)),
    'diagnostics_period_s': (1.0, _descriptor('period of /diagnostics', 0.05, 60.0)),
    'diagnostics_window_s': (10.0, _descriptor('seconds over which /diagnostics computes rates, '
                                               'shares and stage times', 1.0, 3600.0)),
    'autostart': (True, _descriptor('configure and activate on start-up (no lifecycle manager)')),
}
PARAMETERS.update({f'outputs.{key}': (True, _descriptor(
    f'compute ~/output/{key} when someone subscribes')) for key in OPTIONAL_OUTPUTS})


class ProcessingError(RuntimeError):
    """An unexpected failure while processing one frame (counted, logged, node stays up)."""

    reason = 'processing_error'


class CameraInfoMismatch(ImageError):
    """A compressed frame decodes to another size than the camera info declares."""

    reason = 'camera_info_mismatch'


class MetaFusionNode(LifecycleNode):
    """MetaFusion on ``~/input/image``: fused mask, markers, on-demand outputs, diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.engine: FusionEngine | None = None
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        self._check_initial_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = Stats(self.p('diagnostics_window_s'))
        self.state_name = 'unconfigured'
        self.camera_info: CameraInfo | None = None
        self._warned: dict[str, float] = {}
        self._last_stamp: tuple[int, int] | None = None
        self._frames = LatestFrame()
        self._warm_sizes: set[tuple[int, int]] = set()
        self._worker: threading.Thread | None = None
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # A steady clock: with use_sim_time and no /clock, ROS time stands still at 0.
        self.create_timer(self.p('diagnostics_period_s'), self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    # parameters -------------------------------------------------------------------------------
    def p(self, name: str) -> Any:
        """Return the current value of parameter ``name``."""
        return self.get_parameter(name).value

    def _check_initial_parameters(self) -> None:
        """Refuse undeclared overrides; validate the declared values like a later set would."""
        unknown = unknown_parameters(  # rclpy keeps the overrides only in this attribute
            getattr(self, '_parameter_overrides', {}), self.get_parameters_by_prefix(''),
            sys.argv)
        if unknown:
            raise ConfigurationError(unknown)
        result = self._on_set_parameters(
            [self.get_parameter(name) for name in PARAMETERS], initial=True)
        if not result.successful:
            raise ConfigurationError(f'{result.reason} {override_source(sys.argv)}')

    def _on_set_parameters(self, params: list[Parameter],
                           initial: bool = False) -> SetParametersResult:
        """Validate parameter changes (choices, ranges, run-time changeability), apply α / τ."""
        for param in params:
            problem = self._problem(param, initial)
            if problem:
                return SetParametersResult(successful=False, reason=f'{param.name}: {problem}')
        updates = {p.name: p.value for p in params if p.name in ('alpha', 'tau', 'fusion')}
        if updates and self.engine is not None:
            try:
                self.engine.set_params(**updates)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            if 'alpha' in updates:
                self._warn_nearest(self.engine.choice_for(updates['alpha']))
        return SetParametersResult(successful=True)

    def _warn_nearest(self, choice: Any) -> None:
        """Warn once per α change when the meta bundle serves α with its nearest member."""
        if choice is not None and not choice.exact:
            self.get_logger().warning(
                f'alpha {choice.requested:g} is not on the meta classifier grid; using the '
                f'classifier fitted at alpha {choice.alpha:g}')

    def _problem(self, param: Parameter, initial: bool) -> str:
        """Return why ``param`` may not take its new value, or ''."""
        if param.name in CHOICES and param.value not in CHOICES[param.name]:
            return f'{param.value!r} is not one of {", ".join(CHOICES[param.name])}'
        if not initial and param.name not in RUNTIME and self.engine is not None:
            return 'takes effect at configure time: deactivate and clean up the node first'
        return ''

    # lifecycle --------------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load network, priors and meta model; fail with one clear line if they do not fit."""
        config = EngineConfig(
            model_path=self.p('model_path'), priors_path=self.p('priors_path'),
            meta_model_path=self.p('meta_model_path'), backend=self.p('backend'),
            precision=self.p('precision'), alpha=self.p('alpha'), tau=self.p('tau'),
            fusion=self.p('fusion'),
            target_class=self.p('target_class'), resize_mode=self.p('resize_mode'))
        try:
            self.engine = FusionEngine.load(config)
        except ConfigurationError as exc:
            return self._configure_failed(str(exc))
        except Exception as exc:  # noqa: B902 - any loader error must end in one clear line
            return self._configure_failed(f'{type(exc).__name__}: {exc}')
        self._create_publishers()
        self._publish_class_table(self.engine)
        self._warm_sizes = {self.engine.metafusion.priors.resolution}
        meta = 'none (keep all candidates)' if self.engine.meta is None else \
            self.p('meta_model_path')
        self.get_logger().info(
            f'configured: model {config.model_path} ({config.backend}), priors '
            f'{config.priors_path}, meta {meta}, target {self.engine.table.target_name!r}')
        self._warn_nearest(self.engine.meta_choice)
        self.state_name = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, text: str) -> TransitionCallbackReturn:
        """Log why configure failed (one line) and report FAILURE."""
        text = ' '.join(line.strip() for line in text.splitlines() if line.strip())
        self.get_logger().error(f'configure failed: {text}')
        self.state_name = 'configure_failed'
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Subscribe the input topics and start the worker thread."""
        reliability = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
                       'reliable': ReliabilityPolicy.RELIABLE}[self.p('qos.reliability')]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.p('qos.depth'),
                         reliability=reliability)
        self._frames.reopen()
        self._subs = [
            self.create_subscription(Image, '~/input/image', self._on_image, qos,
                                     event_callbacks=self._input_events()),
            self.create_subscription(CompressedImage, '~/input/image/compressed',
                                     self._on_compressed, qos,
                                     event_callbacks=self._input_events()),
            self.create_subscription(CameraInfo, '~/input/camera_info', self._on_camera_info,
                                     qos)]
        self._worker = threading.Thread(target=self._work, name='metafusion-worker',
                                        daemon=True)
        self._worker.start()
        self.state_name = 'active'
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker (the frame in flight completes)."""
        self._stop_worker()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self.state_name = 'inactive'
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Release the models and the output publishers."""
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs = {}
        self.engine = None
        self.state_name = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop the worker on shutdown from any state."""
        self._stop_worker()
        self.state_name = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        """Close the mailbox and join the worker thread."""
        self._frames.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None

    def _create_publishers(self) -> None:
        """Create the output publishers (their topics are relative to the node: ``~/output``)."""
        topics = {'mask': Image, 'markers': MarkerArray, 'mask_bayes': Image, 'mask_ml': Image,
                  'color_mask': Image, 'segments': String, 'processing_time_ms': Float32,
                  'overlay': Image}
        topics.update({f'heatmap/{name}': Image for name in HEATMAP_TOPICS})
        self._pubs = {key: self.create_publisher(kind, f'~/output/{key}', 10)
                      for key, kind in topics.items()}

    # input ------------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        """Check the layout (cheap, no pixel read) and store the frame for the worker."""
        self._receive(msg, check_image)

    def _on_compressed(self, msg: CompressedImage) -> None:
        """Check the format and payload signature (no decode) and store the frame."""
        self._receive(msg, check_compressed)

    def _receive(self, msg: Any, check: Callable[[Any], Any]) -> None:
        """Count ``msg``, ``check`` it (cheap), check its header and hand it to the worker."""
        self.stats.add(frames_received=1)
        self.stats.event('received')
        try:
            check(msg)
            check_size(msg, self.p('max_input_pixels'))
        except ImageError as exc:
            self._skip(exc)
            return
        self._check_header(msg.header)
        self._check_stamp(msg.header)
        self.stats.event('dropped', self._frames.put((msg, time.perf_counter())))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Keep the newest camera info; the worker warms up at a size it has not seen yet."""
        self.camera_info = msg

    def _check_stamp(self, header: Header) -> None:
        """Count a stamp not newer than the previous valid frame's; the frame is still processed.

        Frames are independent (a looping bag or a restarted driver goes back in time), so the
        frame keeps its header and is processed; ``stamps_non_monotonic`` counts it.
        """
        stamp = (header.stamp.sec, header.stamp.nanosec)
        last, self._last_stamp = self._last_stamp, stamp
        if last is not None and stamp <= last:
            self._count_and_warn('stamps_non_monotonic', lambda total: (
                f'frame stamp {stamp[0]}.{stamp[1]:09d} is not newer than the previous '
                f'{last[0]}.{last[1]:09d}; processed anyway ({total} so far)'))

    def _input_events(self) -> SubscriptionEventCallbacks:
        """Return the QoS event callbacks of an image subscription: lost and incompatible."""
        return SubscriptionEventCallbacks(message_lost=self._on_lost,
                                          incompatible_qos=self._on_incompatible_qos)

    def _on_lost(self, info: QoSMessageLostInfo) -> None:
        """Count frames the middleware reports lost in transport (never seen by the node)."""
        self.stats.add(frames_lost=info.total_count_change)
        self.stats.event('lost', info.total_count_change)

    def _on_incompatible_qos(self, info: QoSRequestedIncompatibleQoSInfo) -> None:
        """Count a publisher whose QoS cannot match the input's (it delivers nothing)."""
        self.stats.event('qos_incompatible')
        self._count_and_warn('qos_incompatible', lambda total: (
            f'a publisher on the image input offers a QoS that cannot match this subscription '
            f'({qos_policy_name_from_kind(info.last_policy_kind)}); set qos.reliability to '
            f"match the camera driver's ({total} so far)"))

    def _input_problems(self) -> list[str]:
        """Return input trouble the frame counts cannot show: a publisher that sends nothing."""
        found = []
        publishers = sum(self.count_publishers(sub.topic_name) for sub in self._subs
                         if sub.msg_type is not CameraInfo)
        silent = self.stats.silent_for()
        if self.state_name == 'active' and publishers and silent > SILENT_S:
            found.append(f'{publishers} image publisher(s) matched but no frame for '
                         f'{silent:.0f} s (large frames at best effort: see the DDS profile in '
                         f'docs/node.md)')
        return found

    def _check_header(self, header: Header) -> None:
        """Count (and warn about) a zero stamp or an empty ``frame_id``; the frame is processed.

        Both break every consumer that looks the frame up in time or in tf, so diagnostics turn
        WARN while such frames arrive.
        """
        if header.stamp.sec == 0 and header.stamp.nanosec == 0:
            self.stats.event('stamp_zero')
            self._count_and_warn('stamps_zero', lambda total: (
                f'frame stamp is 0 (the camera driver does not stamp its images; {total} so '
                f'far); processed anyway'))
        if not header.frame_id:
            self.stats.event('frame_id_empty')
            self._count_and_warn('frame_ids_empty', lambda total: (
                f'frame_id is empty (outputs cannot be placed in tf; {total} so far); '
                f'processed anyway'))

    def _skip(self, exc: Exception) -> None:
        """Count a skipped frame under its reason; warn at most once per ``warn_throttle_s``."""
        reason = exc.reason
        self.stats.event('skipped')
        self._count_and_warn(f'skipped_{reason}', lambda total: (
            f'skipped frame ({reason}, {total} so far): {exc}'))

    def _count_and_warn(self, key: str, text: Callable[[int], str]) -> None:
        """Add 1 to counter ``key``; warn ``text(total)`` at most once per ``warn_throttle_s``."""
        self.stats.add(**{key: 1})
        now = time.monotonic()
        with self.stats.lock:
            due = now - self._warned.get(key, -1e9) >= self.p('warn_throttle_s')
            if due:
                self._warned[key] = now
            total = self.stats.counts[key]
        if due:
            self.get_logger().warning(text(total))

    # processing -------------------------------------------------------------------------------
    def _work(self) -> None:
        """Process the newest frame until the mailbox closes."""
        frames = self._frames
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
        info, engine = self.camera_info, self.engine
        if info is None or engine is None or not info.width or not info.height:
            return
        size = (info.height, info.width)
        if size in self._warm_sizes:
            return
        self._warm_sizes.add(size)
        start = time.perf_counter()
        try:
            engine.warm_up(size)
        except Exception as exc:  # noqa: B902 - e.g. resize_mode refuse: the frames will say so
            self.get_logger().warning(f'warm-up at the camera size {size[1]}x{size[0]} '
                                      f'failed: {exc}')
            return
        self.stats.add(warm_ups=1)
        self.get_logger().info(f'warmed up at the camera size {size[1]}x{size[0]} in '
                               f'{time.perf_counter() - start:.2f} s')

    def _process(self, msg: Image, received: float) -> None:
        """Run the engine on one message and publish; bad input is a counted skip."""
        engine = self.engine
        if engine is None:
            return
        start = time.perf_counter()
        try:
            rgb = self._to_rgb(msg)
            converted = time.perf_counter()
            processed = engine.process(rgb)
        except (ImageError, ResolutionMismatch, BadNetworkOutput) as exc:
            self._skip(exc)
            return
        except Exception as exc:  # noqa: B902 - the worker must survive anything, loudly
            self._skip(ProcessingError(f'{type(exc).__name__}: {exc}'))
            return
        done = time.perf_counter()
        latency = (done - received) * 1e3
        try:
            self._publish(msg.header, processed, engine)
            self._publish_overlay(msg.header, rgb, processed, engine)
            self._pubs['processing_time_ms'].publish(Float32(data=float(latency)))
        except Exception as exc:  # noqa: B902 - publishing after shutdown must not kill us
            if rclpy.ok(context=self.context):
                self.get_logger().error(f'publishing failed: {exc}')
            return
        result = processed.result
        self.stats.add(candidates=result.candidates.count,
                       candidates_kept=int(result.keep.sum()),
                       candidates_dropped=int((~result.keep).sum()))
        self.stats.frame_done(latency, result.candidates.count, {
            'conversion': (converted - start) * 1e3, **processed.stages_ms,
            'publish': (time.perf_counter() - done) * 1e3})

    def _to_rgb(self, msg: Image | CompressedImage) -> np.ndarray:
        """Return the frame as RGB; a compressed one is decoded and checked against CameraInfo."""
        if not isinstance(msg, CompressedImage):
            return image_to_rgb(msg)
        rgb = compressed_to_rgb(msg)
        info = self.camera_info
        if info is not None and info.width and info.height and \
                rgb.shape[:2] != (info.height, info.width):
            raise CameraInfoMismatch(
                f'{check_compressed(msg)} decodes to {rgb.shape[1]}x{rgb.shape[0]}, the camera '
                f'info says {info.width}x{info.height}')
        return rgb

    def _wanted(self, key: str, topic: str | None = None) -> bool:
        """Return whether output ``key`` is switched on and has a subscriber."""
        return bool(self.p(f'outputs.{key}')) and \
            self._pubs[topic or key].get_subscription_count() > 0

    def _publish(self, header: Header, processed: Processed, engine: FusionEngine) -> None:
        """Publish the fused mask, the markers and every wanted optional output.

        Masks and heatmaps at the camera's or the network's size (``output_resolution``);
        markers and segment reports in camera pixels.
        """
        result = processed.result
        camera = self.p('output_resolution') == 'camera'
        labels = processed.to_camera.labels if camera else np.asarray
        fused = labels(result.fused)
        self._pubs['mask'].publish(mask_to_image(fused, header))
        if self.p('outputs.markers'):
            self._pubs['markers'].publish(self._markers(header, processed, engine))
        computed = []
        if self._wanted('mask_bayes'):
            self._pubs['mask_bayes'].publish(mask_to_image(labels(result.pred_bayes), header))
            computed.append('mask_bayes')
        if self._wanted('mask_ml'):
            self._pubs['mask_ml'].publish(mask_to_image(labels(result.pred_ml), header))
            computed.append('mask_ml')
        if self._wanted('color_mask'):
            self._pubs['color_mask'].publish(rgb_to_image(colour_labels(fused, engine.table),
                                                          header))
            computed.append('color_mask')
        if any(self._wanted('heatmaps', f'heatmap/{n}') for n in HEATMAP_TOPICS):
            for name, heat in zip(HEATMAP_TOPICS, engine.heatmaps(processed)):
                heat = resize_maps(heat, processed.camera_size) if camera else heat
                self._pubs[f'heatmap/{name}'].publish(float_to_image(heat, header))
            computed.append('heatmaps')
        if self._wanted('segments'):
            self._pubs['segments'].publish(String(data=json.dumps(segment_report(
                header, processed, engine))))
            computed.append('segments')
        self.stats.add(**{f'computed_{key}': 1 for key in computed})

    def _publish_overlay(self, header: Header, rgb: np.ndarray, processed: Processed,
                         engine: FusionEngine) -> None:
        """Publish the fused mask blended on the camera frame, when wanted (lazy)."""
        if self._wanted('overlay'):
            blended = overlay(rgb, processed.result.fused, engine.table, self.p('overlay_opacity'))
            self._pubs['overlay'].publish(rgb_to_image(blended, header))
            self.stats.add(computed_overlay=1)

    def _publish_class_table(self, engine: FusionEngine) -> None:
        """Publish the class table once, latched (transient local): ids, names, colours."""
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._pubs['classes'] = self.create_publisher(String, '~/output/classes', qos)
        self._pubs['classes'].publish(String(data=json.dumps(class_report(engine.table))))

    def _markers(self, header: Header, processed: Processed,
                 engine: FusionEngine) -> MarkerArray:
        """Return DELETEALL plus a box and a score label per candidate (green keep, red drop).

        Boxes are in camera pixels times ``marker_scale``.
        """
        result = processed.result
        scale = float(self.p('marker_scale'))
        markers = [Marker(header=header, action=Marker.DELETEALL)]
        name = engine.table.target_name
        boxes = processed.to_camera.boxes(result.candidates.boxes)
        for box, cid, score, keep in zip(boxes, result.candidates.ids, result.scores,
                                         result.keep):
            r0, c0, r1, c1 = (float(v) * scale for v in box)
            colour = ColorRGBA(r=VERDICT_COLOUR[bool(keep)][0], g=VERDICT_COLOUR[bool(keep)][1],
                               b=VERDICT_COLOUR[bool(keep)][2], a=1.0)
            outline = Marker(header=header, ns='candidates', id=int(cid),
                             type=Marker.LINE_STRIP, action=Marker.ADD, color=colour)
            outline.pose.orientation.w = 1.0
            outline.scale.x = 2 * scale
            outline.points = [Point(x=c, y=r) for r, c in
                              ((r0, c0), (r0, c1), (r1, c1), (r1, c0), (r0, c0))]
            label = Marker(header=header, ns='scores', id=int(cid),
                           type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, color=colour,
                           text=f'{name} {score:.2f} {"keep" if keep else "drop"}')
            label.pose.position = Point(x=c0, y=r0 - 4 * scale)
            label.pose.orientation.w = 1.0
            label.scale.z = 10 * scale
            markers += [outline, label]
        return MarkerArray(markers=markers)

    # diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        """Publish counters, rate, latency and model state on /diagnostics."""
        values = self.stats.snapshot()
        values['frames_dropped'] = self._frames.dropped
        values['model_state'] = self.state_name
        values['camera_info'] = 'yes' if self.camera_info is not None else 'no'
        if self.engine is not None:
            values.update(alpha=self.engine.metafusion.alpha, tau=self.engine.metafusion.tau,
                          fusion=self.engine.metafusion.fusion,
                          backend=self.p('backend'), target=self.engine.table.target_name,
                          meta_model='loaded' if self.engine.meta is not None else 'none')
            choice = self.engine.meta_choice
            if choice is not None:
                values.update(meta_alpha=f'{choice.alpha:g}', meta_alpha_choice=choice.describe())
        notes = problems(values) + self._input_problems()
        if self.get_parameter('use_sim_time').value:
            values['clock'] = 'sim'
            if self.get_clock().now().nanoseconds == 0:  # sim time stands at 0 until /clock
                values['clock'] = 'sim, no /clock yet'
                notes.append('use_sim_time is true and no /clock has arrived')
        level = DiagnosticStatus.OK
        message = f'{self.state_name}'
        if self.state_name == 'configure_failed':
            level, message = DiagnosticStatus.ERROR, 'configure failed'
        elif notes:
            level, message = DiagnosticStatus.WARN, '; '.join([self.state_name, *notes])
        status = DiagnosticStatus(
            level=level, name=f'{self.get_fully_qualified_name()}: fusion', message=message,
            hardware_id=self.p('model_path') or 'none',
            values=[KeyValue(key=k, value=str(v)) for k, v in sorted(values.items())])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def segment_report(header: Header, processed: Processed, engine: FusionEngine
                   ) -> dict[str, Any]:
    """Return the per-frame segment report: id, box, area, meta score and verdict per candidate.

    Boxes (half-open ``row0, col0, row1, col1``) and areas are in camera pixels.
    """
    result = processed.result
    candidates = result.candidates
    to_camera = processed.to_camera
    boxes = to_camera.boxes(candidates.boxes)
    areas = to_camera.areas(candidates.pixels, candidates.pixel_ids, candidates.count)
    return {
        'stamp': {'sec': header.stamp.sec, 'nanosec': header.stamp.nanosec},
        'frame_id': header.frame_id, 'target': engine.table.target_name,
        'alpha': engine.metafusion.alpha, 'tau': engine.metafusion.tau,
        'segments': [
            {'id': int(cid), 'box': [int(v) for v in box], 'area': int(size),
             'score': float(score), 'verdict': 'keep' if keep else 'drop'}
            for cid, box, size, score, keep in zip(
                candidates.ids, boxes, areas, result.scores, result.keep)],
    }


def _ignore_further_signals() -> None:
    """Ignore SIGINT / SIGTERM while shutting down (``ros2 launch`` signals a group twice).

    Without this a second SIGINT interrupts ``destroy_node`` or the worker's join with a
    traceback and a non-zero exit; the first signal already decided that the node stops.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; exit 0, or 1 when configuration fails."""
    argv = sys.argv if args is None else args
    problem = params_file_problem(argv) or mistyped_parameter(
        argv, {name: default for name, (default, _) in PARAMETERS.items()}, NODE_NAME)
    if problem:
        print(f'{NODE_NAME}: error: {problem}', file=sys.stderr)
        return 2
    try:
        rclpy.init(args=args)
    except RuntimeError as exc:  # rclpy's RCLError: unparsable --ros-args
        print(f'{NODE_NAME}: error: bad command line ({exc})', file=sys.stderr)
        return 2
    map_large_buffers()  # flat memory with 4K frames
    node = None
    try:
        node = MetaFusionNode()
        if node.p('autostart'):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 1
            node.trigger_activate()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigurationError as exc:
        print(f'{NODE_NAME}: error: {exc}', file=sys.stderr)
        return 2
    except rclpy.exceptions.ParameterException as exc:  # a value outside its declared range
        print(f'{NODE_NAME}: error: {exc} {override_source(argv)}', file=sys.stderr)
        return 2
    except Exception:  # noqa: B902 - see below
        if rclpy.ok():
            raise
        # A signal shut the context down while the executor was taking a message; rclpy then
        # raises from inside the take (seen: RuntimeError from pybind11). That is our shutdown.
    finally:
        _ignore_further_signals()
        if node is not None:
            node._stop_worker()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
