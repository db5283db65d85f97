"""The ROS 2 shell: node, parameters, messages, image conversions and rosbag tools (wiring)."""
