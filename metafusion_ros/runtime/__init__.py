"""What the node runs, without ROS: the engine, the inference backends, the meta classifier."""
