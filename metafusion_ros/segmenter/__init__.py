"""Segmentation networks: ONNX Runtime and TensorRT backends and the in-graph MetaFusion head."""
