"""Every ``ros2 launch`` example of fusion.launch.py's docstring and docs/node.md starts.

Each example's arguments go through ``launch_args.node_settings`` (as the launch file does);
the node is then started as a process with the same parameter file, overrides, name, namespace
and remappings that ``launch_ros`` would give it, over real DDS in its own domain. It must come
up active (diagnostics), answer a frame on the example's input topic with a mask, subscribe its
own camera's camera_info, warn while ``use_sim_time`` waits for /clock, and exit 0 on SIGTERM.
The launch file itself runs under launch_testing in test_launch_fusion.py (ROS 2 install).
"""
import ast
import re
import shlex

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import pytest
from sensor_msgs.msg import Image
import yaml
from test_node_harness import (domain_for, image_msg, node_output, Peer, REPO, ros_env, SCENE,
                               start_node, stop_node, with_stamp)

from metafusion_ros.ros.launch_args import node_settings

DOMAIN = domain_for(92)
SHARE = str(REPO)  # the source tree has the share folder's layout
LAUNCH = REPO / 'launch' / 'fusion.launch.py'
CONFIG_RELIABILITY = yaml.safe_load((REPO / 'config' / 'fusion.yaml').read_text())[
    '/**']['ros__parameters']['qos']['reliability']
COMMAND = re.compile(r'ros2 launch metafusion_ros fusion\.launch\.py(?P<args>[^\n`]*)')


def documented_examples() -> dict[str, dict[str, str]]:
    """Return the launch arguments of every example, keyed by where it is written."""
    sources = {'fusion.launch.py': ast.get_docstring(ast.parse(LAUNCH.read_text())),
               'docs/node.md': (REPO / 'docs' / 'node.md').read_text()}
    examples = {}
    for source, text in sources.items():
        for number, match in enumerate(COMMAND.finditer(text), 1):
            words = shlex.split(match['args'].split('#')[0])
            examples[f'{source}:{number}'] = dict(word.split(':=', 1) for word in words)
    return examples


EXAMPLES = documented_examples()


def test_examples_are_found():
    """Both sources have examples; each argument is name:=value."""
    sources = {key.split(':')[0] for key in EXAMPLES}
    assert sources == {'fusion.launch.py', 'docs/node.md'} and len(EXAMPLES) >= 5


def newest_status(arrays: list, fqn: str):
    """Return ``(array, status)`` of the newest diagnostics of node ``fqn``, or None."""
    for array in reversed(arrays):
        for status in array.status:
            if status.name == f'{fqn}: fusion':
                return array, status
    return None


def values_of(status) -> dict[str, str]:
    """Return a status's key/values."""
    return {kv.key: kv.value for kv in status.values}


def check_example(args: dict[str, str], tmp_path) -> None:
    """Start the node of ``args`` as launch would; check it runs on its own topics; stop it."""
    settings = node_settings(args, SHARE)
    assert settings.config_file == f'{SHARE}/config/fusion.yaml'  # what start_node passes
    namespace = '/' + settings.namespace.lstrip('/') if settings.namespace else ''
    fqn = f'{namespace}/{settings.name}'
    remap = dict(settings.remappings, **({'__ns': namespace} if namespace else {}))
    proc = start_node(ros_env(DOMAIN, tmp_path / 'log'), settings.overrides,
                      name=settings.name, remap=remap)
    tester = Peer(DOMAIN)
    try:
        arrays = tester.subscribe('/diagnostics', DiagnosticArray)
        masks = tester.subscribe(f'{fqn}/output/mask', Image)

        def active() -> bool:
            found = newest_status(arrays, fqn)
            return found is not None and values_of(found[1]).get('model_state') == 'active'
        assert tester.spin_until(lambda: active() or proc.poll() is not None, timeout=90.0) \
            and proc.poll() is None, f'{fqn} did not start: {node_output(proc)[-3000:]}'
        _, status = newest_status(arrays, fqn)
        if settings.overrides['use_sim_time']:
            assert status.level == DiagnosticStatus.WARN
            assert 'use_sim_time is true and no /clock has arrived' in status.message
        else:
            assert status.level == DiagnosticStatus.OK, status.message
        image_topic = dict(settings.remappings)['~/input/image']
        msg = image_msg(SCENE, 5)
        assert tester.spin_until(lambda: with_stamp(masks, 5), timeout=60.0,
                                 every=lambda: tester.publisher(image_topic).publish(msg)), \
            f'no mask from {fqn} for a frame on {image_topic}'
        info_topic = dict(settings.remappings)['~/input/camera_info']
        readers = tester.node.get_subscriptions_info_by_topic(info_topic)
        assert [(r.node_namespace, r.node_name) for r in readers] == [
            (namespace or '/', settings.name)]
        reliability = settings.overrides.get('qos.reliability', CONFIG_RELIABILITY)
        assert [r.qos_profile.reliability.name.lower() for r in
                tester.node.get_subscriptions_info_by_topic(image_topic)] == [reliability]
    finally:
        tester.close()
        code, output = stop_node(proc)
    assert code == 0 and 'Traceback' not in output, output[-2000:]


@pytest.mark.parametrize('where', sorted(EXAMPLES))
def test_documented_example_starts(where, tmp_path):
    """The example starts, processes a frame on its topics and stops cleanly."""
    check_example(EXAMPLES[where], tmp_path)
