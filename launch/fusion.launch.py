"""Launch ``metafusion_node`` for one camera (include it once per camera with its namespace).

Example::

    ros2 launch metafusion_ros fusion.launch.py input_topic:=/front/image_raw namespace:=front
    ros2 launch metafusion_ros fusion.launch.py alpha:=0.8 tau:=0.4 use_sim_time:=true

Empty ``model``/``priors``/``meta_model`` arguments fall back to the package's
``models/synthetic*`` files (``meta_model:=none``: no meta classifier, keep every candidate); any
other empty argument leaves the config file's value alone.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'metafusion_ros'
# launch argument -> (node parameter, type); values '' leave the config file's value.
OVERRIDES = {
    'model': ('model_path', str), 'priors': ('priors_path', str),
    'meta_model': ('meta_model_path', str), 'backend': ('backend', str),
    'alpha': ('alpha', float), 'tau': ('tau', float),
}
# Fast DDS profile for large frames (docs/node.md); a profile exported by the user wins.
PROFILE_ENV, PROFILE = 'FASTDDS_DEFAULT_PROFILES_FILE', 'fastdds_large_frames.xml'
DEFAULT_FILES = {'model': 'synthetic.onnx', 'priors': 'synthetic_priors.npz',
                 'meta_model': 'synthetic_meta.json'}


def _share(*parts: str) -> str:
    """Return a path inside the installed package share directory."""
    return os.path.join(get_package_share_directory(PACKAGE), *parts)


def _node(context: LaunchContext) -> list:
    """Build the node with only the non-empty launch arguments as parameter overrides."""
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {'use_sim_time': value('use_sim_time').lower() in ('true', '1', 'yes')}
    for arg, (param, kind) in OVERRIDES.items():
        text = value(arg)
        if text.lower() == 'none' and arg in DEFAULT_FILES:
            overrides[param] = ''
            continue
        if not text and arg in DEFAULT_FILES and os.path.isfile(_share('models',
                                                                       DEFAULT_FILES[arg])):
            text = _share('models', DEFAULT_FILES[arg])
        if text:
            overrides[param] = kind(text)
    return [Node(
        package=PACKAGE, executable='metafusion_node', name=value('node_name'),
        namespace=value('namespace'), output='screen', emulate_tty=True,
        additional_env={PROFILE_ENV: os.environ.get(PROFILE_ENV, _share('config', PROFILE))},
        parameters=[value('config_file'), overrides],
        remappings=[('~/input/image', value('input_topic')),
                    ('~/input/image/compressed', value('input_topic') + '/compressed'),
                    ('~/input/camera_info', value('camera_info_topic'))])]


def generate_launch_description() -> LaunchDescription:
    """Return the launch description: arguments, then one metafusion_node."""
    arguments = [
        ('config_file', _share('config', 'fusion.yaml'), 'parameter YAML of the node'),
        ('namespace', '', 'namespace of this instance (one per camera)'),
        ('node_name', 'metafusion_node', 'node name'),
        ('input_topic', '/camera/image_raw', 'sensor_msgs/Image input'),
        ('camera_info_topic', '/camera/camera_info', 'sensor_msgs/CameraInfo input'),
        ('model', '', 'ONNX model; empty: models/synthetic.onnx of the package'),
        ('priors', '', 'priors .npz; empty: models/synthetic_priors.npz of the package'),
        ('meta_model', '',
         'meta classifier; empty: models/synthetic_meta.json if installed; none: keep all'),
        ('backend', '', 'onnxruntime | tensorrt; empty: from the config file'),
        ('alpha', '', 'prior interpolation alpha in [0, 1]; empty: from the config file'),
        ('tau', '', 'meta classifier threshold in [0, 1]; empty: from the config file'),
        ('use_sim_time', 'false', 'use /clock (e.g. with ros2 bag play --clock)'),
    ]
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in arguments] + [OpaqueFunction(function=_node)])
