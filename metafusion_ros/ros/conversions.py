"""``sensor_msgs/Image`` (and ``CompressedImage``) <-> numpy without cv_bridge.

Input images are validated before a single pixel is read: the encoding must be one of
:data:`SUPPORTED_ENCODINGS` (8-bit colour or mono), ``height``/``width`` non-zero, ``step`` at
least ``width * channels``, ``data`` exactly ``height * step`` bytes and ``is_bigendian`` 0 or 1
(all supported encodings are 8-bit, so the byte order itself does not matter). Each failure raises
a subclass of :class:`ImageError` whose ``reason`` names the counter the node increments for the
skipped frame.

``sensor_msgs/CompressedImage`` (image_transport's ``compressed`` transport: ``format`` ``jpeg`` /
``png`` or ``"<encoding>; jpeg compressed <encoding>"``) is checked cheaply first (known format,
the payload's signature, a JPEG's end-of-image marker: OpenCV would fill a truncated JPEG with
grey without a word) and decoded with OpenCV by :func:`compressed_to_rgb`.
"""
from __future__ import annotations

import sys

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

__all__ = ['check_image', 'check_size', 'ImageError', 'UnsupportedEncoding', 'ZeroSizeImage',
           'BadStep', 'BadDataLength', 'BadEndianness', 'ImageTooLarge', 'SUPPORTED_ENCODINGS',
           'CHANNELS', 'image_to_array', 'image_to_rgb', 'array_to_image', 'rgb_to_image',
           'mask_to_image', 'float_to_image', 'image_to_mask', 'probability_to_mono8',
           'UnknownCompression', 'CorruptCompressed', 'check_compressed', 'compressed_size',
           'compressed_to_rgb', 'rgb_to_compressed']

# Channels of each supported 8-bit encoding, and the OpenCV conversion of each but rgb8 to RGB.
CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
SUPPORTED_ENCODINGS = tuple(CHANNELS)
_TO_RGB = {'bgr8': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB,
           'bgra8': cv2.COLOR_BGRA2RGB, 'mono8': cv2.COLOR_GRAY2RGB}
_FROM_RGB = {'rgb8': [0, 1, 2], 'bgr8': [2, 1, 0]}


class ImageError(ValueError):
    """An image the node cannot read; ``reason`` names its skip counter."""

    reason = 'bad_image'


class UnsupportedEncoding(ImageError):
    """The encoding is not an 8-bit colour or mono encoding (e.g. 16UC1, yuv422, bayer_*)."""

    reason = 'unsupported_encoding'


class ZeroSizeImage(ImageError):
    """``height`` or ``width`` is 0."""

    reason = 'zero_size'


class BadStep(ImageError):
    """``step`` is shorter than one row of pixels."""

    reason = 'bad_step'


class BadDataLength(ImageError):
    """``data`` is not ``height * step`` bytes (truncated, or longer than declared)."""

    reason = 'bad_data_length'


class ImageTooLarge(ImageError):
    """``width * height`` exceeds the node's ``max_input_pixels`` (8K and larger by default)."""

    reason = 'too_large'


class BadEndianness(ImageError):
    """``is_bigendian`` is neither 0 nor 1."""

    reason = 'bad_endianness'


class UnknownCompression(ImageError):
    """A CompressedImage whose ``format`` names neither jpeg nor png."""

    reason = 'unknown_compression'


class CorruptCompressed(ImageError):
    """A CompressedImage payload that is empty, truncated or does not decode."""

    reason = 'corrupt_compressed'


# The first bytes of each supported compressed format.
SIGNATURES = {'jpeg': b'\xff\xd8\xff', 'png': b'\x89PNG\r\n\x1a\n'}
JPEG_END = b'\xff\xd9'


def check_image(msg: Image) -> int:
    """Validate ``msg``'s declared layout against its data (no pixel read); return channels."""
    encoding = msg.encoding
    if encoding not in CHANNELS:
        raise UnsupportedEncoding(f'unsupported encoding {encoding!r} '
                                  f'(supported: {", ".join(SUPPORTED_ENCODINGS)})')
    if msg.height == 0 or msg.width == 0:
        raise ZeroSizeImage(f'zero-size image {msg.width}x{msg.height}')
    channels = CHANNELS[encoding]
    if msg.step < msg.width * channels:
        raise BadStep(f'step {msg.step} is shorter than a row of {msg.width} {encoding} pixels '
                      f'({msg.width * channels} bytes)')
    if len(msg.data) != msg.height * msg.step:
        raise BadDataLength(f'data has {len(msg.data)} bytes, height*step = '
                            f'{msg.height}*{msg.step} = {msg.height * msg.step}')
    if msg.is_bigendian not in (0, 1):
        raise BadEndianness(f'is_bigendian must be 0 or 1, got {msg.is_bigendian}')
    return channels


def check_size(msg: Image | CompressedImage, max_pixels: int) -> None:
    """Raise :class:`ImageTooLarge` when ``msg`` has more than ``max_pixels`` pixels.

    A compressed frame's size is read from its PNG / JPEG header (:func:`compressed_size`, no
    decoder involved), so a payload declaring 30000x30000 is refused before anything decodes it.
    """
    width, height = (msg.width, msg.height) if isinstance(msg, Image) else \
        compressed_size(msg.data)
    if width * height > max_pixels:
        raise ImageTooLarge(f'image {width}x{height} has {width * height} pixels, more than '
                            f'max_input_pixels = {max_pixels}')


# JPEG start-of-frame markers (they hold the size): SOF0-3, 5-7, 9-11, 13-15.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM: no length field
MAX_JPEG_SEGMENTS = 4096  # segments before the image data (a camera's JPEG has about 10)


def compressed_size(data: bytes | bytearray) -> tuple[int, int]:
    """Return ``(width, height)`` from a png / jpeg payload's header, reading nothing else.

    PNG: the IHDR chunk that must follow the signature. JPEG: the start-of-frame segment,
    found by walking the segments' lengths up to the first scan. Raise :class:`CorruptCompressed`
    when the signature or the header is missing, cut or inconsistent.
    """
    data = memoryview(data).cast('B')
    head = bytes(data[:8])
    if not head.startswith(SIGNATURES['jpeg']) and not head.startswith(SIGNATURES['png']):
        raise CorruptCompressed(f'payload of {len(data)} bytes starts with neither the png nor '
                                f'the jpeg signature')
    if head.startswith(SIGNATURES['png']):
        if len(data) < 24 or bytes(data[12:16]) != b'IHDR':
            raise CorruptCompressed(f'png payload of {len(data)} bytes has no IHDR header '
                                    f'after its signature')
        return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
    position, sizes = 2, []
    for _ in range(MAX_JPEG_SEGMENTS):
        while position < len(data) and data[position] == 0xFF and \
                position + 1 < len(data) and data[position + 1] == 0xFF:
            position += 1  # fill bytes
        if position + 4 > len(data) or data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], 'big')
        if marker == 0xDA or length < 2:  # start of scan: the frame header came before
            break
        if marker in _JPEG_SOF and length >= 7 and position + 9 <= len(data):
            sizes.append((int.from_bytes(data[position + 7:position + 9], 'big'),
                          int.from_bytes(data[position + 5:position + 7], 'big')))
        position += 2 + length
    else:
        raise CorruptCompressed(f'jpeg payload has more than {MAX_JPEG_SEGMENTS} segments '
                                f'before its image data')
    if not sizes or min(min(size) for size in sizes) == 0:
        raise CorruptCompressed(f'jpeg payload of {len(data)} bytes has no frame header with '
                                f'a non-zero size before the image data')
    return max(w for w, _ in sizes), max(h for _, h in sizes)


def image_to_array(msg: Image) -> np.ndarray:
    """Return the pixels of ``msg`` as ``(H, W, channels)`` uint8 (a view, row padding cut off)."""
    channels = check_image(msg)
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, :msg.width * channels].reshape(msg.height, msg.width, channels)


def image_to_rgb(msg: Image) -> np.ndarray:
    """Return ``msg`` as an RGB ``(H, W, 3)`` uint8 array (mono replicated).

    rgb8 and bgr8 images are returned as read-only views of the message's data (no copy; padded
    rows make them strided, bgr8 is the channel-reversed view, which the network's preprocessing
    resizes as it is and reverses only at the network's size); other encodings are converted
    into a new array by OpenCV.
    """
    pixels = image_to_array(msg)
    if msg.encoding == 'rgb8':
        return pixels
    if msg.encoding == 'bgr8':
        return pixels[:, :, ::-1]
    return cv2.cvtColor(pixels, _TO_RGB[msg.encoding])


def image_to_mask(msg: Image) -> np.ndarray:
    """Return a mono8 image (a class-id mask) as ``(H, W)`` uint8."""
    if msg.encoding != 'mono8':
        raise UnsupportedEncoding(f'a mask must be mono8, got {msg.encoding!r}')
    return image_to_array(msg)[:, :, 0]


def _new_image(header: Header | None, height: int, width: int, encoding: str,
               step: int, data: bytes) -> Image:
    """Return an Image with the given layout and ``header`` (unchanged)."""
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = int(sys.byteorder == 'big')
    msg.data = data
    return msg


def array_to_image(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Return an Image of ``pixels`` (``(H, W)`` or ``(H, W, channels)`` uint8) in ``encoding``.

    ``pixels`` are in the channel order of ``encoding`` already (e.g. BGR for ``bgr8``).
    """
    if encoding not in CHANNELS:
        raise UnsupportedEncoding(f'unsupported encoding {encoding!r}')
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise TypeError(f'{encoding} pixels must be uint8, got {pixels.dtype}')
    channels = CHANNELS[encoding]
    if pixels.ndim == 2 and channels == 1:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] != channels:
        raise ValueError(f'{encoding} needs (H, W, {channels}) pixels, got {pixels.shape}')
    height, width = pixels.shape[:2]
    return _new_image(header, height, width, encoding, width * channels,
                      np.ascontiguousarray(pixels).tobytes())


def rgb_to_image(rgb: np.ndarray, header: Header | None = None, encoding: str = 'rgb8') -> Image:
    """Return an RGB ``(H, W, 3)`` uint8 array as an ``rgb8`` or ``bgr8`` Image."""
    if encoding not in _FROM_RGB:
        raise UnsupportedEncoding(f'RGB output must be rgb8 or bgr8, got {encoding!r}')
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'RGB image must be (H, W, 3), got {rgb.shape}')
    return array_to_image(rgb[:, :, _FROM_RGB[encoding]], encoding, header)


def mask_to_image(mask: np.ndarray, header: Header | None = None) -> Image:
    """Return a ``(H, W)`` uint8 class-id mask as a mono8 Image with ``header``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'mask must be (H, W), got {mask.shape}')
    return array_to_image(mask, 'mono8', header)


def probability_to_mono8(probability: np.ndarray) -> np.ndarray:
    """Return probabilities in [0, 1] as uint8 ``round(255 p)`` (a mono8 confidence image)."""
    return np.rint(np.clip(probability, 0, 1) * 255).astype(np.uint8)


def float_to_image(array: np.ndarray, header: Header | None = None) -> Image:
    """Return a ``(H, W)`` float array (a heatmap) as a 32FC1 Image in native byte order."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f'32FC1 image must be (H, W), got {array.shape}')
    height, width = array.shape
    return _new_image(header, height, width, '32FC1', width * 4,
                      np.ascontiguousarray(array, dtype=np.float32).tobytes())


def check_compressed(msg: CompressedImage) -> str:
    """Return the format (``jpeg`` / ``png``) of ``msg`` after the cheap checks (no decode)."""
    words = msg.format.lower().replace(';', ' ').split()
    kind = 'jpeg' if {'jpeg', 'jpg'} & set(words) else 'png' if 'png' in words else ''
    if not kind:
        raise UnknownCompression(f'unknown compressed format {msg.format!r} (supported: jpeg, '
                                 f'png)')
    head = bytes(msg.data[:8])
    if not head.startswith(SIGNATURES[kind]):
        raise CorruptCompressed(f'{kind} payload of {len(msg.data)} bytes does not start with '
                                f'the {kind} signature')
    if kind == 'jpeg' and not bytes(msg.data[-64:]).rstrip(b'\0').endswith(JPEG_END):
        raise CorruptCompressed(f'jpeg payload of {len(msg.data)} bytes is truncated (no '
                                f'end-of-image marker)')
    return kind


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Return a jpeg / png CompressedImage as RGB ``(H, W, 3)`` uint8 (a view of OpenCV's BGR)."""
    import cv2

    kind = check_compressed(msg)
    width, height = compressed_size(msg.data)
    try:
        bgr = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except Exception as exc:  # noqa: B902 - OpenCV's own limits and errors: the frame is bad
        raise CorruptCompressed(f'{kind} payload of {len(msg.data)} bytes does not decode '
                                f'({type(exc).__name__}: {str(exc).strip()[:200]})') from exc
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise CorruptCompressed(f'{kind} payload of {len(msg.data)} bytes does not decode')
    if bgr.shape[:2] != (height, width):
        raise CorruptCompressed(f'{kind} payload decodes to {bgr.shape[1]}x{bgr.shape[0]}, its '
                                f'header says {width}x{height}')
    return bgr[:, :, ::-1]


def rgb_to_compressed(rgb: np.ndarray, kind: str = 'jpeg',
                      header: Header | None = None) -> CompressedImage:
    """Return an RGB ``(H, W, 3)`` uint8 array as a ``jpeg`` or ``png`` CompressedImage."""
    import cv2

    if kind not in SIGNATURES:
        raise UnknownCompression(f'unknown compressed format {kind!r}')
    ok, data = cv2.imencode(f'.{"jpg" if kind == "jpeg" else kind}',
                            cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'OpenCV could not encode a {rgb.shape} image as {kind}')
    msg = CompressedImage(format=kind, data=data.tobytes())
    if header is not None:
        msg.header = header
    return msg
