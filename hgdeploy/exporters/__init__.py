"""Torch -> ONNX export: the corner-pool ONNX ops, the exporter and graph passes over its output."""
