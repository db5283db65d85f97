"""Chains by name (``runtime/chains.py``, ``metafusion models``): manifests, resolution, refusals.

The shipped manifests must list their members' digests and the numbers of the results files
they name; a chain is found by name, by the path of its network or by a copy of it; an unknown
name, a changed member or a malformed manifest is one line; the node says at start which chain
runs and warns for the toy.
"""
import json
from pathlib import Path
import shutil
import subprocess
import time

import pytest
from test_node_harness import domain_for, node_output, REPO, ros_env, start_node, stop_node
from toy_data import write_meta_model

import fixtures
from metafusion_ros.runtime.chains import (Chain, chain_names, chain_of_model, ChainError,
                                           DEFAULT_CHAIN, load_chain, resolve, sha256_of,
                                           startup_report, SUFFIX)
from metafusion_ros.runtime.engine import ConfigurationError, EngineConfig, FusionEngine
from metafusion_ros.tools.cli import CommandError, main as cli
from metafusion_ros.tools.commands.models import refresh_chain, write_chain

MODELS = REPO / 'models'
SHIPPED = {'cityscapes_espnet': 'street', 'camvid_espnet': 'street', 'camvid': 'street',
           'cityscapes_espnetv2_s2_768x384': 'street', 'cityscapes_espnetv2_s2_512x256': 'street',
           'cityscapes_espnetv2_s1p5': 'street', 'synthetic_toy': 'toy'}
# How a one-line error lists the shipped chains, the default marked.
NAMES = ('camvid, camvid_espnet, cityscapes_espnet, cityscapes_espnetv2_s1p5, '
         'cityscapes_espnetv2_s2_512x256 (default), cityscapes_espnetv2_s2_768x384, synthetic_toy')
DOMAIN = domain_for(96)


def tiny_chain(folder: Path, name: str = 'tiny', meta: bool = True, kind: str = 'street'
               ) -> Chain:
    """Write the tiny network, priors and (optionally) meta bundle as chain ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = fixtures.write_model(folder / f'{name}.onnx')
    priors = fixtures.write_priors(folder / f'{name}_priors.npz')
    bundle = write_meta_model(folder / f'{name}_meta.json', priors) if meta else None
    return Chain.load(write_chain(name, model, priors, bundle, kind,
                                  trained_on='nothing: a 1x1 convolution set by hand'))


def test_shipped_chains_are_the_four_with_their_kinds():
    """models/ holds the four chains; the default is a street chain; only the toy is a toy."""
    assert set(chain_names(MODELS)) == set(SHIPPED)
    for name, kind in SHIPPED.items():
        assert load_chain(name, MODELS).kind == kind
    assert SHIPPED[DEFAULT_CHAIN] == 'street'


@pytest.mark.parametrize('name', sorted(SHIPPED))
def test_shipped_manifest_lists_every_member_with_its_digest(name):
    """Network, spec, priors, bundle manifest and each booster it lists, digests matching."""
    chain = load_chain(name, MODELS)
    chain.verify()
    roles = [m.role for m in chain.members if not m.role.startswith('network_int8')]
    assert roles[:3] == ['network', 'network_spec', 'priors'] and roles[3] == 'meta'
    boosters = [m['model_file'] for m in json.loads(chain.meta.read_text())['members']]
    assert [m.file for m in chain.members if m.role == 'meta_member'] == boosters
    for member in chain.members:
        assert member.sha256 == sha256_of(MODELS / member.file)
    assert (chain.network_int8 is not None) == \
        chain.network.with_name(f'{chain.network.stem}.int8.onnx').is_file()


@pytest.mark.parametrize('name', sorted(SHIPPED))
def test_shipped_manifest_numbers_are_those_of_its_results_files(name):
    """Accuracy and speed are read from docs/results files of this very network."""
    chain = load_chain(name, MODELS)
    network = chain.measured['network']
    report = json.loads((REPO / network['source']).read_text())
    assert report['model_sha256'] == sha256_of(chain.network)
    assert network['miou'] == round(100 * report['all']['miou'], 2)
    assert network['human_iou'] == round(100 * report['all']['target_group_iou'], 2)
    assert network['ms_per_frame'] == round(report['ms_per_frame_median'], 1)
    assert network['command'].startswith('metafusion miou ') and \
        f"--out {network['source']}" in network['command']
    block = chain.measured['metafusion']
    rows = json.loads((REPO / block['source']).read_text())
    fused = next(r for r in rows if r['rule'] == 'metafusion' and r['fusion'] == 'reference'
                 and r['alpha'] == 1.0 and r['tau'] == 0.5)
    assert (block['rules']['metafusion']['fp'], block['rules']['metafusion']['fn']) == \
        (fused['fp'], fused['fn'])
    assert block['command'].startswith('metafusion evaluate ')


@pytest.mark.parametrize('name', sorted(SHIPPED))
def test_refresh_rewrites_the_shipped_manifest_unchanged(name, tmp_path, monkeypatch):
    """``metafusion models refresh`` on a copy gives the committed manifest (it is current)."""
    chain = load_chain(name, MODELS)
    for member in chain.members:
        shutil.copy(MODELS / member.file, tmp_path / member.file)
    shutil.copy(chain.path, tmp_path / chain.path.name)
    monkeypatch.chdir(REPO)  # the results paths are the repository's
    written = refresh_chain(Chain.load(tmp_path / chain.path.name))
    assert json.loads(written.read_text()) == json.loads(chain.path.read_text())


def test_resolve_by_default_name_and_path():
    """'' is the default chain; a name gives its files; a network path takes its chain's files."""
    default = resolve('')
    assert default.chain.name == DEFAULT_CHAIN and default.model == str(default.chain.network)
    for name in SHIPPED:
        by_name = resolve(name)
        chain = by_name.chain
        assert (by_name.model, by_name.priors, by_name.meta) == (
            str(chain.network), str(chain.priors), str(chain.meta))
        by_path = resolve(str(chain.network))
        assert by_path.chain.name == name and by_path.model == str(chain.network)
        assert (by_path.priors, by_path.meta) == (str(chain.priors), str(chain.meta))
    given = resolve('camvid', priors='/p.npz', meta='/m.json')
    assert (given.priors, given.meta) == ('/p.npz', '/m.json')
    assert resolve('camvid', meta='none').meta == ''


def test_a_copy_of_a_shipped_network_takes_its_chain(tmp_path):
    """A shipped network copied elsewhere (same SHA-256) gets the package's priors and bundle."""
    chain = load_chain('camvid', MODELS)
    copy = tmp_path / 'my network.onnx'
    shutil.copy(chain.network, copy)
    found = resolve(str(copy))
    assert found.chain.name == 'camvid' and found.model == str(copy)
    assert found.priors == str(chain.priors) and found.meta == str(chain.meta)


def test_a_network_of_no_chain_needs_its_files(tmp_path):
    """A network no manifest lists: no chain, no priors or meta filled in; the engine says so."""
    model = fixtures.write_model(tmp_path / 'own.onnx')
    found = resolve(str(model))
    assert (found.chain, found.priors, found.meta) == (None, '', '')
    with pytest.raises(ConfigurationError, match='priors path is empty and model .*own.onnx is '
                                                 'in no chain manifest'):
        FusionEngine.load(EngineConfig(str(model), ''))
    engine = FusionEngine.load(EngineConfig(str(model), str(fixtures.write_priors(
        tmp_path / 'own_priors.npz'))))
    assert engine.chain is None and engine.meta is None


def test_unknown_chain_is_one_line_listing_the_shipped_names():
    """An unknown name (or one with a typo) lists every shipped chain, the default marked."""
    for name in ('cityscapes_espnet2', 'Cityscapes-ESPNet'):
        with pytest.raises(ChainError) as info:
            resolve(name)
        text = str(info.value)
        assert '\n' not in text and text.startswith(f'unknown chain {name!r}: the chains in ')
        assert NAMES in text


def test_engine_loads_a_chain_and_its_members(tmp_path):
    """The network path of a chain: its priors and bundle; meta none: no classifier."""
    chain = tiny_chain(tmp_path / 'models')
    engine = FusionEngine.load(EngineConfig(str(chain.network), ''))
    assert engine.chain.name == 'tiny' and engine.meta is not None
    assert engine.config.priors_path == str(chain.priors)
    assert FusionEngine.load(EngineConfig(str(chain.network), '', 'none')).meta is None


def test_diagnostics_name_the_chain(tmp_path):
    """/diagnostics carry the chain's name, or none for a network of no chain."""
    from metafusion_ros.ros.messages import engine_values

    chain = tiny_chain(tmp_path / 'models')
    assert engine_values(FusionEngine.load(EngineConfig(str(chain.network), '')))['chain'] == \
        'tiny'
    own = fixtures.write_model(tmp_path / 'own.onnx')
    assert engine_values(FusionEngine.load(EngineConfig(str(own), str(chain.priors))))[
        'chain'] == 'none'


def test_engine_by_shipped_name_runs_the_toy():
    """model_path: synthetic_toy loads the shipped toy chain (its own priors and bundle)."""
    engine = FusionEngine.load(EngineConfig('synthetic_toy', ''))
    assert engine.chain.kind == 'toy' and engine.meta.alphas[-1] == 1.0
    assert engine.config.model_path == str(MODELS / 'synthetic_toy.onnx')


def test_mismatched_member_given_explicitly_is_still_refused(tmp_path):
    """A chain's network with priors of another chain: the bundle refuses them in one line."""
    chain = tiny_chain(tmp_path / 'models')
    other = fixtures.write_priors(tmp_path / 'other.npz', size=(16, 32))
    with pytest.raises(ConfigurationError) as info:
        FusionEngine.load(EngineConfig(str(chain.network), str(other)))
    assert 'does not match the runtime configuration: priors differ' in str(info.value)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('role', ['network', 'priors', 'meta_member', 'network_spec'])
def test_changed_member_is_refused_with_one_line(tmp_path, role):
    """A member changed since the manifest was written: one line naming it and the way out."""
    chain = tiny_chain(tmp_path / 'models')
    path = chain.file(role)
    path.write_bytes(path.read_bytes() + b' ')
    with pytest.raises(ChainError) as info:
        resolve(str(chain.network))
    text = str(info.value)
    assert '\n' not in text and f'member {role} file {path} does not match the SHA-256' in text
    assert 'metafusion models refresh tiny' in text
    with pytest.raises(ConfigurationError, match=f'member {role} file'):
        FusionEngine.load(EngineConfig(str(chain.network), ''))


def test_missing_member_is_refused_with_one_line(tmp_path):
    """A member file deleted: one line naming it."""
    chain = tiny_chain(tmp_path / 'models')
    chain.priors.unlink()
    with pytest.raises(ChainError, match=f'member priors file {chain.priors} does not exist'):
        chain.verify()


@pytest.mark.parametrize('edit,problem', [
    (lambda m: 'not json {', 'not readable JSON'),
    (lambda m: dict(m, format='metafusion-chain/0'), "unknown format 'metafusion-chain/0'"),
    (lambda m: dict(m, kind='highway'), "kind 'highway' is not one of street, toy"),
    (lambda m: dict(m, name='other'), "name 'other' must be the file name"),
    (lambda m: dict(m, members=[dict(m['members'][0], file='../../etc/passwd')]),
     "member file '../../etc/passwd' is not a file name beside the manifest"),
    (lambda m: dict(m, members=m['members'][:1]), 'no network_spec, priors member'),
    (lambda m: {k: v for k, v in m.items() if k != 'members'}, "malformed (KeyError: 'members')"),
])
def test_malformed_manifest_is_one_line(tmp_path, edit, problem):
    """Bad JSON, format, kind, name, member path or roles: one line naming the manifest."""
    chain = tiny_chain(tmp_path / 'models')
    edited = edit(json.loads(chain.path.read_text()))
    chain.path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(ChainError) as info:
        load_chain('tiny', tmp_path / 'models')
    assert str(info.value).startswith(f'chain manifest {chain.path}: ') and \
        problem in str(info.value) and '\n' not in str(info.value)


def test_write_records_an_int8_member_when_there(tmp_path):
    """``<stem>.int8.onnx`` beside the network (with its spec) becomes a checked member."""
    folder = tmp_path / 'models'
    tiny_chain(folder)
    int8 = fixtures.write_model(folder / 'tiny.int8.onnx')
    chain = Chain.load(write_chain('tiny', folder / 'tiny.onnx', folder / 'tiny_priors.npz',
                                   folder / 'tiny_meta.json', 'street', trained_on='hand',
                                   force=True))
    assert chain.network_int8 == int8 and chain.file('network_int8_spec') == \
        int8.with_suffix('.json')
    assert resolve(str(int8)).chain.name == 'tiny'  # the INT8 file belongs to the chain too


def test_write_refuses_results_of_another_network(tmp_path, capsys):
    """Results of `metafusion miou` on another network than the chain's: exit 2, one line."""
    folder = tmp_path / 'models'
    tiny_chain(folder)
    report = json.loads((REPO / 'docs/results/camvid_camvid_miou.json').read_text())
    (tmp_path / 'miou.json').write_text(json.dumps(report))
    code = cli(['models', 'write', 'tiny', '--network', str(folder / 'tiny.onnx'), '--priors',
                str(folder / 'tiny_priors.npz'), '--kind', 'street', '--trained-on', 'hand',
                '--miou', str(tmp_path / 'miou.json'), '--force'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and '\n' not in err
    assert 'were measured on another network than' in err and 'rerun metafusion miou' in err


def test_write_refuses_members_in_another_folder(tmp_path):
    """A chain's members share one folder (its manifest's): priors elsewhere are refused."""
    folder = tmp_path / 'models'
    chain = tiny_chain(folder)
    with pytest.raises(CommandError, match='is not beside the network'):
        write_chain('tiny', chain.network, fixtures.write_priors(tmp_path / 'p.npz'), None,
                    'street', trained_on='hand', force=True)


def test_write_refuses_an_existing_manifest_without_force(tmp_path, capsys):
    """`models write` over a manifest that exists: exit 2, one line; --force writes it."""
    folder = tmp_path / 'models'
    chain = tiny_chain(folder)
    before = chain.path.read_text()
    args = ['models', 'write', 'tiny', '--network', str(chain.network), '--priors',
            str(chain.priors), '--kind', 'toy', '--trained-on', 'hand']
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert f'chain manifest {chain.path} already exists; pass --force' in err
    assert chain.path.read_text() == before
    assert cli(args + ['--force']) == 0 and Chain.load(chain.path).kind == 'toy'


def test_models_lists_the_shipped_chains(capsys):
    """`metafusion models`: one row per chain with the measured mIoU, human IoU and ms/frame."""
    assert cli(['models']) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:1 + len(SHIPPED)]}
    assert set(rows) == set(SHIPPED)
    for name, kind in SHIPPED.items():
        network = load_chain(name, MODELS).measured['network']
        cells = rows[name].replace(' *', '').split()
        int8 = 'yes' if load_chain(name, MODELS).network_int8 else 'no'
        assert cells[1:4] == [kind, 'ok', int8]
        assert cells[5:8] == [f"{network['miou']:.1f}", f"{network['human_iou']:.1f}",
                              f"{network['ms_per_frame']:.0f}"]
    assert rows[DEFAULT_CHAIN].startswith(f'{DEFAULT_CHAIN} *')
    assert 'MetaFusion at alpha 1, tau 0.5' in out
    assert 'docs/results/camvid_cityscapes_espnet_miou.json' in out
    assert cli(['models', '--json']) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(m['name'] for m in listed) == sorted(SHIPPED)


def test_models_names_a_changed_chain_and_exits_2(tmp_path, capsys):
    """A changed member: the row says CHANGED, one error line per chain, exit code 2."""
    folder = tmp_path / 'models'
    tiny_chain(folder)
    tiny_chain(folder, 'toy', meta=False, kind='toy')
    (folder / 'tiny_priors.npz').write_bytes(b'not the priors')
    assert cli(['models', '--models', str(folder)]) == 2
    captured = capsys.readouterr()
    assert 'CHANGED' in next(line for line in captured.out.splitlines()
                             if line.startswith('tiny '))
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith('metafusion models: error: chain tiny (')
    assert cli(['models', '--models', str(tmp_path)]) == 2  # no manifest at all
    assert f'no chain manifests (*{SUFFIX})' in capsys.readouterr().err


def test_startup_report_names_the_chain_and_warns_for_a_toy():
    """The start-up line: name, kind, network, precision, measured accuracy; a toy warns."""
    chain = load_chain(DEFAULT_CHAIN, MODELS)
    warn, line = startup_report(chain, str(chain.network), 'fp32', 'onnxruntime')
    assert not warn and line.startswith(f'chain {DEFAULT_CHAIN} (street, the default): ')
    assert f'network {chain.network}, fp32 on onnxruntime' in line
    assert f"mIoU {chain.measured['network']['miou']:.1f}" in line
    warn, line = startup_report(load_chain('synthetic_toy', MODELS), 'toy.onnx', 'fp32', 'cpu')
    assert warn and 'is a toy chain, not a street network' in line
    warn, line = startup_report(None, 'own.onnx', 'fp32', 'onnxruntime')
    assert not warn and line.startswith('chain: none (network own.onnx is in no chain manifest')


def chain_of_node(tmp_path: Path, params: dict, name: str) -> str:
    """Start the node with ``params``; return its output once configured (or exited)."""
    proc = start_node(ros_env(DOMAIN, tmp_path / 'log'), params, name=name)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and \
                'measured' not in node_output(proc) and 'chain: none' not in node_output(proc):
            time.sleep(0.2)
    finally:
        code, output = stop_node(proc)
    assert code == 0 and 'Traceback' not in output, output
    return output


def test_node_logs_the_default_chain_at_start(tmp_path):
    """No model_path: the default chain runs and the node says so with its accuracy (INFO)."""
    output = chain_of_node(tmp_path, {}, 'default_chain')
    chain = load_chain(DEFAULT_CHAIN, MODELS)
    line = next(line for line in output.splitlines() if f'chain {DEFAULT_CHAIN}' in line)
    assert line.startswith('[INFO]') and f'network {chain.network}, fp32 on onnxruntime' in line
    assert f"mIoU {chain.measured['network']['miou']:.1f}" in line


def test_node_warns_that_the_toy_is_not_a_street_network(tmp_path):
    """model_path: synthetic_toy: the start-up line is a WARN naming the toy."""
    output = chain_of_node(tmp_path, {'model_path': 'synthetic_toy'}, 'toy_chain')
    line = next(line for line in output.splitlines() if 'chain synthetic_toy (toy)' in line)
    assert line.startswith('[WARN]') and 'not a street network' in line


@pytest.mark.parametrize('case', ['unknown', 'changed'])
def test_node_refuses_a_bad_chain_with_one_line_and_exit_1(tmp_path, case):
    """An unknown chain name or a changed member: exit 1, one line (the node's configure)."""
    chain = tiny_chain(tmp_path / 'models')
    if case == 'changed':
        chain.priors.write_bytes(chain.priors.read_bytes()[:-1])
    model = 'cityscapes_espnet_v9' if case == 'unknown' else str(chain.network)
    proc = start_node(ros_env(DOMAIN, tmp_path / 'log'), {'model_path': model},
                      name=f'bad_{case}')
    proc.wait(timeout=120)
    lines = [line for line in node_output(proc).splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, lines
    expected = "unknown chain 'cityscapes_espnet_v9': the chains in " if case == 'unknown' \
        else f'member priors file {chain.priors} does not match the SHA-256'
    assert expected in lines[0] and 'Traceback' not in lines[0]


def test_chain_of_model_is_none_without_a_manifest(tmp_path):
    """A folder without manifests and a network no shipped chain has: no chain."""
    assert chain_of_model(fixtures.write_model(tmp_path / 'x.onnx')) is None


def test_docs_name_the_default_chain():
    """Switching the default is one constant plus these docs: each names the current one."""
    texts = {
        'config/fusion.yaml': f"model_path: ''            # chain name or ONNX file (+ its "
                              f".json spec); '' = {DEFAULT_CHAIN}",
        'docs/node.md': f"| `model` | `''` → the default chain `{DEFAULT_CHAIN}` |",
        'README.md': f'| `{DEFAULT_CHAIN}` (**default**) |',
        'launch/fusion.launch.py': 'DEFAULT_CHAIN',
    }
    for path, text in texts.items():
        assert text in (REPO / path).read_text(), path


def test_installed_package_finds_its_chains_in_the_share_folder():
    """`metafusion models` from the colcon install, run elsewhere: the share's models/ chains."""
    setup = REPO / 'install' / 'setup.bash'
    share = REPO / 'install' / 'metafusion_ros' / 'share' / 'metafusion_ros' / 'models'
    if not (share / f'{DEFAULT_CHAIN}{SUFFIX}').is_file():
        pytest.skip(f'no built workspace with the chain manifests in {share} (run `make build`)')
    result = subprocess.run(['bash', '-c', f'source "{setup}" && metafusion models --json'],
                            capture_output=True, text=True, timeout=120, cwd='/')
    assert result.returncode == 0, result.stderr
    assert sorted(m['name'] for m in json.loads(result.stdout)) == sorted(SHIPPED)
