"""Benchmarks: every backend timed against eager torch on real images, each cell checked first.

* `matrix`: models x backends x precisions x batches, run cell by cell (`cell`: parity, then
  timing), with `results` (config and cell results), `progress`, `host` and `speedups`;
* `timing`: timing one runner (warm-up excluded, host or CUDA-event clock) and its memory;
* `report`: results.json / results.md / results.png;
* `corner_pool`, `matmul_peak`, `roofline`: operator micro-benchmarks and the roofline summary.

The `hgdeploy bench` command itself is `hgdeploy.cli.bench`. Benchmarks measure and record;
they never assert a time. Nothing is imported here, so `import hgdeploy.bench.results` stays
light.
"""
