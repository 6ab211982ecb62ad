"""Serving on Triton Inference Server: the model repository hgdeploy writes (native network
models, the same networks as python-backend models running hgdeploy's runners, and the upstream
pipelines calling them through BLS), the server it starts, and a stdlib HTTP client."""
