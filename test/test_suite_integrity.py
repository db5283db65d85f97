"""The suite cannot pass by running nothing, and holds whether or not ``launch`` is imported.

- No test module skips at module level (a ROS install's launch_testing plugin imports every
  test module at collection; one module-level skip there skips the whole directory).
- ``scripts/test_floor.py`` (run by ``make test``) fails a run of fewer tests than
  ``test/min_tests_run.txt`` and prints every skip reason, on pytest's real JUnit XML, which
  counts the same with and without launch_testing's pytest plugin.
- The package's log records reach caplog after ``launch`` set its non-propagating logger class.
"""
import ast
import importlib.util
import os
from pathlib import Path
import subprocess
import sys
from xml.etree import ElementTree

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / 'test'
spec = importlib.util.spec_from_file_location('test_floor', REPO / 'scripts' / 'test_floor.py')
test_floor = sys.modules.setdefault('test_floor', importlib.util.module_from_spec(spec))
spec.loader.exec_module(test_floor)

# Imported by the inner pytest (-p) before any test module: ``launch`` where installed, else
# the effect of its import (launch/logging: LaunchLogger.__init__ sets propagate = False).
LAUNCH_FIRST = '''
import logging
from pathlib import Path

try:
    import launch.logging  # noqa: F401 (not the checkout's launch/ folder)
    SOURCE = 'launch'
except ImportError:
    class LaunchLogger(logging.getLoggerClass()):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.propagate = False

    logging.setLoggerClass(LaunchLogger)
    SOURCE = 'simulated'


def pytest_sessionfinish(session):
    loggers = [logging.getLogger(name) for name in (
        'metafusion_ros.runtime.segmenter.tensorrt_backend',
        'metafusion_ros.runtime.segmenter.base')]
    Path(__file__).with_suffix('.txt').write_text(
        f'{SOURCE} {logging.getLoggerClass().__name__} {[lg.propagate for lg in loggers]}')
'''
CAPLOG_TESTS = [
    'test/test_robust_files.py::test_engine_cache_error_paths',
    'test/test_segmenter_tensorrt.py::test_cache_rebuilds_stale_or_corrupt_and_rejects_'
    'foreign_engine',
    'test/test_segmenter_tensorrt.py::test_segmenter_with_fakes_matches_onnxruntime',
]


def module_level_skips(path: Path) -> list[str]:
    """Return ``line: call`` of every pytest skip called outside functions and classes."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ('skip', 'importorskip') and \
                isinstance(node.func.value, ast.Name) and node.func.value.id == 'pytest':
            found.append(f'{node.lineno}: pytest.{node.func.attr}')
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def run_pytest(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    """Run pytest in a subprocess; return the completed process (output captured)."""
    return subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_module_level_skip_is_found(tmp_path):
    """The check below finds module-level skips (also under if / try) but not those in tests."""
    module = tmp_path / 'test_x.py'
    module.write_text('import pytest\ntorch = pytest.importorskip("torch")\n'
                      'try:\n    import x\nexcept ImportError:\n    pytest.skip("no x")\n'
                      'def test_a():\n    pytest.skip("fine")\n'
                      'class TestB:\n    def test_b(self):\n        pytest.importorskip("y")\n')
    assert module_level_skips(module) == ['2: pytest.importorskip', '6: pytest.skip']


def test_no_test_module_skips_at_module_level():
    """Every skip is inside a test or fixture, never at module level."""
    found = {path.name: module_level_skips(path) for path in sorted(TESTS.glob('*.py'))}
    assert len(found) > 20
    assert {name: calls for name, calls in found.items() if calls} == {}


def test_repository_floor_is_a_positive_number():
    """``test/min_tests_run.txt`` holds one positive whole number."""
    assert test_floor.read_floor(TESTS / 'min_tests_run.txt') > 100


SUB_SUITE = {
    'test_runs.py': 'import pytest\n\n\ndef test_one():\n    assert True\n\n\n'
                    'def test_two():\n    assert True\n\n\n'
                    'def test_fails():\n    assert False\n\n\n'
                    'def test_skips():\n    pytest.skip("GPU absent: no TensorRT")\n',
    # In a folder of its own: under launch_testing's plugin (which imports every module while
    # collecting its directory) a module-level skip skips the whole directory it is in.
    'skipping/test_module_skip.py': 'import pytest\n\npytest.importorskip('
                                    '"no_such_module_anywhere")\n\n\n'
                                    'def test_never():\n    assert True\n',
}


def run_sub_suite(folder: Path, autoload: bool) -> Path:
    """Run :data:`SUB_SUITE` in ``folder``, pytest plugins autoloaded or not; return its XML."""
    for name, text in SUB_SUITE.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    env = {key: value for key, value in os.environ.items()  # colcon's options are the outer run's
           if key not in ('PYTEST_DISABLE_PLUGIN_AUTOLOAD', 'PYTEST_ADDOPTS')}
    if not autoload:
        env['PYTEST_DISABLE_PLUGIN_AUTOLOAD'] = '1'
    xml = folder / f'r-{"plugins" if autoload else "bare"}.xml'
    result = run_pytest(['-o', 'junit_family=xunit2', '--junit-xml', str(xml), '-q',
                         str(folder)], cwd=folder, env=env)
    assert result.returncode == 1, result.stdout  # test_fails
    return xml


@pytest.fixture(scope='module')
def junit_runs(tmp_path_factory) -> dict[bool, Path]:
    """Run a small real suite (3 run, 2 skipped) with and without autoloaded plugins."""
    folder = tmp_path_factory.mktemp('suite')
    return {autoload: run_sub_suite(folder, autoload) for autoload in (True, False)}


@pytest.fixture(scope='module')
def junit(junit_runs) -> Path:
    """Return the JUnit XML of the sub-suite run with the installed plugins (a ROS install's)."""
    return junit_runs[True]


def skipped_as(results, name: str) -> bool:
    """Return whether ``results`` skipped a test case ``name`` (colcon prefixes the package)."""
    return any(case.split('::')[-1] == name for case, _ in results.skipped)


def test_sub_suite_same_with_and_without_plugins(junit_runs):
    """launch_testing's plugin (where installed) changes neither the counts nor the reasons.

    With the plugin the module-level skip is reported for its whole folder (``skipping``):
    the hazard ``test_no_test_module_skips_at_module_level`` guards the real suite against.
    """
    with_plugins, bare = (test_floor.read_results(junit_runs[key]) for key in (True, False))
    assert (with_plugins.ran, sorted(r for _, r in with_plugins.skipped)) == \
        (bare.ran, sorted(r for _, r in bare.skipped)) == (3, sorted(r for _, r in bare.skipped))
    plugin = importlib.util.find_spec('launch_testing') is not None
    assert skipped_as(with_plugins, 'skipping') == plugin, with_plugins.skipped
    assert skipped_as(bare, 'skipping.test_module_skip'), bare.skipped


def test_floor_counts_real_junit_xml(junit):
    """Run = passed + failed test cases; each skip (in a test or a module) with its reason."""
    results = test_floor.read_results(junit)
    assert results.ran == 3
    reasons = dict(results.skipped)
    assert len(reasons) == 2
    assert any('GPU absent: no TensorRT' in text for text in reasons.values())
    assert any('no_such_module_anywhere' in text for text in reasons.values())


def floor_main(capsys, tmp_path, xml: Path, floor: str) -> tuple[int, str, str]:
    """Run the floor check with ``floor`` written to a file; return code, stdout, stderr."""
    (tmp_path / 'floor.txt').write_text(f'# comment\n{floor}\n')
    code = test_floor.main([str(xml), str(tmp_path / 'floor.txt')])
    out, err = capsys.readouterr()
    return code, out, err


def test_floor_fails_below_and_passes_at_the_floor(junit, tmp_path, capsys):
    """Below the floor: exit 1 naming count and floor; at it: 0; skip reasons printed."""
    code, out, err = floor_main(capsys, tmp_path, junit, '4')
    assert code == 1 and 'only 3 tests ran, fewer than the floor of 4' in err
    assert 'GPU absent: no TensorRT' in out and 'no_such_module_anywhere' in out
    code, out, err = floor_main(capsys, tmp_path, junit, '3')
    assert code == 0 and '3 tests ran, 2 skipped (floor 3' in out and not err


def test_floor_fails_when_nothing_ran_or_no_results(tmp_path, capsys):
    """A run of only skips, a missing or unreadable XML and a bad floor file all exit 1."""
    only_skips = tmp_path / 'skips.xml'
    only_skips.write_text('<testsuites><testsuite name="pytest" tests="1" skipped="1">'
                          '<testcase classname="test" name="test_directory">'
                          '<skipped message="collection skipped: no torch"/></testcase>'
                          '</testsuite></testsuites>')
    code, out, err = floor_main(capsys, tmp_path, only_skips, '1')
    assert code == 1 and 'only 0 tests ran' in err and 'no torch' in out
    code, _, err = floor_main(capsys, tmp_path, tmp_path / 'absent.xml', '1')
    assert code == 1 and 'absent.xml' in err
    (tmp_path / 'cut.xml').write_text('<testsuites><testsuite')
    assert floor_main(capsys, tmp_path, tmp_path / 'cut.xml', '1')[0] == 1
    code, _, err = floor_main(capsys, tmp_path, only_skips, 'many')
    assert code == 1 and 'expected one whole number' in err


def test_package_logs_reach_caplog_after_launch_is_imported(tmp_path):
    """The log-capturing tests pass with ``launch`` imported first (or its logger class set).

    The inner run reports that the package's loggers were LaunchLoggers without propagation,
    so the tests passed because conftest routes them, not because nothing changed.
    """
    (tmp_path / 'launch_first.py').write_text(LAUNCH_FIRST)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(tmp_path), str(REPO), os.environ.get('PYTHONPATH')])))
    result = run_pytest(['-p', 'launch_first', '-o', 'junit_family=xunit2', '--junit-xml',
                         str(tmp_path / 'r.xml'), '-q', *CAPLOG_TESTS], cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    cases = list(ElementTree.parse(tmp_path / 'r.xml').getroot().iter('testcase'))
    assert len(cases) == len(CAPLOG_TESTS) and not any(len(case) for case in cases)
    source, logger_class, propagate = (tmp_path / 'launch_first.txt').read_text().split(' ', 2)
    assert source in ('launch', 'simulated') and logger_class == 'LaunchLogger'
    assert propagate == '[False, False]'
