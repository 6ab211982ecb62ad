"""The bottom layer: the model zoo, the precision registry, errors, artifact files and sidecars,
ONNX file helpers, images and heatmap-peak metrics. Nothing here imports torch at import time,
and nothing here imports any other hgdeploy layer."""
