"""Corner-pool GPU kernels (Triton) and the TensorRT 11 plugins that run them.

* `triton_kernels`: the kernels and their eager launcher (runs on Triton's CPU interpreter too);
* `aot`: compiles them to PTX without a GPU, for the plugins' ahead-of-time implementation;
* `tensorrt_plugins`: `tensorrt.plugin` registrations (shape/type inference, AOT and JIT).

`hgdeploy plugins` (the command that describes them) is `hgdeploy.cli.plugins`.

Triton is imported only by the modules that need it, TensorRT only inside functions.
"""
