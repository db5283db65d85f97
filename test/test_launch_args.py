"""fusion.launch.py's arguments (``metafusion_ros.ros.launch_args``): defaults, checks, wiring.

Pure Python: no ``launch`` needed. The last test runs the launch file itself with recording
stand-ins for ``launch`` / ``launch_ros`` (absent here) to check that it hands the checked
settings to the Node action unchanged; test_launch_examples.py starts every documented example.
"""
import importlib.util
import sys
import types

import pytest
from test_chains import NAMES, tiny_chain
from test_node_harness import REPO

import fixtures
from metafusion_ros.ros.launch_args import (arguments, CHOICES, command_line,
                                            LaunchArgumentError, node_settings, sibling_topic)
from metafusion_ros.runtime.chains import DEFAULT_CHAIN

SHARE = str(REPO)  # the source tree has the share folder's layout (config/, models/, launch/)


def test_defaults_use_the_default_chain_and_camera_topics():
    """No argument: package config, the default chain, /camera topics, config's α / τ / QoS."""
    settings = node_settings({}, SHARE)
    assert (settings.name, settings.namespace) == ('metafusion_node', '')
    assert settings.config_file == f'{SHARE}/config/fusion.yaml'
    assert settings.overrides == {'use_sim_time': False, 'model_path': DEFAULT_CHAIN,
                                  'priors_path': '', 'meta_model_path': ''}
    assert settings.remappings == [('~/input/image', '/camera/image_raw'),
                                   ('~/input/image/compressed', '/camera/image_raw/compressed'),
                                   ('~/input/camera_info', '/camera/camera_info')]
    assert settings.env['FASTDDS_DEFAULT_PROFILES_FILE'].endswith(
        'config/fastdds_large_frames.xml')


def test_overrides_qos_and_sim_time():
    """α, τ, backend and qos become parameters; meta_model none keeps every candidate."""
    settings = node_settings({'alpha': '0.8', 'tau': ' 0.4', 'backend': 'tensorrt',
                              'qos': 'reliable', 'meta_model': 'None',
                              'use_sim_time': 'True'}, SHARE)
    assert settings.overrides['alpha'] == 0.8 and settings.overrides['tau'] == 0.4
    assert settings.overrides['backend'] == 'tensorrt'
    assert settings.overrides['qos.reliability'] == 'reliable'
    assert settings.overrides['meta_model_path'] == 'none'
    assert settings.overrides['use_sim_time'] is True
    assert node_settings({'use_sim_time': 'no'}, SHARE).overrides['use_sim_time'] is False


def test_model_names_a_chain_or_a_file_of_one(tmp_path):
    """model:=NAME passes the name (the node resolves it); a chain's network path needs no priors.

    Given priors and meta files are passed on; a network of no chain without priors is refused.
    """
    settings = node_settings({'model': 'camvid_espnet'}, SHARE)
    assert (settings.overrides['model_path'], settings.overrides['priors_path']) == (
        'camvid_espnet', '')
    network = f'{SHARE}/models/camvid.onnx'
    priors = f'{SHARE}/models/camvid_category_priors.npz'
    settings = node_settings({'model': network, 'priors': priors}, SHARE)
    assert (settings.overrides['model_path'], settings.overrides['priors_path'],
            settings.overrides['meta_model_path']) == (network, priors, '')
    own = fixtures.write_model(tmp_path / 'own.onnx')
    with pytest.raises(LaunchArgumentError, match=r"launch argument model:='.*own.onnx': is in "
                                                  r'no chain manifest: give its priors'):
        node_settings({'model': str(own)}, SHARE)
    assert node_settings({'model': str(own), 'priors': priors}, SHARE).overrides[
        'priors_path'] == priors


def test_unknown_chain_or_changed_member_is_one_line(tmp_path):
    """model:=<unknown name> lists the shipped chains; a changed member is named."""
    with pytest.raises(LaunchArgumentError) as info:
        node_settings({'model': 'cityscapes'}, SHARE)
    text = str(info.value)
    assert text.startswith("launch argument model:='cityscapes': unknown chain 'cityscapes': ")
    assert NAMES in text
    assert '\n' not in text
    chain = tiny_chain(tmp_path / 'models')
    chain.priors.write_bytes(chain.priors.read_bytes()[:-1])
    with pytest.raises(LaunchArgumentError, match=f'member priors file {chain.priors} does not '
                                                  f'match the SHA-256'):
        node_settings({'model': str(chain.network)}, SHARE)


def test_each_camera_gets_its_own_camera_info():
    """camera_info follows the input topic per camera unless given; a trailing / is dropped."""
    front = node_settings({'namespace': 'front', 'input_topic': '/front/image_raw'}, SHARE)
    rear = node_settings({'namespace': '/rear/', 'input_topic': '/rear/image_raw'}, SHARE)
    assert front.remappings[2] == ('~/input/camera_info', '/front/camera_info')
    assert (rear.namespace, rear.remappings[2][1]) == ('/rear', '/rear/camera_info')
    given = node_settings({'input_topic': 'image', 'camera_info_topic': '/cal/info'}, SHARE)
    assert given.remappings == [('~/input/image', 'image'),
                                ('~/input/image/compressed', 'image/compressed'),
                                ('~/input/camera_info', '/cal/info')]
    assert sibling_topic('image_raw', 'camera_info') == 'camera_info'


@pytest.mark.parametrize('name,value,problem', [
    ('alpha', 'abc', 'not a number'), ('alpha', '1.5', 'outside [0, 1]'),
    ('tau', 'nan', 'outside [0, 1]'), ('tau', '0,5', 'not a number'),
    ('backend', 'cuda', 'not one of onnxruntime, onnxruntime-cpu, onnxruntime-cuda, tensorrt'),
    ('qos', 'fast', 'not one of best_effort, reliable'),
    ('use_sim_time', 'maybe', 'not true or false'),
    ('model', '/no/such/model.onnx', 'no such file'), ('priors', 'gone.npz', 'no such file'),
    ('meta_model', 'meta.json', 'no such file'), ('config_file', '/nope.yaml', 'no such file'),
    ('node_name', 'fusion node', 'not a valid ROS node name'),
    ('namespace', 'front-cam', 'not a valid ROS namespace'),
    ('input_topic', '/cam/image raw', 'not a valid ROS topic name'),
    ('camera_info_topic', '1info', 'not a valid ROS topic name'),
])
def test_bad_argument_is_one_line_naming_it(name, value, problem):
    """Every bad value: one line ``launch argument NAME:='VALUE': problem``."""
    with pytest.raises(LaunchArgumentError) as info:
        node_settings({name: value}, SHARE)
    text = str(info.value)
    assert text.startswith(f'launch argument {name}:={value!r}: ') and problem in text
    assert '\n' not in text


def test_unknown_argument_is_named_with_the_closest():
    """A misspelt argument is refused in one line naming it and the closest declared name."""
    with pytest.raises(LaunchArgumentError) as info:
        node_settings({'alhpa': '0.5'}, SHARE)
    assert str(info.value).startswith('unknown launch argument alhpa (did you mean alpha?); '
                                      'arguments: config_file, ')
    with pytest.raises(LaunchArgumentError) as info:
        node_settings({'tua': '0.3', 'colour': 'red', 'input_topik': '/c'}, SHARE)
    text = str(info.value)
    assert text.startswith('unknown launch arguments colour, input_topik (did you mean '
                           'input_topic?), tua (did you mean tau?); arguments: ')
    assert '\n' not in text and text.endswith('qos, use_sim_time')


def test_command_line_is_the_launched_files_own():
    """name:=value words after this launch file's name; none when another file was launched."""
    argv = ['/usr/bin/ros2', 'launch', 'metafusion_ros', 'fusion.launch.py', 'alhpa:=0.5',
            'tau:=0.4', 'model:=a:=b.onnx', '--debug']
    assert command_line(argv, '/share/metafusion_ros/launch/fusion.launch.py') == {
        'alhpa': '0.5', 'tau': '0.4', 'model': 'a:=b.onnx'}
    assert command_line(['ros2', 'launch', './launch/fusion.launch.py', 'qos:=reliable'],
                        'fusion.launch.py') == {'qos': 'reliable'}
    assert command_line(['ros2', 'launch', 'robot', 'cameras.launch.py', 'cam:=front'],
                        'fusion.launch.py') == {}
    assert command_line(['launch_test', 'test/test_launch_fusion.py'], 'fusion.launch.py') == {}


def test_choices_are_the_nodes():
    """The backend and qos arguments accept exactly the node's backend / qos.reliability."""
    from metafusion_ros.ros.parameters import SPECS

    assert CHOICES == {'backend': SPECS['backend'].choices,
                       'qos': SPECS['qos.reliability'].choices}


class Recorder:
    """Stand-in for a launch action or substitution: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def fake_launch_modules() -> dict[str, types.ModuleType]:
    """Return stand-ins for launch, launch.actions, launch.substitutions, launch_ros.actions."""
    class Configuration(Recorder):
        def perform(self, context):
            return context.launch_configurations[self.args[0]]

    modules = {name: types.ModuleType(name) for name in (
        'launch', 'launch.actions', 'launch.substitutions', 'launch_ros', 'launch_ros.actions')}
    modules['launch'].LaunchContext = types.SimpleNamespace
    modules['launch'].LaunchDescription = Recorder
    modules['launch.actions'].DeclareLaunchArgument = Recorder
    modules['launch.actions'].OpaqueFunction = Recorder
    modules['launch.substitutions'].LaunchConfiguration = Configuration
    modules['launch_ros.actions'].Node = Recorder
    return modules


def test_launch_file_hands_the_checked_settings_to_the_node(monkeypatch, tmp_path):
    """Declared arguments = launch_args'; the Node gets node_settings' result; bad: raises."""
    monkeypatch.setattr('ament_index_python.packages.get_package_share_directory',
                        lambda package: SHARE)
    for name, module in fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('fusion_launch',
                                                  REPO / 'launch' / 'fusion.launch.py')
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    description = launch_file.generate_launch_description()
    *declared, opaque = description.args[0]
    assert [(d.args[0], d.kwargs['default_value']) for d in declared] == [
        (a.name, a.default) for a in arguments(SHARE)]
    values = {d.args[0]: d.kwargs['default_value'] for d in declared}
    values.update(namespace='front', input_topic='/front/image_raw', qos='reliable')
    run = opaque.kwargs['function']

    def launch(configurations: dict, argv: list[str]) -> list:
        monkeypatch.setattr(sys, 'argv', argv)
        return run(types.SimpleNamespace(launch_configurations=configurations))

    node = launch(values, ['ros2', 'launch', 'metafusion_ros', 'fusion.launch.py',
                           'namespace:=front', 'input_topic:=/front/image_raw',
                           'qos:=reliable'])[0]
    expected = node_settings(values, SHARE)
    assert node.kwargs['name'] == expected.name and node.kwargs['namespace'] == 'front'
    assert node.kwargs['parameters'] == [expected.config_file, expected.overrides]
    assert node.kwargs['remappings'] == expected.remappings
    assert ('~/input/camera_info', '/front/camera_info') in node.kwargs['remappings']
    with pytest.raises(LaunchArgumentError, match="launch argument alpha:='abc'"):
        launch(dict(values, alpha='abc'), ['launch_test', 'test_x.py'])
    # launch keeps an undeclared argument as a configuration of its own, read by nobody
    typo = ['ros2', 'launch', 'metafusion_ros', 'fusion.launch.py', 'alhpa:=0.5']
    with pytest.raises(LaunchArgumentError, match=r'^unknown launch argument alhpa \(did you '
                                                  r'mean alpha\?\); arguments: config_file'):
        launch(dict(values, alhpa='0.5'), typo)
    # included by another launch file: the command line is that file's
    assert launch(dict(values, cam='front'), ['ros2', 'launch', 'robot', 'cameras.launch.py',
                                              'cam:=front'])[0].kwargs['name'] == expected.name
