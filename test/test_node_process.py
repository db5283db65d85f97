"""The node as a separate process over real DDS: outputs, markers, switches, α/τ, bad input.

One node (tiny deterministic network, flat priors, a small meta classifier) serves the first
group of tests in file order; the last of them stops it with SIGTERM. The refuse mode, SIGINT
and the lifecycle use their own short-lived processes. Start-up failures (bad files and values)
are in test_robust_files.py.
"""
import itertools
import json
import signal

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from ros_images import image_to_float
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, String
from test_node_harness import (accounted, BURST_SCENE, diagnostics_values, domain_for,
                               image_msg, MALFORMED, node_output, Peer, ros_env, start_node,
                               stop_node, with_stamp, write_files)
from visualization_msgs.msg import Marker, MarkerArray

import fixtures
from metafusion_ros.ros.conversions import image_to_mask, probability_to_mono8
from metafusion_ros.runtime.engine import EngineConfig, FusionEngine

DOMAIN = domain_for(71)
NAME = 'fusion'
OUT = f'/{NAME}/output'
SCENE = fixtures.scene()
NO_CANDIDATES = fixtures.scene({(4, 4): fixtures.RED})


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Write the tiny files, start the node and a tester; yield them; stop both."""
    folder = tmp_path_factory.mktemp('node')
    files = write_files(folder)
    env = ros_env(DOMAIN, folder / 'log')
    proc = start_node(env, {'model_path': files['model'], 'priors_path': files['priors'],
                            'meta_model_path': files['meta'], 'tau': 0.5,
                            'warn_throttle_s': 0.0})
    tester = Peer(DOMAIN)
    for topic, kind in (('mask', Image), ('markers', MarkerArray), ('mask_bayes', Image),
                        ('mask_ml', Image), ('processing_time_ms', Float32)):
        tester.subscribe(f'{OUT}/{topic}', kind)
    tester.subscribe('/diagnostics', DiagnosticArray)
    yield {'proc': proc, 'tester': tester, 'files': files, 'env': env, 'folder': folder}
    tester.close()
    stop_node(proc, signal.SIGKILL)


def send(setup, image, stamp, encoding='rgb8', topic=f'/{NAME}/input/image', wait=True):
    """Publish ``image`` until the fused mask with ``stamp`` arrives; return that mask."""
    tester = setup['tester']
    masks = tester.received[f'{OUT}/mask']
    msg = image_msg(image, stamp, encoding=encoding)
    if not wait:
        tester.publisher(topic).publish(msg)
        return None
    assert tester.spin_until(lambda: with_stamp(masks, stamp),
                             every=lambda: tester.publisher(topic).publish(msg)), \
        f'no mask for stamp {stamp}; node alive: {setup["proc"].poll() is None}'
    return with_stamp(masks, stamp)[0]


def latest(setup, topic, stamp, timeout=10.0):
    """Return the first message on ``topic`` with ``stamp`` (waiting for it)."""
    tester = setup['tester']
    messages = tester.received[f'{OUT}/{topic}']
    assert tester.spin_until(lambda: with_stamp(messages, stamp), timeout=timeout), topic
    return with_stamp(messages, stamp)[0]


def set_params(setup, **values):
    """Set node parameters; return the SetParametersResult list."""
    tester = setup['tester']
    client = AsyncParameterClient(tester.node, NAME)
    assert client.wait_for_services(timeout_sec=30.0)
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    assert tester.spin_until(future.done, timeout=30.0)
    return future.result().results


def diagnostics(setup, condition=lambda values: True):
    """Return the node's newest diagnostics values once ``condition`` holds."""
    tester = setup['tester']
    messages = tester.received['/diagnostics']
    assert tester.spin_until(lambda: condition(diagnostics_values(messages, f'/{NAME}')),
                             timeout=20.0), json.dumps(diagnostics_values(messages, f"/{NAME}"))
    return diagnostics_values(messages, f'/{NAME}')


def test_mask_matches_input_header_size_and_classes(setup):
    """The fused mask is mono8 at the input size, header unchanged, dim red fused as person."""
    msg = send(setup, SCENE, 101)
    assert (msg.height, msg.width, msg.encoding) == (48, 64, 'mono8')
    assert msg.header.frame_id == 'camera'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (101, 7)
    fused = image_to_mask(msg)
    assert fused[4:12, 4:12].min() == 1 and fused[4:12, 40:48].min() == 2
    assert fused[30:38, 8:16].min() == 1 and fused[30:38, 44:52].min() == 1
    assert np.count_nonzero(fused == 0) == 48 * 64 - 4 * 64
    bayes = image_to_mask(latest(setup, 'mask_bayes', 101))
    ml = image_to_mask(latest(setup, 'mask_ml', 101))
    assert bayes[30:38, 8:16].max() == 0 and ml[30:38, 8:16].min() == 1


@pytest.mark.parametrize('encoding,stamp', [('bgr8', 201), ('rgba8', 202), ('bgra8', 203)])
def test_colour_encodings_give_the_same_mask(setup, encoding, stamp):
    """bgr8, rgba8 and bgra8 frames of the same scene give the rgb8 mask."""
    image = {'bgr8': SCENE,  # image_msg encodes RGB as BGR
             'rgba8': np.dstack([SCENE, np.full(SCENE.shape[:2], 255, np.uint8)]),
             'bgra8': np.dstack([SCENE[:, :, ::-1], np.zeros(SCENE.shape[:2], np.uint8)])}
    reference = image_to_mask(send(setup, SCENE, stamp + 100))
    mask = image_to_mask(send(setup, image[encoding], stamp, encoding=encoding))
    np.testing.assert_array_equal(mask, reference)


def test_mono8_input_processed_at_its_size(setup):
    """A mono8 frame is read as grey RGB and yields a mask of its size."""
    mask = image_to_mask(send(setup, SCENE[:, :, 0], 301, encoding='mono8'))
    assert mask.shape == (48, 64)


def test_markers_flag_candidates_and_are_cleared(setup):
    """Each candidate gets a box and a score label; the next frame's DELETEALL clears them."""
    tester = setup['tester']
    send(setup, SCENE, 401)
    markers = latest(setup, 'markers', 401).markers
    assert markers[0].action == Marker.DELETEALL
    boxes = [m for m in markers if m.ns == 'candidates']
    labels = [m for m in markers if m.ns == 'scores']
    assert len(boxes) == len(labels) == 2
    assert all(m.type == Marker.LINE_STRIP and m.color.g > 0.5 for m in boxes)
    assert all(m.text.startswith('person 0.') and m.text.endswith('keep') for m in labels)
    xs = sorted({round(p.x / 0.01) for p in boxes[0].points})
    assert xs == [8, 16]
    assert all(m.header.stamp.sec == 401 for m in markers)
    send(setup, NO_CANDIDATES, 402)
    cleared = latest(setup, 'markers', 402).markers
    assert [m.action for m in cleared] == [Marker.DELETEALL]
    assert tester.received[f'{OUT}/processing_time_ms']


def test_segment_report_lists_candidates(setup):
    """~/output/segments is JSON with id, box, area, score and verdict per candidate."""
    tester = setup['tester']
    reports = tester.subscribe(f'{OUT}/segments', String)
    assert tester.spin_until(lambda: tester.node.count_publishers(f'{OUT}/segments') > 0)
    send(setup, SCENE, 501)
    assert tester.spin_until(lambda: any(json.loads(r.data)['stamp']['sec'] == 501
                                         for r in reports), timeout=10.0)
    report = next(json.loads(r.data) for r in reports if json.loads(r.data)['stamp']['sec'] == 501)
    segments = report['segments']
    assert [s['box'] for s in segments] == [[30, 8, 38, 16], [30, 44, 38, 52]]
    assert all(s['area'] == 64 and s['verdict'] == 'keep' and 0.5 <= s['score'] <= 1
               for s in segments)
    tester.unsubscribe(f'{OUT}/segments')


def test_camera_twice_the_network_size(setup):
    """A 96x128 camera (network 48x64): outputs at the camera's size, boxes in its pixels.

    Masks and heatmaps are the engine's network-size result enlarged; with output_resolution
    network the masks stay at the network's size.
    """
    tester, files = setup['tester'], setup['files']
    engine = FusionEngine.load(EngineConfig(str(files['model']), str(files['priors']),
                                            str(files['meta']), tau=0.5))
    camera = np.repeat(np.repeat(SCENE, 2, axis=0), 2, axis=1)
    expected = engine.process(camera)
    result, to_camera = expected.result, expected.to_camera
    assert result.fused.shape == (48, 64) and result.candidates.count == 2
    computed = int(diagnostics(setup).get('computed_heatmaps', 0))
    reports = tester.subscribe(f'{OUT}/segments', String)
    tester.subscribe(f'{OUT}/heatmap/entropy', Image)
    assert tester.spin_until(lambda: tester.node.count_publishers(f'{OUT}/segments') > 0)
    fused = image_to_mask(send(setup, camera, 551))
    np.testing.assert_array_equal(fused, to_camera.labels(result.fused))
    assert fused[62:74, 18:30].min() == 1  # a dim red block, fused as person
    assert image_to_mask(latest(setup, 'mask_bayes', 551)).shape == (96, 128)
    assert image_to_float(latest(setup, 'heatmap/entropy', 551)).shape == (96, 128)
    assert tester.spin_until(lambda: any(json.loads(r.data)['stamp']['sec'] == 551
                                         for r in reports), timeout=10.0)
    report = next(json.loads(r.data) for r in reports if json.loads(r.data)['stamp']['sec'] == 551)
    boxes = to_camera.boxes(result.candidates.boxes)
    assert [s['box'] for s in report['segments']] == boxes.tolist()
    assert np.all(boxes == 2 * result.candidates.boxes)  # 2x: every pixel became 2x2
    assert [s['area'] for s in report['segments']] == (4 * result.candidates.sizes).tolist()
    outline = latest(setup, 'markers', 551).markers[1]
    assert sorted({round(p.x / 0.01) for p in outline.points}) == boxes[0, [1, 3]].tolist()
    assert set_params(setup, output_resolution='network')[0].successful
    assert not set_params(setup, output_resolution='full')[0].successful
    np.testing.assert_array_equal(image_to_mask(send(setup, camera, 553)), result.fused)
    assert image_to_float(latest(setup, 'heatmap/entropy', 553)).shape == (48, 64)
    assert set_params(setup, output_resolution='camera')[0].successful
    tester.unsubscribe(f'{OUT}/segments')
    tester.unsubscribe(f'{OUT}/heatmap/entropy')
    diagnostics(setup, lambda v: int(v.get('computed_heatmaps', 0)) >= computed + 2)


def test_confidence_is_the_fused_labels_probability_at_the_masks_size(setup):
    """``~/output/confidence``: mono8 ``round(255 p)`` of the fused label, lazy, sized as the mask.

    p is the engine's confidence (the Bayes label's softmax probability, the ML probability of
    c where a segment was fused; core test: test_core_units.py), enlarged like the labels; a
    frame above ``max_input_pixels`` is a counted skip without a confidence image.
    """
    tester, files = setup['tester'], setup['files']
    engine = FusionEngine.load(EngineConfig(str(files['model']), str(files['priors']),
                                            str(files['meta']), tau=0.5))
    camera = np.repeat(np.repeat(SCENE, 2, axis=0), 2, axis=1)
    processed = engine.process(camera)
    at_network = probability_to_mono8(engine.confidence(processed))
    softmax = processed.output.probs
    block = (slice(31, 37), slice(9, 15))  # inside a dim red block: person by fusion alone
    assert (processed.result.fused[block] == 1).all() and (processed.result.pred_bayes[block] == 0
                                                           ).all()
    assert (at_network[block] > np.rint(255 * softmax[block][..., 1])).all()  # ML's, not softmax's
    before = int(diagnostics(setup).get('computed_confidence', 0))
    send(setup, camera, 571)  # nobody subscribed: not computed
    assert int(diagnostics(setup, lambda v: int(v.get('frames_processed', 0)) > 0).get(
        'computed_confidence', 0)) == before
    confidence = tester.subscribe(f'{OUT}/confidence', Image)
    assert tester.spin_until(lambda: tester.node.count_subscribers(f'{OUT}/confidence') > 0)
    mask = send(setup, camera, 572)
    image = latest(setup, 'confidence', 572)
    assert image.encoding == 'mono8' and image.header == mask.header
    np.testing.assert_array_equal(image_to_mask(image), processed.to_camera.labels(at_network))
    assert set_params(setup, output_resolution='network')[0].successful
    send(setup, camera, 573)
    np.testing.assert_array_equal(image_to_mask(latest(setup, 'confidence', 573)), at_network)
    assert set_params(setup, output_resolution='camera', max_input_pixels=SCENE.size // 3)[
        0].successful
    skipped = int(diagnostics(setup).get('skipped_too_large', 0))
    send(setup, camera, 574, wait=False)
    diagnostics(setup, lambda v: int(v.get('skipped_too_large', 0)) == skipped + 1)
    assert set_params(setup, max_input_pixels=1 << 24)[0].successful
    send(setup, SCENE, 575)
    assert latest(setup, 'confidence', 575).height == SCENE.shape[0]
    assert not with_stamp(confidence, 574)
    tester.unsubscribe(f'{OUT}/confidence')
    diagnostics(setup, lambda v: int(v.get('computed_confidence', 0)) == before + 3)


def test_disabled_or_unsubscribed_outputs_are_not_computed(setup):
    """Heatmaps switched off are neither published nor computed; unsubscribed outputs neither."""
    tester = setup['tester']
    entropy = tester.subscribe(f'{OUT}/heatmap/entropy', Image)
    assert set_params(setup, **{'outputs.heatmaps': False})[0].successful
    before = diagnostics(setup).get('computed_heatmaps', '0')
    send(setup, SCENE, 601)
    tester.spin_for(0.5)
    assert not with_stamp(entropy, 601)
    values = diagnostics(setup, lambda v: int(v.get('frames_processed', 0)) > 0)
    assert values.get('computed_heatmaps', '0') == before
    assert 'computed_color_mask' not in values
    assert set_params(setup, **{'outputs.heatmaps': True})[0].successful
    send(setup, SCENE, 602)
    heat = image_to_float(latest(setup, 'heatmap/entropy', 602))
    assert heat.shape == (48, 64) and np.isfinite(heat).all()
    assert 0 <= heat.min() and heat.max() <= 1 and heat[4:12, 4:12].max() < heat[0, 0]
    tester.unsubscribe(f'{OUT}/heatmap/entropy')


def test_alpha_and_tau_change_at_run_time(setup):
    """α = 0.5 removes the candidates; τ = 0.9 drops them (red markers, Bayes in the mask)."""
    assert set_params(setup, alpha=0.5)[0].successful
    fused = image_to_mask(send(setup, SCENE, 701))
    assert fused[30:38, 8:16].max() == 0
    assert [m.action for m in latest(setup, 'markers', 701).markers] == [Marker.DELETEALL]
    assert all(r.successful for r in set_params(setup, alpha=1.0, tau=0.9))
    fused = image_to_mask(send(setup, SCENE, 702))
    assert fused[30:38, 8:16].max() == 0
    labels = [m for m in latest(setup, 'markers', 702).markers if m.ns == 'scores']
    assert len(labels) == 2 and all(m.text.endswith('drop') and m.color.r > 0.5 for m in labels)
    assert set_params(setup, tau=0.5)[0].successful
    assert image_to_mask(send(setup, SCENE, 703))[30:38, 8:16].min() == 1


def test_off_grid_alpha_uses_the_nearest_meta_member(setup):
    """α = 0.8: the bundle's 0.9 member, said in diagnostics and by one WARN; α = 0.3 refused."""
    assert set_params(setup, alpha=0.8)[0].successful
    send(setup, SCENE, 851)
    values = diagnostics(setup, lambda v: v.get('alpha') == '0.8')
    assert values['meta_alpha'] == '0.9'
    assert values['meta_alpha_choice'] == 'nearest grid point to alpha 0.8'
    warning = 'alpha 0.8 is not on the meta classifier grid; using the classifier fitted at ' \
        'alpha 0.9'
    assert setup['tester'].spin_until(lambda: warning in node_output(setup['proc']), timeout=10.0)
    assert node_output(setup['proc']).count(warning) == 1
    result = set_params(setup, alpha=0.3)[0]
    assert not result.successful and 'no classifier for alpha 0.3' in result.reason
    assert set_params(setup, alpha=1.0)[0].successful
    send(setup, SCENE, 852)
    values = diagnostics(setup, lambda v: v.get('alpha') == '1.0')
    assert (values['meta_alpha'], values['meta_alpha_choice']) == ('1', 'exact')
    assert node_output(setup['proc']).count(warning) == 1


def test_fusion_reading_changes_at_run_time(setup):
    """``fusion: literal`` (and ``support``) applies from the next frame, shows in /diagnostics."""
    assert set_params(setup, fusion='literal')[0].successful
    send(setup, SCENE, 711)
    assert diagnostics(setup, lambda v: v.get('fusion') == 'literal')['fusion'] == 'literal'
    assert set_params(setup, fusion='support')[0].successful  # reads the softmax: a frame runs
    send(setup, SCENE, 713)
    assert diagnostics(setup, lambda v: v.get('fusion') == 'support')['fusion'] == 'support'
    assert set_params(setup, fusion='reference')[0].successful
    send(setup, SCENE, 712)
    assert diagnostics(setup, lambda v: v.get('fusion') == 'reference')


@pytest.mark.parametrize('name,value,reason', [
    ('alpha', 2.0, ''), ('tau', -0.1, ''), ('backend', 'cuda', 'onnxruntime'),
    ('resize_mode', 'stretch', 'refuse'), ('model_path', '/tmp/other.onnx', 'configure'),
    ('qos.depth', 0, ''), ('fusion', 'both', 'reference, literal'),
])
def test_bad_parameter_values_rejected_with_a_reason(setup, name, value, reason):
    """Out-of-range, unknown or not-at-run-time values are refused, naming why."""
    result = set_params(setup, **{name: value})[0]
    assert not result.successful and result.reason
    assert reason in result.reason


def test_bad_input_is_a_counted_skip_and_the_node_stays_alive(setup):
    """Every kind of unreadable image is counted; the next valid frame is processed."""
    tester = setup['tester']
    pub = tester.publisher(f'/{NAME}/input/image')
    bad = list(MALFORMED.values()) + [
        Image(encoding=encoding, height=1, width=1, step=4, data=bytes(4))
        for encoding in ('yuv422', 'bayer_rggb8', '32FC1', 'mono16')]
    diag = tester.received['/diagnostics']
    # One message at a time: a burst of all 9 overruns the input's depth of 5 on a loaded host,
    # where the first kinds of every burst were then always the ones replaced.
    turns = itertools.cycle(bad)
    assert tester.spin_until(
        lambda: all(int(diagnostics_values(diag, f'/{NAME}').get(f'skipped_{r}', 0)) >= 3
                    for r in MALFORMED),
        every=lambda: pub.publish(next(turns)), period=0.05), \
        json.dumps(diagnostics_values(diag, f'/{NAME}'))
    values = diagnostics(setup)
    assert int(values['skipped_unsupported_encoding']) >= 3
    fused = image_to_mask(send(setup, SCENE, 801))
    assert fused[30:38, 8:16].min() == 1
    assert setup['proc'].poll() is None


def test_other_resolution_is_resized_by_default(setup):
    """A frame twice the priors' size is processed at its own size (priors resized)."""
    big = np.repeat(np.repeat(SCENE, 2, axis=0), 2, axis=1)
    mask = image_to_mask(send(setup, big, 901))
    assert mask.shape == (96, 128)
    assert mask[64:72, 20:28].min() == 1


def test_burst_drops_older_frames_and_accounts_for_every_frame(setup):
    """A burst of large frames is thinned to the newest (counted drops); nothing goes missing."""
    tester = setup['tester']
    send(setup, SCENE, 1100)  # the node is up and matched
    values = diagnostics(setup, accounted)
    before, received = int(values.get('frames_dropped', 0)), int(values['frames_received'])
    pub = tester.publisher(f'/{NAME}/input/image')
    for stamp in range(1101, 1121):
        pub.publish(image_msg(BURST_SCENE, stamp))
    last = image_msg(BURST_SCENE, 1120)
    diag = tester.received['/diagnostics']
    assert tester.spin_until(  # best effort may lose the last frame of the burst: resend it
        lambda: with_stamp(tester.received[f'{OUT}/mask'], 1120),
        every=lambda: pub.publish(last), period=2.0)
    assert tester.spin_until(lambda: accounted(diagnostics_values(diag, f'/{NAME}')) and int(
        diagnostics_values(diag, f'/{NAME}')['frames_received']) > received + 1)
    assert int(diagnostics_values(diag, f'/{NAME}')['frames_dropped']) > before, \
        json.dumps(diagnostics_values(diag, f'/{NAME}'))
    mask = image_to_mask(with_stamp(tester.received[f'{OUT}/mask'], 1120)[0])
    assert mask.shape == BURST_SCENE.shape[:2]


def test_diagnostics_report_rate_latency_and_counters(setup):
    """/diagnostics carries frame counts, latency, candidates, FN recovered and FP dropped."""
    values = diagnostics(setup, lambda v: 'latency_ms_p50' in v and
                         int(v['frames_processed']) >= 10)
    assert int(values['candidates_kept']) >= 2 and int(values['candidates_dropped']) >= 2
    assert values['model_state'] == 'active' and values['meta_model'] == 'loaded'
    assert float(values['latency_ms_p50']) > 0 and 'frames_dropped' in values


def _statuses(setup, name: str) -> list:
    """Return every /diagnostics status of node ``name`` received so far."""
    return [status for array in setup['tester'].received['/diagnostics']
            for status in array.status if status.name.startswith(f'{name}: ')]


def test_second_node_of_the_same_name_is_a_warning(setup):
    """Another /fusion in the domain: a WARN in the log and in diagnostics, gone with it."""
    tester, proc = setup['tester'], setup['proc']
    note = f'2 nodes named /{NAME} in this ROS domain'
    twin = start_node(setup['env'], {'model_path': setup['files']['model'],
                                     'priors_path': setup['files']['priors'],
                                     'autostart': False}, name=NAME)
    try:
        assert tester.spin_until(lambda: any(
            note in s.message and s.level == DiagnosticStatus.WARN and
            ('model_state', 'active') in {(kv.key, kv.value) for kv in s.values}
            for s in _statuses(setup, f'/{NAME}')), timeout=60.0), node_output(proc)[-2000:]
        assert note in node_output(proc) and '[WARN]' in node_output(proc)
    finally:
        code, output = stop_node(twin, signal.SIGTERM)
    assert code == 0, output
    assert tester.spin_until(lambda: note not in _statuses(setup, f'/{NAME}')[-1].message,
                             timeout=60.0)


def test_sigterm_exits_cleanly(setup):
    """SIGTERM ends the node with exit code 0 and no traceback."""
    code, output = stop_node(setup['proc'], signal.SIGTERM)
    assert code == 0, output
    assert 'Traceback' not in output


def test_refuse_mode_namespace_remap_and_sigint(setup):
    """resize_mode=refuse skips other resolutions (counted); a remapped instance; SIGINT -> 0."""
    files, tester = setup['files'], setup['tester']
    proc = start_node(setup['env'], {'model_path': files['model'],
                                     'priors_path': files['priors'], 'resize_mode': 'refuse'},
                      name='cam2', remap={'__ns': '/front', '~/input/image': '/front/image_raw'})
    masks = tester.subscribe('/front/cam2/output/mask', Image)
    diag = tester.received['/diagnostics']
    try:
        big = image_msg(np.repeat(SCENE, 2, axis=0), 1001)
        assert tester.spin_until(
            lambda: 'skipped_resolution_mismatch' in diagnostics_values(diag, '/front/cam2'),
            every=lambda: tester.publisher('/front/image_raw').publish(big))
        good = image_msg(SCENE, 1002)
        assert tester.spin_until(lambda: with_stamp(masks, 1002),
                                 every=lambda: tester.publisher('/front/image_raw').publish(good))
        assert not with_stamp(masks, 1001)
    finally:
        code, output = stop_node(proc, signal.SIGINT)
    assert code == 0, output
    assert 'Traceback' not in output


def _change_state(tester, node, transition):
    """Call ``node``'s lifecycle change_state service; return whether it succeeded."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = tester.node.create_client(ChangeState, f'{node}/change_state')
    assert client.wait_for_service(timeout_sec=30.0)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
    assert tester.spin_until(future.done, timeout=60.0)
    tester.node.destroy_client(client)
    return future.result().success


def test_lifecycle_transitions_without_autostart(setup):
    """Without autostart: unconfigured until configure + activate; cleanup frees file params."""
    from lifecycle_msgs.msg import Transition

    files, tester = setup['files'], setup['tester']
    proc = start_node(setup['env'], {'model_path': files['model'], 'priors_path': files['priors'],
                                     'autostart': False}, name='managed')
    masks = tester.subscribe('/managed/output/mask', Image)
    diag = tester.received['/diagnostics']
    try:
        assert tester.spin_until(lambda: diagnostics_values(diag, '/managed').get(
            'model_state') == 'unconfigured')
        assert _change_state(tester, '/managed', Transition.TRANSITION_CONFIGURE)
        assert _change_state(tester, '/managed', Transition.TRANSITION_ACTIVATE)
        msg = image_msg(SCENE, 1201)
        assert tester.spin_until(lambda: with_stamp(masks, 1201), every=lambda: tester.publisher(
            '/managed/input/image').publish(msg))
        client = AsyncParameterClient(tester.node, 'managed')
        assert client.wait_for_services(timeout_sec=30.0)
        for transition, allowed in ((Transition.TRANSITION_DEACTIVATE, False),
                                    (Transition.TRANSITION_CLEANUP, True)):
            assert _change_state(tester, '/managed', transition)
            future = client.set_parameters([Parameter('model_path', value='/x/other.onnx')])
            assert tester.spin_until(future.done, timeout=30.0)
            assert future.result().results[0].successful is allowed
    finally:
        code, output = stop_node(proc, signal.SIGTERM)
    assert code == 0 and 'Traceback' not in output, output


def test_diagnostics_period_and_window_take_effect_at_configure(setup):
    """diagnostics_period_s / _window_s are refused while configured and apply at configure."""
    from lifecycle_msgs.msg import Transition

    tester = setup['tester']
    proc = start_node(setup['env'], {'model_path': setup['files']['model'],
                                     'priors_path': setup['files']['priors'],
                                     'autostart': False}, name='periodic')
    client = AsyncParameterClient(tester.node, 'periodic')

    def rate_and_window() -> tuple[float, float]:
        """Count the node's statuses over 3 s; return them per second and the newest window."""
        before = len(_statuses(setup, '/periodic'))
        tester.spin_for(3.0)
        statuses = _statuses(setup, '/periodic')
        window = {kv.key: kv.value for kv in statuses[-1].values}['window_s']
        return (len(statuses) - before) / 3.0, float(window)

    def set_values(**values) -> list[bool]:
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        assert tester.spin_until(future.done, timeout=30.0)
        return [result.successful for result in future.result().results]
    try:
        assert client.wait_for_services(timeout_sec=30.0)
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert _change_state(tester, '/periodic', transition)
        tester.spin_for(2.5)  # uptime beyond the new window
        rate, window = rate_and_window()
        assert rate <= 1.7 and window > 2.0, (rate, window)  # 1 Hz, 10 s (the uptime)
        assert set_values(diagnostics_period_s=0.2) == [False]
        for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
            assert _change_state(tester, '/periodic', transition)
        assert set_values(diagnostics_period_s=0.2, diagnostics_window_s=2.0) == [True, True]
        assert _change_state(tester, '/periodic', Transition.TRANSITION_CONFIGURE)
        rate, window = rate_and_window()
        assert rate >= 3.0 and window == 2.0, (rate, window)  # 5 Hz over a 2 s window
    finally:
        code, output = stop_node(proc, signal.SIGTERM)
    assert code == 0 and 'Traceback' not in output, output


@pytest.mark.parametrize('autostart,transition', [(True, 'TRANSITION_ACTIVE_SHUTDOWN'),
                                                  (False, 'TRANSITION_UNCONFIGURED_SHUTDOWN')])
def test_lifecycle_shutdown_ends_the_process_with_zero(setup, autostart, transition):
    """The shutdown transition (``ros2 lifecycle set <node> shutdown``) finalizes and exits 0."""
    from lifecycle_msgs.msg import Transition

    files, tester = setup['files'], setup['tester']
    name = f'finalized_{int(autostart)}'
    proc = start_node(setup['env'], {'model_path': files['model'], 'priors_path': files['priors'],
                                     'autostart': autostart}, name=name)
    try:
        state = 'active' if autostart else 'unconfigured'
        assert tester.spin_until(lambda: diagnostics_values(
            tester.received['/diagnostics'], f'/{name}').get('model_state') == state)
        assert _change_state(tester, f'/{name}', getattr(Transition, transition))
        code = proc.wait(timeout=30.0)
    finally:
        stop_node(proc, signal.SIGKILL)
    output = node_output(proc)
    assert code == 0 and 'Traceback' not in output, output[-2000:]
