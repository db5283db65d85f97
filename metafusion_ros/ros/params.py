"""Checks of the node's parameter files and overrides that rcl and rclpy leave silent.

rcl reports an unreadable ``--params-file`` in two log lines of its own, and rclpy ignores any
override (from a parameter file or ``-p``) that the node never declares: a typo such as
``alhpa: 0.5`` would leave α at its default without a word. :func:`params_file_problem` checks
the files before ``rclpy.init``; :func:`unknown_parameters` names the undeclared overrides.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from ..segmenter.spec import yaml_error

__all__ = ['params_files', 'params_file_problem', 'unknown_parameters', 'override_source']

# Parameters that ROS itself declares on demand (QoS overrides of publishers / subscriptions).
ROS_PREFIXES = ('qos_overrides.',)
PARAMS_KEY = 'ros__parameters'


def params_files(argv: Sequence[str]) -> list[str]:
    """Return the ``--params-file`` paths of a command line (after ``--ros-args``)."""
    files, ros = [], False
    for arg, following in zip(argv, list(argv[1:]) + [None]):
        if arg == '--ros-args':
            ros = True
        elif arg == '--':
            ros = False
        elif ros and arg == '--params-file' and following is not None:
            files.append(following)
    return files


def _has_params(data: Any, depth: int = 0) -> bool:
    """Return whether a parsed file holds a ``ros__parameters`` mapping (under node names)."""
    if not isinstance(data, dict) or depth > 8:
        return False
    return isinstance(data.get(PARAMS_KEY), dict) or any(
        _has_params(value, depth + 1) for key, value in data.items() if key != PARAMS_KEY)


def params_file_problem(argv: Sequence[str]) -> str:
    """Return one line naming the first unreadable parameter file and why, or ''."""
    for name in params_files(argv):
        path = Path(name)
        if not path.is_file():
            return f'parameter file {path} does not exist'
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            return f'parameter file {path}: unreadable ({exc})'
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            return f'parameter file {path}: not valid YAML{yaml_error(exc)}'
        if not _has_params(data):
            return (f'parameter file {path}: no "<node name>: {{{PARAMS_KEY}: {{...}}}}" '
                    f'mapping (e.g. "/**:" for any node)')
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
