"""Every ``ros2 …`` and ``metafusion …`` command written in README.md and docs/node.md.

The commands are read from the two files, so a command added later is covered: each line of a
fenced block whose first word is ``ros2`` or ``metafusion`` (a trailing backslash joins the next
line; a ``$(ros2 …)`` inside any line counts too) and each inline code span that starts with one
of them. A command's *key* is its program and subcommands (``ros2 topic echo``, ``metafusion
bag play``):

- every key is in :data:`RUNS` (run as written) or in :data:`EXCLUDED` (why it cannot run in a
  test, and what covers it instead): a new command fails
  ``test_every_documented_command_is_handled`` until one of the two names it;
- every ``metafusion`` command's subcommands and ``--options`` exist (its parser, ``--help``);
- every fenced command with a runner runs where ``launch`` and ``ros2cli`` are installed
  (``make`` installs them from ``../shared/wheels/ros-upstream``), through bash with
  ``install/setup.bash`` sourced, in a scratch folder that holds the paths the docs use
  (``data/synth``, ``out/drive``, ``out/demo/drive``). A command that starts a node (``ros2
  launch``, ``ros2 run``) must bring up a node that answers a frame with a mask, and exit 0 on
  Ctrl-C; the others run against a node started by ``ros2 launch`` and must exit 0 (streaming
  ones are stopped with Ctrl-C once they printed: 0, or ros2cli's 2 for an interrupted
  command) and print what their ``# prints:`` comment says.
  The optional ``[...]`` groups of a synopsis are left out (``--help`` checks their options).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
import importlib.util
import json
import os
from pathlib import Path
import re
import shlex
import signal
import subprocess
import time
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray
import pytest
from sensor_msgs.msg import Image
from test_node_harness import (diagnostics_values, domain_for, image_msg, Peer, REPO, ros_env,
                               SCENE, with_stamp)

from metafusion_ros.ros.bag import DriveBag, GT_TOPIC, IMAGE_TOPIC
from metafusion_ros.runtime.chains import chain_names, DEFAULT_CHAIN
from metafusion_ros.tools.cli import build_parser, main as metafusion

DOCS = ('README.md', 'docs/node.md')
PROGRAMS = ('ros2', 'metafusion')
NAME = re.compile(r'[a-z][a-z0-9_-]*')
ALTERNATIVES = re.compile(r'[a-z][a-z0-9_-]*(\|[a-z][a-z0-9_-]*)+')
FENCE = re.compile(r'^```[^\n]*\n(.*?)^```', re.MULTILINE | re.DOTALL)
INLINE = re.compile(r'`((?:ros2|metafusion) [^`\n]+)`')
SUBSTITUTION = re.compile(r'\$\(((?:ros2|metafusion) [^)]*)\)')
ASSIGNMENT = re.compile(r'(export +)?[A-Za-z_][A-Za-z0-9_]*=')
OPTIONAL = re.compile(r'\s*\[[^\]]*\]')
DOMAINS = {'node': domain_for(94), 'starts': domain_for(95), 'ends': domain_for(96)}
LAUNCH_DEFAULT = 'ros2 launch metafusion_ros fusion.launch.py'
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Command:
    """One documented command: its text as run, where it is written, what it should print."""

    text: str
    where: str
    fenced: bool
    prints: str = ''
    prelude: tuple[str, ...] = ()  # the block's variable assignments before it
    synopsis: str = ''  # as written, optional [...] groups included

    @property
    def words(self) -> list[str]:
        """Return the command split as a shell splits it (placeholders kept as they are)."""
        return shlex.split(self.text.replace('<', '').replace('>', ''))

    @property
    def key(self) -> str:
        """Return the program and its subcommands, e.g. ``ros2 topic echo``."""
        return command_key(self.words)


def command_key(words: list[str]) -> str:
    """Return the key of a command's ``words``.

    ``ros2`` + verb (+ subverb); ``metafusion`` + the subcommands its parser knows (+ the first
    unknown name, which then fails as unknown).
    """
    if words[0] == 'ros2':
        if len(words) > 2 and words[1] not in ('launch', 'run') and NAME.fullmatch(words[2]):
            return ' '.join(words[:3])
        return ' '.join(words[:2])
    key, parser = ['metafusion'], build_parser()
    for word in words[1:]:
        choices = subcommands(parser)
        if not choices or not NAME.fullmatch(word):
            break
        key.append(word)
        if word not in choices:
            break
        parser = choices[word]
    return ' '.join(key)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Return the subcommand parsers of ``parser`` by name (empty without subcommands)."""
    return next((action.choices for action in parser._actions
                 if isinstance(action, argparse._SubParsersAction)), {})


def is_command(text: str) -> bool:
    """Return whether ``text`` is a command, not output (``metafusion bag: error: …``) or prose."""
    words = text.split()
    return len(words) > 1 and words[0] in PROGRAMS and (
        words[1].startswith('-') or NAME.fullmatch(words[1].split('|')[0]) is not None)


def expand(command: Command) -> list[Command]:
    """Return ``command`` once per alternative of its subcommand (``bag make|play|score``)."""
    words = command.text.split()
    for index, word in enumerate(words[:3]):
        if ALTERNATIVES.fullmatch(word):
            return [replace(command, text=' '.join(words[:index] + [choice] + words[index + 1:]))
                    for choice in word.split('|')]
    return [command]


def split_comment(line: str) -> tuple[str, str]:
    """Return a shell line without its ``#`` comment, and the comment's text."""
    quote = ''
    for index, char in enumerate(line):
        if quote:
            quote = '' if char == quote else quote
        elif char in '\'"':
            quote = char
        elif char == '#' and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1:].strip()
    return line.rstrip(), ''


def block_commands(block: str, where: Callable[[int], str]) -> list[Command]:
    """Return the commands of one fenced block; ``where(line_index)`` names a line's place."""
    found, prelude = [], []
    lines = block.split('\n')
    index = 0
    while index < len(lines):
        start, line = index, lines[index]
        while line.endswith('\\') and index + 1 < len(lines):
            index += 1
            line = line[:-1].rstrip() + ' ' + lines[index].strip()
        index += 1
        text, comment = split_comment(line.strip())
        prints = comment.split('prints:', 1)[1].strip() if comment.startswith('prints:') else ''
        if ASSIGNMENT.match(text):
            prelude.append(text)
        inner = [Command(m[1].strip(), where(start), True, '', tuple(prelude[:-1]))
                 for m in SUBSTITUTION.finditer(text) if is_command(m[1])]
        if is_command(text):
            found.append(Command(OPTIONAL.sub('', text), where(start), True, prints,
                                 tuple(prelude), text))
        found += [c for c in inner if c.text not in {f.text for f in found}]
    return found


def documented_commands(text: str, source: str) -> list[Command]:
    """Return every command of the markdown ``text`` (fenced first, then inline mentions)."""
    found = []
    for match in FENCE.finditer(text):
        first = text.count('\n', 0, match.start(1)) + 1
        found += block_commands(match[1], lambda i, first=first: f'{source}:{first + i}')
    outside = FENCE.sub(lambda m: '\n' * m[0].count('\n'), text)
    for match in INLINE.finditer(outside):
        if is_command(match[1]):
            line = outside.count('\n', 0, match.start()) + 1
            found.append(Command(match[1].strip(), f'{source}:{line}', False))
    return [each for command in found for each in expand(command)]


def all_commands() -> list[Command]:
    """Return the commands of README.md and docs/node.md."""
    return [command for source in DOCS
            for command in documented_commands((REPO / source).read_text(), source)]


COMMANDS = all_commands()


# ---- what runs and what cannot ----------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """How a documented command runs.

    ``kind``: ``starts`` a node, runs against the launched ``node``, or ``alone``; ``feed``:
    frames flow to the node meanwhile; ``check``: the command's own check of its output.
    """

    kind: str
    feed: bool = False
    check: Callable[[Command, str, 'Scratch'], None] | None = None


def published_the_bag(command: Command, output: str, scratch: 'Scratch') -> None:
    """``bag play`` published every message of its topics and the node answered a frame."""
    bag_path = command.words[3]
    bag = DriveBag(scratch.folder / bag_path)
    topics = [t for t in bag.topics() if '--ground-truth' in command.words or t != GT_TOPIC]
    expected = sum(bag.counts()[t] for t in topics)
    assert f'published {expected} messages from {bag_path}' in output, output
    stamps = {stamp // 10**9 for stamp, _, _ in bag.messages([IMAGE_TOPIC])}
    masks = scratch.peer.subscribe('/metafusion_node/output/mask', Image)
    assert scratch.peer.spin_until(lambda: any(m.header.stamp.sec in stamps for m in masks),
                                   timeout=10.0), 'the node answered no frame of the bag'


def scored_the_bag(command: Command, output: str, scratch: 'Scratch') -> None:
    """``bag score`` printed a JSON report that scored every frame of the bag."""
    frames = DriveBag(scratch.folder / command.words[3]).counts()[IMAGE_TOPIC]
    report = json.loads(output[output.index('{'):output.rindex('}') + 1])
    assert report['frames_scored'] == frames, report
    assert set(report['rules']) == {'bayes', 'ml', 'metafusion'}, report


def wrote_the_bag(command: Command, output: str, scratch: 'Scratch') -> None:
    """``bag make`` wrote the split's frames as a bag that reads back."""
    out = command.words[command.words.index('--out') + 1]
    count = int(re.search(r'wrote (\d+) frames', output)[1])
    assert count == scratch.frames and DriveBag(scratch.make / out).counts()[IMAGE_TOPIC] == count


def lists_the_subcommands(command: Command, output: str, scratch: 'Scratch') -> None:
    """``metafusion --help`` names every subcommand the docs use."""
    assert output.startswith('usage: metafusion'), output
    for name in {c.key.split()[1] for c in COMMANDS if c.key.startswith('metafusion ')}:
        assert re.search(rf'^\s+{re.escape(name)}\b', output, re.MULTILINE), name


def lists_the_chains(command: Command, output: str, scratch: 'Scratch') -> None:
    """``metafusion models`` has a row for every shipped chain and marks the default one."""
    table = output.split('\n\n')[0].splitlines()[1:]  # the chains, not the MetaFusion rows
    rows = {line.split()[0]: line.split() for line in table}
    assert sorted(rows) == chain_names(REPO / 'models'), output
    assert rows[DEFAULT_CHAIN][1] == '*', output


def prefix_holds_the_profile(command: Command, output: str, scratch: 'Scratch') -> None:
    """``ros2 pkg prefix`` names the install, whose share/ holds the documented DDS profile."""
    share = Path(output.strip().splitlines()[-1]) / 'share' / 'metafusion_ros'
    assert (share / 'config' / 'fastdds_large_frames.xml').is_file(), output


RUNS: dict[str, Run] = {
    'ros2 launch': Run('starts'),
    'ros2 run': Run('starts'),
    'ros2 node list': Run('node'),
    'ros2 topic echo': Run('node', feed=True),
    'ros2 topic hz': Run('node', feed=True),
    'ros2 param get': Run('node'),
    'ros2 param set': Run('node'),
    'ros2 lifecycle get': Run('node'),
    'ros2 lifecycle set': Run('node'),
    'ros2 pkg prefix': Run('alone', check=prefix_holds_the_profile),
    'metafusion': Run('alone', check=lists_the_subcommands),
    'metafusion bag make': Run('alone', check=wrote_the_bag),
    'metafusion bag play': Run('node', check=published_the_bag),
    'metafusion bag score': Run('node', check=scored_the_bag),
    'metafusion models': Run('alone', check=lists_the_chains),
}
# Documented but not run here: why, and what runs it instead. Extend at will; keep a reason.
EXCLUDED: dict[str, str] = {
    'ros2 bag play': 'rosbag2_py (ros2 bag) is not installable here (../shared/wheels/'
                     'ros-upstream/README.md); metafusion bag play replays the same rosbag2 '
                     'bags and runs here',
    'metafusion synth': 'a synopsis with placeholders; it makes data/synth for this test, and '
                        'test_data_synth.py::test_synth_command_writes_the_cityscapes_layout',
    'metafusion priors': 'a synopsis with placeholders over a dataset; test_data_priors.py, '
                         'test_espnet_data.py::test_priors_command_records_where_they_came_from',
    'metafusion miou': 'scores a network over a CamVid split (minutes); test_espnet_data.py::'
                       'test_miou_command_maps_a_cityscapes_network_into_camvid',
    'metafusion espnet': "needs PyTorch and the authors' weights in ../shared; test_espnet.py::"
                         'test_export_command_writes_a_loadable_model (make test-full)',
    'metafusion stats': 'statistics of a whole dataset split; test_data_priors.py::'
                        'test_camvid_statistics_match_the_documented_numbers',
    'metafusion train': 'trains a network for hours (PyTorch); test_segmenter_train.py::'
                        'test_tiny_training_run_exports_a_loadable_model (make test-full)',
    'metafusion fit': 'fits meta classifiers over labelled drives (minutes); '
                      'test_meta_fit.py::test_fit_command on toy drives',
    'metafusion evaluate': 'long offline job over labelled drives; test_meta_evaluate.py::'
                           'test_evaluate_and_operating_point_commands on toy drives',
    'metafusion operating-point': 'reads evaluate results; test_meta_evaluate.py::'
                                  'test_evaluate_and_operating_point_commands',
    'metafusion digits': "the paper's §5 protocol (minutes); test_meta_digits.py",
    'metafusion quantize': 'calibrates a network on dataset frames (minutes on a street '
                           'network); test_quantize.py runs it on a tiny network '
                           '(test_quantize_writes_an_int8_sibling_with_its_source_and_frames)',
    'metafusion models refresh': 'rewrites the shipped manifests (make results runs it); '
                                 'test_chains.py::test_refresh_rewrites_the_shipped_manifest_'
                                 'unchanged runs it on copies',
}


def test_commands_are_found_in_both_files():
    """Fenced and inline commands of both files, with their places and # prints: texts."""
    sources = {c.where.split(':')[0] for c in COMMANDS}
    assert sources == set(DOCS)
    fenced = [c for c in COMMANDS if c.fenced]
    assert len(fenced) >= 20 and len(COMMANDS) - len(fenced) >= 15
    keys = {c.key for c in fenced}
    assert {'ros2 launch', 'ros2 topic echo', 'metafusion bag play', 'ros2 pkg prefix'} <= keys
    assert sum(bool(c.prints) for c in fenced) >= 10


def test_commands_are_read_as_a_shell_reads_them():
    """Continuations, comments, ``# prints:``, ``$(…)``, alternatives, synopses and prose."""
    text = ('Run `metafusion bag make|play|score` or `metafusion fit` / `evaluate`; errors read '
            '`metafusion bag: error: bag <path> ...`, see `ros2 …`.\n\n```bash\n'
            'share=$(ros2 pkg prefix metafusion_ros)/share\n'
            'ros2 topic echo --once \\\n  /a/b   # prints: data: \'#x\'\n'
            'metafusion bag play out/drive [--rate 2.0] [--loop]  # in a second shell\n'
            'echo "ros2 launch x"\n```\n')
    found = documented_commands(text, 'x.md')
    assert found[2].synopsis == 'metafusion bag play out/drive [--rate 2.0] [--loop]'
    assert [(c.text, c.where, c.fenced, c.prints, c.prelude) for c in found] == [
        ('ros2 pkg prefix metafusion_ros', 'x.md:4', True, '', ()),
        ('ros2 topic echo --once /a/b', 'x.md:5', True, "data: '#x'",
         ('share=$(ros2 pkg prefix metafusion_ros)/share',)),
        ('metafusion bag play out/drive', 'x.md:7', True, '',
         ('share=$(ros2 pkg prefix metafusion_ros)/share',)),
        ('metafusion bag make', 'x.md:1', False, '', ()),
        ('metafusion bag play', 'x.md:1', False, '', ()),
        ('metafusion bag score', 'x.md:1', False, '', ()),
        ('metafusion fit', 'x.md:1', False, '', ())]
    assert [c.key for c in found[:3]] == ['ros2 pkg prefix', 'ros2 topic echo',
                                          'metafusion bag play']
    assert command_key(['metafusion', 'models', '--list']) == 'metafusion models'
    assert command_key(['metafusion', '--help']) == 'metafusion'
    assert command_key(['ros2', 'launch', 'pkg', 'file.py']) == 'ros2 launch'
    group, fenced = Command('ros2 param', 'x.md:1', False), Command('ros2 param', 'x.md:2', True)
    assert handled(group) and not handled(fenced)  # a group mention, but not as a command


def handled(command: Command) -> bool:
    """Return whether ``command`` runs or is excluded.

    A command group named in prose (``ros2 param``, ``metafusion bag``) is handled through its
    commands.
    """
    known = set(RUNS) | set(EXCLUDED)
    return command.key in known or (not command.fenced and command.text == command.key and any(
        key.startswith(command.key + ' ') for key in known))


def test_every_documented_command_is_handled():
    """Each key runs (fenced, as written) or is excluded with a reason; none is stale."""
    unknown = sorted({f'{c.key} ({c.where})' for c in COMMANDS if not handled(c)})
    assert not unknown, ('documented commands neither run nor excluded: add each to RUNS or '
                         f'EXCLUDED in {Path(__file__).name}: {unknown}')
    keys = {c.key for c in COMMANDS}
    fenced = {c.key for c in COMMANDS if c.fenced}
    assert not set(RUNS) & set(EXCLUDED)
    assert not (set(RUNS) | set(EXCLUDED)) - keys, 'stale: no longer documented'
    assert not set(RUNS) - fenced, 'a runner needs a runnable (fenced) command'
    assert all(len(reason) > 30 for reason in EXCLUDED.values())


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Return every ``--option`` of ``parser``."""
    return {option for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize('where', sorted({c.where + ' ' + c.key: c for c in COMMANDS
                                          if c.key.startswith('metafusion')}))
def test_metafusion_command_fits_its_parser(where, capsys):
    """The subcommands exist, every documented ``--option`` is one, ``--help`` exits 0."""
    command = next(c for c in COMMANDS if f'{c.where} {c.key}' == where)
    parser = build_parser()
    for name in command.key.split()[1:]:
        choices = subcommands(parser)
        assert name in choices, f'{command.where}: no subcommand {name!r} in {command.text!r}'
        parser = choices[name]
    documented = {word.split('=')[0].strip('[]') for word in
                  (command.synopsis or command.text).split() if word.strip('[').startswith('--')}
    assert documented <= option_strings(parser), documented - option_strings(parser)
    with pytest.raises(SystemExit) as done:
        metafusion(command.key.split()[1:] + ['--help'])
    assert done.value.code == 0 and capsys.readouterr().out.startswith('usage: metafusion')


# ---- running them -----------------------------------------------------------------------------

@dataclass
class Scratch:
    """The scratch folder of the documented paths, and the node that ``ros2 launch`` started."""

    folder: Path
    make: Path
    frames: int
    peer: Peer | None = None
    launch: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)


def tools_missing() -> str:
    """Return why the ROS 2 tools cannot run the commands here, or ''."""
    missing = [name for name in ('launch', 'launch_ros', 'ros2cli', 'ros2launch')
               if importlib.util.find_spec(name) is None]
    if missing:
        return (f'{", ".join(missing)} not installed (make installs them from '
                '../shared/wheels/ros-upstream)')
    if not (REPO / 'install' / 'setup.bash').is_file():
        return 'no built workspace (run make build)'
    return ''


def shell(command: Command, domain: int, cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``command`` as the docs run it: bash, the workspace sourced, in ``cwd``.

    Its own process group, so that Ctrl-C (SIGINT to the group) reaches it as in a terminal.
    """
    script = '; '.join([f'source {shlex.quote(str(REPO / "install" / "setup.bash"))}',
                        *command.prelude, f'exec {command.text}'])
    with log.open('w') as sink:
        return subprocess.Popen(['bash', '-c', script], cwd=cwd, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=ros_env(domain, log.parent / 'ros'))


def interrupt(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """Send Ctrl-C to ``proc``'s group; return its exit code (kill the group if it hangs)."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        return proc.wait(timeout=timeout)
    except ProcessLookupError:  # the group has exited already: its exit code
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return -999
    finally:
        kill(proc)


def kill(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group if anything of it still runs."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def find_node(peer: Peer) -> tuple[str, str, str] | None:
    """Return ``(fully qualified name, mask topic, image topic)`` of a MetaFusion node."""
    graph = peer.node
    for name, namespace in graph.get_node_names_and_namespaces():
        fqn = f'{namespace.rstrip("/")}/{name}'
        mask = f'{fqn}/output/mask'
        if mask not in {t for t, _ in graph.get_publisher_names_and_types_by_node(
                name, namespace)}:
            continue
        images = [t for t, kinds in graph.get_subscriber_names_and_types_by_node(name, namespace)
                  if 'sensor_msgs/msg/Image' in kinds]
        if images:
            return fqn, mask, images[0]
    return None


def answers_a_frame(peer: Peer, proc: subprocess.Popen, log: Path, stamp: int) -> str:
    """Wait until the started node is active and answers a frame with a mask; return its name."""
    arrays = peer.subscribe('/diagnostics', DiagnosticArray)
    found: list = []

    def active() -> bool:
        found[:] = [find_node(peer)]
        return found[0] is not None and diagnostics_values(arrays, found[0][0]).get(
            'model_state') == 'active'
    assert peer.spin_until(lambda: active() or proc.poll() is not None, timeout=START_TIMEOUT) \
        and proc.poll() is None, f'no active node: {log.read_text()[-3000:]}'
    fqn, mask_topic, image_topic = found[0]
    masks = peer.subscribe(mask_topic, Image)
    msg = image_msg(SCENE, stamp)
    assert peer.spin_until(lambda: with_stamp(masks, stamp), timeout=60.0,
                           every=lambda: peer.publisher(image_topic).publish(msg)), \
        f'{fqn} answered no frame on {image_topic}'
    return fqn


def start_daemon(domain: int, folder: Path) -> None:
    """Start the ros2 daemon of ``domain`` in a session of its own.

    Started by a documented command instead, it would be in that command's process group and
    die with it (Ctrl-C); the next command would then use a node of its own, which may not
    have discovered the node yet.
    """
    log = folder / f'daemon_{domain}.out'
    daemon = shell(Command('ros2 daemon start', 'daemon', True), domain, folder, log)
    assert daemon.wait(timeout=60.0) == 0, log.read_text()


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    """Yield the documented paths in a scratch folder and a node started by ``ros2 launch``."""
    missing = tools_missing()
    if missing:
        pytest.skip(missing)
    folder = tmp_path_factory.mktemp('docs')
    frames = 3
    assert metafusion(['synth', '--out', str(folder / 'data' / 'synth'), '--drives', 'test=1',
                       '--frames', str(frames), '--size', '512x256']) == 0
    for bag in ('out/drive', 'out/demo/drive'):
        assert metafusion(['bag', 'make', '--dataset', 'synthetic', '--root',
                           str(folder / 'data' / 'synth'), '--split', 'test',
                           '--out', str(folder / bag)]) == 0
    (folder / 'make').mkdir()
    (folder / 'make' / 'data').symlink_to(folder / 'data')
    state = Scratch(folder, folder / 'make', frames)
    log = folder / 'launch.out'
    state.launch = shell(Command(f'{LAUNCH_DEFAULT} input_topic:=/camera/image_raw', 'fixture',
                                 True), DOMAINS['node'], folder, log)
    state.peer = Peer(DOMAINS['node'])
    try:
        for domain in (DOMAINS['node'], DOMAINS['ends']):  # a running daemon, as a user has
            start_daemon(domain, folder)
        answers_a_frame(state.peer, state.launch, log, 1)
        yield state
    finally:
        state.peer.close()
        code = interrupt(state.launch)
        for domain in DOMAINS.values():  # the ros2 commands started a daemon per domain
            subprocess.run(['bash', '-c', f'source {REPO}/install/setup.bash; ros2 daemon stop'],
                           env=ros_env(domain, folder / 'ros'), capture_output=True, timeout=60)
    assert code == 0 and 'Traceback' not in log.read_text(), log.read_text()[-3000:]


def streaming(command: Command) -> bool:
    """Return whether ``command`` runs until Ctrl-C (``topic hz``, ``topic echo`` without once)."""
    return command.key == 'ros2 topic hz' or (
        command.key == 'ros2 topic echo' and '--once' not in command.words)


# ros2cli looks nodes and topics up through discovery, which can lag a node that already
# answered a frame: these lines mean "not discovered yet", and the command is run again.
DISCOVERY_TRIES = 5
UNDISCOVERED = ('Node not found', 'Could not determine the type for the passed topic')


def undiscovered(output: str) -> bool:
    """Return whether ``output`` says ros2cli has not discovered the node or topic yet."""
    return any(mark in output for mark in UNDISCOVERED)


def until_discovered(attempt: Callable[[], int], log: Path) -> int:
    """Run ``attempt`` until ros2cli has discovered what it names; return the last exit code.

    ``attempt`` is one try of a ros2 command writing ``log``; it runs again while ``log`` says
    the node or topic is not discovered yet, at most ``DISCOVERY_TRIES`` times.
    """
    for _ in range(DISCOVERY_TRIES):
        code = attempt()
        if not undiscovered(log.read_text()):
            break
        time.sleep(2.0)
    return code


def run_against_node(command: Command, run: Run, scratch: Scratch, log: Path) -> tuple[int, str]:
    """Run ``command`` beside the launched node (feeding it frames if asked); return code, output.

    A streaming command is interrupted once it printed its ``# prints:`` text (or anything).
    """
    peer = scratch.peer
    frame = image_msg(SCENE, 2)
    want = command.prints or '\n'

    def attempt() -> int:
        proc = shell(command, DOMAINS['node'], scratch.folder, log)
        try:
            done = peer.spin_until(
                lambda: proc.poll() is not None or (streaming(command) and
                                                    want in log.read_text()),
                timeout=180.0, period=0.2,
                every=(lambda: peer.publisher('/camera/image_raw').publish(frame)) if run.feed
                else None)
            assert done, f'{command.text} did not finish: {log.read_text()[-2000:]}'
            return interrupt(proc) if streaming(command) else proc.wait()
        finally:
            kill(proc)
    return until_discovered(attempt, log), log.read_text()


def run_ending_the_node(command: Command, scratch: Scratch, log: Path) -> tuple[int, str]:
    """Run a command that ends the node (lifecycle shutdown) against a launch of its own.

    ``ros2 launch`` must then end by itself with exit code 0.
    """
    launch_log = log.with_suffix('.launch')
    launch = shell(Command(LAUNCH_DEFAULT, 'ends', True), DOMAINS['ends'], scratch.folder,
                   launch_log)
    peer = Peer(DOMAINS['ends'])
    try:
        answers_a_frame(peer, launch, launch_log, 3)
        code = until_discovered(
            lambda: shell(command, DOMAINS['ends'], scratch.folder, log).wait(timeout=120.0), log)
        assert launch.wait(timeout=60.0) == 0, launch_log.read_text()[-3000:]
    finally:
        peer.close()
        kill(launch)
    assert 'Traceback' not in launch_log.read_text(), launch_log.read_text()[-3000:]
    return code, log.read_text()


def run_starting_a_node(command: Command, scratch: Scratch, log: Path) -> tuple[int, str]:
    """Run a node-starting command; it must answer a frame, then exit 0 on Ctrl-C."""
    proc = shell(command, DOMAINS['starts'], scratch.folder, log)
    peer = Peer(DOMAINS['starts'])
    try:
        answers_a_frame(peer, proc, log, 4)
    finally:
        peer.close()
        code = interrupt(proc)
    return code, log.read_text()


def runnable() -> list[Command]:
    """Return the fenced commands with a runner, in document order, each text once."""
    found: dict[tuple[str, tuple[str, ...]], Command] = {}
    for command in COMMANDS:
        if command.fenced and command.key in RUNS:
            found.setdefault((command.text, command.prelude), command)
    return list(found.values())


@pytest.mark.parametrize('where', [c.where for c in runnable()])
def test_documented_command_runs(where, scratch):
    """The command exits 0, without a traceback, printing what its ``# prints:`` says."""
    command = next(c for c in COMMANDS if c.fenced and c.where == where)
    run = RUNS[command.key]
    log = scratch.folder / f'{where.replace("/", "_").replace(":", "_")}.out'
    start = time.monotonic()
    if run.kind == 'starts':
        code, output = run_starting_a_node(command, scratch, log)
    elif command.words[-1] == 'shutdown':
        code, output = run_ending_the_node(command, scratch, log)
    elif run.kind == 'node':
        code, output = run_against_node(command, run, scratch, log)
    else:
        cwd = scratch.make if command.key == 'metafusion bag make' else scratch.folder
        proc = shell(command, DOMAINS['node'], cwd, log)
        code, output = proc.wait(timeout=300.0), log.read_text()
    # ros2cli's codes for Ctrl-C (ros2cli/cli.py): SIGINT for a KeyboardInterrupt, SIGTERM when
    # rclpy's own handler took the signal and the spin ended in ExternalShutdownException.
    expected = (0, signal.SIGINT, signal.SIGTERM) if streaming(command) else (0,)
    assert code in expected, f'{command.text}: exit {code} after ' \
                             f'{time.monotonic() - start:.0f} s\n{output[-3000:]}'
    assert 'Traceback' not in output, output[-3000:]
    assert command.prints in output, f'{command.text} should print {command.prints!r}: ' \
                                     f'{output[-2000:]}'
    if run.check is not None:
        run.check(command, output, scratch)


def test_undeclared_launch_argument_ends_ros2_launch(scratch):
    """``alhpa:=0.5`` ends ``ros2 launch`` (exit 1) with one line naming it and ``alpha``."""
    log = scratch.folder / 'typo.out'
    proc = shell(Command(f'{LAUNCH_DEFAULT} alhpa:=0.5 tau:=0.4', 'typo', True),
                 DOMAINS['starts'], scratch.folder, log)
    try:
        code = proc.wait(timeout=120.0)
    finally:
        kill(proc)
    output = log.read_text()
    lines = [line for line in output.splitlines() if 'unknown launch argument' in line]
    assert code == 1 and len(lines) == 1, output
    assert lines[0].endswith('unknown launch argument alhpa (did you mean alpha?); arguments: '
                             'config_file, namespace, node_name, input_topic, camera_info_topic, '
                             'model, priors, meta_model, backend, alpha, tau, qos, use_sim_time')
    assert 'process started' not in output
