"""CompressedImage input at the conversion level: jpeg / png decode, every bad payload refused.

The node-level cases (counted skips, CameraInfo size) are in ``test_node_inputs.py``.
"""
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

import fixtures
from metafusion_ros.ros.conversions import (check_compressed, compressed_to_rgb, CorruptCompressed,
                                            rgb_to_compressed, UnknownCompression)

SCENE = fixtures.scene()
RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8)


def payload(kind, image=SCENE):
    """Return the bytes of ``image`` compressed as ``kind``."""
    return bytes(rgb_to_compressed(image, kind).data)


@pytest.mark.parametrize('fmt', ['png', 'PNG', 'bgr8; png compressed bgr8',
                                 'rgb8; png compressed rgb8'])
def test_png_decodes_exactly_under_every_format_spelling(fmt):
    """A png decodes losslessly to the image, whatever the image_transport spelling."""
    msg = CompressedImage(format=fmt, data=payload('png', PHOTO))
    np.testing.assert_array_equal(compressed_to_rgb(msg), PHOTO)


@pytest.mark.parametrize('fmt', ['jpeg', 'jpg', 'rgb8; jpeg compressed bgr8'])
def test_jpeg_decodes_close_to_the_image(fmt):
    """A jpeg decodes to the image's size, in RGB order, close to the original colours."""
    flat = np.zeros((64, 80, 3), np.uint8)
    flat[:, :, 0] = 200  # red in RGB: a channel swap would show
    rgb = compressed_to_rgb(CompressedImage(format=fmt, data=payload('jpeg', flat)))
    assert rgb.shape == flat.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - flat).max() <= 3


CASES = {
    'unknown_format_tiff': ('tiff', payload('png'), UnknownCompression, 'unknown compressed'),
    'unknown_format_empty': ('', payload('png'), UnknownCompression, 'unknown compressed'),
    'unknown_format_theora': ('theora', payload('jpeg'), UnknownCompression, "'theora'"),
    'empty_payload_jpeg': ('jpeg', b'', CorruptCompressed, 'signature'),
    'empty_payload_png': ('png', b'', CorruptCompressed, 'signature'),
    'random_bytes_as_jpeg': ('jpeg', RNG.bytes(500), CorruptCompressed, 'signature'),
    'png_payload_declared_jpeg': ('jpeg', payload('png'), CorruptCompressed, 'signature'),
    'jpeg_truncated_half': ('jpeg', payload('jpeg', PHOTO)[:2000], CorruptCompressed,
                            'truncated'),
    'jpeg_truncated_by_one_byte': ('jpeg', payload('jpeg', PHOTO)[:-1], CorruptCompressed,
                                   'truncated'),
    'png_truncated_half': ('png', payload('png', PHOTO)[:len(payload('png', PHOTO)) // 2],
                           CorruptCompressed, 'does not decode'),
    'png_garbage_after_signature': ('png', payload('png')[:8] + RNG.bytes(300),
                                    CorruptCompressed, 'no IHDR header'),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_compressed_payload_is_refused_with_its_reason(case):
    """Each bad payload raises its ImageError subclass (the node's skip reason) and a message."""
    fmt, data, error, text = CASES[case]
    with pytest.raises(error, match=text):
        compressed_to_rgb(CompressedImage(format=fmt, data=data))


def test_cheap_check_needs_no_decode():
    """check_compressed names the format from the spelling and the signature alone."""
    assert check_compressed(CompressedImage(format='rgb8; jpeg compressed bgr8',
                                            data=payload('jpeg'))) == 'jpeg'
    assert check_compressed(CompressedImage(format='png', data=payload('png'))) == 'png'
