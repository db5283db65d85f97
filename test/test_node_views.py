"""The overlay and the class table without ROS: blend arithmetic, scaling, merged classes."""
import numpy as np

from metafusion_ros.core.classes import cityscapes_table
import fixtures
from metafusion_ros.ros.views import class_report, colour_labels, overlay

TABLE = cityscapes_table()


def test_overlay_blends_class_colours_at_the_opacity():
    """Opacity 0 gives the frame, 1 the colours, 0.5 their mean (to within rounding)."""
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    labels = np.arange(48, dtype=np.uint8).reshape(6, 8) % TABLE.num_classes
    colours = colour_labels(labels, TABLE)
    np.testing.assert_array_equal(overlay(rgb, labels, TABLE, 0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, labels, TABLE, 1.0), colours)
    half = overlay(rgb, labels, TABLE, 0.5).astype(int)
    assert np.abs(half - (rgb.astype(int) + colours) / 2).max() <= 1


def test_overlay_scales_a_smaller_label_map_to_the_frame():
    """A 2x2 label map over a 4x6 frame colours each quarter with its label (nearest)."""
    rgb = np.zeros((4, 6, 3), np.uint8)
    labels = np.array([[0, 1], [2, 11]], np.uint8)
    out = overlay(rgb, labels, TABLE, 1.0)
    assert tuple(out[0, 0]) == TABLE.palette[0] and tuple(out[0, 5]) == TABLE.palette[1]
    assert tuple(out[3, 0]) == TABLE.palette[2] and tuple(out[3, 5]) == TABLE.palette[11]


def test_overlay_scales_labels_by_pixel_centres_as_the_published_mask():
    """2x3 labels over a 5x7 frame: each frame pixel takes the label under its centre.

    The same rule as the camera-size masks, so the overlay lines up with ``~/output/mask``
    (row 2 of 5 samples source row 1 by its centre, row 0 by ``r * h // H``).
    """
    labels = np.array([[0, 1, 2], [8, 11, 13]], np.uint8)
    out = overlay(np.zeros((5, 7, 3), np.uint8), labels, TABLE, 1.0)
    rows = ((np.arange(5) + 0.5) * 2 / 5).astype(int)
    cols = ((np.arange(7) + 0.5) * 3 / 7).astype(int)
    np.testing.assert_array_equal(out, colour_labels(labels[rows][:, cols], TABLE))


def test_class_report_says_rider_never_appears_in_the_mask():
    """Cityscapes: 19 classes with colours and categories; rider merged into person."""
    report = class_report(TABLE)
    classes = {c['name']: c for c in report['classes']}
    assert len(classes) == 19 and report['target']['name'] == 'person'
    assert classes['rider']['in_mask'] is False
    assert classes['rider']['merged_into'] == {'id': TABLE.index('person'), 'name': 'person'}
    assert classes['person']['in_mask'] and classes['person']['category'] == 'human'
    assert classes['road']['colour'] == list(TABLE.palette[0])
    assert 'rider -> person' in report['note']


def test_class_report_of_a_table_without_merges():
    """The fixture table has no merged class: every class may appear."""
    report = class_report(fixtures.tiny_table())
    assert all(c['in_mask'] and c['merged_into'] is None for c in report['classes'])
    assert report['note'] == 'no merged classes'


def test_messages_are_built_without_a_node(tmp_path):
    """Markers, segment report and every output of a frame come from pure functions."""
    from std_msgs.msg import Header

    from metafusion_ros.runtime.engine import EngineConfig, FusionEngine
    from metafusion_ros.ros.messages import frame_outputs, HEATMAP_TOPICS, markers, segment_report

    priors = fixtures.write_priors(tmp_path / 'priors.npz')
    engine = FusionEngine.load(EngineConfig(
        model_path=str(fixtures.write_model(tmp_path / 'model.onnx')), priors_path=str(priors)))
    rgb = fixtures.scene()
    processed = engine.process(rgb)
    header = Header(frame_id='camera')
    count = processed.result.candidates.count
    array = markers(header, processed, 'person', 0.5)
    assert len(array.markers) == 1 + 2 * count and array.markers[1].scale.x == 1.0
    report = segment_report(header, processed, 'person', 1.0, 0.5)
    assert report['frame_id'] == 'camera' and len(report['segments']) == count
    build = frame_outputs(header, rgb, processed, engine, True, 0.01, 0.5)
    mask = build['mask']()
    assert (mask.height, mask.width) == rgb.shape[:2] and mask.header.frame_id == 'camera'
    assert len(build['heatmaps']()) == len(HEATMAP_TOPICS)
    assert build['overlay']().encoding == 'rgb8'
