"""launch_testing: fusion.launch.py starts the node; frames in, masks out; clean exit code.

Needs ``launch``, ``launch_ros`` and ``launch_testing`` (a ROS 2 installation, whose
launch_testing pytest plugin runs ``generate_test_description`` and the test cases below).
Where they are absent (the PyPI venv) the one test defined instead skips with the reason; the
launch file's examples are then started as node processes by ``test_launch_examples.py``.
Never a module-level skip: the plugin imports every test module at collection.
"""
import os
from pathlib import Path
import sys
import tempfile
import time
import unittest

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # `launch_test test/test_launch_fusion.py` imports this file alone
    sys.path.insert(0, HERE)
from test_node_harness import domain_for, REPO  # noqa: E402 (needs HERE on the path)

import fixtures  # noqa: E402
from metafusion_ros.ros.conversions import image_to_mask, rgb_to_image  # noqa: E402

try:  # a ROS 2 installation (the repository's launch/ folder alone has no launch.actions)
    from launch import LaunchDescription
    from launch.actions import (IncludeLaunchDescription, RegisterEventHandler,
                                SetEnvironmentVariable)
    from launch.event_handlers import OnShutdown
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    import launch_ros  # noqa: F401 (fusion.launch.py needs it)
    import launch_testing.actions
    import launch_testing.asserts
    MISSING = ''
except ImportError as exc:
    MISSING = str(exc)

DOMAIN = domain_for(91)
LAUNCH = REPO / 'launch' / 'fusion.launch.py'

if MISSING:
    def test_fusion_launch_with_launch_testing():
        """Skip: launch_testing runs this module's launch test only in a ROS 2 installation."""
        pytest.skip(f'launch / launch_ros / launch_testing not installed ({MISSING}); '
                    'test_launch_examples.py starts the launch examples as node processes')
else:
    @pytest.mark.launch_test
    def generate_test_description():
        """Launch one namespaced instance on the tiny network and priors in a test domain."""
        folder = tempfile.TemporaryDirectory(prefix='metafusion_launch_')
        model = fixtures.write_model(os.path.join(folder.name, 'tiny.onnx'))
        priors = fixtures.write_priors(os.path.join(folder.name, 'tiny_priors.npz'))
        fusion = IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH)),
            launch_arguments={'namespace': 'front', 'input_topic': '/front/image_raw',
                              'model': str(model), 'priors': str(priors),
                              'meta_model': 'none', 'alpha': '1.0', 'tau': '0.5'}.items())
        return LaunchDescription([
            SetEnvironmentVariable('ROS_DOMAIN_ID', str(DOMAIN)),
            SetEnvironmentVariable('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST'),
            RegisterEventHandler(OnShutdown(on_shutdown=lambda *_: folder.cleanup())),
            fusion, launch_testing.actions.ReadyToTest()])

    class TestFusionOutputs(unittest.TestCase):
        """Publish frames while the launch runs and check the fused mask."""

        @classmethod
        def setUpClass(cls):
            """Create a test node in the launch's domain."""
            cls.context = rclpy.Context()
            rclpy.init(context=cls.context, domain_id=DOMAIN)
            cls.node = rclpy.create_node('launch_tester', context=cls.context)
            cls.executor = SingleThreadedExecutor(context=cls.context)
            cls.executor.add_node(cls.node)

        @classmethod
        def tearDownClass(cls):
            """Destroy the test node."""
            cls.executor.shutdown()
            cls.node.destroy_node()
            rclpy.try_shutdown(context=cls.context)

        def test_mask_for_each_frame(self):
            """The namespaced instance answers a frame with a mask of its size and header."""
            masks = []
            self.node.create_subscription(Image, '/front/metafusion_node/output/mask',
                                          masks.append, 10)
            pub = self.node.create_publisher(Image, '/front/image_raw', 10)
            msg = rgb_to_image(fixtures.scene())
            msg.header.frame_id = 'front_camera'
            deadline = time.monotonic() + 60
            while not masks and time.monotonic() < deadline:
                pub.publish(msg)
                self.executor.spin_once(timeout_sec=0.2)
            self.assertTrue(masks, 'no mask within 60 s')
            self.assertEqual(masks[0].header.frame_id, 'front_camera')
            self.assertEqual(image_to_mask(masks[0])[30:38, 8:16].min(), 1)

    @launch_testing.post_shutdown_test()
    class TestShutdown(unittest.TestCase):
        """The node exits cleanly when the launch shuts down."""

        def test_exit_code(self, proc_info):
            """Every launched process exited with code 0."""
            launch_testing.asserts.assertExitCodes(proc_info)
