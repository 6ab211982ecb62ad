"""Precision: the numerics of a deployment, settled on the CPU before any runtime builds.

TensorRT 11 decides nothing about precision itself (no FP16/INT8 builder flags): each layer runs
in the type its ONNX tensors carry, so its graphs are made here:

* ``fp16``: ``convert_fp16`` - fp16 weights and activations, fp32 graph inputs/outputs;
* ``int8`` + ``qdq_placement``: explicit symmetric Q/DQ (every Conv/ConvTranspose input, the
  residual input of residual Adds) over an fp16 (default) or fp32 graph;
* ``calibration``: activation amax on the lowered graph (ONNX Runtime, real images) and its cache;
* ``tensorrt_graphs``: the one call ``hgdeploy build --backend tensorrt`` makes for the ONNX.

The CPU backends' int8: ``onnxruntime_int8`` (ONNX Runtime's U8S8 quantizer) and ``nncf_int8``
(NNCF for OpenVINO). Every int8 build calibrates through ``calibration_source`` (the same images,
weights provenance and calibration record); ``quality`` measures any graph against fp32.
"""
