"""TensorRT backend without a GPU: engine cache key, stale/corrupt engines, binding checks.

``tensorrt`` and ``pycuda`` are replaced by small fakes that follow NVIDIA's documented Python
API (TensorRT 10 tensor-based API, pycuda.driver): the fake "engine" is the ONNX file run by ONNX
Runtime, the fake device memory a dictionary. This exercises the backend's own logic (key,
cache, header, binding checks, buffer plumbing, stream order) but not TensorRT itself.
"""
from dataclasses import replace
import itertools
import logging

import numpy as np
import onnxruntime as ort
import pytest

from metafusion_ros.core.priors import Priors
from metafusion_ros.runtime.segmenter import load_segmenter
from metafusion_ros.runtime.segmenter.tensorrt_backend import (
    Binding, check_bindings, EngineError, EngineKey, load_or_build_engine, read_engine,
    write_engine)
from test_segmenter_onnx import C, image, spec_for, TABLE, write_model

_ORT_TYPES = {'tensor(float)': np.float32, 'tensor(uint8)': np.uint8,
              'tensor(int32)': np.int32}


class FakeTrt:
    """The parts of the ``tensorrt`` module the backend uses."""

    __version__ = '10.0.0-fake'
    builds = 0
    monitor_calls: list = []

    class Logger:
        """Mimic ``Logger`` of the real API."""

        WARNING = 2

        def __init__(self, level):
            """Mimic ``__init__`` of the real API."""
            self.level = level

    class NetworkDefinitionCreationFlag:
        """TensorRT 10: no EXPLICIT_BATCH member (networks are always explicit batch)."""

    class MemoryPoolType:
        """Mimic ``MemoryPoolType`` of the real API."""

        WORKSPACE = 'workspace'

    class BuilderFlag:
        """Mimic ``BuilderFlag`` of the real API."""

        FP16 = 'fp16'

    class TensorIOMode:
        """Mimic ``TensorIOMode`` of the real API."""

        INPUT, OUTPUT = 'input', 'output'

    class IProgressMonitor:
        """Mimic ``IProgressMonitor`` of the real API."""

        def __init__(self):
            """Mimic ``__init__`` of the real API."""
            pass

    @staticmethod
    def nptype(dtype):
        """Mimic ``nptype`` of the real API."""
        return dtype

    class Builder:
        """Mimic ``Builder`` of the real API."""

        def __init__(self, logger):
            """Mimic ``__init__`` of the real API."""
            self.logger = logger

        def create_network(self, flags):
            """Mimic ``create_network`` of the real API."""
            return type('Network', (), {'onnx': None})()

        def create_builder_config(self):
            """Mimic ``create_builder_config`` of the real API."""
            return type('Config', (), {
                'flags': set(), 'profiles': [], 'progress_monitor': None,
                'set_memory_pool_limit': lambda self, pool, size: setattr(self, 'limit', size),
                'set_flag': lambda self, flag: self.flags.add(flag),
                'add_optimization_profile': lambda self, p: self.profiles.append(p)})()

        def create_optimization_profile(self):
            """Mimic ``create_optimization_profile`` of the real API."""
            def set_shape(profile, name, low, opt, high):
                profile.shape = (name, low, opt, high)
            return type('Profile', (), {'set_shape': set_shape})()

        def build_serialized_network(self, network, config):
            """Mimic ``build_serialized_network`` of the real API."""
            FakeTrt.builds += 1
            assert config.profiles[0].shape[1] == config.profiles[0].shape[3]
            monitor = config.progress_monitor
            monitor.phase_start('Building engine', None, 20)
            for step in range(20):
                assert monitor.step_complete('Building engine', step)
            monitor.phase_finish('Building engine')
            return network.onnx

    class OnnxParser:
        """Mimic ``OnnxParser`` of the real API."""

        def __init__(self, network, logger):
            """Mimic ``__init__`` of the real API."""
            self.network, self.num_errors = network, 0

        def parse(self, data):
            """Mimic ``parse`` of the real API."""
            self.network.onnx = data
            return True

    class Runtime:
        """Mimic ``Runtime`` of the real API."""

        def __init__(self, logger):
            """Mimic ``__init__`` of the real API."""
            pass

        def deserialize_cuda_engine(self, blob):
            """Mimic ``deserialize_cuda_engine`` of the real API."""
            try:
                return FakeEngine(blob)
            except Exception:  # TensorRT returns None for a blob it cannot read
                return None


class FakeEngine:
    """An 'engine' that is the ONNX model run by ONNX Runtime."""

    def __init__(self, blob):
        """Mimic ``__init__`` of the real API."""
        self.session = ort.InferenceSession(blob, providers=['CPUExecutionProvider'])
        self.io = {**{i.name: (FakeTrt.TensorIOMode.INPUT, i)
                      for i in self.session.get_inputs()},
                   **{o.name: (FakeTrt.TensorIOMode.OUTPUT, o)
                      for o in self.session.get_outputs()}}
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, i):
        """Mimic ``get_tensor_name`` of the real API."""
        return list(self.io)[i]

    def get_tensor_mode(self, name):
        """Mimic ``get_tensor_mode`` of the real API."""
        return self.io[name][0]

    def get_tensor_dtype(self, name):
        """Mimic ``get_tensor_dtype`` of the real API."""
        return _ORT_TYPES[self.io[name][1].type]

    def create_execution_context(self):
        """Mimic ``create_execution_context`` of the real API."""
        return FakeContext(self)


class FakeContext:
    """Execution context: shapes, tensor addresses, execute_async_v3 on the fake device."""

    def __init__(self, engine):
        """Mimic ``__init__`` of the real API."""
        self.engine, self.addresses, self.shapes = engine, {}, {}

    def set_input_shape(self, name, shape):
        """Mimic ``set_input_shape`` of the real API."""
        self.shapes[name] = tuple(shape)

    def get_tensor_shape(self, name):
        """Mimic ``get_tensor_shape`` of the real API."""
        dims = self.engine.io[name][1].shape
        return self.shapes.get(name, tuple(d if isinstance(d, int) else -1 for d in dims))

    def set_tensor_address(self, name, address):
        """Mimic ``set_tensor_address`` of the real API."""
        self.addresses[name] = address

    def execute_async_v3(self, stream_handle):
        """Mimic ``execute_async_v3`` of the real API."""
        assert stream_handle == FakeCuda.Stream.HANDLE
        feeds = {n: FakeCuda.memory[self.addresses[n]] for n, (mode, _) in self.engine.io.items()
                 if mode == FakeTrt.TensorIOMode.INPUT}
        names = [o.name for o in self.engine.session.get_outputs()]
        for name, value in zip(names, self.engine.session.run(names, feeds)):
            FakeCuda.memory[self.addresses[name]] = value
        return True


class FakeCuda:
    """The parts of ``pycuda.driver`` the backend uses; device memory is a dictionary."""

    memory: dict = {}
    gpu = ('NVIDIA Fake 4090', (8, 9))
    contexts = 0
    _ids = itertools.count(1)

    @staticmethod
    def init():
        """Mimic ``init`` of the real API."""
        pass

    class Device:
        """Mimic ``Device`` of the real API."""

        def __init__(self, index):
            """Mimic ``__init__`` of the real API."""
            self.index = index

        def name(self):
            """Mimic ``name`` of the real API."""
            return FakeCuda.gpu[0]

        def compute_capability(self):
            """Mimic ``compute_capability`` of the real API."""
            return FakeCuda.gpu[1]

        def retain_primary_context(self):
            """Mimic ``retain_primary_context`` of the real API."""
            return type('Ctx', (), {
                'push': lambda self: setattr(FakeCuda, 'contexts', FakeCuda.contexts + 1),
                'pop': lambda self: setattr(FakeCuda, 'contexts', FakeCuda.contexts - 1)})()

    class Stream:
        """Mimic ``Stream`` of the real API."""

        HANDLE = 1234
        handle = HANDLE

        def synchronize(self):
            """Mimic ``synchronize`` of the real API."""
            pass

    @staticmethod
    def pagelocked_empty(shape, dtype):
        """Mimic ``pagelocked_empty`` of the real API."""
        return np.empty(shape, dtype)

    @staticmethod
    def mem_alloc(nbytes):
        """Mimic ``mem_alloc`` of the real API."""
        return next(FakeCuda._ids)

    @staticmethod
    def memcpy_htod_async(device, host, stream):
        """Mimic ``memcpy_htod_async`` of the real API."""
        FakeCuda.memory[int(device)] = host.copy()

    @staticmethod
    def memcpy_dtoh_async(host, device, stream):
        """Mimic ``memcpy_dtoh_async`` of the real API."""
        host[...] = FakeCuda.memory[int(device)]


@pytest.fixture
def fakes(tmp_path):
    """Return backend keyword arguments that inject the fakes and a private engine cache."""
    FakeTrt.builds = 0
    FakeCuda.gpu = ('NVIDIA Fake 4090', (8, 9))
    return {'trt_module': FakeTrt, 'cuda_module': FakeCuda, 'cache_dir': tmp_path / 'cache'}


def key(**changes) -> EngineKey:
    """Return an engine key with some fields changed."""
    base = EngineKey('10.0', 'NVIDIA H100', '9.0', 'fp16', (1, 3, 512, 1024), 'ab' * 32)
    return replace(base, **changes)


def test_cache_key_changes_with_every_field():
    """Each of TensorRT version, GPU, capability, precision, shape, ONNX hash changes it."""
    digests = {key().digest()}
    for change in ({'tensorrt': '10.1'}, {'gpu': 'NVIDIA A100'}, {'compute_capability': '8.0'},
                   {'precision': 'fp32'}, {'input_shape': (1, 3, 256, 512)},
                   {'onnx_sha256': 'cd' * 32}):
        digests.add(key(**change).digest())
    assert len(digests) == 7
    assert key().digest() == key().digest()
    assert key(gpu='NVIDIA A100').differences(key()) == [
        "gpu: engine 'NVIDIA H100', here 'NVIDIA A100'"]
    with pytest.raises(ValueError, match='precision'):
        key(precision='int4')


def test_engine_file_round_trip_and_corruption(tmp_path):
    """The header carries the key; bad magic, bad header or no engine are EngineErrors."""
    write_engine(tmp_path / 'e.engine', key(), b'engine-bytes')
    assert read_engine(tmp_path / 'e.engine') == (key(), b'engine-bytes')
    (tmp_path / 'bad.engine').write_bytes(b'\x00' * 64)
    with pytest.raises(EngineError, match='bad.engine: corrupt'):
        read_engine(tmp_path / 'bad.engine')
    data = (tmp_path / 'e.engine').read_bytes()
    (tmp_path / 'hdr.engine').write_bytes(data[:14] + b'{' + data[15:])
    with pytest.raises(EngineError, match='corrupt header'):
        read_engine(tmp_path / 'hdr.engine')
    (tmp_path / 'cut.engine').write_bytes(data[:-len(b'engine-bytes')])
    with pytest.raises(EngineError, match='truncated'):
        read_engine(tmp_path / 'cut.engine')
    with pytest.raises(FileNotFoundError):
        read_engine(tmp_path / 'none.engine')


def test_cache_rebuilds_stale_or_corrupt_and_rejects_foreign_engine(tmp_path, caplog):
    """Cached engines are reused, rebuilt when stale/corrupt; a given stale one is an error."""
    built = []

    def build():
        """Mimic ``build`` of the real API."""
        built.append(1)
        return b'blob%d' % len(built)
    assert load_or_build_engine(key(), build, tmp_path, 'm') == b'blob1'
    assert load_or_build_engine(key(), build, tmp_path, 'm') == b'blob1' and len(built) == 1
    path = tmp_path / f'm-{key().digest()}.engine'
    write_engine(path, key(gpu='NVIDIA A100'), b'old')  # e.g. a copied cache
    with caplog.at_level(logging.WARNING):
        assert load_or_build_engine(key(), build, tmp_path, 'm') == b'blob2'
    assert 'stale' in caplog.text and 'NVIDIA A100' in caplog.text
    path.write_bytes(b'garbage')
    assert load_or_build_engine(key(), build, tmp_path, 'm') == b'blob3'
    assert load_or_build_engine(key(), build, tmp_path, 'm', rebuild=True) == b'blob4'
    write_engine(tmp_path / 'given.engine', key(gpu='NVIDIA A100', compute_capability='8.0'),
                 b'x')
    with pytest.raises(EngineError, match=r'stale: gpu: engine .NVIDIA A100., here '
                                          r'.NVIDIA H100.; compute_capability'):
        load_or_build_engine(key(), build, tmp_path, 'm', tmp_path / 'given.engine')


def test_binding_shape_checks():
    """Engine I/O shapes are checked against the spec: input, rank, classes, dynamic dims."""
    spec = spec_for()
    good = [Binding('image', True, (1, 3, 12, 16), np.float32),
            Binding('probs', False, (1, C, 12, 16), np.float32)]
    check_bindings(good, spec, 'engine')
    cases = [
        ([Binding('image', True, (1, 3, 24, 32), np.float32), good[1]], 'preprocess config'),
        ([good[0], Binding('probs', False, (1, 5, 12, 16), np.float32)], 'has 5 classes'),
        ([good[0], Binding('probs', False, (1, 12, 16), np.float32)], 'not of rank 4'),
        ([good[0], Binding('probs', False, (1, C, -1, 16), np.float32)], 'unresolved dims'),
    ]
    for bindings, message in cases:
        with pytest.raises(ValueError, match=message):
            check_bindings(bindings, spec, 'engine')


def test_segmenter_with_fakes_matches_onnxruntime(tmp_path, fakes, caplog):
    """Build (with progress log), cache, pinned buffers and stream give ORT's result."""
    write_model(tmp_path / 'm.onnx')
    spec = spec_for()
    with caplog.at_level(logging.INFO):
        seg = load_segmenter(tmp_path / 'm.onnx', 'tensorrt', spec, precision='fp32', **fakes)
    assert 'TensorRT build: Building engine 20/20' in caplog.text and FakeTrt.builds == 1
    assert FakeCuda.contexts == 0  # context pushed and popped around every use
    ref = load_segmenter(tmp_path / 'm.onnx', spec=spec).infer(image()).probs
    np.testing.assert_allclose(seg.infer(image()).probs, ref, atol=1e-6)
    load_segmenter(tmp_path / 'm.onnx', 'tensorrt', spec, precision='fp32', **fakes)
    assert FakeTrt.builds == 1  # cached
    FakeCuda.gpu = ('NVIDIA Fake H100', (9, 0))
    load_segmenter(tmp_path / 'm.onnx', 'tensorrt', spec, precision='fp32', **fakes)
    assert FakeTrt.builds == 2  # another GPU: another key
    assert len(list(fakes['cache_dir'].glob('m-*.engine'))) == 2
    with pytest.raises(EngineError, match='stale: gpu'):
        engine = next(p for p in fakes['cache_dir'].glob('m-*.engine')
                      if read_engine(p)[0].gpu == 'NVIDIA Fake 4090')
        load_segmenter(tmp_path / 'm.onnx', 'tensorrt', spec, engine_path=engine,
                       precision='fp32', **fakes)


def test_segmenter_with_fakes_errors(tmp_path, fakes):
    """Missing packages and bad engine blobs are clear errors."""
    write_model(tmp_path / 'm.onnx')
    priors = Priors(np.full((6, 8, C), 1.0 / C, np.float32), TABLE)
    seg = load_segmenter(tmp_path / 'm.onnx', 'tensorrt', spec_for(), priors=priors, **fakes)
    with pytest.raises(ValueError, match='optional packages tensorrt and pycuda'):
        load_segmenter(tmp_path / 'm.onnx', 'tensorrt', spec_for())
    engine = tmp_path / 'junk.engine'
    write_engine(engine, seg.key, b'not an engine')
    with pytest.raises(EngineError, match='cannot deserialize'):
        load_segmenter(tmp_path / 'm.onnx', 'tensorrt', spec_for(), priors=priors,
                       engine_path=engine, **fakes)
