"""``metafusion_node``: MetaFusion on a camera stream, a thin lifecycle shell over the core.

Configure loads the network, the priors and the (optional) meta classifier and checks that they
fit together and publishes the class table (latched); activate subscribes ``~/input/image`` and
``~/input/image/compressed`` and enables the output (lifecycle) publishers. A worker thread
(:mod:`.worker`) processes only the newest frame: the subscription callback just stores it, so a
slow frame never blocks the executor. Unreadable images are counted skips with a throttled
warning (:mod:`.stats`); a frame whose stamp is not newer than the previous one's, stamped 0 or
without ``frame_id`` is processed and counted. The parameters are declared from one schema
(:mod:`.parameters`); every message is built by a pure function of :mod:`.messages`. See
``docs/node.md`` for topics and parameters.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode, State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import qos_policy_name_from_kind
from rclpy.signals import install_signal_handlers, SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.task import Future
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float32, String
from visualization_msgs.msg import MarkerArray

from metafusion_ros.ros.conversions import check_compressed, check_image, check_size, ImageError
from metafusion_ros.ros.executable import (forget_interrupt, ignore_signals, stop_on_signals,
                                           stopping)
from metafusion_ros.ros.inputs import input_qos, LATCHED, Message, ProcessingError
from metafusion_ros.ros.messages import (AlphaChoice, classes_message, descriptor, diagnostics,
                                         engine_values, frame_outputs, HEATMAP_TOPICS)
from metafusion_ros.ros.parameters import DEFAULTS, OPTIONAL_OUTPUTS, RUNTIME, SPECS
from metafusion_ros.ros.params import (mistyped_parameter, override_source, params_file_problem,
                                       unknown_parameters)
from metafusion_ros.ros.worker import Worker
from metafusion_ros.runtime.chains import startup_report
from metafusion_ros.runtime.engine import ConfigurationError, EngineConfig, FusionEngine, Processed
from metafusion_ros.runtime.memory import keep_frame_buffers
from metafusion_ros.runtime.stats import InputLog, problems, Stats

__all__ = ['MetaFusionNode', 'main']

NODE_NAME = 'metafusion_node'
SILENT_S = 3.0  # a matched image publisher this long without a frame turns diagnostics WARN
OUTPUTS = {'mask': Image, 'markers': MarkerArray, 'mask_bayes': Image, 'mask_ml': Image,
           'color_mask': Image, 'confidence': Image, 'segments': String,
           'processing_time_ms': Float32,
           'overlay': Image, **{f'heatmap/{name}': Image for name in HEATMAP_TOPICS}}
ENGINE_PARAMETERS = ('model_path', 'priors_path', 'meta_model_path', 'backend', 'precision',
                     'alpha', 'tau', 'fusion', 'target_class', 'resize_mode')


class MetaFusionNode(LifecycleNode):
    """MetaFusion on ``~/input/image``: fused mask, markers, on-demand outputs, diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.engine: FusionEngine | None = None
        for name, spec in SPECS.items():
            self.declare_parameter(name, spec.default, descriptor(spec))
        self._check_initial_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = Stats(self.p('diagnostics_window_s'))
        self.inputs = InputLog(self.stats, self.get_logger().warning,
                               lambda: self.p('warn_throttle_s'))
        self.worker = Worker(lambda: self.engine, self._publish, self.stats, self.inputs,
                             self.get_logger(), lambda: rclpy.ok(context=self.context))
        self._configure_failed = False
        self.finalized: Future = Future()  # done at the shutdown transition: main() returns
        self._subs: list[Subscription] = []
        self._pubs: dict[str, Publisher] = {}
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # A steady clock: with use_sim_time and no /clock, ROS time stands still at 0.
        self._diagnostics_timer = self.create_timer(
            self.p('diagnostics_period_s'), self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._same_name = 1  # nodes of this name in the domain, at the last diagnostics

    @property
    def state_name(self) -> str:
        """Return the lifecycle state's label, or ``configure_failed`` after a failed configure."""
        label = self._state_machine.current_state[1]  # rclpy has no public getter (Jazzy)
        return 'configure_failed' if self._configure_failed and label == 'unconfigured' else label

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
        result = self._on_set_parameters([self.get_parameter(name) for name in SPECS],
                                         initial=True)
        if not result.successful:
            raise ConfigurationError(f'{result.reason} {override_source(sys.argv)}')

    def _on_set_parameters(self, params: list[Parameter],
                           initial: bool = False) -> SetParametersResult:
        """Validate parameter changes (schema, run-time changeability), apply α / τ / fusion."""
        for param in params:
            spec = SPECS.get(param.name)
            problem = spec.problem(param.value) if spec else ''
            if not (problem or initial or param.name in RUNTIME or self.engine is None):
                problem = 'takes effect at configure time: deactivate and clean up the node first'
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

    def _warn_nearest(self, choice: AlphaChoice | None) -> None:
        """Warn once per α change when the meta bundle serves α with its nearest member."""
        if choice is not None and not choice.exact:
            self.get_logger().warning(
                f'alpha {choice.requested:g} is not on the meta classifier grid; using the '
                f'classifier fitted at alpha {choice.alpha:g}')

    # lifecycle --------------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load network, priors and meta model; fail with one clear line if they do not fit.

        The diagnostics period and window (configure-time parameters) apply from here on.
        """
        self._diagnostics_timer.timer_period_ns = round(self.p('diagnostics_period_s') * 1e9)
        self.stats.window_s = float(self.p('diagnostics_window_s'))
        config = EngineConfig(**{name: self.p(name) for name in ENGINE_PARAMETERS})
        try:
            self.engine = FusionEngine.load(config)
        except Exception as exc:  # noqa: B902 - any loader error must end in one clear line
            if stopping():  # a signal interrupted the loading (the library turned it into this)
                return TransitionCallbackReturn.FAILURE
            text = str(exc) if isinstance(exc, ConfigurationError) else \
                f'{type(exc).__name__}: {exc}'
            self.get_logger().error('configure failed: ' + ' '.join(
                line.strip() for line in text.splitlines() if line.strip()))
            self._configure_failed = True
            return TransitionCallbackReturn.FAILURE
        self._configure_failed = False
        self._pubs = {key: self.create_lifecycle_publisher(kind, f'~/output/{key}', 10)
                      for key, kind in OUTPUTS.items()}
        self._pubs['classes'] = self.create_publisher(String, '~/output/classes', LATCHED)
        self._pubs['classes'].publish(classes_message(self.engine.table))
        self.worker.warm_sizes = {self.engine.metafusion.priors.resolution}
        files = self.engine.config
        meta = 'none (keep all candidates)' if self.engine.meta is None else \
            files.meta_model_path
        network = self.engine.segmenter.model_path.name  # precision int8: the INT8 sibling
        runs = f', runs {network}' if not files.model_path.endswith(network) else ''
        self.get_logger().info(
            f'configured: model {files.model_path} ({config.backend}, {config.precision}{runs}), '
            f'priors {files.priors_path}, meta {meta}, target {self.engine.table.target_name!r}')
        warn, line = startup_report(self.engine.chain, files.model_path, config.precision,
                                    config.backend)
        (self.get_logger().warning if warn else self.get_logger().info)(line)
        self._warn_nearest(self.engine.meta_choice)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Subscribe the input topics, start the worker thread, enable the output publishers."""
        qos = input_qos(self.p('qos.reliability'), self.p('qos.depth'))
        events = SubscriptionEventCallbacks(
            message_lost=lambda info: self.inputs.lost(info.total_count_change),
            incompatible_qos=lambda info: self.inputs.incompatible_qos(
                qos_policy_name_from_kind(info.last_policy_kind)))
        self._subs = [
            self.create_subscription(Image, '~/input/image', self._on_image, qos,
                                     event_callbacks=events),
            self.create_subscription(CompressedImage, '~/input/image/compressed',
                                     self._on_compressed, qos, event_callbacks=events),
            self.create_subscription(CameraInfo, '~/input/camera_info', self._on_camera_info,
                                     qos)]
        result = super().on_activate(state)  # enables the lifecycle publishers
        self.worker.start()
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker (the frame in flight completes), then the outputs."""
        self.worker.stop()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Release the models and the output publishers."""
        classes = self._pubs.pop('classes', None)
        if classes is not None:
            self.destroy_publisher(classes)
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self.engine = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop the worker on shutdown from any state; the process then exits with 0."""
        self.worker.stop()
        self.finalized.set_result(True)  # main() stops spinning once this reply is sent
        return TransitionCallbackReturn.SUCCESS

    # input ------------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        """Check the layout (cheap, no pixel read) and store the frame for the worker."""
        self._receive(msg, check_image)

    def _on_compressed(self, msg: CompressedImage) -> None:
        """Check the format and payload signature (no decode) and store the frame."""
        self._receive(msg, check_compressed)

    def _receive(self, msg: Message, check: Callable[[Any], object]) -> None:
        """Count ``msg``, ``check`` it (cheap), check its header and hand it to the worker."""
        self.stats.add(frames_received=1)
        self.stats.event('received')
        try:
            check(msg)
            check_size(msg, self.p('max_input_pixels'))
        except ImageError as exc:
            self.inputs.skip(exc)
            return
        except Exception as exc:  # noqa: B902 - no message may kill the node
            self.inputs.skip(ProcessingError(f'{type(exc).__name__}: {exc}'))
            return
        self.inputs.check_header(msg.header)
        self.worker.put(msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Keep the newest camera info; the worker warms up at a size it has not seen yet.

        A size above ``max_input_pixels`` is ignored (counted, warned): no frame of it would be
        processed, and warming up at 40000x40000 alone would cost gigabytes.
        """
        pixels, limit = msg.width * msg.height, self.p('max_input_pixels')
        if pixels > limit:
            self.inputs.count_and_warn('camera_info_too_large', lambda total: (
                f'camera info {msg.width}x{msg.height} declares {pixels} pixels, more than '
                f'max_input_pixels = {limit}: ignored, no warm-up ({total} so far)'))
            return
        self.worker.camera_info = msg

    # output -------------------------------------------------------------------------------------
    def _wanted(self, key: str, topic: str | None = None) -> bool:
        """Return whether output ``key`` is switched on and has a subscriber."""
        return bool(self.p(f'outputs.{key}')) and \
            self._pubs[topic or key].get_subscription_count() > 0

    def _publish(self, msg: Message, rgb: np.ndarray, processed: Processed,
                 engine: FusionEngine, latency_ms: float) -> None:
        """Publish the fused mask, the markers, every wanted optional output and the latency."""
        build = frame_outputs(msg.header, rgb, processed, engine,
                              self.p('output_resolution') == 'camera',
                              float(self.p('marker_scale')), self.p('overlay_opacity'))
        computed = [key for key in OPTIONAL_OUTPUTS if key != 'heatmaps' and self._wanted(key)]
        for key in ['mask', *(['markers'] if self.p('outputs.markers') else []), *computed]:
            self._pubs[key].publish(build[key]())
        if any(self._wanted('heatmaps', f'heatmap/{n}') for n in HEATMAP_TOPICS):
            for name, image in zip(HEATMAP_TOPICS, build['heatmaps']()):
                self._pubs[f'heatmap/{name}'].publish(image)
            computed.append('heatmaps')
        self._pubs['processing_time_ms'].publish(Float32(data=float(latency_ms)))
        self.stats.add(**{f'computed_{key}': 1 for key in computed})

    # diagnostics ------------------------------------------------------------------------------
    def _same_name_notes(self) -> list[str]:
        """Return a note (and warn once) while other nodes in the domain have this node's name.

        Both would take the same topics: every output published twice, parameter and lifecycle
        services answered by either.
        """
        me = (self.get_name(), self.get_namespace())
        count = sum(1 for node in self.get_node_names_and_namespaces() if node == me)
        text = (f'{count} nodes named {self.get_fully_qualified_name()} in this ROS domain: '
                f'each publishes every output (two launches of one camera?)')
        if count > 1 and self._same_name <= 1:
            self.get_logger().warning(text)
        self._same_name = count
        return [text] if count > 1 else []

    def _publish_diagnostics(self) -> None:
        """Publish counters, rate, latency and model state on /diagnostics."""
        state, engine = self.state_name, self.engine
        values = self.stats.snapshot()
        values.update(frames_dropped=self.worker.frames.dropped, model_state=state,
                      camera_info='yes' if self.worker.camera_info is not None else 'no')
        if engine is not None:
            values.update(engine_values(engine), backend=self.p('backend'))
        notes = problems(values)
        publishers = sum(self.count_publishers(sub.topic_name) for sub in self._subs
                         if sub.msg_type is not CameraInfo)
        silent = self.stats.silent_for()
        if state == 'active' and publishers and silent > SILENT_S:
            notes.append(f'{publishers} image publisher(s) matched but no frame for '
                         f'{silent:.0f} s (large frames at best effort: see the DDS profile in '
                         f'docs/node.md)')
        if self.get_parameter('use_sim_time').value:
            values['clock'] = 'sim'
            if self.get_clock().now().nanoseconds == 0:  # sim time stands at 0 until /clock
                values['clock'] = 'sim, no /clock yet'
                notes.append('use_sim_time is true and no /clock has arrived')
        notes.extend(self._same_name_notes())
        self._diag_pub.publish(diagnostics(
            f'{self.get_fully_qualified_name()}: fusion',
            engine.config.model_path if engine is not None else self.p('model_path') or 'none',
            state, values, notes, self.get_clock().now().to_msg()))


def main(args: list[str] | None = None) -> int:
    """Run the node until a signal or lifecycle shutdown (exit 0, at any moment); 1: bad config.

    Until the executor spins, a signal raises ``KeyboardInterrupt`` here (:mod:`.executable`);
    rclpy's own handlers, which shut the context down and wake the executor, take over after.
    """
    stop_on_signals()
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 0
    finally:
        if stopping():
            forget_interrupt()


def _run(args: list[str] | None) -> int:
    """Check the command line, start ROS, configure and spin (see :func:`main`)."""
    argv = sys.argv if args is None else args
    problem = params_file_problem(argv) or mistyped_parameter(
        argv, DEFAULTS, NODE_NAME)
    if problem:
        print(f'{NODE_NAME}: error: {problem}', file=sys.stderr)
        return 2
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as exc:  # rclpy's RCLError: unparsable --ros-args
        print(f'{NODE_NAME}: error: bad command line ({exc})', file=sys.stderr)
        return 2
    keep_frame_buffers()  # frame after frame on the same pages (4K: 20 ms a frame)
    node = executor = None
    try:
        node = MetaFusionNode()
        if node.p('autostart'):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 0 if stopping() else 1
            node.trigger_activate()
        if stopping():  # a library swallowed the KeyboardInterrupt
            return 0
        install_signal_handlers(SignalHandlerOptions.ALL)  # they chain to stop_on_signals'
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin_until_future_complete(node.finalized)  # lifecycle shutdown ends it
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigurationError as exc:
        print(f'{NODE_NAME}: error: {exc}', file=sys.stderr)
        return 2
    except rclpy.exceptions.ParameterException as exc:  # a value outside its declared range
        print(f'{NODE_NAME}: error: {exc} {override_source(argv)}', file=sys.stderr)
        return 2
    except Exception:  # noqa: B902 - see below
        if rclpy.ok() and not stopping():
            raise
        # A signal shut the context down while the executor was taking a message; rclpy then
        # raises from inside the take (seen: RuntimeError from pybind11). That is our shutdown.
    finally:
        ignore_signals()
        if executor is not None:
            executor.shutdown()  # else its __del__ meets a guard condition the context destroyed
        if node is not None:
            node.worker.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
