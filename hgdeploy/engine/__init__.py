"""TensorRT engines: optimization profiles, the (thin) build step and the build-engine job."""
