"""The package's four folders keep their one job (docs/ARCHITECTURE.md), read from the imports.

core/ (the paper) and runtime/ (what the node runs) never import ROS, ros/ or tools/; ros/ (the
ROS 2 shell) never imports tools/; rclpy and ROS message packages are imported in ros/ only.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'metafusion_ros'
ROS = ('rclpy', 'rcl_interfaces', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs',
       'visualization_msgs', 'geometry_msgs', 'rosgraph_msgs', 'lifecycle_msgs')
FORBIDDEN = {
    'core': ROS + ('metafusion_ros.runtime', 'metafusion_ros.ros', 'metafusion_ros.tools'),
    'runtime': ROS + ('metafusion_ros.ros', 'metafusion_ros.tools'),
    'ros': ('metafusion_ros.tools',),
    'tools': ROS,
}


def imported(path: Path) -> set[str]:
    """Return every module ``path`` imports, at any depth (function-level imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f'{path}: relative import (the package uses absolute ones)'
            names.add(node.module)
    return names


def offending(folder: str, package: Path = PACKAGE) -> dict[str, list[str]]:
    """Return, per module of ``package``'s ``folder``, the imports its layer forbids."""
    found = {}
    for path in sorted((package / folder).rglob('*.py')):
        bad = sorted(name for name in imported(path) for prefix in FORBIDDEN[folder]
                     if name == prefix or name.startswith(prefix + '.'))
        if bad:
            found[str(path.relative_to(package))] = bad
    return found


@pytest.mark.parametrize('folder', sorted(FORBIDDEN))
def test_folder_imports_only_its_layers(folder):
    """No module of ``folder`` imports what its layer must not depend on."""
    assert offending(folder) == {}


def test_every_module_is_in_one_of_the_four_folders():
    """Besides the package's __init__, every module lives in core/, runtime/, ros/ or tools/."""
    loose = [p.name for p in PACKAGE.glob('*.py') if p.name != '__init__.py']
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != '__pycache__'}
    assert not loose and folders == set(FORBIDDEN)


def test_the_check_sees_a_forbidden_import(tmp_path):
    """A core module importing rclpy inside a function is caught (the check can fail)."""
    (tmp_path / 'core').mkdir()
    (tmp_path / 'core' / 'bad.py').write_text('def f():\n    import rclpy.node\n')
    assert offending('core', tmp_path) == {'core/bad.py': ['rclpy.node']}
