"""Fail a test run that ran fewer tests than the floor; print the count and every skip reason.

Usage: ``python scripts/test_floor.py RESULTS.xml FLOOR_FILE`` (``make test`` passes colcon's
``build/metafusion_ros/pytest.xml`` and ``test/min_tests_run.txt``). A suite that passes by
running nothing (a module-level skip under a ROS install's launch_testing plugin skips the whole
test directory) exits 1 here. Tests that ran = test cases in the JUnit XML without a
``<skipped>`` element (failures and errors count as run: colcon reports those itself).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import sys
from xml.etree import ElementTree

__all__ = ['Results', 'read_results', 'read_floor', 'main']


@dataclass
class Results:
    """Test cases of a JUnit XML file: how many ran, and the skipped ones with their reasons."""

    ran: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_results(path: Path) -> Results:
    """Return the run count and the skip reasons of the JUnit XML file ``path``."""
    results = Results()
    for case in ElementTree.parse(path).getroot().iter('testcase'):
        name = '::'.join(filter(None, (case.get('classname'), case.get('name'))))
        skip = case.find('skipped')
        if skip is None:
            results.ran += 1
        else:
            results.skipped.append((name, _reason(skip)))
    return results


def _reason(skip: ElementTree.Element) -> str:
    """Return a ``<skipped>`` element's reason: its text (with the place), else its message."""
    message, text = skip.get('message', ''), ' '.join((skip.text or '').split())
    if text.endswith(message):  # a skip in a test: 'file:line: reason'
        return text or 'no reason given'
    return f'{message}: {text}' if text else message  # 'collection skipped: (file, line, why)'


def read_floor(path: Path) -> int:
    """Return the number in ``path`` (lines starting with ``#`` are comments)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    values = [line for line in lines if line and not line.startswith('#')]
    if len(values) != 1 or not values[0].isdigit():
        raise ValueError(f'{path}: expected one whole number besides # comments, got {values}')
    return int(values[0])


def main(argv: list[str]) -> int:
    """Print the count and the skips; return 1 below the floor or without results, else 0."""
    if len(argv) != 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    xml, floor_file = Path(argv[0]), Path(argv[1])
    try:
        floor = read_floor(floor_file)
        results = read_results(xml)
    except (OSError, ValueError, ElementTree.ParseError) as exc:
        print(f'test floor: error: {exc}', file=sys.stderr)
        return 1
    for name, reason in results.skipped:
        print(f'SKIPPED {name}: {reason}')
    print(f'test floor: {results.ran} tests ran, {len(results.skipped)} skipped '
          f'(floor {floor}, {floor_file})')
    if results.ran < floor:
        print(f'test floor: error: only {results.ran} tests ran, fewer than the floor of {floor}'
              f'; the reasons of the skips are listed above', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
