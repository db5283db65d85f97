"""docs/node.md's parameter table and config/fusion.yaml name exactly the node's parameters."""
from pathlib import Path
import re

import yaml

from metafusion_ros.ros.node import PARAMETERS, RUNTIME

REPO = Path(__file__).resolve().parents[1]


def documented_rows() -> dict[str, str]:
    """Return each documented parameter name with its row's run-time column."""
    text = (REPO / 'docs' / 'node.md').read_text()
    table = text.split('## Parameters', 1)[1].split('\n\n', 2)[2].split('\n\n', 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip('|').split('|')]
        for name in re.findall(r'`([^`]+)`', cells[0]):
            rows[name] = cells[-1]
    return rows


def flatten(tree: dict, prefix: str = '') -> set[str]:
    """Return the dotted names of a ros__parameters tree."""
    names = set()
    for key, value in tree.items():
        name = f'{prefix}{key}'
        names |= flatten(value, name + '.') if isinstance(value, dict) else {name}
    return names


def test_docs_table_lists_every_parameter_and_whether_it_is_run_time():
    """Every declared parameter has a row; 'yes' in the run-time column iff it is in RUNTIME."""
    rows = documented_rows()
    assert set(rows) == set(PARAMETERS)
    wrong = {name for name, runtime in rows.items()
             if runtime.startswith('yes') != (name in RUNTIME)}
    assert not wrong, f'run-time column disagrees with the node for {sorted(wrong)}'


def test_config_file_sets_declared_parameters_to_valid_types():
    """config/fusion.yaml names only declared parameters, each with its default's type."""
    config = yaml.safe_load((REPO / 'config' / 'fusion.yaml').read_text())
    values = config['/**']['ros__parameters']
    names = flatten(values)
    assert names <= set(PARAMETERS), sorted(names - set(PARAMETERS))
    for name in names:
        value = values
        for part in name.split('.'):
            value = value[part]
        default = PARAMETERS[name][0]
        assert type(value) is type(default) or (
            isinstance(default, float) and isinstance(value, int)), name
