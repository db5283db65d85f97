"""docs/node.md's parameter table and config/fusion.yaml follow the parameter schema."""
from pathlib import Path

import pytest
import yaml

from metafusion_ros.ros.parameters import DEFAULTS, markdown_table, RUNTIME, Spec, SPECS

REPO = Path(__file__).resolve().parents[1]


def flatten(tree: dict, prefix: str = '') -> dict:
    """Return the dotted names and values of a ros__parameters tree."""
    values = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        values.update(flatten(value, name + '.') if isinstance(value, dict) else {name: value})
    return values


def test_docs_table_is_generated_from_the_schema():
    """The table under '## Parameters' equals the schema's (regenerate it when this fails)."""
    text = (REPO / 'docs' / 'node.md').read_text().split('## Parameters', 1)[1]
    start = text.index('| name | default |')
    table = text[start:text.index('\n\n', start)]
    assert table == markdown_table(), 'python -m metafusion_ros.ros.parameters prints the table'


def test_config_file_sets_every_parameter_to_its_default():
    """config/fusion.yaml names each parameter once, with a valid value: the schema's default."""
    config = yaml.safe_load((REPO / 'config' / 'fusion.yaml').read_text())
    values = flatten(config['/**']['ros__parameters'])
    assert set(values) == set(SPECS), sorted(set(values) ^ set(SPECS))
    for name, value in values.items():
        assert not SPECS[name].problem(value), (name, SPECS[name].problem(value))
        assert value == DEFAULTS[name], name


def test_defaults_fit_their_own_specs_and_run_time_set():
    """Every default passes its own checks; run-time ones include α, τ and the outputs."""
    assert all(not spec.problem(spec.default) for spec in SPECS.values())
    assert {'alpha', 'tau', 'fusion', 'outputs.overlay'} <= RUNTIME
    assert 'model_path' not in RUNTIME


@pytest.mark.parametrize('spec, value, problem', [
    (SPECS['alpha'], 1.5, 'outside [0, 1]'), (SPECS['alpha'], '0.5', 'not of type float'),
    (SPECS['alpha'], 0, ''), (SPECS['fusion'], 'fused', 'not one of reference, literal'),
    (SPECS['qos.depth'], 2.0, 'not of type int'), (SPECS['autostart'], 1, 'not of type bool'),
    (SPECS['alpha'], float('nan'), 'outside')])
def test_spec_problem(spec: Spec, value, problem: str):
    """A value of the wrong type, off the choices or outside the range is named; '' otherwise."""
    found = spec.problem(value)
    assert (problem in found and found) if problem else not found


def test_choices_and_method_defaults_are_the_cores():
    """Backend choices are the segmenter's; α, τ, fusion and their defaults the engine's."""
    from dataclasses import fields

    from metafusion_ros.core.fusion import FUSION_MODES
    from metafusion_ros.runtime.engine import EngineConfig
    from metafusion_ros.runtime.segmenter import BACKENDS

    assert SPECS['backend'].choices == BACKENDS
    assert SPECS['fusion'].choices == FUSION_MODES
    engine = {f.name: f.default for f in fields(EngineConfig)}
    assert {name: SPECS[name].default for name in ('alpha', 'tau', 'fusion', 'backend')} == {
        name: engine[name] for name in ('alpha', 'tau', 'fusion', 'backend')}
