"""One output rule for every `metafusion` command (``tools/cli.output_path``).

An output that exists is refused (exit 2, one line) unless ``--force``; a folder above it that is
a file is named as such; the refusal comes before any work. Every command that writes has
``--force`` (read from the parsers, so a new command cannot forget it).
"""
import argparse
import json

from fixtures import tiny_table
import pytest
from test_bag import drive_frames

from metafusion_ros.ros.bag import DriveBag, write_drive
from metafusion_ros.tools.cli import build_parser, main

# Options that name something a command writes (when they take a value: `models --json` prints).
OUTPUT_OPTIONS = {'--out', '--json', '--output', '--config', '--png'}
# Commands whose output is named by their arguments, not by an option.
WRITES_BESIDE = {'models write'}  # NAME.chain.json beside the network


def commands(parser: argparse.ArgumentParser, prefix: str = ''):
    """Yield ``(command, parser)`` for every (sub)command of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f'{prefix}{name}', sub
                yield from commands(sub, f'{prefix}{name} ')


def test_every_command_that_writes_has_force():
    """The fourteen commands that write (an output option, or beside the inputs) take --force."""
    writing = []
    for name, parser in commands(build_parser()):
        options = {o for action in parser._actions for o in action.option_strings}
        valued = {o for action in parser._actions if action.nargs != 0
                  for o in action.option_strings}
        if valued & OUTPUT_OPTIONS or name in WRITES_BESIDE:
            writing.append(name)
            assert '--force' in options, name
    assert sorted(writing) == sorted([
        'synth', 'priors', 'stats', 'digits', 'fit', 'evaluate', 'operating-point',
        'bag make', 'bag score', 'train', 'espnet', 'miou', 'models write', 'quantize'])


def _args(tmp_path, output: str) -> dict[str, list[str]]:
    """Return each command's arguments with ``output`` as the thing it writes."""
    data = ['--dataset', 'camvid', '--root', str(tmp_path / 'nowhere')]
    frames = ['--softmax', str(tmp_path / 'nowhere'), '--priors', str(tmp_path / 'p.npz')]
    return {
        'priors': ['priors', *data, '--out', output],
        'priors --png': ['priors', *data, '--out', str(tmp_path / 'new.npz'), '--png', output],
        'stats': ['stats', *data, '--json', output],
        'miou': ['miou', *data, '--split', 'test', '--model', 'm.onnx', '--out', output],
        'fit': ['fit', *frames, '--out', output],
        'evaluate': ['evaluate', *frames, '--out', output, '--name', 'x'],
        'digits': ['digits', '--out', output],
        'synth': ['synth', '--out', output],
        'operating-point': ['operating-point', '--results', 'r.csv', '--max-fn', '1',
                            '--config', output],
        'bag make': ['bag', 'make', *data, '--out', output],
        'bag score': ['bag', 'score', str(tmp_path / 'nobag'), '--json', output],
        'train': ['train', *data, '--output', output],
        'espnet': ['espnet', 'camvid', '--weights', 'w.pth', '--output', output],
        'quantize': ['quantize', '--model', 'm.onnx', *data, '--out', output],
    }


COMMANDS = ['priors', 'priors --png', 'stats', 'miou', 'fit', 'evaluate', 'digits', 'synth',
            'operating-point', 'bag make', 'bag score', 'train', 'espnet', 'quantize']
# Output folders: a file in them that the command would write.
FOLDERS = {'evaluate': 'x.md', 'digits': 'digits.md', 'synth': 'leftImg8bit'}


@pytest.mark.parametrize('command', COMMANDS)
def test_existing_output_is_refused_without_force(tmp_path, capsys, command):
    """An output that exists: exit 2, one line naming it and --force, before any work."""
    target = tmp_path / ('out.json' if command == 'fit' else 'out')
    if command in FOLDERS:
        target.mkdir()
        (target / FOLDERS[command]).write_text('earlier results')
    elif command == 'bag make':
        target.mkdir()
    else:
        target.write_text('earlier results')
    assert main(_args(tmp_path, str(target))[command]) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and 'already exists; pass --force to write over it' in err, err
    assert str(target) in err
    earlier = target / FOLDERS[command] if command in FOLDERS else target
    assert command == 'bag make' or earlier.read_text() == 'earlier results'


@pytest.mark.parametrize('command', COMMANDS)
def test_output_under_a_file_names_the_file(tmp_path, capsys, command):
    """``--out file/x``: exit 2, one line saying that ``file`` is a file, not a folder."""
    blocker = tmp_path / 'a file'
    blocker.write_text('not a folder')
    output = blocker / 'sub' / ('x.json' if command == 'fit' else 'x')
    assert main(_args(tmp_path, str(output))[command] + ['--force']) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and f'{blocker} is a file, not a folder' in err, err


def test_force_writes_over_and_a_folder_is_never_a_file(tmp_path, capsys):
    """With --force synth writes into a folder with files; a bag is replaced, a folder never."""
    out = tmp_path / 'drives'
    out.mkdir()
    (out / 'notes.txt').write_text('kept')
    assert main(['synth', '--out', str(out), '--drives', 'val=1', '--frames', '2',
                 '--size', '64x32', '--force']) == 0
    assert (out / 'notes.txt').read_text() == 'kept' and (out / 'leftImg8bit').is_dir()
    bag = tmp_path / 'bag'
    write_drive(drive_frames(), bag, tiny_table())
    make = ['bag', 'make', '--dataset', 'synthetic', '--root', str(out), '--split', 'val',
            '--out', str(bag)]
    assert main(make) == 2 and 'pass --force' in capsys.readouterr().err
    assert main(make + ['--force']) == 0
    assert len(DriveBag(bag).ground_truth()) == 2  # the synthetic drive's, not the old three
    folder = tmp_path / 'not a bag'
    folder.mkdir()
    assert main(make[:-1] + [str(folder), '--force']) == 2
    assert 'is not a bag; it is not replaced' in capsys.readouterr().err
    assert main(['stats', '--dataset', 'camvid', '--root', str(tmp_path),
                 '--json', str(out)]) == 2
    assert f'JSON file {out} is a folder, not a file' in capsys.readouterr().err
    config = tmp_path / 'op.yaml'
    config.write_text(json.dumps({'metafusion_node': {'ros__parameters': {'tau': 0.1}}}))
    assert main(['operating-point', '--results', 'r.csv', '--max-fn', '1',
                 '--config', str(config)]) == 2
    assert 'parameter file' in capsys.readouterr().err
