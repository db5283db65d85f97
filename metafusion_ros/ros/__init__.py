"""The ROS 2 shell: node, image conversions and rosbag tools (wiring only)."""
