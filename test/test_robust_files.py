"""Robustness, files: every bad file or config fails the node's start-up with one clear line.

Missing, empty, truncated or corrupt networks, engines, priors, meta models and manifests, files
that belong to another dataset, feature schema or class table, and parameter files with unknown
or out-of-range values. Each case is a node process of its own (own ROS domain); all of them
start together at module set-up and exit by themselves, so the module takes about as long as
its slowest case. Every bad file lies in a folder whose name has a space, and the one line must
name it in full. Nothing a user hands us is ever unpickled: a pickled payload that would leave a
marker file is refused, and no loader in the package can unpickle.
"""
import hashlib
import importlib.util
import io
import json
from pathlib import Path
import re
import shutil
import signal
import subprocess
import zipfile

import fixtures
import numpy as np
import pytest
from test_node_harness import domain_for, node_output, ros_env, stop_node, write_files
from toy_data import write_meta_model

from metafusion_ros.core.classes import ClassTable, cityscapes_table
from metafusion_ros.core.priors import Priors
from metafusion_ros.ros import process
from metafusion_ros.ros.params import (mistyped_parameter, params_file_problem, params_files,
                                       unknown_parameters)
from metafusion_ros.runtime.engine import ConfigurationError, EngineConfig, FusionEngine
from metafusion_ros.runtime.segmenter.base import file_sha256
from metafusion_ros.runtime.segmenter.precision import int8_sibling
from metafusion_ros.runtime.segmenter.tensorrt_backend import EngineKey, write_engine

DOMAIN = domain_for(83)
PACKAGE = Path(__file__).resolve().parents[1] / 'metafusion_ros'
HAS_TENSORRT = importlib.util.find_spec('tensorrt') is not None
OTHER_TABLE = ClassTable(name='tiny_other', class_names=('road', 'person', 'car'),
                         ignore_label=255, target=1,
                         palette=((1, 1, 1), (2, 2, 2), (3, 3, 3)))


class Marker:
    """A pickled object whose unpickling creates ``path``: proof that something unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __reduce__(self):
        """Unpickle as ``Path.touch(path)``."""
        return Path.touch, (self.path,)


def pickled_priors(path: Path, marker: Path) -> Path:
    """Write a priors-like .npz whose ``probs`` is an object array carrying a Marker."""
    meta = json.dumps({'format': 'metafusion-priors/1'})
    np.savez(path, probs=np.array([Marker(marker)], dtype=object), meta=np.array(meta))
    return path


def _bundle_copy(meta: Path, target: Path, member_data: bytes | None = None,
                 sha_of_data: bool = True, **changes) -> Path:
    """Copy bundle ``meta`` to ``target`` (members beside it), its manifest changed.

    ``member_data`` replaces the booster of α = 1 (with its SHA-256 recorded or not).
    """
    manifest = json.loads(meta.read_text())
    for record in manifest['members']:
        name = target.stem + record['model_file'][len(meta.stem):]
        data = (meta.parent / record['model_file']).read_bytes()
        if member_data is not None and record['alpha'] == 1.0:
            data = member_data
            if sha_of_data:
                record['model_sha256'] = hashlib.sha256(data).hexdigest()
        (target.parent / name).write_bytes(data)
        record['model_file'] = name
    manifest.update(changes)
    target.write_text(json.dumps(manifest))
    return target


def write_npz(path, members: dict) -> None:
    """Write an .npz whose members are raw ``.npy`` bytes (headers free to lie)."""
    with zipfile.ZipFile(path, 'w') as archive:
        for name, data in members.items():
            archive.writestr(f'{name}.npy', data)


def npy_bytes(array: np.ndarray | None = None, shape=None, descr: str = '<f4') -> bytes:
    """Return the ``.npy`` bytes of ``array``, or a header declaring ``shape`` over 8 bytes."""
    buffer = io.BytesIO()
    if array is not None:
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()
    np.lib.format.write_array_header_1_0(buffer, {'descr': descr, 'fortran_order': False,
                                                  'shape': shape})
    return buffer.getvalue() + bytes(8)


def _params_yaml(path: Path, text: str) -> Path:
    """Write a node parameter file with ``text`` under ``/**: ros__parameters:``."""
    body = ''.join(f'    {line}\n' for line in text.splitlines())
    path.write_text(f'/**:\n  ros__parameters:\n{body}')
    return path


def _int8_of_another_network(path: Path, source: Path) -> Path:
    """Write a network at ``path`` whose INT8 sibling records ``source`` as its fp32 network."""
    fixtures.write_retrained_model(path)
    sibling = int8_sibling(path)
    shutil.copy(source, sibling)
    spec = json.loads(source.with_suffix('.json').read_text())
    spec['quantization'] = {'source': {'file': source.name, 'sha256': file_sha256(source)}}
    sibling.with_suffix('.json').write_text(json.dumps(spec))
    return path


def write_bad_files(bad: Path, files: dict) -> dict:
    """Write every bad file of the matrix into ``bad``; return their paths by case key."""
    model, priors, meta = files['model'], files['priors'], files['meta']
    spec = model.with_suffix('.json').read_text()
    rng = np.random.default_rng(7)
    out = {}

    def onnx(name: str, data: bytes, with_spec: bool = True) -> Path:
        """Write a model file (and a valid spec beside it)."""
        path = bad / name
        path.write_bytes(data)
        if with_spec:
            path.with_suffix('.json').write_text(spec)
        return path

    data = model.read_bytes()
    out['model_empty'] = onnx('empty model.onnx', b'')
    out['model_truncated'] = onnx('truncated model.onnx', data[:len(data) // 2])
    out['model_corrupt'] = onnx('random model.onnx', rng.bytes(len(data)))
    out['model_without_spec'] = onnx('lonely model.onnx', data, with_spec=False)
    out['spec_corrupt'] = onnx('garbled spec model.onnx', data)
    out['spec_corrupt'].with_suffix('.json').write_text('{"preprocess": [1, 2')
    out['engine_as_model'] = bad / 'tiny model.engine'
    write_engine(out['engine_as_model'], EngineKey('10.0', 'GPU', '9.0', 'fp16', (1, 3, 48, 64),
                                                   'ab' * 32), b'serialized engine')
    packed = priors.read_bytes()
    out['priors_empty'] = bad / 'empty priors.npz'
    out['priors_empty'].write_bytes(b'')
    out['priors_truncated'] = bad / 'truncated priors.npz'
    out['priors_truncated'].write_bytes(packed[:len(packed) // 2])
    out['priors_corrupt'] = bad / 'corrupt priors.npz'
    out['priors_corrupt'].write_bytes(b'PK\x03\x04 not really a zip' + rng.bytes(64))
    out['priors_pickled'] = pickled_priors(bad / 'pickled priors.npz', bad / 'UNPICKLED')
    out['priors_not_priors'] = bad / 'weights not priors.npz'
    np.savez(out['priors_not_priors'], probs=np.ones((48, 64, 3), np.float32))
    out['priors_other_dataset'] = fixtures.write_priors(bad / 'cityscapes priors.npz',
                                                        table=cityscapes_table())
    with np.load(priors, allow_pickle=False) as arrays:
        probs, meta_bytes = arrays['probs'], npy_bytes(arrays['meta'])
    out['priors_declares_298_gib'] = bad / 'bomb priors.npz'
    write_npz(out['priors_declares_298_gib'], {'probs': npy_bytes(shape=(100000, 100000, 8)),
                                               'meta': meta_bytes})
    out['priors_meta_an_integer'] = bad / 'int meta priors.npz'
    write_npz(out['priors_meta_an_integer'], {'probs': npy_bytes(probs),
                                              'meta': npy_bytes(np.array('5'))})
    out['priors_all_zero'] = bad / 'zero priors.npz'
    write_npz(out['priors_all_zero'], {'probs': npy_bytes(probs * 0), 'meta': meta_bytes})
    out['priors_times_1000'] = bad / 'scaled priors.npz'
    write_npz(out['priors_times_1000'], {'probs': npy_bytes(probs * 1000), 'meta': meta_bytes})
    out['meta_empty'] = _bundle_copy(meta, bad / 'empty meta.json', b'')
    out['meta_corrupt'] = _bundle_copy(meta, bad / 'corrupt meta.json', b'{"learner": [',
                                       sha_of_data=False)
    out['meta_member_missing'] = _bundle_copy(meta, bad / 'incomplete meta.json')
    (bad / 'incomplete meta.a1.json').unlink()
    out['meta_booster_only'] = bad / 'incomplete meta.a0.9.json'
    out['manifest_corrupt'] = bad / 'cut meta.json'
    out['manifest_corrupt'].write_text(meta.read_text()[:100])
    names = json.loads(meta.read_text())['feature_names']
    out['manifest_tampered'] = _bundle_copy(meta, bad / 'edited meta.json',
                                            feature_names=names[:-1])
    escaping = json.loads(meta.read_text())['members']
    escaping[0]['model_file'] = '../../etc/passwd'
    out['manifest_escapes'] = _bundle_copy(meta, bad / 'escaping meta.json')
    out['manifest_escapes'].write_text(json.dumps(dict(json.loads(meta.read_text()),
                                                       members=escaping)))
    out['meta_other_priors'] = _bundle_copy(meta, bad / 'other priors meta.json',
                                            priors_digest='0' * 16)
    out['manifest_alpha_nan'] = _bundle_copy(meta, bad / 'nan alpha meta.json')
    nan_first = json.loads(out['manifest_alpha_nan'].read_text())
    nan_first['members'][0]['alpha'] = float('nan')
    out['manifest_alpha_nan'].write_text(json.dumps(nan_first))
    out['spec_nested'] = onnx('nested spec model.onnx', data)
    out['spec_nested'].with_suffix('.json').write_text('[' * 100000 + ']' * 100000)
    out['meta_other_network'] = _bundle_copy(meta, bad / 'other network meta.json',
                                             network_digest='f' * 64)
    out['meta_other_schema'] = write_meta_model(bad / 'cityscapes meta.json',
                                                out['priors_other_dataset'])
    other = fixtures.write_priors(bad / 'other table priors.npz', table=OTHER_TABLE)
    out['meta_other_table'] = write_meta_model(bad / 'other table meta.json', other)
    out['int8_other_network'] = _int8_of_another_network(bad / 'other net.onnx', model)
    out['yaml_unknown_key'] = _params_yaml(bad / 'typo params.yaml', 'alhpa: 0.5')
    out['yaml_unknown_nested'] = _params_yaml(bad / 'nested typo.yaml',
                                              'outputs:\n  makers: false')
    out['yaml_out_of_range'] = _params_yaml(bad / 'range params.yaml', 'alpha: 3.0')
    out['yaml_bad_choice'] = _params_yaml(bad / 'choice params.yaml', 'backend: cuda')
    out['yaml_text_number'] = _params_yaml(bad / 'quoted params.yaml', 'alpha: "0.5"')
    out['yaml_invalid'] = bad / 'broken params.yaml'
    out['yaml_invalid'].write_text('/**:\n  ros__parameters:\n    alpha: [1.0\n')
    out['yaml_not_params'] = bad / 'plain params.yaml'
    out['yaml_not_params'].write_text('alpha: 0.5\n')
    out['yaml_missing'] = bad / 'no such params.yaml'
    return out


# case -> (parameter overrides ({bad} / {meta} / {priors}: paths), parameter file key or None,
#          exit code, texts the one line must hold); {file} is the case's own bad file.
CASES = {
    'model_missing': ({'model_path': '{bad}/no such model.onnx'}, None, 1,
                      ['{bad}/no such model.onnx', 'does not exist']),
    'model_empty': ({'model_path': '{file}'}, None, 1, ['{file}', 'not a valid ONNX file']),
    'model_truncated': ({'model_path': '{file}'}, None, 1, ['{file}', 'not a valid ONNX file']),
    'model_corrupt': ({'model_path': '{file}'}, None, 1, ['{file}', 'not a valid ONNX file']),
    'model_without_spec': ({'model_path': '{file}'}, None, 1, ['{file}', 'no spec file']),
    'spec_corrupt': ({'model_path': '{file}'}, None, 1,
                     ['garbled spec model.json', 'not valid JSON/YAML']),
    'engine_as_model': ({'model_path': '{file}', 'backend': 'tensorrt'}, None, 1,
                        ['{file}', 'is a TensorRT engine file, not an ONNX model']),
    'priors_missing': ({'priors_path': '{bad}/no such priors.npz'}, None, 1,
                       ['{bad}/no such priors.npz', 'does not exist']),
    'priors_folder': ({'priors_path': '{bad}'}, None, 1, ['{bad}', 'is a folder']),
    'priors_empty': ({'priors_path': '{file}'}, None, 1, ['{file}', 'not a .npz archive']),
    'priors_truncated': ({'priors_path': '{file}'}, None, 1, ['{file}', 'not a .npz archive']),
    'priors_corrupt': ({'priors_path': '{file}'}, None, 1, ['{file}', 'not a .npz archive']),
    'priors_pickled': ({'priors_path': '{file}'}, None, 1,
                       ['{file}', 'Object arrays cannot be loaded when allow_pickle=False']),
    'priors_not_priors': ({'priors_path': '{file}'}, None, 1,
                          ['{file}', 'not a readable priors .npz', 'meta']),
    'priors_other_dataset': ({'priors_path': '{file}'}, None, 1,
                             ['{file}', "'cityscapes', 19 classes", '(3 classes)']),
    'priors_declares_298_gib': ({'priors_path': '{file}'}, None, 1,
                                ['{file}', "array 'probs' declares shape (100000, 100000, 8)"]),
    'priors_meta_an_integer': ({'priors_path': '{file}'}, None, 1,
                               ['{file}', 'meta must be a JSON object, got int']),
    'priors_all_zero': ({'priors_path': '{file}'}, None, 1,
                        ['{file}', 'priors are not probabilities', 'they sum to 0']),
    'priors_times_1000': ({'priors_path': '{file}'}, None, 1,
                          ['{file}', 'priors are not probabilities', 'they sum to 1000']),
    'manifest_alpha_nan': ({'meta_model_path': '{file}'}, None, 1,
                           ['{file}', 'member 0 has alpha nan']),
    'spec_nested': ({'model_path': '{file}'}, None, 1,
                    ['nested spec model.json', 'nested 100000 levels deep']),
    'meta_missing': ({'meta_model_path': '{bad}/no such meta.json'}, None, 1,
                     ['{bad}/no such meta.json', 'does not exist']),
    'meta_empty': ({'meta_model_path': '{file}'}, None, 1,
                   ['{file}, member for alpha 1', 'empty meta.a1.json is not a readable XGBoost '
                    'model']),
    'meta_corrupt': ({'meta_model_path': '{file}'}, None, 1,
                     ['{file}, member for alpha 1', 'does not match the SHA-256']),
    'meta_member_missing': ({'meta_model_path': '{file}'}, None, 1,
                            ['{file}, member for alpha 1: booster file '
                             '{bad}/incomplete meta.a1.json does not exist']),
    'meta_booster_only': ({'meta_model_path': '{file}'}, None, 1,
                          ['{file}', 'bare XGBoost booster']),
    'manifest_corrupt': ({'meta_model_path': '{file}'}, None, 1, ['{file}', 'not valid JSON']),
    'manifest_tampered': ({'meta_model_path': '{file}'}, None, 1,
                          ['{file}', 'feature schema differs']),
    'manifest_escapes': ({'meta_model_path': '{file}'}, None, 1,
                         ['{file}', "'../../etc/passwd' is not a file name"]),
    'meta_other_priors': ({'meta_model_path': '{file}'}, None, 1,
                          ['{file} does not match the runtime configuration: priors differ']),
    'meta_other_network': ({'meta_model_path': '{file}'}, None, 1,
                           ['{file} does not match the runtime configuration: network differs']),
    'meta_other_schema': ({'meta_model_path': '{file}'}, None, 1,
                          ['{bad}/cityscapes meta.json', 'feature schema differs',
                           'class table differs']),
    'meta_other_table': ({'meta_model_path': '{file}'}, None, 1,
                         ['{bad}/other table meta.json', 'class table differs']),
    'meta_alpha_out_of_reach': ({'meta_model_path': '{meta}', 'alpha': 0.3}, None, 1,
                                ['{meta} has no classifier for alpha 0.3: its grid is 0.5, 0.9, '
                                 '1 and the nearest member (0.5) is more than 0.1 away']),
    'int8_missing': ({'precision': 'int8'}, None, 1,
                     ['{model} has no INT8 network beside it', 'tiny model.int8.onnx does not '
                      'exist', 'metafusion quantize --model {model}']),
    'int8_other_network': ({'model_path': '{file}', 'precision': 'int8'}, None, 1,
                           ['INT8 model {bad}/other net.int8.onnx was quantized from another '
                            'network', '{file} has']),
    'yaml_unknown_key': ({}, 'yaml_unknown_key', 2,
                         ['{file}', "unknown parameter 'alhpa' (did you mean 'alpha'?)"]),
    'yaml_unknown_nested': ({}, 'yaml_unknown_nested', 2,
                            ['{file}', "'outputs.makers' (did you mean 'outputs.markers'?)"]),
    'yaml_out_of_range': ({}, 'yaml_out_of_range', 2, ['{file}', 'alpha out of range']),
    'yaml_bad_choice': ({}, 'yaml_bad_choice', 2,
                        ['{file}', "backend: 'cuda' is not one of onnxruntime, "
                                   "onnxruntime-cpu, onnxruntime-cuda, tensorrt"]),
    'yaml_text_number': ({}, 'yaml_text_number', 2,  # after the package YAML: rcl drops it
                         ["alpha: '0.5' (set by --params-file {file}) is text, not a number"]),
    'param_text_number': ({'alpha': '0,5'}, None, 2,
                          ["alpha: '0,5' (set by -p) is text, not a number"]),
    'yaml_invalid': ({}, 'yaml_invalid', 2, ['{file}', 'not valid YAML at line 4']),
    'yaml_not_params': ({}, 'yaml_not_params', 2, ['{file}', 'ros__parameters']),
    'yaml_missing': ({}, 'yaml_missing', 2, ['{file}', 'does not exist']),
    'alpha_out_of_range': ({'alpha': 2.0}, None, 2, ['alpha out of range', '(set by']),
    'tensorrt_not_installed': ({'backend': 'tensorrt'}, None, 1,
                               ['{model}', 'optional packages tensorrt and pycuda']),
    'cuda_provider_missing': ({'backend': 'onnxruntime-cuda'}, None, 1,
                              ['{model}', 'needs onnxruntime-gpu']),
}
if HAS_TENSORRT:  # there the engine is built: not a start-up failure
    del CASES['tensorrt_not_installed']
if 'CUDAExecutionProvider' in importlib.import_module('onnxruntime').get_available_providers():
    del CASES['cuda_provider_missing']  # onnxruntime-gpu: the CUDA provider starts
# Cases run as node processes (one per loader and parameter path: the node turns every loader
# error into its one line the same way); the others load the files as the node's configure does.
PROCESS = ['model_missing', 'model_corrupt', 'spec_corrupt', 'engine_as_model',
           'priors_truncated', 'priors_pickled', 'priors_other_dataset', 'meta_corrupt',
           'priors_declares_298_gib', 'priors_meta_an_integer', 'priors_all_zero',
           'manifest_alpha_nan',
           'meta_member_missing', 'meta_other_schema', 'meta_other_priors', 'meta_other_network',
           'meta_alpha_out_of_reach', 'int8_other_network', 'yaml_unknown_key',
           'yaml_unknown_nested', 'yaml_out_of_range', 'yaml_bad_choice', 'yaml_text_number',
           'param_text_number', 'yaml_invalid',
           'alpha_out_of_range']
IN_PROCESS = [c for c in CASES if c not in PROCESS and CASES[c][1] is None]
PARAMS_FILES = [c for c in CASES if c not in PROCESS and CASES[c][1] is not None]


def start(env: dict, params: dict, name: str, params_file: Path | None) -> subprocess.Popen:
    """Start the node with ``params`` and an extra parameter file; output to a file."""
    log = Path(env['ROS_LOG_DIR']) / f'{name}.out'
    log.parent.mkdir(parents=True, exist_ok=True)
    command = process.node_command(params, name)
    if params_file is not None:
        command += ['--params-file', str(params_file)]
    with open(log, 'w') as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _fill(text: str, values: dict) -> str:
    """Replace ``{key}`` placeholders (not str.format: paths may hold braces)."""
    return re.sub(r'\{(\w+)\}', lambda m: str(values.get(m.group(1), m.group(0))), str(text))


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
    """Write the good and the bad files; start one node per process case (they exit alone)."""
    folder = tmp_path_factory.mktemp('robust files')
    files = write_files(folder)
    (folder / 'bad files').mkdir()
    paths = write_bad_files(folder / 'bad files', files)
    env = ros_env(DOMAIN, folder / 'log')
    procs, values, params = {}, {}, {}
    for case, (overrides, params_file, _, _) in CASES.items():
        values[case] = {'bad': folder / 'bad files', 'meta': files['meta'],
                        'model': files['model'], 'file': paths.get(params_file or case, '')}
        params[case] = {'model_path': files['model'], 'priors_path': files['priors']}
        params[case].update({k: _fill(v, values[case]) for k, v in overrides.items()})
        if case in PROCESS:
            procs[case] = start(env, params[case], f'bad_{case}',
                                paths[params_file] if params_file else None)
    yield {'procs': procs, 'values': values, 'params': params, 'bad': folder / 'bad files'}
    for proc in procs.values():
        stop_node(proc, signal.SIGKILL)


def _check_line(line: str, case: str, values: dict) -> None:
    """Assert that ``line`` holds every text the case expects (paths in full)."""
    for text in CASES[case][3]:
        assert _fill(text, values) in line, line


@pytest.mark.parametrize('case', IN_PROCESS)
def test_bad_file_fails_configure_with_one_line(bad, case):
    """The loaders of the node's configure raise one line naming the file and the problem."""
    params = bad['params'][case]
    with pytest.raises(ConfigurationError) as info:
        FusionEngine.load(EngineConfig(**params))
    assert '\n' not in str(info.value)
    _check_line(str(info.value), case, bad['values'][case])


@pytest.mark.parametrize('case', PARAMS_FILES)
def test_bad_parameter_file_is_named(bad, case):
    """A missing parameter file, or one without node parameters, is named before rclpy starts."""
    path = bad['values'][case]['file']
    problem = params_file_problem(['node', '--ros-args', '--params-file', str(path)])
    assert '\n' not in problem
    _check_line(problem, case, bad['values'][case])


@pytest.mark.parametrize('case', PROCESS)
def test_bad_file_fails_start_up_with_one_line(bad, case):
    """The node exits (1: configure failed, 2: bad parameters) with one line naming the file."""
    proc = bad['procs'][case]
    proc.wait(timeout=120)
    output = node_output(proc)
    lines = [line for line in output.splitlines() if line.strip()]
    code = CASES[case][2]
    assert proc.returncode == code, output
    assert len(lines) == 1, output
    assert 'Traceback' not in output
    _check_line(lines[0], case, bad['values'][case])
    assert ('configure failed' in lines[0]) == (code == 1)


def test_pickled_priors_never_unpickled(bad):
    """The pickled payload is live (it touches a marker when unpickled) and the node refused it."""
    folder = bad['bad']
    bad['procs']['priors_pickled'].wait(timeout=120)
    assert not (folder / 'UNPICKLED').exists()
    control = pickled_priors(folder / 'control.npz', folder / 'CONTROL')
    with pytest.raises(ValueError, match='allow_pickle=False'):
        Priors.load(control)
    assert not (folder / 'CONTROL').exists()
    with np.load(control, allow_pickle=True) as data:  # what a careless loader would do
        data['probs']
    assert (folder / 'CONTROL').exists()


# Calls that can unpickle, and what makes them safe where they are allowed at all.
UNPICKLERS = {
    r'\bimport pickle\b|\bpickle\.|\bcloudpickle\b|\bjoblib\b|\bdill\b': None,
    r'\byaml\.(unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b': None,
    r'\byaml\.load\(': r'Loader=RclLoader',  # a SafeLoader (checked below)
    r'\bnp\.load\(': r'allow_pickle=False',
    r'\btorch\.load\(': r'weights_only=True',
}


def _call(text: str, start: int) -> str:
    """Return the call that starts at ``start`` up to its closing parenthesis (or the line)."""
    opening, newline = text.find('(', start), text.find('\n', start)
    if opening < 0 or 0 <= newline < opening:
        return text[start:newline]
    depth = 0
    for end in range(opening, len(text)):
        depth += {'(': 1, ')': -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end + 1]
    return text[start:]


def test_no_loader_can_unpickle():
    """No module imports pickle or loads YAML unsafely; np.load / torch.load refuse pickles."""
    import yaml

    from metafusion_ros.ros.params import RclLoader
    assert issubclass(RclLoader, yaml.SafeLoader) and not issubclass(RclLoader, yaml.FullLoader)
    assert RclLoader.yaml_constructors == yaml.SafeLoader.yaml_constructors
    problems = []
    for path in sorted(PACKAGE.rglob('*.py')):
        text = path.read_text()
        for pattern, safe in UNPICKLERS.items():
            for match in re.finditer(pattern, text):
                call = _call(text, match.start())
                if safe is None or safe not in call:
                    line = text.count('\n', 0, match.start()) + 1
                    problems.append(f'{path.relative_to(PACKAGE.parent)}:{line}: {call[:80]}')
    assert not problems, problems


def test_params_helpers():
    """Parameter files are found after --ros-args; unknown names get a suggestion."""
    argv = ['node', '--params-file', 'x.yaml', '--ros-args', '-p', 'a:=1', '--params-file',
            'a b.yaml', '--', '--params-file', 'y.yaml']
    assert params_files(argv) == ['a b.yaml']
    assert unknown_parameters(['alpha', 'qos_overrides./x.publisher.depth'], ['alpha']) == ''
    text = unknown_parameters(['tua', 'zzz'], ['alpha', 'tau'], argv)
    assert text.startswith("unknown parameters 'tua' (did you mean 'tau'?), 'zzz' (set by "
                           "--params-file a b.yaml or -p)")
    assert params_file_problem(['n', '--ros-args']) == ''


def test_text_where_a_number_belongs_is_named(tmp_path):
    """The last source of a parameter wins; only this node's sections count; rcl's number forms."""
    defaults = {'alpha': 1.0, 'outputs.markers': True, 'model_path': '', 'qos.depth': 5}
    package = ['node', '--ros-args', '--params-file', str(process.package_file('config',
                                                                               'fusion.yaml'))]

    def problem(*extra: str, text: str = '') -> str:
        if text:
            (tmp_path / 'p.yaml').write_text(text)
        return mistyped_parameter(package + list(extra), defaults, 'metafusion_node')

    user = ['--params-file', str(tmp_path / 'p.yaml')]
    assert problem() == ''
    for good in ('alpha:=1e-1', 'alpha:=.5', 'alpha:=-2E-3', 'model_path:=1 2', 'qos.depth:=7'):
        assert problem('-p', good) == '', good
    assert 'is text, not a number' in problem('-p', 'alpha:=high')
    assert problem('-p', 'alpha:=high', '-p', 'alpha:=0.2') == ''  # the last one wins
    assert 'outputs.markers' in problem(*user, text='/**:\n  ros__parameters:\n'
                                        '    outputs: {markers: maybe}\n')
    assert problem(*user, text='/**:\n  ros__parameters:\n    outputs: {markers: "no"}\n'
                   ).startswith("outputs.markers: 'no'")  # quoted: text, as rcl reads it
    other = 'other_node:\n  ros__parameters:\n    alpha: high\n'
    assert problem(*user, text=other) == ''  # another node's section
    assert 'alpha' in problem('-r', '__node:=other_node', *user, text=other)  # remapped name
    nested = '/cams:\n  metafusion_node:\n    ros__parameters:\n      qos: {depth: "5"}\n'
    assert problem(*user, text=nested).startswith("qos.depth: '5' (set by --params-file")


def test_engine_cache_error_paths(tmp_path, caplog):
    """Given engines missing / empty are named; a stale cache rebuilds; an unwritable one warns."""
    from test_segmenter_onnx import image, spec_for, write_model
    from test_segmenter_tensorrt import FakeCuda, FakeTrt

    from metafusion_ros.runtime.segmenter import load_segmenter
    from metafusion_ros.runtime.segmenter.tensorrt_backend import EngineError

    model = tmp_path / 'my model.onnx'
    write_model(model)
    fakes = {'trt_module': FakeTrt, 'cuda_module': FakeCuda, 'precision': 'fp32'}
    FakeTrt.builds = 0
    with pytest.raises(FileNotFoundError, match='no such.engine does not exist'):
        load_segmenter(model, 'tensorrt', spec_for(), engine_path=tmp_path / 'no such.engine',
                       **fakes)
    (tmp_path / 'empty one.engine').write_bytes(b'')
    with pytest.raises(EngineError, match='empty one.engine: corrupt or not written by'):
        load_segmenter(model, 'tensorrt', spec_for(), engine_path=tmp_path / 'empty one.engine',
                       **fakes)
    cache = tmp_path / 'cache'
    load_segmenter(model, 'tensorrt', spec_for(), cache_dir=cache, **fakes)
    cached = next(cache.glob('my model-*.engine'))
    cached.write_bytes(cached.read_bytes()[:20])  # a build interrupted by a power cut
    with caplog.at_level('WARNING'):
        load_segmenter(model, 'tensorrt', spec_for(), cache_dir=cache, **fakes)
    assert 'rebuilding' in caplog.text and FakeTrt.builds == 2
    (tmp_path / 'a file').write_text('not a folder')
    with caplog.at_level('WARNING'):
        segmenter = load_segmenter(model, 'tensorrt', spec_for(), cache_dir=tmp_path / 'a file',
                                   **fakes)
    assert 'not cached' in caplog.text and segmenter.infer(image()).probs.shape[:2] == (36, 48)
