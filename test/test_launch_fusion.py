"""launch_testing: fusion.launch.py starts the node; frames in, masks out; clean exit code.

Skipped where launch_testing / launch_ros are not installed (the PyPI venv); the same behaviour
is covered over real DDS by ``test_node_process.py``, which starts the node as a process.
"""
import os
from pathlib import Path
import tempfile
import time
import unittest

import pytest

launch_testing = pytest.importorskip('launch_testing')
pytest.importorskip('launch_ros')

import launch  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from metafusion_ros.ros import fixtures  # noqa: E402
from metafusion_ros.ros.conversions import image_to_mask, rgb_to_image  # noqa: E402

LAUNCH = Path(__file__).resolve().parents[1] / 'launch' / 'fusion.launch.py'
FILES = Path(tempfile.mkdtemp(prefix='metafusion_launch_'))


@pytest.mark.launch_test
def generate_test_description():
    """Launch one namespaced instance on the tiny network and priors."""
    model = fixtures.write_model(FILES / 'tiny.onnx')
    priors = fixtures.write_priors(FILES / 'tiny_priors.npz')
    fusion = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH)),
        launch_arguments={'namespace': 'front', 'input_topic': '/front/image_raw',
                          'model': str(model), 'priors': str(priors), 'meta_model': 'none',
                          'alpha': '1.0', 'tau': '0.5'}.items())
    return launch.LaunchDescription([fusion, launch_testing.actions.ReadyToTest()])


class TestFusionOutputs(unittest.TestCase):
    """Publish frames while the launch runs and check the fused mask."""

    @classmethod
    def setUpClass(cls):
        """Create a test node."""
        os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
        rclpy.init()
        cls.node = rclpy.create_node('launch_tester')

    @classmethod
    def tearDownClass(cls):
        """Destroy the test node."""
        cls.node.destroy_node()
        rclpy.shutdown()

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
            rclpy.spin_once(self.node, timeout_sec=0.2)
        self.assertTrue(masks, 'no mask within 60 s')
        self.assertEqual(masks[0].header.frame_id, 'front_camera')
        self.assertEqual(image_to_mask(masks[0])[30:38, 8:16].min(), 1)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """The node exits cleanly when the launch shuts down."""

    def test_exit_code(self, proc_info):
        """Every launched process exited with code 0."""
        launch_testing.asserts.assertExitCodes(proc_info)
