"""Arguments of ``launch/fusion.launch.py``: declared, validated, turned into node settings.

Pure Python (no ``launch`` import), so the argument handling is tested where the launch tools
are not installed. :func:`node_settings` checks every argument and raises
:class:`LaunchArgumentError` with one line naming the argument (``ros2 launch`` prints it and
exits 1); it returns the node's name, namespace, parameters and remappings, which the launch
file hands to ``launch_ros.actions.Node`` and ``test_launch_examples.py`` to a node process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import difflib
import math
import os
import re
from typing import Any, Mapping, Sequence

from metafusion_ros.ros.dds import PROFILE_ENV, PROFILE_FILE
from metafusion_ros.ros.parameters import SPECS
from metafusion_ros.runtime.chains import (ChainError, DEFAULT_CHAIN, is_chain_name, NO_META,
                                           resolve)

__all__ = ['Argument', 'arguments', 'command_line', 'LaunchArgumentError', 'NodeSettings',
           'node_settings', 'sibling_topic', 'CHOICES', 'FILE_ARGUMENTS']

# launch argument -> node parameter it overrides ('' leaves the config file's value).
PARAMETER = {'model': 'model_path', 'priors': 'priors_path', 'meta_model': 'meta_model_path',
             'backend': 'backend', 'alpha': 'alpha', 'tau': 'tau', 'qos': 'qos.reliability'}
# Values of the choice arguments: the node's (the parameter schema's).
CHOICES = {arg: SPECS[PARAMETER[arg]].choices for arg in ('backend', 'qos')}
# The chain's files: an empty model is the default chain, empty priors / meta_model the chain's.
FILE_ARGUMENTS = ('model', 'priors', 'meta_model')
BOOLEANS = {'true': True, '1': True, 'yes': True, 'false': False, '0': False, 'no': False}
NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
NAMESPACE = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*')
TOPIC = re.compile(r'(~/|/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*')


class LaunchArgumentError(ValueError):
    """A launch argument with a value the node cannot use; the message names the argument."""


@dataclass(frozen=True)
class Argument:
    """One launch argument: name, default value and description."""

    name: str
    default: str
    description: str


def _meaning(arg: str) -> str:
    """Return what override argument ``arg`` sets: its parameter's description and values."""
    spec = SPECS[PARAMETER[arg]]
    values = ' | '.join(spec.choices) if spec.choices else \
        f'[{spec.range[0]:g}, {spec.range[1]:g}]' if spec.range else ''
    return f'{spec.description} ({values})' if values else spec.description


def arguments(share: str) -> list[Argument]:
    """Return the launch arguments; ``share`` is the package's share (or source) folder."""
    table = [
        ('config_file', os.path.join(share, 'config', 'fusion.yaml'),
         'parameter YAML of the node'),
        ('namespace', '', 'namespace of this instance (one per camera)'),
        ('node_name', 'metafusion_node', 'node name'),
        ('input_topic', '/camera/image_raw', 'sensor_msgs/Image input'),
        ('camera_info_topic', '',
         'sensor_msgs/CameraInfo input; empty: camera_info beside input_topic'),
        ('model', '', 'chain name in the package models/ (metafusion models) or ONNX file; '
                      f'empty: the default chain {DEFAULT_CHAIN}'),
        ('priors', '', "priors .npz; empty: the chain's"),
        ('meta_model', '', "meta classifier bundle; empty: the chain's; none: keep all "
                           'candidates'),
        *((arg, '', f'{_meaning(arg)}; empty: from the config file')
          for arg in ('backend', 'alpha', 'tau', 'qos')),
        ('use_sim_time', 'false', 'use /clock (e.g. metafusion bag play --clock): true | false'),
    ]
    return [Argument(*row) for row in table]


@dataclass
class NodeSettings:
    """What the launch file gives ``launch_ros.actions.Node``."""

    name: str
    namespace: str
    config_file: str
    overrides: dict[str, Any] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # the Fast DDS profile for large frames


def _fail(name: str, value: str, problem: str) -> LaunchArgumentError:
    """Return the one-line error of argument ``name``."""
    return LaunchArgumentError(f'launch argument {name}:={value!r}: {problem}')


def _number(name: str, text: str) -> float:
    """Return ``text`` as a number within its parameter's range (α, τ: [0, 1])."""
    spec = SPECS[PARAMETER[name]]
    try:
        value = float(text)
    except ValueError:
        low, high = spec.range or (-math.inf, math.inf)
        raise _fail(name, text, f'not a number (expected a value in [{low:g}, {high:g}])'
                    ) from None
    problem = spec.problem(value)
    if problem:
        raise _fail(name, text, problem)
    return value


def _chain_files(value: Mapping[str, str], share: str) -> dict[str, str]:
    """Return the node's file parameters of the ``model``, ``priors`` and ``meta_model`` values.

    The chain is resolved and its members checked here as the node will (one line for an
    unknown chain, a changed member, a missing file or a network of no chain without priors);
    the node gets the values as given, the default chain's name for an empty ``model`` and
    ``none`` for no meta classifier.
    """
    model, priors, meta = (value[arg].strip() for arg in FILE_ARGUMENTS)
    meta = NO_META if meta.lower() == NO_META else meta
    for arg, text in zip(FILE_ARGUMENTS, (model, priors, meta)):
        named = (arg == 'model' and is_chain_name(text)) or (arg == 'meta_model' and
                                                             text == NO_META)
        if text and not named and not os.path.isfile(text):
            raise _fail(arg, text, 'no such file')
    try:
        files = resolve(model, priors, meta, models=os.path.join(share, 'models'))
    except ChainError as exc:
        raise _fail('model', model, str(exc)) from None
    if not files.priors:
        raise _fail('model', model, 'is in no chain manifest: give its priors (priors:=...)')
    return {'model_path': model or DEFAULT_CHAIN, 'priors_path': priors,
            'meta_model_path': meta}


def _override(name: str, text: str) -> Any:
    """Return the parameter value of a non-empty override argument."""
    if name in CHOICES:
        if text not in CHOICES[name]:
            raise _fail(name, text, f'not one of {", ".join(CHOICES[name])}')
        return text
    return _number(name, text)


def _checked(name: str, text: str, pattern: re.Pattern[str], what: str) -> str:
    """Return ``text`` if it is a valid ROS ``what`` (or empty where allowed)."""
    if pattern.fullmatch(text) is None:
        raise _fail(name, text, f'not a valid ROS {what}')
    return text


def command_line(argv: Sequence[str], launch_file: str) -> dict[str, str]:
    """Return the ``name:=value`` words after ``launch_file``'s name in ``argv``.

    With ``sys.argv`` these are the arguments ``ros2 launch`` was given for this launch file
    (all of them, declared or not: ``launch`` itself ignores undeclared ones). Empty when the
    command line names another launch file, which includes this one: its arguments are its own.
    """
    name = os.path.basename(launch_file)
    for index, word in enumerate(argv):
        if os.path.basename(word) == name:
            return dict(word.split(':=', 1) for word in argv[index + 1:] if ':=' in word)
    return {}


def _undeclared(unknown: Sequence[str], declared: Sequence[str]) -> LaunchArgumentError:
    """Return the one-line error naming ``unknown`` arguments and their closest declared names."""
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=1)
        named.append(f'{name} (did you mean {close[0]}?)' if close else name)
    return LaunchArgumentError(f'unknown launch argument{"s" if len(unknown) > 1 else ""} '
                               f'{", ".join(named)}; arguments: {", ".join(declared)}')


def sibling_topic(topic: str, name: str) -> str:
    """Return topic ``name`` beside ``topic`` (``/front/image_raw`` -> ``/front/camera_info``)."""
    head, sep, _ = topic.rpartition('/')
    return f'{head}{sep}{name}'


def node_settings(values: Mapping[str, str], share: str) -> NodeSettings:
    """Return the node settings of the launch argument ``values`` (defaults where missing).

    Raises :class:`LaunchArgumentError` (one line naming the argument) for unknown arguments
    (each with the closest declared name),
    a number that is not one or outside [0, 1], an unknown choice, a missing file, an unknown
    chain or one whose members changed, a bad name, namespace or topic, or a ``use_sim_time``
    that is not a boolean.
    """
    declared = {arg.name: arg.default for arg in arguments(share)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise _undeclared(unknown, list(declared))
    value = {**declared, **values}
    if not os.path.isfile(value['config_file']):
        raise _fail('config_file', value['config_file'], 'no such file')
    sim_time = value['use_sim_time'].strip().lower()
    if sim_time not in BOOLEANS:
        raise _fail('use_sim_time', value['use_sim_time'], 'not true or false')
    overrides: dict[str, Any] = {'use_sim_time': BOOLEANS[sim_time],
                                 **_chain_files(value, share)}
    for arg, param in PARAMETER.items():
        text = value[arg].strip()
        if text and arg not in FILE_ARGUMENTS:
            overrides[param] = _override(arg, text)
    image = _checked('input_topic', value['input_topic'], TOPIC, 'topic name')
    info = value['camera_info_topic'] or sibling_topic(image, 'camera_info')
    namespace = value['namespace'].rstrip('/')  # absolute stays absolute (PushRosNamespace)
    if namespace:
        _checked('namespace', namespace.lstrip('/'), NAMESPACE, 'namespace')
    return NodeSettings(
        name=_checked('node_name', value['node_name'], NAME, 'node name'),
        namespace=namespace, config_file=value['config_file'], overrides=overrides,
        remappings=[('~/input/image', image), ('~/input/image/compressed', image + '/compressed'),
                    ('~/input/camera_info',
                     _checked('camera_info_topic', info, TOPIC, 'topic name'))],
        env=_dds_profile(share))


def _dds_profile(share: str) -> dict[str, str]:
    """Return the Fast DDS profile variable for the node: the user's, else the shipped one."""
    shipped = os.path.join(share, 'config', PROFILE_FILE)
    return {PROFILE_ENV: os.environ.get(PROFILE_ENV, shipped)}
