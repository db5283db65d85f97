"""The MetaFusion core: pure numpy, no ROS imports (one module per section of the paper)."""
