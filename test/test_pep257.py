"""Docstring check: PEP 257 over the package, launch files, benchmarks and tests (ament_pep257)."""
import pytest

PATHS = ['metafusion_ros', 'launch', 'benchmarks', 'test']


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257():
    """Fail on any PEP 257 (pydocstyle) error."""
    from ament_pep257.main import main
    rc = main(argv=['--convention', 'pep257', '--add-ignore', 'D105', 'D107', '--'] + PATHS)
    assert rc == 0, 'Found code style errors / warnings'
