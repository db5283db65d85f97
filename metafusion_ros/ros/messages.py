"""The node's messages, built by pure functions (no node state): markers, reports, diagnostics.

Each function takes what it shows (a header, a processed frame, the class table, the marker
scale, ...) and returns a message, so the node only decides when to publish and tests build the
messages without a node. :func:`descriptor` turns a parameter :class:`~.parameters.Spec` into
its ROS descriptor.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable, Mapping, Protocol, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from std_msgs.msg import ColorRGBA, Header, String
from visualization_msgs.msg import Marker, MarkerArray

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.ros.conversions import (float_to_image, mask_to_image,
                                            probability_to_mono8, rgb_to_image)
from metafusion_ros.ros.parameters import Spec
from metafusion_ros.ros.views import class_report, colour_labels, overlay
from metafusion_ros.runtime.engine import FusionEngine, Processed
from metafusion_ros.runtime.segmenter.preprocess import resize_maps

__all__ = ['AlphaChoice', 'descriptor', 'frame_outputs', 'markers', 'segment_report',
           'json_message', 'classes_message', 'engine_values', 'diagnostics', 'HEATMAP_TOPICS']

VERDICT_COLOUR = {True: (0.1, 0.9, 0.1), False: (0.95, 0.1, 0.1)}
HEATMAP_TOPICS = ('entropy', 'margin', 'variation')


class AlphaChoice(Protocol):
    """The meta bundle's member serving a requested α (``MetaBundle.select``)."""

    requested: float
    alpha: float
    exact: bool

    def describe(self) -> str:
        """Return ``exact`` or how the member was chosen."""


def descriptor(spec: Spec) -> ParameterDescriptor:
    """Return the ROS descriptor of ``spec``: description, range, choices, when it applies."""
    constraints = [f'one of: {", ".join(spec.choices)}'] if spec.choices else []
    constraints.append('run time' if spec.runtime else 'applied at configure time')
    result = ParameterDescriptor(description=spec.description,
                                 additional_constraints='; '.join(constraints))
    if spec.range is not None and isinstance(spec.default, int):
        low, high = (int(v) for v in spec.range)
        result.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    elif spec.range is not None:
        low, high = (float(v) for v in spec.range)
        result.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    return result


def frame_outputs(header: Header, rgb: np.ndarray, processed: Processed, engine: FusionEngine,
                  camera: bool, marker_scale: float, opacity: float
                  ) -> dict[str, Callable[[], Any]]:
    """Return a builder per output of one frame; calling it builds that output's message(s).

    Masks, the confidence and heatmaps at the camera's size (``camera``) or the network's;
    markers and segment reports in camera pixels; the overlay on the camera frame ``rgb``.
    ``heatmaps`` builds the list of the :data:`HEATMAP_TOPICS` images. The confidence (the fused
    label's probability, 0-255) is enlarged like the labels, so each pixel keeps its label's.
    """
    result, table, metafusion = processed.result, engine.table, engine.metafusion
    labels = processed.to_camera.labels if camera else np.asarray
    size = processed.camera_size
    fused_at_camera = functools.cache(lambda: processed.to_camera.labels(result.fused))
    fused = fused_at_camera if camera else lambda: result.fused  # enlarged once per frame
    return {
        'mask': lambda: mask_to_image(fused(), header),
        'markers': lambda: markers(header, processed, table.target_name, marker_scale),
        'mask_bayes': lambda: mask_to_image(labels(result.pred_bayes), header),
        'mask_ml': lambda: mask_to_image(labels(result.pred_ml), header),
        'color_mask': lambda: rgb_to_image(colour_labels(fused(), table), header),
        'confidence': lambda: mask_to_image(
            labels(probability_to_mono8(engine.confidence(processed))), header),
        'segments': lambda: json_message(segment_report(
            header, processed, table.target_name, metafusion.alpha, metafusion.tau)),
        'overlay': lambda: rgb_to_image(overlay(rgb, fused_at_camera(), table, opacity), header),
        'heatmaps': lambda: [float_to_image(resize_maps(heat, size) if camera else heat, header)
                             for heat in engine.heatmaps(processed)]}


def markers(header: Header, processed: Processed, target: str, scale: float) -> MarkerArray:
    """Return DELETEALL plus a box and a score label per candidate (green keep, red drop).

    Boxes are in camera pixels times ``scale`` (metres per pixel); ``target`` names the class.
    """
    result = processed.result
    found = [Marker(header=header, action=Marker.DELETEALL)]
    boxes = processed.to_camera.boxes(result.candidates.boxes)
    for box, cid, score, keep in zip(boxes, result.candidates.ids, result.scores, result.keep):
        r0, c0, r1, c1 = (float(v) * scale for v in box)
        red, green, blue = VERDICT_COLOUR[bool(keep)]
        colour = ColorRGBA(r=red, g=green, b=blue, a=1.0)
        outline = Marker(header=header, ns='candidates', id=int(cid), type=Marker.LINE_STRIP,
                         action=Marker.ADD, color=colour)
        outline.pose.orientation.w = 1.0
        outline.scale.x = 2 * scale
        outline.points = [Point(x=c, y=r) for r, c in
                          ((r0, c0), (r0, c1), (r1, c1), (r1, c0), (r0, c0))]
        label = Marker(header=header, ns='scores', id=int(cid), type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, color=colour,
                       text=f'{target} {score:.2f} {"keep" if keep else "drop"}')
        label.pose.position = Point(x=c0, y=r0 - 4 * scale)
        label.pose.orientation.w = 1.0
        label.scale.z = 10 * scale
        found += [outline, label]
    return MarkerArray(markers=found)


def segment_report(header: Header, processed: Processed, target: str, alpha: float,
                   tau: float) -> dict[str, Any]:
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
        'frame_id': header.frame_id, 'target': target, 'alpha': alpha, 'tau': tau,
        'segments': [
            {'id': int(cid), 'box': [int(v) for v in box], 'area': int(size),
             'score': float(score), 'verdict': 'keep' if keep else 'drop'}
            for cid, box, size, score, keep in zip(
                candidates.ids, boxes, areas, result.scores, result.keep)],
    }


def json_message(data: Any) -> String:
    """Return ``data`` as a JSON ``std_msgs/String``."""
    return String(data=json.dumps(data))


def classes_message(table: ClassTable) -> String:
    """Return the class table message (ids, names, colours, merges) of ``~/output/classes``."""
    return json_message(class_report(table))


def engine_values(engine: FusionEngine) -> dict[str, Any]:
    """Return the diagnostics values of a configured engine: α, τ, fusion, target, meta, chain."""
    metafusion = engine.metafusion
    values: dict[str, Any] = dict(
        alpha=metafusion.alpha, tau=metafusion.tau, fusion=metafusion.fusion,
        target=engine.table.target_name,
        meta_model='loaded' if engine.meta is not None else 'none',
        chain=engine.chain.name if engine.chain is not None else 'none')
    choice: AlphaChoice | None = engine.meta_choice
    if choice is not None:
        values.update(meta_alpha=f'{choice.alpha:g}', meta_alpha_choice=choice.describe())
    return values


def diagnostics(name: str, hardware_id: str, state: str, values: Mapping[str, Any],
                notes: Sequence[str], stamp: Any) -> DiagnosticArray:
    """Return the node's diagnostics: OK, WARN with ``notes``, ERROR when configure failed."""
    level, message = DiagnosticStatus.OK, state
    if state == 'configure_failed':
        level, message = DiagnosticStatus.ERROR, 'configure failed'
    elif notes:
        level, message = DiagnosticStatus.WARN, '; '.join([state, *notes])
    status = DiagnosticStatus(
        level=level, name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in sorted(values.items())])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
