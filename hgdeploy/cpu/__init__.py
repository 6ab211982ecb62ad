"""CPU deployment artifacts: `build-engine --target onnxruntime|openvino`.

* `onnxruntime_int8`: the U8S8 Q/DQ model (ONNX Runtime's quantizer, its calibration cache).
* `openvino_ir`: OpenVINO IR at fp32/bf16, int8 through NNCF (statistics cache).
* `build`: resolves the fp32 export and calibration images, writes the artifact and sidecar.
"""
