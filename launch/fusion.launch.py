"""Launch ``metafusion_node`` for one camera (include it once per camera with its namespace).

Example::

    ros2 launch metafusion_ros fusion.launch.py input_topic:=/front/image_raw namespace:=front
    ros2 launch metafusion_ros fusion.launch.py alpha:=0.8 tau:=0.4 use_sim_time:=true

``model`` names a chain of the package's ``models/`` (``metafusion models`` lists them) or an
ONNX file; empty, it is the default chain (``metafusion_ros.runtime.chains.DEFAULT_CHAIN``,
ESPNetv2 Cityscapes at 512x256 today). Empty ``priors``/``meta_model`` arguments take the
chain's files (``meta_model:=none``: no meta classifier, keep every candidate); an empty
``camera_info_topic`` is ``camera_info`` beside ``input_topic``; any other empty argument leaves
the config file's value alone. ``metafusion_ros.ros.launch_args`` declares and checks the
arguments: a bad value, or an argument on the command line that is not declared (``alhpa:=0.5``),
ends the launch with one line naming the argument.
"""
import sys

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from metafusion_ros.ros.launch_args import arguments, command_line, node_settings

PACKAGE = 'metafusion_ros'


def _node(context: LaunchContext) -> list:
    """Build the node from the checked launch arguments (undeclared ones refused)."""
    share = get_package_share_directory(PACKAGE)
    given = command_line(sys.argv, __file__)  # launch keeps undeclared ones without a word
    settings = node_settings({**given, **{arg.name: LaunchConfiguration(arg.name).perform(context)
                                          for arg in arguments(share)}}, share)
    return [Node(
        package=PACKAGE, executable='metafusion_node', name=settings.name,
        namespace=settings.namespace, output='screen', emulate_tty=True,
        additional_env=settings.env, parameters=[settings.config_file, settings.overrides],
        remappings=settings.remappings)]


def generate_launch_description() -> LaunchDescription:
    """Return the launch description: arguments, then one metafusion_node."""
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description)
         for arg in arguments(share)] + [OpaqueFunction(function=_node)])
