"""Image <-> numpy conversions: round trips (hypothesis) and building images from arrays.

Malformed and odd input images (every refused layout) are in ``test_robust_images.py``.
"""
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from metafusion_ros.ros import conversions as conv
from ros_images import image_to_float

SIZES = st.tuples(st.integers(1, 9), st.integers(1, 9))


def _header() -> Header:
    header = Header(frame_id='camera')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    return header


@settings(max_examples=60, deadline=None)
@given(data=st.data(), encoding=st.sampled_from(conv.SUPPORTED_ENCODINGS), size=SIZES,
       padding=st.integers(0, 5))
def test_round_trip_any_encoding_with_row_padding(data, encoding, size, padding):
    """Pixels survive array -> Image (padded rows) -> array for every supported encoding."""
    channels = conv.CHANNELS[encoding]
    pixels = data.draw(arrays(np.uint8, size + (channels,)))
    msg = conv.array_to_image(pixels, encoding, _header())
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    padded = np.concatenate([rows, np.full((msg.height, padding), 7, np.uint8)], axis=1)
    msg.step += padding
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(conv.image_to_array(msg), pixels)
    assert msg.header.frame_id == 'camera' and msg.header.stamp.nanosec == 345


@settings(max_examples=40, deadline=None)
@given(rgb=arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8), st.just(3))),
       encoding=st.sampled_from(['rgb8', 'bgr8']))
def test_rgb_round_trip_through_bgr(rgb, encoding):
    """``rgb_to_image`` then ``image_to_rgb`` is the identity in rgb8 and bgr8."""
    msg = conv.rgb_to_image(rgb, encoding=encoding)
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)


def test_bgr8_is_read_as_a_view_without_a_copy():
    """A bgr8 frame's RGB is a channel-reversed view of the message's own bytes."""
    bgr = np.random.default_rng(3).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    msg = conv.array_to_image(bgr, 'bgr8')
    rgb = conv.image_to_rgb(msg)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])


@settings(max_examples=30, deadline=None)
@given(rgba=arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(4))))
def test_alpha_dropped_and_channels_swapped(rgba):
    """rgba8 keeps RGB, bgra8 is read with R and B swapped, alpha is dropped."""
    np.testing.assert_array_equal(conv.image_to_rgb(conv.array_to_image(rgba, 'rgba8')),
                                  rgba[:, :, :3])
    np.testing.assert_array_equal(conv.image_to_rgb(conv.array_to_image(rgba, 'bgra8')),
                                  rgba[:, :, [2, 1, 0]])


def test_mono_replicated_to_rgb_and_mask_round_trip():
    """mono8 reads as grey RGB; a mask round-trips through mono8."""
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = conv.mask_to_image(mask, _header())
    assert (msg.encoding, msg.step, msg.height, msg.width) == ('mono8', 4, 3, 4)
    np.testing.assert_array_equal(conv.image_to_mask(msg), mask)
    np.testing.assert_array_equal(conv.image_to_rgb(msg), np.repeat(mask[:, :, None], 3, 2))


@settings(max_examples=30, deadline=None)
@given(heat=arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                   elements=st.floats(0, 1, width=32)))
def test_float_round_trip(heat):
    """32FC1 round trip, in either declared byte order."""
    msg = conv.float_to_image(heat)
    assert msg.encoding == '32FC1' and msg.step == heat.shape[1] * 4
    np.testing.assert_array_equal(image_to_float(msg), heat)
    msg.is_bigendian = 1
    msg.data = heat.astype('>f4').tobytes()
    np.testing.assert_array_equal(image_to_float(msg), heat)


def _valid(height=2, width=3, encoding='rgb8') -> Image:
    """Return a valid all-zero image."""
    return conv.array_to_image(np.zeros((height, width, conv.CHANNELS[encoding]), np.uint8),
                               encoding)


def test_construction_refuses_bad_arrays():
    """Building an Image from the wrong dtype or shape fails with a clear error."""
    with pytest.raises(TypeError, match='uint8'):
        conv.array_to_image(np.zeros((2, 2, 3), np.float32), 'rgb8')
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        conv.array_to_image(np.zeros((2, 2, 4), np.uint8), 'rgb8')
    with pytest.raises(ValueError, match='mask'):
        conv.mask_to_image(np.zeros((2, 2, 1), np.uint8))
    with pytest.raises(conv.UnsupportedEncoding):
        conv.image_to_mask(_valid())
