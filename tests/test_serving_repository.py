"""`hgdeploy repository` without a server: what each config states, and what it refuses.

The configs' acceptance by Triton itself is checked on a real server in test_serving.py."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from conftest import one_line_error
from conftest import run_cli as run
from onnx import TensorProto, helper

from hgdeploy.base.artifacts import write_sidecar
from hgdeploy.base.errors import HgDeployError


def tiny_onnx(path: Path, batch: int | str = "N", model: str = "hrnet") -> Path:
    """An hgdeploy-shaped network file: input `image` (batch, 3, 256, 192) -> `heatmaps`."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 256, 192])
    heat = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, 3, 256, 192])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["heatmaps"])], "g",
                              [image], [heat])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(proto, path)
    write_sidecar(path, {"kind": "onnx", "model": model, "precision": "fp32"})
    return path


def test_dynamic_batch_onnx_becomes_a_dynamically_batched_native_model(tmp_path: Path) -> None:
    artifact = tiny_onnx(tmp_path / "net.onnx")
    code, output = run(["repository", "--model", "hrnet", "--artifact", str(artifact),
                        "--output", str(tmp_path / "repo"), "--max-batch", "4"])  # fmt: skip
    assert code == 0, output
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == ["hrnet_onnxruntime_fp32", "hrnet_pipeline"]
    config = (repo / "hrnet_onnxruntime_fp32" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "max_batch_size: 4" in config
    assert "dynamic_batching" in config
    assert 'name: "image" data_type: TYPE_FP32 dims: [ 3, 256, 192 ]' in config
    assert 'name: "heatmaps" data_type: TYPE_FP32 dims: [ 3, 256, 192 ]' in config
    assert (repo / "hrnet_onnxruntime_fp32" / "1" / "model.onnx").read_bytes() == (
        artifact.read_bytes()
    )
    pipeline = (repo / "hrnet_pipeline" / "config.pbtxt").read_text()
    assert 'string_value: "hrnet_onnxruntime_fp32"' in pipeline
    assert 'name: "box" data_type: TYPE_FP32 dims: [ 4 ] optional: true' in pipeline
    sidecar = json.loads((tmp_path / "repo.json").read_text())
    assert sidecar["kind"] == "triton-repository" and sidecar["network_form"] == "native"


def test_fixed_batch_onnx_is_unbatched_and_python_network_batches(tmp_path: Path) -> None:
    """A fixed batch of 2 cannot take Triton's smaller batches natively (full shape, no
    batcher); the python model pads, so it batches up to 2."""
    artifact = tiny_onnx(tmp_path / "net.onnx", batch=2)
    assert run(["repository", "--model", "hrnet", "--artifact", str(artifact), "--output",
                str(tmp_path / "native")])[0] == 0  # fmt: skip
    native = (tmp_path / "native" / "hrnet_onnxruntime_fp32" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in native and "dynamic_batching" not in native
    assert "dims: [ 2, 3, 256, 192 ]" in native
    code, output = run(["repository", "--model", "hrnet", "--artifact", str(artifact),
                        "--output", str(tmp_path / "py"), "--python-network"])  # fmt: skip
    assert code == 0, output
    python = (tmp_path / "py" / "hrnet_onnxruntime_fp32" / "config.pbtxt").read_text()
    assert 'backend: "python"' in python and "max_batch_size: 2" in python
    assert (tmp_path / "py" / "hrnet_onnxruntime_fp32" / "1" / "net.onnx.json").is_file()
    pipeline = (tmp_path / "py" / "hrnet_pipeline" / "config.pbtxt").read_text()
    assert 'key: "static_batch" value { string_value: "0" }' in pipeline


def test_engine_profile_gives_the_batch_range(tmp_path: Path) -> None:
    engine = tmp_path / "net.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, {"kind": "tensorrt-engine", "model": "hrnet", "precision": "fp16",
                           "profile": {"min": 1, "opt": 4, "max": 8}})  # fmt: skip
    code, output = run(["repository", "--model", "hrnet", "--artifact", str(engine),
                        "--output", str(tmp_path / "repo")])  # fmt: skip
    assert code == 0, output
    config = (tmp_path / "repo" / "hrnet_tensorrt_fp16" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and "max_batch_size: 8" in config
    assert "KIND_GPU" in config and 'default_model_filename: "model.plan"' in config
    write_sidecar(engine, {"kind": "tensorrt-engine", "model": "hrnet", "precision": "fp16",
                           "profile": {"min": 2, "opt": 4, "max": 8}})  # fmt: skip
    code, output = run(["repository", "--model", "hrnet", "--artifact", str(engine),
                        "--output", str(tmp_path / "repo2")])  # fmt: skip
    one_line_error(code, output, "rebuild it with --min-batch 1")


def test_refusals(tmp_path: Path) -> None:
    artifact = tiny_onnx(tmp_path / "net.onnx")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    args = ["repository", "--model", "hrnet", "--artifact", str(artifact), "--output"]
    one_line_error(*run([*args, str(foreign)]), "was not written by hgdeploy; pass --force")
    assert (foreign / "notes.txt").read_text() == "keep"
    code, output = run([*args, str(foreign), "--force"])
    assert code == 0, output
    assert not (foreign / "notes.txt").exists()
    code, output = run([*args, str(tmp_path / "r")])
    assert code == 0, output
    code, output = run([*args, str(tmp_path / "r")])  # its own repository: replaced
    assert code == 0, output
    one_line_error(*run([*args, str(tmp_path)]), "holds the --artifact")
    squeeze = tiny_onnx(tmp_path / "sq.onnx", model="squeeze")
    code, output = run(["repository", "--model", "hrnet", "--artifact", str(squeeze),
                        "--output", str(tmp_path / "x")])  # fmt: skip
    one_line_error(code, output, "was made from 'squeeze', not 'hrnet'")
    code, output = run(["repository", "--model", "hrnet", "--artifact", str(tmp_path / "no.onnx"),
                        "--output", str(tmp_path / "x")])  # fmt: skip
    one_line_error(code, output, "artifact not found")
    assert not (tmp_path / "x").exists()


def test_serve_refuses_a_busy_port_in_one_line(tmp_path: Path) -> None:
    """Checked before the server starts (tritonserver itself says so only after loading)."""
    import socket

    repo = tmp_path / "repo"
    repo.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = run(["serve", "--repository", str(repo), "--http-port", str(port)])
    one_line_error(code, output, f"HTTP port {port} on 127.0.0.1 is in use")


def test_batching_settings_reach_the_configs(tmp_path: Path) -> None:
    artifact = tiny_onnx(tmp_path / "net.onnx")
    code, output = run(["repository", "--model", "hrnet", "--artifact", str(artifact),
                        "--output", str(tmp_path / "repo"), "--max-batch", "3",
                        "--max-queue-delay-us", "0", "--pipeline-instances", "3"])  # fmt: skip
    assert code == 0, output
    network = (tmp_path / "repo" / "hrnet_onnxruntime_fp32" / "config.pbtxt").read_text()
    assert "max_batch_size: 3" in network
    assert "dynamic_batching { max_queue_delay_microseconds: 0 }" in network
    pipeline = (tmp_path / "repo" / "hrnet_pipeline" / "config.pbtxt").read_text()
    assert "instance_group [ { count: 3 kind: KIND_CPU } ]" in pipeline
    assert 'key: "network_batch" value { string_value: "3" }' in pipeline


def test_networks_are_warmed_with_every_batch_the_batcher_forms(tmp_path: Path) -> None:
    """Zero-filled warm-up requests of each batch size run at load time (OpenVINO and ONNX
    Runtime set up per input shape: unwarmed, the first batch of 4 took ~300 ms more)."""
    from hgdeploy.serving.model_config import warmup_batches

    assert warmup_batches(0) == (1,)  # a fixed-shape model: its one shape
    assert warmup_batches(3) == (1, 2, 3)
    assert warmup_batches(8) == tuple(range(1, 9))
    assert warmup_batches(24) == (1, 2, 4, 8, 16, 24)
    artifact = tiny_onnx(tmp_path / "net.onnx")
    assert run(["repository", "--model", "hrnet", "--artifact", str(artifact),
                "--output", str(tmp_path / "repo"), "--max-batch", "3"])[0] == 0  # fmt: skip
    network = (tmp_path / "repo" / "hrnet_onnxruntime_fp32" / "config.pbtxt").read_text()
    for batch in (1, 2, 3):
        assert (
            f'{{ name: "batch_{batch}" batch_size: {batch} inputs {{ key: "image" value '
            "{ data_type: TYPE_FP32 dims: [ 3, 256, 192 ] zero_data: true } } }"
        ) in network
    assert 'name: "batch_4"' not in network
    pipeline = (tmp_path / "repo" / "hrnet_pipeline" / "config.pbtxt").read_text()
    assert "model_warmup" not in pipeline  # its inputs are photographs, not zeros


def test_pipeline_request_equals_predict_without_a_server(tmp_path: Path) -> None:
    """The served pipeline's request logic in-process (what the python model runs between
    Triton's tensors): the same COCO records as `predict` on the photo file, the person box
    cut to the image as `predict --box` does; bad boxes refused in one line."""
    import numpy as np
    from PIL import Image

    from hgdeploy.base.images import sample_images
    from hgdeploy.base.zoo import get_spec
    from hgdeploy.pipelines.factory import build_pipeline
    from hgdeploy.predict import predict
    from hgdeploy.serving.pipeline_request import answer

    _, pixels = sample_images(["astronaut"])[0]
    photo = tmp_path / "astronaut.png"
    Image.fromarray(pixels).save(photo)
    spec = get_spec("hrnet")
    pipeline = build_pipeline("hrnet")
    box = (300.0, 20.0, 300.0, 480.0)  # reaches past the right edge: cut to the image
    served = answer(pipeline, spec, photo.read_bytes(), np.array(box, np.float32), "astronaut")
    expected = predict("hrnet", image=photo, box=box).coco_results()
    assert json.loads(served["coco_json"][0]) == expected
    np.testing.assert_allclose(
        served["keypoints"], np.reshape(expected[0]["keypoints"], (-1, 3)), atol=1e-3
    )
    for bad, words in (
        ([1.0, 2.0, 3.0], "must be 4 numbers"),
        ([0, 0, -5, 10], "width and height must be > 0"),
    ):
        with pytest.raises(HgDeployError, match=words):
            answer(pipeline, spec, photo.read_bytes(), np.array(bad, np.float32))
    with pytest.raises(HgDeployError, match="finds its own boxes"):
        answer(object(), get_spec("squeeze"), photo.read_bytes(), np.zeros(4, np.float32))


class LaggingStats:
    """A server whose statistics count the last answered request only on the third read, as
    Triton's do when read right after the response (they are recorded after it is sent)."""

    def __init__(self, counted: int, lag_reads: int = 2) -> None:
        self.counted, self.reads, self.lag_reads = counted, 0, lag_reads

    def stats(self, model: str) -> dict:
        self.reads += 1
        success = self.counted - (1 if self.reads <= self.lag_reads else 0)
        return {"inference_stats": {"success": {"count": success}}, "batch_stats": []}


def test_statistics_are_read_once_the_server_counted_every_answer() -> None:
    from hgdeploy.bench.serving_load import model_counters, settled_counters

    server = LaggingStats(counted=13)
    assert model_counters(server, "net")["success"] == 12  # a plain read misses the last one
    settled = settled_counters(server, ["net"], "net", answered=13)
    assert settled["net"]["success"] == 13
    with pytest.raises(HgDeployError, match="did not settle within 0.1 s"):
        settled_counters(LaggingStats(counted=5, lag_reads=10**6), ["net"], "net", 5, wait_s=0.1)


@pytest.mark.parametrize("name", ["hrnet", "squeeze"])  # hourglass: the same two halves
def test_ensemble_halves_equal_the_whole_pipeline(name: str, tmp_path: Path) -> None:
    """The ensemble form's pre- and post-processing models run `prepare`, the network, then
    `finish` with the state carried as JSON bytes: exactly `answer`'s tensors (same numbers,
    not close ones: the state round-trips floats exactly)."""
    import copy
    import io

    import numpy as np
    from PIL import Image

    from hgdeploy.base.images import sample_images
    from hgdeploy.base.zoo import get_spec
    from hgdeploy.pipelines.factory import build_pipeline
    from hgdeploy.pipelines.saccade import SaccadePipeline
    from hgdeploy.serving.pipeline_request import answer, finish, prepare

    _, pixels = sample_images(["coffee"])[0]
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    checkpoint = None
    if name == "squeeze":  # weights that detect something (synthetic ones find nothing)
        import torch
        from conftest import synthetic_model
        from pipeline_inputs import detector_test_weights

        model = detector_test_weights(copy.deepcopy(synthetic_model("squeeze")))  # cached: copy
        checkpoint = tmp_path / "squeeze_test.pkl"
        torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, checkpoint)
    spec, pipeline = get_spec(name), build_pipeline(name, checkpoint=checkpoint)
    box = None if spec.decode is not None else np.array([40, 30, 300, 330], np.float32)
    whole = answer(pipeline, spec, encoded.getvalue(), box, "397133")
    inputs, state = prepare(pipeline, spec, encoded.getvalue(), box, "397133")
    flipped = 0 if name == "squeeze" else 1  # upstream tests squeeze without the flipped copy
    assert isinstance(state, bytes) and inputs.shape[0] == 1 + flipped
    halves = finish(pipeline, spec, pipeline.network(inputs), state)
    assert halves.keys() == whole.keys()
    for key, value in whole.items():
        np.testing.assert_array_equal(halves[key], value, err_msg=key)
    assert json.loads(halves["coco_json"][0])[0]["image_id"] == 397133
    saccade = SaccadePipeline(get_spec("saccade"), network=None)  # type: ignore[arg-type]
    with pytest.raises(HgDeployError, match="calls its network more than once"):
        prepare(saccade, get_spec("saccade"), encoded.getvalue())


def test_ensemble_form_chains_three_models_and_refuses_what_it_cannot_serve(
    tmp_path: Path,
) -> None:
    artifact = tiny_onnx(tmp_path / "net.onnx")
    code, output = run(["repository", "--model", "hrnet", "--artifact", str(artifact), "--output",
                        str(tmp_path / "repo"), "--max-batch", "4", "--pipeline-form", "ensemble"])  # fmt: skip
    assert code == 0, output
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == [
        "hrnet_onnxruntime_fp32", "hrnet_pipeline", "hrnet_postprocess", "hrnet_preprocess"]  # fmt: skip
    ensemble = (repo / "hrnet_pipeline" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ensemble and "instance_group" not in ensemble
    steps = [line for line in ensemble.splitlines() if "model_name" in line]
    assert [s.split('"')[1] for s in steps] == [
        "hrnet_preprocess", "hrnet_onnxruntime_fp32", "hrnet_postprocess"]  # fmt: skip
    assert 'input_map { key: "image" value: "_batch" }' in steps[1]
    pre = (repo / "hrnet_preprocess" / "config.pbtxt").read_text()
    assert '{ name: "network_input" data_type: TYPE_FP32 dims: [ -1, 3, 256, 192 ] }' in pre
    assert "PreprocessModel" in (repo / "hrnet_preprocess" / "1" / "model.py").read_text()
    assert json.loads((tmp_path / "repo.json").read_text())["pipeline_form"] == "ensemble"
    fixed = tiny_onnx(tmp_path / "fixed.onnx", batch=2)
    saccade = tiny_onnx(tmp_path / "saccade.onnx", model="saccade")
    for model, given, words in (
        ("hrnet", fixed, "export the network with --dynamic-batch"),
        ("saccade", saccade, "serve it with --pipeline-form bls"),
    ):
        out = tmp_path / f"refused_{model}"
        code, output = run(["repository", "--model", model, "--artifact", str(given),
                            "--output", str(out), "--pipeline-form", "ensemble"])  # fmt: skip
        one_line_error(code, output, words)
        assert not out.exists()


def test_serve_takes_a_repository_or_a_model_with_artifacts(tmp_path: Path) -> None:
    artifact = str(tiny_onnx(tmp_path / "net.onnx"))
    for args, words in (
        ([], "give --repository, or --model with --artifact"),
        (["--repository", str(tmp_path), "--model", "hrnet"], "(not both)"),
        (["--repository", str(tmp_path), "--artifact", artifact], "--artifact goes with --model"),
        (
            ["--repository", str(tmp_path), "--pipeline-form", "ensemble"],
            "--pipeline-form goes with --model; a --repository is served as written",
        ),
        (["--model", "hrnet"], "name the network to serve with --artifact"),
    ):
        code, output = run(["serve", *args])
        one_line_error(code, output, words)
