"""Robustness, bounds before inflation: inputs and files that declare more than they hold.

A compressed frame is judged by its PNG / JPEG header (no decoder runs on a bomb), a camera info
by its size, and every file by what it declares (``.npz`` headers, JSON nesting, file size, MCAP
chunk sizes) before anything is allocated. At the node level the bombs are counted skips and the
node's peak resident memory (VmHWM) grows by less than the documented bound, 1 GiB; the files
fail with one line naming them. ``docs/robustness.md`` ("Bounds before inflation") lists every
case.
"""
import io
import json
from pathlib import Path
import struct
import subprocess
import sys
import tracemalloc
import zlib

import fixtures
from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage
from test_node_harness import domain_for, node_output, NodeUnderTest, SCENE, write_files
from test_robust_files import _bundle_copy, npy_bytes, write_npz

from metafusion_ros.core.files import (FileProblem, MAX_DEPTH, MAX_MODEL_BYTES, MAX_TEXT_BYTES,
                                       nesting_depth)
from metafusion_ros.core.priors import Priors
from metafusion_ros.ros import process
from metafusion_ros.ros.bag import BagError, DriveBag, IMAGE_TOPIC, TYPESTORE
from metafusion_ros.ros.conversions import (check_compressed, check_size, compressed_size,
                                            compressed_to_rgb, ImageError, image_to_mask,
                                            ImageTooLarge, rgb_to_compressed)
from metafusion_ros.ros.params import params_file_problem
from metafusion_ros.runtime.classifier import MetaBundle
from metafusion_ros.runtime.engine import ConfigurationError, EngineConfig, FusionEngine

DOMAIN = domain_for(94)
NAME = 'bounded'
BOUND_KIB = 1 << 20  # docs/robustness.md: a bad input raises the node's peak RSS by < 1 GiB
DEFAULT_MAX_PIXELS = 1 << 24
PEAK_BYTES = 16 << 20  # what a refused file may cost the loader (tracemalloc peak)


def png_bomb(width: int, height: int) -> bytes:
    """Return a PNG whose IHDR declares ``width`` x ``height`` RGB over one zero row of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack(
            '>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) +
            chunk(b'IDAT', zlib.compress(bytes(1 + 3 * min(width, 4096)))) + chunk(b'IEND', b''))


def jpeg_with_size(width: int, height: int) -> bytes:
    """Return a real 64x48 JPEG whose start-of-frame header declares ``width`` x ``height``."""
    data = bytearray(rgb_to_compressed(SCENE, 'jpeg').data)
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def traced_peak(function) -> int:
    """Return the peak of traced allocations (numpy's included) while ``function()`` runs."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Conversion level -----------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['png', 'jpeg'])
@pytest.mark.parametrize('shape', [(1, 1), (48, 64), (361, 479)])
def test_header_size_is_the_decoded_size(kind, shape):
    """The size read from the header is the size OpenCV decodes (png and jpeg)."""
    rgb = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    msg = rgb_to_compressed(rgb, kind)
    assert compressed_size(msg.data) == (shape[1], shape[0])
    assert compressed_to_rgb(msg).shape == shape + (3,)


@pytest.mark.parametrize('options', [{}, {'progressive': True}, {'optimize': True},
                                     {'icc_profile': b'x' * 70000}], ids=['baseline',
                                                                          'progressive',
                                                                          'optimized', 'icc'])
def test_header_size_of_other_encoders_jpegs(options):
    """Progressive, optimised and ICC-carrying JPEGs (Pillow) give their size from the header."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((123, 77, 3), np.uint8)).save(buffer, 'JPEG', **options)
    assert compressed_size(buffer.getvalue()) == (77, 123)


BOMBS = {
    'png_30000x30000': ('png', png_bomb(30000, 30000), ImageTooLarge, '30000x30000'),
    'png_2^31x2^31': ('png', png_bomb(2**31 - 1, 2**31 - 1), ImageTooLarge, 'pixels'),
    'jpeg_65000x65000': ('jpeg', jpeg_with_size(65000, 65000), ImageTooLarge, '65000x65000'),
    'png_one_row_over': ('png', png_bomb(4096, 4097), ImageTooLarge, 'max_input_pixels'),
}


@pytest.mark.parametrize('case', sorted(BOMBS))
def test_bomb_is_refused_by_its_header_without_decoding(case):
    """A payload declaring more than max_input_pixels is too_large, decided on ~30 bytes."""
    fmt, data, error, text = BOMBS[case]
    msg = CompressedImage(format=fmt, data=data)
    check_compressed(msg)
    with pytest.raises(error, match=text):
        check_size(msg, DEFAULT_MAX_PIXELS)
    assert traced_peak(lambda: pytest.raises(error, check_size, msg, DEFAULT_MAX_PIXELS)) \
        < (1 << 20)


def test_frame_exactly_at_the_cap_passes_the_header_check():
    """4096x4096 (= the default max_input_pixels, 4K passes) is not refused by its size."""
    check_size(CompressedImage(format='png', data=png_bomb(4096, 4096)), DEFAULT_MAX_PIXELS)


@pytest.mark.parametrize('data,text', [
    (b'\x89PNG\r\n\x1a\n' + b'\0' * 8, 'no IHDR header'),
    (b'\xff\xd8\xff\xe0\x00\x10JFIF' + b'\0' * 10 + b'\xff\xd9', 'no frame header'),
    (jpeg_with_size(0, 48), 'no frame header with a non-zero size'),
    (b'\xff\xd8' + b'\xff\xe1\x00\x04\x00\x00' * 5000 + b'\xff\xd9', 'more than 4096 segments'),
    (b'GIF89a' + b'\0' * 30, 'neither the png nor the jpeg signature'),
], ids=['png_without_ihdr', 'jpeg_without_frame_header', 'jpeg_height_zero',
        'jpeg_endless_segments', 'gif'])
def test_broken_headers_are_corrupt_compressed(data, text):
    """A header that is missing, cut or says 0 is corrupt_compressed with its reason."""
    with pytest.raises(ImageError, match=text) as info:
        compressed_size(data)
    assert info.value.reason == 'corrupt_compressed'


def _flips(data: bytes, positions: list[int], values: list[int]) -> bytes:
    """Return ``data`` with bytes at ``positions`` (modulo its length) set to ``values``."""
    out = bytearray(data)
    for position, value in zip(positions, values):
        out[position % len(out)] = value
    return bytes(out)


VALID = {kind: bytes(rgb_to_compressed(SCENE, kind).data) for kind in ('png', 'jpeg')}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(['png', 'jpeg']),
       positions=st.lists(st.integers(0, 10**6), min_size=1, max_size=8),
       values=st.lists(st.integers(0, 255), min_size=8, max_size=8),
       cut=st.integers(0, 2000))
def test_any_damaged_payload_is_an_image_error_or_its_header_size(kind, positions, values, cut):
    """Damaged png / jpeg bytes: the checks and the decoder raise ImageError, nothing else.

    Decoded frames have exactly the size their header declares (the bound was checked on it).
    """
    data = _flips(VALID[kind], positions, values)
    data = data[:max(len(data) - cut, 0)]
    msg = CompressedImage(format=kind, data=data)
    try:
        check_compressed(msg)
        check_size(msg, DEFAULT_MAX_PIXELS)
        width, height = compressed_size(data)
        rgb = compressed_to_rgb(msg)
    except ImageError:
        return
    assert rgb.shape == (height, width, 3)


# Node level -----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def node(tmp_path_factory):
    """Start a node with the default max_input_pixels and masks at the network's size."""
    folder = tmp_path_factory.mktemp('bounds')
    files = write_files(folder)
    under_test = NodeUnderTest.start(DOMAIN, folder / 'log', {
        'model_path': files['model'], 'priors_path': files['priors'], 'warn_throttle_s': 0.0,
        'qos.reliability': 'reliable', 'diagnostics_period_s': 0.2,
        'output_resolution': 'network'}, NAME)
    yield under_test
    under_test.close()


def test_bombs_and_huge_camera_infos_stay_within_the_memory_bound(node):
    """Bombs are counted skips, huge camera infos are ignored (no warm-up), peak RSS < +1 GiB.

    Then the largest frame the cap admits (a 4096x4096 png) is decoded and processed within
    the same bound, and a valid frame still gives the reference mask.
    """
    reference = node.mask(1)
    assert node.tester.spin_until(lambda: node.values().get('frames_processed'), timeout=30.0)
    start_kib = process.peak_rss_kib(node.proc.pid)
    compressed = node.tester.publisher(f'/{NAME}/input/image/compressed', CompressedImage)
    for fmt, data, _, _ in BOMBS.values():
        before = node.counter('skipped_too_large')
        compressed.publish(CompressedImage(format=fmt, data=data))
        node.wait_counter('skipped_too_large', before + 1)
    info = node.tester.publisher(f'/{NAME}/input/camera_info', CameraInfo)
    for width, height in ((40000, 40000), (2**32 - 1, 2**32 - 1), (4097, 4096)):
        before = node.counter('camera_info_too_large')
        info.publish(CameraInfo(width=width, height=height))
        node.wait_counter('camera_info_too_large', before + 1)
    values = node.values()
    assert values['camera_info'] == 'no' and 'warm_ups' not in values, values
    assert 'ignored, no warm-up' in node_output(node.proc)
    bombs_kib = process.peak_rss_kib(node.proc.pid) - start_kib
    at_cap = rgb_to_compressed(np.zeros((4096, 4096, 3), np.uint8), 'png')
    at_cap.header.stamp.sec, at_cap.header.frame_id = 77, 'camera'
    assert node.resend_until_mask(at_cap, publisher=compressed, timeout=120.0).width == 64
    cap_kib = process.peak_rss_kib(node.proc.pid) - start_kib
    print(f'peak RSS growth: bombs {bombs_kib} KiB, a 4096x4096 png {cap_kib} KiB')
    assert bombs_kib < 64 << 10, bombs_kib  # refused by the header: nothing decoded
    assert cap_kib < BOUND_KIB, cap_kib
    node.check_alive_and_correct(image_to_mask(reference))
    node.stop_cleanly()


# Files ----------------------------------------------------------------------------------------

def _meta(meta: dict, raw: str | None = None, **changes) -> bytes:
    """Return the ``meta`` member: ``meta`` (valid priors metadata) changed, or ``raw`` JSON."""
    return npy_bytes(np.array(raw if raw is not None else json.dumps({**meta, **changes})))


def _probs(scale: float = 1.0, fill: float | None = None) -> bytes:
    """Return the probs member of the tiny priors, scaled, or with one value ``fill``."""
    probs = np.zeros((48, 64, 3), np.float32)
    probs[:, :] = (0.9, 0.05, 0.05)
    probs *= scale
    if fill is not None:
        probs[5, 7, 1] = fill
    return npy_bytes(probs)


# case -> (members of the .npz from valid metadata, text of the one line)
PRIORS_CASES = {
    'declares_298_gib': (lambda m: {'probs': npy_bytes(shape=(100000, 100000, 8)),
                                    'meta': _meta(m)},
                         "array 'probs' declares shape (100000, 100000, 8)"),
    'meta_declares_400_mb': (lambda m: {'probs': _probs(),
                                        'meta': npy_bytes(shape=(), descr='<U100000000')},
                             "array 'meta' declares shape () of <U100000000"),
    '100_members': (lambda m: {f'a{i}': npy_bytes(np.zeros(1)) for i in range(100)},
                    '100 members, more than the 64 allowed'),
    'meta_an_integer': (lambda m: {'probs': _probs(), 'meta': _meta(m, raw='5')},
                        'meta must be a JSON object, got int'),
    'meta_nested_100000': (lambda m: {'probs': _probs(),
                                      'meta': _meta(m, raw='[' * 100000 + ']' * 100000)},
                           'nested 100000 levels deep, more than the 64 allowed'),
    'table_a_list': (lambda m: {'probs': _probs(), 'meta': _meta(m, table=[1, 2])}, ': '),
    'probs_all_zero': (lambda m: {'probs': _probs(0.0), 'meta': _meta(m)},
                       'must sum to 1 (within 0.0001), at pixel (0, 0) they sum to 0'),
    'probs_times_1000': (lambda m: {'probs': _probs(1000.0), 'meta': _meta(m)},
                         'they sum to 1000'),
    'probs_nan': (lambda m: {'probs': _probs(fill=np.nan), 'meta': _meta(m)},
                  'priors hold 1 NaN or Inf values'),
    'probs_negative': (lambda m: {'probs': _probs(fill=-0.05), 'meta': _meta(m)},
                       'priors hold 1 negative values'),
}


@pytest.fixture(scope='module')
def priors_meta(tmp_path_factory):
    """Return the metadata of valid tiny priors."""
    path = fixtures.write_priors(tmp_path_factory.mktemp('priors') / 'tiny.npz')
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data['meta']))


@pytest.mark.parametrize('case', sorted(PRIORS_CASES))
def test_bad_priors_are_one_line_naming_the_file_before_any_allocation(tmp_path, priors_meta,
                                                                       case):
    """Priors that declare too much, nest too deep or are no probabilities: one line, no GiBs."""
    members, text = PRIORS_CASES[case]
    folder = tmp_path / 'bad priors'
    folder.mkdir()
    path = folder / f'{case}.npz'
    write_npz(path, members(priors_meta))
    error = []

    def load():
        with pytest.raises(ValueError) as info:
            Priors.load(path)
        error.append(str(info.value))
    peak = traced_peak(load)
    assert str(path) in error[0] and text in error[0] and '\n' not in error[0], error[0]
    assert peak < PEAK_BYTES, peak


def test_shipped_priors_are_probabilities_within_the_tolerance():
    """The priors in models/ sum to 1 per pixel within 5e-8 (the tolerance is 1e-4)."""
    shipped = sorted((Path(__file__).resolve().parents[1] / 'models').glob('*priors.npz'))
    assert shipped
    for path in shipped:
        probs = Priors.load(path).probs
        assert np.abs(probs.sum(axis=2, dtype=np.float64) - 1).max() < 5e-8, path


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    """Return the tiny model, priors and meta bundle."""
    return write_files(tmp_path_factory.mktemp('good files'))


def _manifest_case(good, folder, case):
    """Write the bad bundle of ``case`` into ``folder``; return its manifest path."""
    path = folder / f'{case} meta.json'
    manifest = json.loads(good['meta'].read_text())
    if case == 'alpha_nan_first':
        _bundle_copy(good['meta'], path)
        data = json.loads(path.read_text())
        data['members'][0]['alpha'] = float('nan')
        path.write_text(json.dumps(data))
    elif case == 'alpha_above_one':
        _bundle_copy(good['meta'], path)
        data = json.loads(path.read_text())
        data['members'][-1]['alpha'] = 1.5
        path.write_text(json.dumps(data))
    elif case == 'alpha_twice':
        _bundle_copy(good['meta'], path)
        data = json.loads(path.read_text())
        data['members'][1]['alpha'] = data['members'][0]['alpha']
        path.write_text(json.dumps(data))
    elif case == 'nested_100000':
        path.write_text('{"format": ' + '[' * 100000 + ']' * 100000 + '}')
    elif case == 'manifest_17_mib':
        with open(path, 'wb') as fh:
            fh.truncate(MAX_TEXT_BYTES + (1 << 20))
    elif case == 'booster_65_mib':
        _bundle_copy(good['meta'], path)
        data = json.loads(path.read_text())
        with open(folder / data['members'][0]['model_file'], 'wb') as fh:
            fh.truncate(65 << 20)
    elif case == 'members_a_number':
        path.write_text(json.dumps(dict(manifest, members=[5])))
    return path


MANIFEST_CASES = {
    'alpha_nan_first': 'member 0 has alpha nan',
    'alpha_above_one': 'has alpha 1.5',
    'alpha_twice': 'two members have alpha',
    'nested_100000': 'nested 100001 levels deep',
    'manifest_17_mib': 'more than the 16 MiB allowed',
    'booster_65_mib': 'more than the 64 MiB allowed',
    'members_a_number': 'malformed manifest',
}


@pytest.mark.parametrize('case', sorted(MANIFEST_CASES))
def test_bad_manifest_fails_configure_with_one_line(good, tmp_path, case):
    """A manifest of NaN, out-of-range or repeated α, too deep or too big: one line, named."""
    folder = tmp_path / 'bad bundles'
    folder.mkdir()
    path = _manifest_case(good, folder, case)
    with pytest.raises(ConfigurationError) as info:
        FusionEngine.load(EngineConfig(str(good['model']), str(good['priors']), str(path)))
    assert str(path) in str(info.value) and MANIFEST_CASES[case] in str(info.value), info.value
    assert '\n' not in str(info.value)
    with pytest.raises(ValueError, match=MANIFEST_CASES[case]):
        MetaBundle.load(path)


def test_model_spec_and_onnx_above_their_caps_are_named(good, tmp_path):
    """A 1 GiB+ ONNX file (sparse) and specs nested 100 000 deep (JSON) / 3000 deep (YAML)."""
    folder = tmp_path / 'bad models'
    folder.mkdir()
    huge = folder / 'huge model.onnx'
    with open(huge, 'wb') as fh:
        fh.truncate(MAX_MODEL_BYTES + 1)
    huge.with_suffix('.json').write_text(good['model'].with_suffix('.json').read_text())
    nested = folder / 'nested model.onnx'
    nested.write_bytes(good['model'].read_bytes())
    nested.with_suffix('.json').write_text('{"preprocess": ' + '[' * 100000 + ']' * 100000 + '}')
    block = folder / 'block model.onnx'
    block.write_bytes(good['model'].read_bytes())
    block.with_suffix('.yaml').write_text(''.join(f'{"  " * i}k:\n' for i in range(3000)))
    for model, text in ((huge, 'more than the 1024 MiB allowed'),
                        (nested, 'nested 100001 levels deep'),
                        (block, 'RecursionError')):
        with pytest.raises(ConfigurationError) as info:
            FusionEngine.load(EngineConfig(str(model), str(good['priors'])))
        message = str(info.value)
        assert text in message and '\n' not in message, message
        assert str(model) in message or str(model.with_suffix('.yaml')) in message or \
            str(model.with_suffix('.json')) in message, message


def test_parameter_files_above_their_caps_are_one_line(tmp_path):
    """A parameter file nested 100 000 deep, 3000 deep in blocks or of 17 MiB: one line each."""
    nested = tmp_path / 'nested params.yaml'
    nested.write_text('/**:\n  ros__parameters:\n    alpha: ' + '[' * 100000 + ']' * 100000)
    block = tmp_path / 'block params.yaml'
    block.write_text(''.join(f'{"  " * i}k:\n' for i in range(3000)))
    big = tmp_path / 'big params.yaml'
    with open(big, 'wb') as fh:
        fh.truncate(MAX_TEXT_BYTES + 1)
    for path, text in ((nested, 'nested 100000 levels deep'), (block, 'RecursionError'),
                       (big, 'more than the 16 MiB allowed')):
        problem = params_file_problem(['node', '--ros-args', '--params-file', str(path)])
        assert str(path) in problem and text in problem and '\n' not in problem, problem


def test_nesting_depth_ignores_brackets_in_strings():
    """Brackets inside JSON strings (escaped quotes too) do not count."""
    assert nesting_depth('{"a": "[[[[", "b": [[1], {"c": "\\"]]]"}]}') == 3
    assert nesting_depth('[' * (MAX_DEPTH + 1) + ']' * (MAX_DEPTH + 1)) == MAX_DEPTH + 1
    assert nesting_depth('') == 0


def test_file_problem_is_a_value_error():
    """The CLI (exit 2) and the engine (exit 1) catch it as a ValueError."""
    assert issubclass(FileProblem, ValueError)


# Bags -----------------------------------------------------------------------------------------

def _image_bag(path, storage: str = 'mcap', compression: str = 'none', frames: int = 2,
               size: tuple[int, int] = (48, 64)):
    """Write a bag of black rgb8 frames on the image topic, optionally compressed."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    from metafusion_ros.ros.bag import _header, _image

    writer = Writer(path, version=9, storage_plugin={'mcap': StoragePlugin.MCAP,
                                                     'sqlite3': StoragePlugin.SQLITE3}[storage])
    if compression != 'none':
        writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection(IMAGE_TOPIC, 'sensor_msgs/msg/Image', typestore=TYPESTORE)
        for index in range(frames):
            msg = _image(np.zeros(size + (3,), np.uint8), 'rgb8', _header(index, 'camera'))
            writer.write(conn, index, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
    return path


@pytest.mark.parametrize('mode', ['file', 'message'])
def test_bag_with_rosbag2_file_or_message_compression_is_refused(tmp_path, mode):
    """Refuse what rosbags would inflate unbounded: one line naming the bag and what to do."""
    bag = _image_bag(tmp_path / f'{mode} bag', 'sqlite3', mode)
    with pytest.raises(BagError, match=f'rosbag2 {mode} compression is not read') as info:
        DriveBag(bag).topics()
    assert str(bag) in str(info.value)


def test_bag_metadata_above_the_text_cap_is_refused(tmp_path):
    """A 17 MiB metadata.yaml (sparse) is refused before rosbags parses it."""
    bag = _image_bag(tmp_path / 'big metadata')
    with open(bag / 'metadata.yaml', 'ab') as fh:
        fh.truncate(MAX_TEXT_BYTES + 1)
    with pytest.raises(BagError, match='more than the 16 MiB allowed'):
        DriveBag(bag).topics()


def _declared_size(bag, new: int) -> None:
    """Set the uncompressed size that every chunk and chunk index of the MCAP file declares.

    MCAP records: opcode (1 byte), length (8), body. A chunk's body starts with its start and
    end time and its uncompressed size; a chunk index holds it after start, end, chunk offset
    and length, the message index offsets (a map with its byte length), the message index
    length, the compression (a string with its length) and the compressed size.
    """
    mcap = next(bag.glob('*.mcap'))
    data = bytearray(mcap.read_bytes())
    position, patched = 8, 0
    while position + 9 <= len(data) - 8:
        opcode = data[position]
        length = int.from_bytes(data[position + 1:position + 9], 'little')
        body = position + 9
        at = None
        if opcode == 0x06:
            at = body + 16
        elif opcode == 0x08:
            after_map = body + 36 + int.from_bytes(data[body + 32:body + 36], 'little') + 8
            at = after_map + 4 + int.from_bytes(data[after_map:after_map + 4], 'little') + 8
        if at is not None:
            data[at:at + 8] = new.to_bytes(8, 'little')
            patched += 1
        position = body + length
    assert patched >= 2, patched
    mcap.write_bytes(bytes(data))


@pytest.mark.parametrize('declared,text', [(1 << 40, 'declares 1099511627776 bytes'),
                                           (1000, 'Chunk size mismatch')],
                         ids=['declares_1_tib', 'inflates_past_its_declared_size'])
def test_mcap_chunk_is_never_inflated_past_a_bound(tmp_path, declared, text):
    """Refuse a zstd chunk declaring 1 TiB; one inflating further stops at declared + 1 byte."""
    bag = _image_bag(tmp_path / 'chunked', compression='storage', frames=3, size=(480, 640))
    assert len(list(DriveBag(bag).messages())) == 3
    _declared_size(bag, declared)
    with pytest.raises(BagError, match=text) as info:
        list(DriveBag(bag).messages())
    assert str(bag) in str(info.value)


def test_zstd_bomb_inflates_to_its_declared_size_only(tmp_path):
    """A 1 GiB zero stream compressed to kilobytes, declared 1000 bytes: 1001 come out.

    Run in a fresh interpreter whose peak RSS shows nothing near 1 GiB was allocated.
    """
    script = (
        'import resource\n'
        'from rosbags.rosbag2 import storage_mcap\n'
        'import metafusion_ros.ros.bag  # noqa: installs the bounded decompressors\n'
        'compressor = storage_mcap.zstd.ZstdCompressor()\n'
        'block = bytes(16 << 20)\n'
        'bomb = b"".join(compressor.compress(block) for _ in range(64)) + compressor.flush()\n'
        'start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n'
        'try:\n'
        '    storage_mcap.decompress(bomb, "zstd", 1000, 0)\n'
        'except Exception as exc:\n'
        '    print(type(exc).__name__, exc)\n'
        'print(len(bomb), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start)\n')
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    error, numbers = done.stdout.strip().splitlines()
    size, grown_kib = (int(v) for v in numbers.split())
    assert error.startswith('ReaderError') and 'got 1001' in error, error
    assert size < 1 << 20 and grown_kib < 64 << 10, (size, grown_kib)


def test_cli_names_every_bad_file_in_one_line(tmp_path, priors_meta, good, capsys):
    """The CLI's loaders: priors of the wrong shape, a NaN member, a nested spec -> exit 2."""
    from metafusion_ros.tools.cli import main

    folder = tmp_path / 'bad inputs'
    folder.mkdir()
    priors = folder / 'int meta.npz'
    write_npz(priors, {'probs': _probs(), 'meta': _meta(priors_meta, raw='5')})
    bundle = _manifest_case(good, folder, 'alpha_nan_first')
    model = folder / 'nested model.onnx'
    model.write_bytes(good['model'].read_bytes())
    model.with_suffix('.json').write_text('[' * 100000 + ']' * 100000)
    for args, path, text in (
            (['fit', '--softmax', str(folder), '--priors', str(priors), '--out',
              str(tmp_path / 'm.json')], priors, 'meta must be a JSON object'),
            (['operating-point', '--results', 'r.csv', '--max-fn', '1', '--model', str(bundle),
              '--config', str(tmp_path / 'op.yaml')], bundle, 'member 0 has alpha nan'),
            (['miou', '--dataset', 'camvid', '--root', str(fixtures_camvid(tmp_path)),
              '--split', 'test', '--model', str(model)], model.with_suffix('.json'),
             'nested 100000 levels deep')):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert '\n' not in err and str(path) in err and text in err, err


def fixtures_camvid(tmp_path):
    """Return a CamVid-layout folder with one black test frame and its labels."""
    from PIL import Image

    root = tmp_path / 'camvid'
    for split in ('test', 'testannot'):
        (root / split).mkdir(parents=True)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / 'test' / 'f_000.png')
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / 'testannot' / 'f_000.png')
    return root
