"""On a real tritonserver (the one `make install` unpacks; loopback, free ports, every wait
bounded, stopped in a fixture's finally): the served pipeline gives `hgdeploy predict`'s
predictions on the same artifact and photos (the pipeline tests' criteria: keypoints within 1 px;
>= 90% of the top 20 detections matched), bad bodies get an error and the next request is
served, concurrent clients make the network model execute batches > 1, and the native configs
pass Triton's own validation."""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, synthetic_model
from PIL import Image
from pipeline_inputs import detector_test_weights
from test_pipelines_backends import matched_fraction
from test_serving_repository import tiny_onnx

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import sample_images
from hgdeploy.serving.client import InferError, TritonHttp
from hgdeploy.serving.server import Ports, TritonServer, running_server

PHOTOS = ("astronaut", "coffee")
READY_TIMEOUT_S = 120  # two python models load in ~5 s on 2 cores


# No skip: `make install` (what `make test` runs first) unpacks the server, and without it
# every test here fails with find_tritonserver's one line saying so.


def invoke(args: list[str]) -> None:
    code, output = run_cli(args)
    assert code == 0, output


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    directory = tmp_path_factory.mktemp("photos")
    for name, pixels in sample_images(PHOTOS):
        Image.fromarray(pixels).save(directory / f"{name}.png")
    return {name: directory / f"{name}.png" for name in PHOTOS}


def build_ort(name: str, root: Path, weights: list[str]) -> Path:
    """An ONNX Runtime fp32 artifact as a user builds one (dynamic-batch export, then build)."""
    exported = root / f"{name}_dyn.onnx"
    invoke(["export", "--model", name, "--dynamic-batch", "--output", str(exported), *weights])
    artifact = root / f"{name}_ort.onnx"
    invoke(["build", "--model", name, "--backend", "onnxruntime", "--fp32", "--onnx",
            str(exported), "--output", str(artifact)])  # fmt: skip
    return artifact


def predicted(name: str, artifact: Path, photos: dict[str, Path], out: Path) -> list[dict]:
    """`hgdeploy predict` photo by photo, as the server gets them: the network then runs the
    same batch (HRNet's synthetic weights give flat heatmaps, whose argmax moves with the
    last-bit differences between batch sizes)."""
    records = []
    for path in photos.values():
        invoke(["predict", "--model", name, "--backend", "onnxruntime", "--artifact",
                str(artifact), "--image", str(path), "--output", str(out / path.stem)])  # fmt: skip
        records += json.loads((out / path.stem / "predictions.json").read_text())
    return records


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict]:
    """Per model: its artifact, `predict`'s results and a running server on a python-network
    repository of it (max batch 4)."""
    root = tmp_path_factory.mktemp("serving")
    name = request.param
    weights: list[str] = []
    if name == "squeeze":  # weights that detect something, as an upstream checkpoint
        model = detector_test_weights(copy.deepcopy(synthetic_model("squeeze")))
        checkpoint = root / "squeeze_test.pkl"
        torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, checkpoint)
        weights = ["--checkpoint", str(checkpoint)]
    artifact = build_ort(name, root, weights)
    photos = request.getfixturevalue("photos")
    reference = predicted(name, artifact, photos, root / "predicted")
    repo = root / "repo"
    invoke(["repository", "--model", name, "--artifact", str(artifact), "--output", str(repo),
            "--python-network", "--max-batch", "4"])  # fmt: skip
    log = root / "server.log"
    with running_server(repo, ports=Ports.free(), log=log, ready_timeout=READY_TIMEOUT_S) as srv:
        yield {
            "name": name,
            "client": TritonHttp(srv.http_url, timeout=60),
            "photos": photos,
            "reference": reference,
            "network": f"{name}_onnxruntime_fp32",
            "server": srv,
            "artifact": artifact,
        }
    assert srv.process is not None and srv.process.returncode is not None
    assert not _processes_mentioning(repo), "a python stub outlived the server"


def _processes_mentioning(path: Path) -> list[int]:
    """Processes whose command line names `path` (the stubs name their model's directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if str(path).encode() in command:
                found.append(int(proc.name))
    return found


def serve_photo(client: TritonHttp, model: str, path: Path) -> list[dict]:
    """The pipeline model on the photo file's own bytes; its COCO results."""
    body = np.array([path.read_bytes()], dtype=object)
    out = client.infer(model, {"image_bytes": body}, ["coco_json"], request_id=path.stem)
    return json.loads(out["coco_json"][0])


def assert_same_as_predict(name: str, found: list[dict], reference: list[dict]) -> None:
    if name == "hrnet":
        assert [r["image_id"] for r in found] == [r["image_id"] for r in reference]
        for ref, got in zip(reference, found):
            ref_xy = np.reshape(ref["keypoints"], (-1, 3))[:, :2]
            got_xy = np.reshape(got["keypoints"], (-1, 3))[:, :2]
            np.testing.assert_allclose(got_xy, ref_xy, atol=1.0)
    else:
        assert len(reference) >= 15, "the test weights must detect something"
        assert matched_fraction(reference, found) >= 0.9
        assert matched_fraction(found, reference) >= 0.9


@pytest.mark.parametrize("served", ["hrnet", "squeeze"], indirect=True)
def test_served_pipeline_equals_predict(served: dict) -> None:
    client, name = served["client"], served["name"]
    found = [r for path in served["photos"].values()
             for r in serve_photo(client, f"{name}_pipeline", path)]  # fmt: skip
    assert_same_as_predict(name, found, served["reference"])


@pytest.mark.parametrize("served", ["hrnet", "squeeze"], indirect=True)
def test_served_ensemble_equals_predict(served: dict, tmp_path: Path) -> None:
    """The ensemble form (pre-processing -> network -> post-processing, chained by Triton)
    gives what `predict` gives, and a bad body fails in the ensemble without stopping it."""
    name, repo = served["name"], tmp_path / "ensemble"
    invoke(["repository", "--model", name, "--artifact", str(served["artifact"]), "--output",
            str(repo), "--python-network", "--max-batch", "4", "--pipeline-form", "ensemble"])  # fmt: skip
    with running_server(repo, ports=Ports.free(), log=tmp_path / "server.log",
                        ready_timeout=READY_TIMEOUT_S) as srv:  # fmt: skip
        client = TritonHttp(srv.http_url, timeout=60)
        found = [r for path in served["photos"].values()
                 for r in serve_photo(client, f"{name}_pipeline", path)]  # fmt: skip
        assert_same_as_predict(name, found, served["reference"])
        with pytest.raises(InferError, match="in ensemble .* cannot read image") as caught:
            client.infer(f"{name}_pipeline", {"image_bytes": np.array([b"<html>"], dtype=object)},
                         ["coco_json"])  # fmt: skip
        assert "HTTP 400" in str(caught.value)
        photo = next(iter(served["photos"].values()))
        assert serve_photo(client, f"{name}_pipeline", photo) == serve_photo(
            client, f"{name}_pipeline", photo
        )


@pytest.mark.parametrize("served", ["squeeze"], indirect=True)
def test_detection_tensors_agree_with_the_coco_results(served: dict) -> None:
    client = served["client"]
    body = np.array([served["photos"]["coffee"].read_bytes()], dtype=object)
    out = client.infer("squeeze_pipeline", {"image_bytes": body},
                       ["boxes", "scores", "category_ids", "count", "coco_json"])  # fmt: skip
    coco = json.loads(out["coco_json"][0])
    count = int(out["count"][0])
    assert count == len(coco) == len(out["boxes"]) == len(out["scores"]) > 0
    assert [r["category_id"] for r in coco] == out["category_ids"].tolist()
    x1, y1, x2, y2 = out["boxes"][0]
    assert coco[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)


@pytest.mark.parametrize("served", ["hrnet"], indirect=True)
def test_bad_bodies_get_an_error_and_the_next_request_is_served(served: dict) -> None:
    client, photo = served["client"], served["photos"]["astronaut"]
    first = serve_photo(client, "hrnet_pipeline", photo)
    huge = io.BytesIO()  # 25 M pixels of black: a 25 kB PNG the server refuses from its header
    Image.fromarray(np.zeros((5000, 5000), np.uint8)).save(huge, format="PNG")
    bodies = ((b"", "empty image"), (b"<html>not an image</html>", "cannot read image"),
              (huge.getvalue(), "is 5000x5000, more than the 16777216 pixels allowed"))  # fmt: skip
    for body, words in bodies:
        with pytest.raises(InferError, match=words) as caught:
            client.infer("hrnet_pipeline", {"image_bytes": np.array([body], dtype=object)},
                         ["coco_json"])  # fmt: skip
        assert "HTTP 400" in str(caught.value)
    assert serve_photo(client, "hrnet_pipeline", photo) == first
    assert served["server"].process.poll() is None


@pytest.mark.parametrize("served", ["hrnet"], indirect=True)
def test_the_network_was_warmed_at_load_with_every_batch(served: dict) -> None:
    """Triton ran the config's warm-up requests before the server was ready: the network's
    statistics hold an execution of every batch size up to its max (4), whatever the other
    tests sent since."""
    executed = served["client"].batch_sizes(served["network"])
    assert all(executed.get(size, 0) >= 1 for size in (1, 2, 3, 4)), executed


@pytest.mark.parametrize("served", ["hrnet"], indirect=True)
def test_concurrent_clients_make_the_network_model_batch(served: dict) -> None:
    """4 clients, 4 requests each, of one item: the dynamic batcher joins requests that
    arrive while the network is busy, so the model executes batches > 1."""
    client, network = served["client"], served["network"]
    before = client.batch_sizes(network)
    item = np.random.default_rng(0).standard_normal((1, 3, 256, 192)).astype(np.float32)
    errors: list[BaseException] = []

    def one_client() -> None:
        try:
            for _ in range(4):
                out = client.infer(network, {"image": item}, ["heatmaps"])
                assert out["heatmaps"].shape == (1, 17, 64, 48)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=one_client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client did not finish within 120 s"
    assert not errors, errors[0]
    after = client.batch_sizes(network)
    executed = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * n for size, n in executed.items()) == 16, executed
    assert max(size for size, n in executed.items() if n > 0) > 1, executed


# What a python model needs to load (it is never asked to infer here).
# Answers each request (the configs' warm-up requests included) with no tensors.
_EMPTY_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[]) for _ in requests]
"""


def _load_outcomes(repository: Path, log: Path) -> dict[str, str]:
    """Start the server on `repository` until it stops (--exit-on-error: after any failure; a
    clean repository is stopped once ready) and return each model's final status line."""
    server = TritonServer(repository, ports=Ports.free(), log=log)
    server.start()
    try:
        try:
            server.wait_ready(60)
        except HgDeployError:
            pass  # a model failed to load and the server exited: the log says which
    finally:
        server.stop()
    outcomes = {}
    for line in log.read_text(errors="replace").splitlines():
        if "Poll failed for model directory '" in line:  # refused before loading: no table row
            model, _, message = line.split("Poll failed for model directory '")[1].partition("'")
            outcomes[model] = message.strip(': "')
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1] == "1":  # the model table: name | version | status
            outcomes[cells[0]] = cells[2]
    return outcomes


def test_native_configs_pass_triton_validation(tmp_path: Path) -> None:
    """The bundled server has no onnxruntime/openvino/tensorrt backends. Measured: with a
    native backend missing it stops at "unable to find backend library" after parsing the text
    proto only (a batching or dims error in the config gives the same message), so that message
    proves the syntax; the rest of Triton's validation (batching, dims, instance groups) is
    checked by loading the same configs with only the backend swapped for the python one (and
    KIND_CPU: this machine has no GPU). A control with a batching error shows the check fails."""
    import openvino as ov

    from hgdeploy.base.artifacts import write_sidecar

    onnx_path = tiny_onnx(tmp_path / "net.onnx")
    ir = tmp_path / "net.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(ir))
    write_sidecar(ir, {"kind": "openvino-ir", "model": "hrnet", "precision": "fp32"})
    engine = tmp_path / "net.engine"
    engine.write_bytes(b"not a real plan: Triton never gets to read it")
    write_sidecar(engine, {"kind": "tensorrt-engine", "model": "hrnet", "precision": "fp16",
                           "profile": {"min": 1, "opt": 2, "max": 4}})  # fmt: skip
    repo = tmp_path / "repo"
    invoke(["repository", "--model", "hrnet", "--artifact", str(onnx_path), "--artifact",
            str(ir), "--artifact", str(engine), "--output", str(repo), "--max-batch", "4"])  # fmt: skip
    natives = {"hrnet_onnxruntime_fp32": "onnxruntime", "hrnet_openvino_fp32": "openvino",
               "hrnet_tensorrt_fp16": "tensorrt"}  # fmt: skip
    outcomes = _load_outcomes(repo, tmp_path / "native.log")
    for model, backend in natives.items():
        assert f"unable to find backend library for backend '{backend}'" in outcomes[model], (
            model, outcomes)  # fmt: skip
    swapped = tmp_path / "swapped"
    for model in natives:
        text = (repo / model / "config.pbtxt").read_text()
        text = text.replace('platform: "tensorrt_plan"', 'backend: "python"')
        text = text.replace('backend: "onnxruntime"', 'backend: "python"')
        text = text.replace('backend: "openvino"', 'backend: "python"')
        text = text.replace("KIND_GPU", "KIND_CPU")
        text = "".join(ln for ln in text.splitlines(True) if "default_model_filename" not in ln)
        assert 'backend: "python"' in text
        (swapped / model / "1").mkdir(parents=True)
        (swapped / model / "config.pbtxt").write_text(text)
        (swapped / model / "1" / "model.py").write_text(_EMPTY_MODEL)
    (swapped / "control" / "1").mkdir(parents=True)
    control = (swapped / "hrnet_onnxruntime_fp32" / "config.pbtxt").read_text()
    control = control.replace("hrnet_onnxruntime_fp32", "control")
    control = control.replace(  # a preferred batch above the max: a batching error
        "max_queue_delay_microseconds: 2000", "preferred_batch_size: [ 8 ]"
    )
    (swapped / "control" / "config.pbtxt").write_text(control)
    (swapped / "control" / "1" / "model.py").write_text(_EMPTY_MODEL)
    outcomes = _load_outcomes(swapped, tmp_path / "swapped.log")
    for model in natives:
        assert outcomes[model] == "READY", (model, outcomes)
    assert "preferred size must be <= max batch size" in outcomes["control"], outcomes


@pytest.mark.parametrize("given", ["repository", "model"])
def test_serve_command_stops_cleanly_on_sigterm(tmp_path: Path, given: str) -> None:
    """`hgdeploy serve` as users run it, on a repository or on `--model --artifact` (a
    repository in a temporary directory, python networks because this server has no native
    backend): ready line, the network answers, then SIGTERM -> exit, no stub left, no
    temporary repository left."""
    onnx_path = tiny_onnx(tmp_path / "net.onnx")
    repo = tmp_path / "repo"
    if given == "repository":
        invoke(["repository", "--model", "hrnet", "--artifact", str(onnx_path), "--output",
                str(repo), "--python-network", "--max-batch", "2"])  # fmt: skip
        source = ["--repository", str(repo)]
    else:
        source = ["--model", "hrnet", "--artifact", str(onnx_path)]
    ports = Ports.free()
    command = [sys.executable, "-m", "hgdeploy", "serve", *source,
               "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
               "--metrics-port", str(ports.metrics)]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ready: HTTP" not in log.read_text() and time.monotonic() < deadline:
            assert serve.poll() is None, log.read_text()
            time.sleep(0.25)
        client = TritonHttp(f"http://127.0.0.1:{ports.http}", timeout=30)
        assert client.ready(), log.read_text()
        item = np.ones((1, 3, 256, 192), np.float32)
        assert client.infer("hrnet_onnxruntime_fp32", {"image": item}, ["heatmaps"])[
            "heatmaps"
        ].shape == (1, 3, 256, 192)
        if given == "model":
            text = " ".join(log.read_text().split())  # the console may wrap the path
            assert "this tritonserver has no onnxruntime backend" in text, text
            repo = Path(text.split(" from ")[1].split()[0])
            assert (repo / "hrnet_pipeline" / "config.pbtxt").is_file()
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=60)
    finally:
        if serve.poll() is None:
            os.kill(serve.pid, signal.SIGKILL)
    assert code == 128 + signal.SIGTERM, log.read_text()  # the CLI turns SIGTERM into exit 143
    assert not _processes_mentioning(repo), "tritonserver or a stub outlived `hgdeploy serve`"
    assert not TritonHttp(f"http://127.0.0.1:{ports.http}", timeout=2).ready()
    if given == "model":
        assert not repo.parent.exists(), "the temporary repository outlived `hgdeploy serve`"


def test_loadtest_counts_agree_with_the_server(tmp_path: Path) -> None:
    """`hgdeploy loadtest` on a tiny network: every answer is counted once, the batch sizes
    Triton reports add up to the requests sent, and the levels stop at --requests."""
    onnx_path = tiny_onnx(tmp_path / "net.onnx")
    repo = tmp_path / "repo"
    invoke(["repository", "--model", "hrnet", "--artifact", str(onnx_path), "--output",
            str(repo), "--python-network", "--max-batch", "4"])  # fmt: skip
    out = tmp_path / "load"
    invoke(["loadtest", "--repository", str(repo), "--target", "network", "--concurrency", "1",
            "--concurrency", "3", "--requests", "12", "--seconds", "60", "--warmup", "2",
            "--output", str(out)])  # fmt: skip
    record = json.loads((out / "serving.json").read_text())
    assert [lv["concurrency"] for lv in record["levels"]] == [1, 3]
    for level in record["levels"]:
        assert level["answered"] == 12 and level["errors"] == 0
        assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        network = level["server"]["hrnet_onnxruntime_fp32"]
        assert network["requests"] == 12
        assert sum(int(s) * n for s, n in network["batches"].items()) == 12
    assert record["levels"][0]["server"]["hrnet_onnxruntime_fp32"]["batches"] == {"1": 12}
    assert "| 3 |" in (out / "serving.md").read_text()
