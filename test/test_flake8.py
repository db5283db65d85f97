"""Style check: flake8 over the package, tests, launch files and benchmarks (ament_flake8)."""
import pytest


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    """Fail on any flake8 error, using the limits in setup.cfg."""
    from ament_flake8.main import main_with_errors
    rc, errors = main_with_errors(argv=['--config', 'setup.cfg', '.'])
    assert rc == 0, 'Found %d code style errors / warnings:\n' % len(errors) + '\n'.join(errors)
