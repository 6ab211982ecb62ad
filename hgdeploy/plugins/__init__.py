"""Corner-pool GPU kernels (Triton) and what the TensorRT plugins need to launch them ahead of time.

`triton_kernels` holds the kernels and their eager launcher; `aot` compiles them to PTX without a
GPU. Both import Triton, which is optional: import these modules only where it is installed.
"""
