"""Precision preparation: the fp16 or int8 ONNX a strongly typed TensorRT engine is built from.

TensorRT 11 decides nothing about precision itself (no FP16/INT8 builder flags): each layer runs
in the type its ONNX tensors carry. So precision is settled here, before the build, on the CPU:

* ``fp16``: ``convert_fp16`` - fp16 weights and activations, fp32 graph inputs/outputs;
* ``int8``: ``calibrate`` on the lowered graph (ONNX Runtime, real images) -> a JSON
  calibration cache -> ``quantize_int8``: explicit Q/DQ where ``qdq_placement`` puts it (every
  Conv/ConvTranspose input, the residual input of residual Adds) on the plugin-form graph;
  every other layer, corner-pool plugins included, fp16 (default) or fp32;
* ``quality``: relative L2 and heatmap peak agreement of either against fp32;
* ``prepare``: the one call ``build-engine --prepare-only`` makes, writing the model, its
  sidecar and (int8) the calibration cache, atomically.
"""
