"""Polygraphy runners (named inputs -> named outputs) for the runtimes hgdeploy drives directly:
eager torch, ONNX Runtime and OpenVINO. Which runner serves a backend, and with which artifact,
is the backend registry's business (`hgdeploy.backends`), not theirs."""
