"""Checks of the node's parameter files and overrides that rcl and rclpy leave silent.

rcl reports an unreadable ``--params-file`` in two log lines of its own, and rclpy ignores any
override (from a parameter file or ``-p``) that the node never declares: a typo such as
``alhpa: 0.5`` would leave α at its default without a word. rcl also drops, without a word, a
value whose type differs from one an earlier source gave the same parameter, so a string where
a number belongs (``alpha: "0.5"``, ``-p alpha:=0,5``) after the package YAML leaves α as it
was. :func:`params_file_problem` checks the files and :func:`mistyped_parameter` those values
before ``rclpy.init``; :func:`unknown_parameters` names the undeclared overrides.
"""
from __future__ import annotations

import difflib
from fnmatch import fnmatchcase
from pathlib import Path
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

import yaml

from metafusion_ros.core.files import naming, one_line
from metafusion_ros.runtime.segmenter.spec import read_yaml

__all__ = ['params_files', 'params_file_problem', 'mistyped_parameter', 'unknown_parameters',
           'override_source', 'RclLoader']

# Parameters that ROS itself declares on demand (QoS overrides of publishers / subscriptions).
ROS_PREFIXES = ('qos_overrides.',)
PARAMS_KEY = 'ros__parameters'


def _ros_options(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Yield ``(option, value)`` of the options after ``--ros-args`` that take a value."""
    ros = False
    for arg, following in zip(argv, list(argv[1:]) + [None]):
        if arg == '--ros-args':
            ros = True
        elif arg == '--':
            ros = False
        elif ros and arg.startswith('-') and following is not None:
            yield arg, following


def params_files(argv: Sequence[str]) -> list[str]:
    """Return the ``--params-file`` paths of a command line (after ``--ros-args``)."""
    return [value for option, value in _ros_options(argv) if option == '--params-file']


def _sections(data: Any, key: str = '', depth: int = 0) -> Iterator[tuple[str, dict]]:
    """Yield ``(key, parameters)`` of every mapping in a parsed file holding ``ros__parameters``.

    ``key`` is the name the mapping sits under (a node name, ``ns/name`` or a wildcard; '' at the
    top); nested namespaces are followed 8 levels deep.
    """
    if not isinstance(data, dict) or depth > 8:
        return
    if isinstance(data.get(PARAMS_KEY), dict):
        yield key, data[PARAMS_KEY]
    for name, value in data.items():
        if name != PARAMS_KEY:
            yield from _sections(value, str(name), depth + 1)


class RclLoader(yaml.SafeLoader):
    """YAML as rcl reads parameter values: YAML 1.1, plus floats without a dot (``1e-1``)."""


RclLoader.add_implicit_resolver(  # 1e-1, 2E5: floats to rcl, text to YAML 1.1
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$'), list('-+0123456789.'))


def params_file_problem(argv: Sequence[str]) -> str:
    """Return one line naming the first unreadable parameter file and why, or ''."""
    for name in params_files(argv):
        path = Path(name)
        if not path.is_file():
            return f'parameter file {path} does not exist'
        try:
            with naming('parameter file', path):
                data = read_yaml(path, 'parameter file')
        except (ValueError, OSError) as exc:  # naming() made every failure one line naming it
            return one_line(str(exc))
        if next(_sections(data), None) is None:
            return (f'parameter file {path}: no "<node name>: {{{PARAMS_KEY}: {{...}}}}" '
                    f'mapping (e.g. "/**:" for any node)')
    return ''


def _node_name(argv: Sequence[str], default: str) -> str:
    """Return the node name after ``-r __node:=name`` remaps, else ``default``."""
    names = [value.split(':=', 1)[1] for option, value in _ros_options(argv)
             if option in ('-r', '--remap') and ':=' in value
             and value.split(':=', 1)[0].endswith('__node')]
    return names[-1] if names else default


def _flatten(params: dict, prefix: str = '') -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted name, value)`` of a ``ros__parameters`` mapping."""
    for key, value in params.items():
        if isinstance(value, dict):
            yield from _flatten(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', value


def _node_params(data: Any, node: str) -> Iterator[tuple[str, Any]]:
    """Yield the parameters a parsed file gives ``node`` (``/**``, ``name``, ``ns/name``)."""
    for key, params in _sections(data):
        last = key.rstrip('/').rsplit('/', 1)[-1] or '**'
        if key and (last == '**' or fnmatchcase(node, last)):
            yield from _flatten(params)


def mistyped_parameter(argv: Sequence[str], defaults: Mapping[str, Any], node: str) -> str:
    """Return one line naming a parameter given text where its default is not text, or ''.

    For each parameter the last source on the command line (``--params-file`` or ``-p``) wins,
    as in rcl; ``defaults`` gives the declared types; ``node`` is the node's name before remaps.
    Values are read as rcl reads them (``1e-1`` is a number, ``"0.5"`` text).
    """
    node = _node_name(argv, node)
    last: dict[str, tuple[Any, str]] = {}
    for option, value in _ros_options(argv):
        if option == '--params-file' and Path(value).is_file():
            data = yaml.load(Path(value).read_text(), Loader=RclLoader)
            last.update((name, (v, f'--params-file {value}'))
                        for name, v in _node_params(data, node))
        elif option in ('-p', '--param') and ':=' in value:
            name, text = value.split(':=', 1)
            try:
                last[name] = (yaml.load(text, Loader=RclLoader), '-p')
            except yaml.YAMLError:  # rclpy.init reports the command line
                continue
    for name, (value, source) in last.items():
        if isinstance(value, str) and name in defaults and not isinstance(defaults[name], str):
            kind = 'true or false' if isinstance(defaults[name], bool) else 'a number'
            return (f'{name}: {value!r} (set by {source}) is text, not {kind} (after an earlier '
                    f'value rcl would drop it without a word)')
    return ''


def unknown_parameters(overrides: Iterable[str], declared: Iterable[str],
                       argv: Sequence[str] = ()) -> str:
    """Return one line naming the overrides that are not declared parameters, or ''.

    A close declared name is suggested for each (``alhpa`` -> ``alpha``); ``argv`` names the
    parameter files they may come from.
    """
    declared = list(declared)
    unknown = sorted(n for n in overrides if n not in declared and not n.startswith(ROS_PREFIXES))
    if not unknown:
        return ''
    names = []
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=1)
        names.append(f'{name!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
    return (f'unknown parameter{"s" if len(unknown) > 1 else ""} {", ".join(names)} '
            f'{override_source(argv)}; docs/node.md lists the parameters')


def override_source(argv: Sequence[str]) -> str:
    """Return where parameter values come from: ``(set by --params-file A, B or -p)``."""
    files = params_files(argv)
    return f'(set by --params-file {", ".join(files)} or -p)' if files else '(set by -p)'
