"""Robustness of the image surface: every malformed or odd ``sensor_msgs/Image`` the node may get.

One table (:data:`CASES`) drives two levels. At the conversion level each case is refused by
``check_image`` with its skip reason before a pixel is read, or read to the expected pixels. At
the process level one running node (reliable QoS, lock-step: one message, then wait for its
effect) gets each case once: a refused case increments exactly its ``skipped_<reason>`` counter
in /diagnostics and publishes nothing; an accepted one yields the mask the engine computes for
its pixels. After every case a valid frame must still give the reference mask: the node is alive
and correct after each fault. Stamps that do not increase are processed with their header
unchanged and counted (``stamps_non_monotonic``); warnings are throttled per kind. Hypothesis
properties of the Image <-> numpy conversion complete the surface.

Decisions: ``data`` longer than ``height * step`` is refused like shorter data (the message
definition fixes the size; surplus bytes mean a wrong ``height``/``step``, and guessing would
corrupt the mask silently). A huge declared size with tiny data is refused by integer arithmetic
on the declared fields, without allocating.
"""
from dataclasses import dataclass
import time
import tracemalloc
from typing import Callable

from builtin_interfaces.msg import Time
from hypothesis import assume, given, settings, strategies as st
import fixtures
from hypothesis.extra.numpy import arrays
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from test_node_harness import (domain_for, image_msg, node_output, NodeUnderTest, with_stamp,
                               write_files)

from metafusion_ros.ros import conversions as conv
from metafusion_ros.runtime.engine import EngineConfig, FusionEngine

DOMAIN = domain_for(81)
NAME = 'robust_images'
THROTTLE_S = 0.5
SCENE = fixtures.scene()
H, W = fixtures.SIZE
ROW = W * 3
MAX_PIXELS = 4 * H * W  # the node's max_input_pixels here: a 2x enlarged scene still passes


# -- the table -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """An input image and what must happen to it: a skip ``reason``, or the RGB it reads as."""

    build: Callable[[], Image]
    reason: str | None = None
    rgb: Callable[[], np.ndarray] | None = None


def raw(encoding: str, height: int, width: int, step: int, length: int, **fields) -> Image:
    """Return an Image with the declared layout and ``length`` zero bytes of data."""
    return Image(encoding=encoding, height=height, width=width, step=step, data=bytes(length),
                 **fields)


def padded(pixels: np.ndarray, encoding: str, step: int, **fields) -> Image:
    """Return ``pixels`` (in ``encoding``'s channel order) with rows padded to ``step`` bytes."""
    msg = conv.array_to_image(pixels, encoding)
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    padding = np.full((msg.height, step - msg.step), 0xAB, np.uint8)
    msg.data, msg.step = np.hstack([rows, padding]).tobytes(), step
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def refused(reason: str, encoding: str, height: int, width: int, step: int, length: int,
            **fields) -> Case:
    """Return a case refused with ``reason``."""
    return Case(lambda: raw(encoding, height, width, step, length, **fields), reason)


def accepted(rgb: Callable[[], np.ndarray], encoding: str, step: int | None = None,
             to_encoding: Callable[[np.ndarray], np.ndarray] = lambda rgb: rgb,
             **fields) -> Case:
    """Return a case read as ``rgb()``, sent in ``encoding`` with rows of ``step`` bytes."""
    def build() -> Image:
        pixels = to_encoding(rgb())
        row = pixels.shape[1] * conv.CHANNELS[encoding]
        return padded(pixels, encoding, row if step is None else step, **fields)
    return Case(build, None, rgb)


def odd_scene() -> np.ndarray:
    """Return the scene at an odd size (47 x 63)."""
    return fixtures.scene(size=(47, 63))


def grey(rgb: np.ndarray) -> np.ndarray:
    """Return the red channel of ``rgb`` replicated to RGB (what a mono8 frame reads as)."""
    return np.repeat(rgb[:, :, :1], 3, axis=2)


ENCODINGS = {  # unsupported encodings with the bytes per pixel of their real layout
    'yuv422': 2, 'yuv422_yuy2': 2, 'uyvy': 2, 'bayer_rggb8': 1, 'bayer_grbg16': 2,
    '16UC1': 2, '32FC1': 4, 'mono16': 2, 'rgb16': 6, 'bgra16': 8, '8UC3': 3, 'RGB8': 3, '': 3}
CASES: dict[str, Case] = {
    **{f'encoding_{name or "empty"}': refused('unsupported_encoding', name, H, W, W * size,
                                              H * W * size)
       for name, size in ENCODINGS.items()},
    'step_shorter_than_row': refused('bad_step', 'rgb8', H, W, ROW - 1, H * (ROW - 1)),
    'step_zero': refused('bad_step', 'mono8', H, W, 0, 0),
    'step_disagrees_with_data': refused('bad_data_length', 'rgb8', H, W, ROW + 8, H * ROW),
    'data_short_by_one_byte': refused('bad_data_length', 'rgb8', H, W, ROW, H * ROW - 1),
    'data_empty': refused('bad_data_length', 'rgb8', H, W, ROW, 0),
    'data_long_by_one_byte': refused('bad_data_length', 'rgb8', H, W, ROW, H * ROW + 1),
    'data_long_by_one_row': refused('bad_data_length', 'rgb8', H, W, ROW, (H + 1) * ROW),
    'huge_declared_tiny_data': refused('bad_data_length', 'rgb8', 100_000, 100_000, 300_000, 3),
    'max_uint32_height_and_step': refused('bad_data_length', 'rgb8', 2**32 - 1, 1, 2**32 - 1, 3),
    'zero_width': refused('zero_size', 'rgb8', H, 0, 0, 0),
    'zero_height': refused('zero_size', 'rgb8', 0, W, ROW, 0),
    'zero_both': refused('zero_size', 'mono8', 0, 0, 0, 0),
    'bigendian_flag_255': refused('bad_endianness', 'rgb8', H, W, ROW, H * ROW, is_bigendian=255),
    'bigendian_flag_1': accepted(lambda: SCENE, 'rgb8', is_bigendian=1),
    'odd_width_padded_row': accepted(lambda: fixtures.scene(size=(48, 63)), 'rgb8', 192),
    'odd_size_unpadded': accepted(odd_scene, 'rgb8'),
    'odd_row_padding': accepted(lambda: SCENE, 'rgb8', ROW + 1),
    'bgr8_odd_size_odd_padding': accepted(odd_scene, 'bgr8', 63 * 3 + 5,
                                          lambda rgb: rgb[:, :, ::-1]),
    'rgba8_odd_size_padded': accepted(
        odd_scene, 'rgba8', 63 * 4 + 3,
        lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])),
    'mono8_odd_size_padded': accepted(lambda: grey(odd_scene()), 'mono8', 64,
                                      lambda rgb: rgb[:, :, 0]),
    'single_pixel': accepted(lambda: SCENE[:1, :1], 'rgb8'),
    'single_row': accepted(lambda: SCENE[4:5], 'rgb8'),
    'single_column': accepted(lambda: SCENE[:, 4:5], 'rgb8'),
}
DETAIL = {  # what each kind of warning must say
    'unsupported_encoding': 'unsupported encoding', 'bad_step': 'is shorter than a row',
    'bad_data_length': 'height*step', 'zero_size': 'zero-size image',
    'bad_endianness': 'is_bigendian must be 0 or 1'}


# -- conversion level ----------------------------------------------------------------------------
@pytest.mark.parametrize('case', list(CASES))
def test_case_at_conversion_level(case):
    """Each case is refused with its reason before a pixel is read, or reads as its RGB."""
    spec = CASES[case]
    msg = spec.build()
    if spec.reason is None:
        assert conv.check_image(msg) == conv.CHANNELS[msg.encoding]
        np.testing.assert_array_equal(conv.image_to_rgb(msg), spec.rgb())
        return
    with pytest.raises(conv.ImageError) as info:
        conv.check_image(msg)
    assert info.value.reason == spec.reason and isinstance(info.value, ValueError)
    assert DETAIL[spec.reason] in str(info.value)
    with pytest.raises(type(info.value)):
        conv.image_to_rgb(msg)


def _peak_bytes(action: Callable[[], None]) -> int:
    """Return the peak traced allocation while running ``action``."""
    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _refuse(msg: Image) -> None:
    """Read ``msg``, expecting it to be refused."""
    with pytest.raises(conv.ImageError):
        conv.image_to_rgb(msg)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 2**32 - 1), width=st.integers(1, 2**30),
       step=st.integers(0, 2**32 - 1), length=st.integers(0, 64),
       encoding=st.sampled_from(conv.SUPPORTED_ENCODINGS))
def test_huge_declared_size_refused_without_allocating(height, width, step, length, encoding):
    """A declared size of megabytes to exabytes with a few data bytes costs no allocation."""
    assume(height * step >= 2**20)
    msg = raw(encoding, height, width, step, length)
    assert _peak_bytes(lambda: _refuse(msg)) < 64 * 1024


REASONS = {  # each layout rule of check_image and the reason it gives
    'encoding': 'unsupported_encoding', 'size': 'zero_size', 'step': 'bad_step',
    'length': 'bad_data_length', 'flag': 'bad_endianness'}


@settings(max_examples=150, deadline=None)
@given(data=st.data(), encoding=st.sampled_from(conv.SUPPORTED_ENCODINGS + ('yuv422', '16UC1')),
       height=st.integers(0, 6), width=st.integers(0, 6), step=st.integers(0, 30),
       flag=st.sampled_from([0, 1, 2, 255]))
def test_layout_accepted_exactly_when_consistent(data, encoding, height, width, step, flag):
    """A layout is read iff every rule holds; a refusal names a rule that is really broken."""
    length = data.draw(st.one_of(st.just(height * step), st.integers(0, 200)), label='length')
    msg = raw(encoding, height, width, step, length, is_bigendian=flag)
    channels = conv.CHANNELS.get(encoding, 0)
    broken = {'encoding': not channels, 'size': height * width == 0,
              'step': step < width * channels, 'length': length != height * step,
              'flag': flag not in (0, 1)}
    try:
        pixels = conv.image_to_array(msg)
    except conv.ImageError as exc:
        assert any(broken[rule] for rule, reason in REASONS.items() if reason == exc.reason)
        return
    assert not any(broken.values())
    assert pixels.shape == (height, width, channels)


SIZES = st.tuples(st.integers(1, 7), st.integers(1, 7))
HEADERS = st.builds(lambda frame, sec, nanosec: Header(
    frame_id=frame, stamp=Time(sec=sec, nanosec=nanosec)),
    st.text(st.characters(blacklist_characters='\x00', blacklist_categories=('Cs',)),
            max_size=12),
    st.integers(-2**31, 2**31 - 1), st.integers(0, 999_999_999))


@settings(max_examples=50, deadline=None)
@given(data=st.data(), encoding=st.sampled_from(conv.SUPPORTED_ENCODINGS), size=SIZES,
       padding=st.integers(0, 9), flag=st.sampled_from([0, 1]), header=HEADERS)
def test_pixels_and_header_survive_cdr_with_any_padding(data, encoding, size, padding, flag,
                                                        header):
    """Through CDR (what DDS carries): pixels, whatever the padding bytes or flag, and header."""
    pixels = data.draw(arrays(np.uint8, size + (conv.CHANNELS[encoding],)), label='pixels')
    msg = conv.array_to_image(pixels, encoding, header)
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    fill = data.draw(arrays(np.uint8, (msg.height, padding)), label='padding bytes')
    msg.data, msg.step = np.hstack([rows, fill]).tobytes(), msg.step + padding
    msg.is_bigendian = flag
    received = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(conv.image_to_array(received), pixels)
    assert received.header == header


@settings(max_examples=40, deadline=None)
@given(data=st.data(), encoding=st.sampled_from(conv.SUPPORTED_ENCODINGS), size=SIZES,
       delta=st.integers(-40, 40).filter(bool))
def test_any_length_change_of_a_valid_image_is_refused(data, encoding, size, delta):
    """A valid image with bytes cut off or appended is refused (never read shifted)."""
    pixels = data.draw(arrays(np.uint8, size + (conv.CHANNELS[encoding],)), label='pixels')
    msg = conv.array_to_image(pixels, encoding)
    assume(len(msg.data) + delta >= 0)
    msg.data = bytes(msg.data[:len(msg.data) + delta]) if delta < 0 else \
        bytes(msg.data) + bytes(delta)
    with pytest.raises(conv.BadDataLength, match='height\\*step'):
        conv.image_to_rgb(msg)


# -- process level -------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Write the tiny network, priors and meta model."""
    return write_files(tmp_path_factory.mktemp('robust_images'))


@pytest.fixture(scope='module')
def expected(files):
    """Return the engine's fused mask of an RGB frame (what the node must publish for it)."""
    engine = FusionEngine.load(EngineConfig(str(files['model']), str(files['priors']),
                                            str(files['meta']), tau=0.5))

    def mask(rgb: np.ndarray) -> np.ndarray:
        processed = engine.process(rgb)  # at the network's size; published at the camera's
        return processed.to_camera.labels(processed.result.fused)
    return mask


@pytest.fixture(scope='module')
def reference(expected):
    """Return the mask of the valid frame sent after every case."""
    return expected(SCENE)


@pytest.fixture(scope='module')
def node(files):
    """Start the node with reliable input, fast diagnostics and a short warning throttle."""
    under_test = NodeUnderTest.start(DOMAIN, files['model'].parent / 'log', {
        'model_path': files['model'], 'priors_path': files['priors'],
        'meta_model_path': files['meta'], 'tau': 0.5, 'warn_throttle_s': THROTTLE_S,
        'diagnostics_period_s': 0.1, 'qos.reliability': 'reliable',
        'max_input_pixels': MAX_PIXELS}, NAME, 'image_tester')
    yield under_test
    under_test.close()


def test_reference_mask_is_right(node, reference):
    """The valid frame's mask: red person, blue car, both dim red candidates fused as person."""
    fused = reference
    assert fused[4:12, 4:12].min() == 1 and fused[4:12, 40:48].min() == 2
    assert fused[30:38, 8:16].min() == 1 and fused[30:38, 44:52].min() == 1
    assert np.count_nonzero(fused == 0) == H * W - 4 * 64
    np.testing.assert_array_equal(conv.image_to_mask(with_stamp(node.masks, 1)[0]), fused)


def _warnings(node, kind: str) -> list[str]:
    """Return the node's warning lines of ``kind`` so far."""
    return [line for line in node_output(node.proc).splitlines()
            if 'WARN' in line and kind in line]


def test_warnings_are_throttled_per_reason(node, reference):
    """A burst of 20 bad frames: 20 counted skips, at most 1 + elapsed / throttle warnings."""
    kind = 'skipped frame (unsupported_encoding'
    lines, skipped = len(_warnings(node, kind)), node.counter('skipped_unsupported_encoding')
    bad, sent = raw('yuv422', H, W, W * 2, H * W * 2), []

    def publish() -> None:
        node.pub.publish(bad)
        sent.append(time.monotonic())

    node.tester.spin_until(lambda: len(sent) == 20, period=0.05, every=publish)
    node.wait_counter('skipped_unsupported_encoding', skipped + 20)
    elapsed = time.monotonic() - sent[0]
    node.check_alive_and_correct(reference)  # its callback runs after the last warning
    new = _warnings(node, kind)[lines:]
    assert 1 <= len(new) <= 1 + elapsed / THROTTLE_S, (len(new), elapsed)
    assert len(new) < 20, (len(new), elapsed)
    assert "unsupported encoding 'yuv422' (supported: rgb8, bgr8, rgba8, bgra8, mono8)" in new[0]
    assert node.counter('skipped_unsupported_encoding') == skipped + 20


@pytest.mark.parametrize('case', list(CASES))
def test_case_at_node_level(node, expected, reference, case):
    """Refused: exactly one counted skip, no output. Accepted: the right mask. Then alive."""
    spec = CASES[case]
    key = 'frames_processed' if spec.reason is None else f'skipped_{spec.reason}'
    before, stamp = node.counter(key), next(node.stamps)
    msg = spec.build()
    if spec.reason is None:
        mask = node.process(msg, stamp)
        assert (mask.height, mask.width, mask.header.frame_id) == (*spec.rgb().shape[:2],
                                                                   'camera')
        np.testing.assert_array_equal(conv.image_to_mask(mask), expected(spec.rgb()))
    else:
        msg.header.stamp.sec = stamp
        node.pub.publish(msg)
        node.wait_counter(key, before + 1)
    node.check_alive_and_correct(reference)  # runs after any warning about the case
    if spec.reason is not None:  # this case's warning, or (throttled) an earlier one's
        lines = _warnings(node, f'skipped frame ({spec.reason}, ')
        assert lines and DETAIL[spec.reason] in lines[-1], lines
    assert not with_stamp(node.masks, stamp) or spec.reason is None
    expected = before + 1 + (spec.reason is None)  # an accepted frame, then the valid one
    node.wait_counter(key, expected)
    assert node.counter(key) == expected
    assert node.proc.poll() is None


# Stamp of a frame relative to the previous one (s offset, ns; the previous has ns 7): counted?
STAMP_CASES = {'older_by_seconds': (-495, 7, True), 'older_by_one_ns': (0, 6, True),
               'equal_duplicate': (0, 7, True), 'newer_by_one_ns': (0, 8, False)}


@pytest.mark.parametrize('case', list(STAMP_CASES))
def test_stamp_order(node, expected, reference, case):
    """A stamp not newer than the last frame's is processed, header unchanged, and counted."""
    sec, nanosec, counted = STAMP_CASES[case]
    last = node.check_alive_and_correct(reference)
    before = node.counter('stamps_non_monotonic')
    image = fixtures.scene({(20, 20): fixtures.DIM_RED})
    msg = image_msg(image, last + sec)
    msg.header.stamp.nanosec = nanosec

    def masks() -> list[Image]:
        return [m for m in with_stamp(node.masks, last + sec) if m.header.stamp.nanosec == nanosec]

    earlier = len(masks())
    node.pub.publish(msg)
    assert node.tester.spin_until(lambda: len(masks()) > earlier, timeout=30.0), node.values()
    mask = masks()[-1]
    assert mask.header.frame_id == 'camera'
    np.testing.assert_array_equal(conv.image_to_mask(mask), expected(image))
    node.check_alive_and_correct(reference)
    node.wait_counter('stamps_non_monotonic', before + counted)
    assert node.counter('stamps_non_monotonic') == before + counted
    if counted:  # this frame's warning, or (throttled) an earlier one's
        lines = _warnings(node, 'is not newer than the previous')
        assert lines and 'processed anyway' in lines[-1], lines


def test_frame_of_8k_refused_by_its_size_alone():
    """8K (7680x4320) is refused by the default max_input_pixels, 4K (3840x2160) passes.

    The check reads the declared ``width * height`` only (the node runs it after check_image):
    refusing costs no allocation.
    """
    from metafusion_ros.ros.parameters import DEFAULTS

    default = DEFAULTS['max_input_pixels']
    conv.check_size(Image(height=2160, width=3840), default)
    for height, width in ((4320, 7680), (2**16, 2**16)):
        msg = Image(height=height, width=width)
        with pytest.raises(conv.ImageTooLarge, match='more than max_input_pixels') as info:
            conv.check_size(msg, default)
        assert info.value.reason == 'too_large'
        assert _peak_bytes(lambda: pytest.raises(conv.ImageTooLarge, conv.check_size, msg,
                                                 default)) < 64 * 1024


def test_frames_above_max_input_pixels_are_counted_skips(node, expected, reference):
    """Above max_input_pixels: one counted skip, a warning, no mask.

    At the limit: a mask at the camera's size (twice the network's), the engine's mask enlarged.
    """
    big = np.repeat(np.repeat(SCENE, 2, axis=0), 2, axis=1)  # exactly MAX_PIXELS
    mask = node.process(conv.rgb_to_image(big), next(node.stamps))
    assert (mask.height, mask.width) == (2 * H, 2 * W)
    np.testing.assert_array_equal(conv.image_to_mask(mask), expected(big))
    before, stamp = node.counter('skipped_too_large'), next(node.stamps)
    msg = conv.rgb_to_image(np.concatenate([big, big[:1]]))  # one row more
    msg.header.stamp.sec = stamp
    node.pub.publish(msg)
    node.wait_counter('skipped_too_large', before + 1)
    node.check_alive_and_correct(reference)
    lines = _warnings(node, 'skipped frame (too_large, ')
    assert lines and 'more than max_input_pixels' in lines[-1], lines
    assert not with_stamp(node.masks, stamp)


def test_node_survived_every_case_and_exits_cleanly(node):
    """After the cases the node is active, has accounted for every frame and exits 0."""
    node.stop_cleanly()
