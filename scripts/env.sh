# Environment for the venv-based ROS 2 set-up (sourced by the Makefile and the tests' runner).
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$_here/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_here/install/metafusion_ros:$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$_here/log/ros}"
export PYTHONUNBUFFERED=1
unset _here
