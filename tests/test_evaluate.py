"""`hgdeploy evaluate`: its numbers are pycocotools' numbers, perfect predictions score 1 and
worse ones less, PCKh equals a brute-force count, and bad sets are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from coco_sets import as_results, box_set, coco_index, keypoint_set, write_photos
from conftest import one_line_error, use_cached_models
from conftest import run_cli as run
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import get_spec
from hgdeploy.evaluation.labeled_set import load_labeled_set
from hgdeploy.evaluation.metrics import coco_metrics, pckh


@pytest.fixture(autouse=True)
def cached(monkeypatch: pytest.MonkeyPatch) -> None:
    use_cached_models(monkeypatch)


@pytest.mark.parametrize("kind", ["bbox", "keypoints"])
def test_perfect_predictions_score_one_and_shifted_ones_less(tmp_path: Path, kind: str) -> None:
    images = write_photos(tmp_path / "images")
    data = box_set(images) if kind == "bbox" else keypoint_set(images, 17)
    coco = coco_index(data)
    perfect = coco_metrics(coco, as_results(data), kind)["AP"]
    shifts = (4.0, 12.0, 40.0) if kind == "bbox" else (12.0, 30.0, 80.0)  # OKS scales by area
    shifted = [coco_metrics(coco, as_results(data, s), kind)["AP"] for s in shifts]
    assert perfect == pytest.approx(1.0)
    assert perfect > shifted[0] > shifted[1] > shifted[2]
    assert coco_metrics(coco, [], kind)["AP"] == 0.0


def test_pckh_equals_a_brute_force_count(tmp_path: Path) -> None:
    images = write_photos(tmp_path / "images")
    data = keypoint_set(images, 16, seed=3)
    coco = coco_index(data)
    results = as_results(data)
    rng = np.random.default_rng(5)
    expected_hits = total = 0
    for record, ann in zip(results, data["annotations"]):
        truth = np.reshape(ann["keypoints"], (-1, 3))[:, :2]
        head = np.linalg.norm(truth[9] - truth[8])  # head top, upper neck (MPII order)
        moved = truth + rng.normal(0, 0.4 * head, size=truth.shape)
        record["keypoints"] = np.concatenate([moved, np.ones((16, 1))], 1).reshape(-1).tolist()
        for j in range(16):
            total += 1
            expected_hits += bool(np.hypot(*(moved[j] - truth[j])) <= 0.5 * head)
    assert pckh(coco, results)["PCKh"] == pytest.approx(expected_hits / total)
    assert 0 < expected_hits < total  # the case tests both sides of the threshold


def test_evaluate_ap_is_cocoevals_on_the_written_files(tmp_path: Path) -> None:
    """hrnet on a 2-photo keypoint set: metrics.json's AP equals COCOeval run directly on
    predictions.json; labels taken from the eager model's own output score AP 1."""
    images = write_photos(tmp_path / "images")
    data = keypoint_set(images, 17)
    (tmp_path / "random.json").write_text(json.dumps(data))
    code, output = run(["evaluate", "--model", "hrnet", "--annotations",
                        str(tmp_path / "random.json"), "--images", str(tmp_path / "images"),
                        "--output", str(tmp_path / "out")])  # fmt: skip
    assert code == 0, output
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    gt = COCO(str(tmp_path / "random.json"))
    direct = COCOeval(gt, gt.loadRes(predictions), "keypoints")
    direct.evaluate()
    direct.accumulate()
    direct.summarize()
    assert metrics["AP"] == pytest.approx(direct.stats[0], abs=1e-12)
    assert (tmp_path / "out" / "metrics.png").is_file()
    assert metrics["runs"][0]["label"] == "torch-fp32"
    # The eager model's own keypoints as the labels: a perfect score.
    for ann, record in zip(data["annotations"], predictions):
        ann["keypoints"] = [round(v, 2) for v in record["keypoints"]]
        ann["keypoints"][2::3] = [2] * 17
    (tmp_path / "own.json").write_text(json.dumps(data))
    code, output = run(["evaluate", "--model", "hrnet", "--annotations",
                        str(tmp_path / "own.json"), "--images", str(tmp_path / "images")])  # fmt: skip
    assert code == 0, output
    assert "1.0000" in output


def test_bad_sets_are_refused_in_one_line(tmp_path: Path) -> None:
    images = write_photos(tmp_path / "images")
    cases = {
        "not_coco.json": ({"foo": 1}, "is not COCO annotations"),
        "missing.json": (
            keypoint_set([*images, {**images[0], "id": 9, "file_name": "gone.png"}], 17),
            "image gone.png listed in",
        ),
        "no_people.json": (box_set(images), "no person keypoint labels with 17 joints"),
        "empty.json": ({"images": [], "annotations": [], "categories": []}, "lists no images"),
        "mpii.json": (keypoint_set(images, 16), "(2 have another joint count)"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
        code, output = run(["evaluate", "--model", "hrnet", "--annotations", str(tmp_path / name),
                            "--images", str(tmp_path / "images")])  # fmt: skip
        one_line_error(code, output, words)
    (tmp_path / "broken.json").write_text("{not json")
    code, output = run(["evaluate", "--model", "hrnet", "--annotations",
                        str(tmp_path / "broken.json"), "--images", str(tmp_path / "images")])  # fmt: skip
    one_line_error(code, output, "corrupt annotations")
    (tmp_path / "good.json").write_text(json.dumps(keypoint_set(images, 17)))
    code, output = run(["evaluate", "--model", "hrnet", "--annotations",
                        str(tmp_path / "good.json"), "--images", str(tmp_path / "images"),
                        "--artifact", str(tmp_path / "typo.onnx")])  # fmt: skip
    one_line_error(code, output, "artifact not found")  # before the eager run, not after it
    foreign = box_set(images)
    for ann in foreign["annotations"]:
        ann["category_id"] = 500  # no COCO category: nothing a detector of COCO's 80 can find
    foreign["categories"].append({"id": 500, "name": "not COCO"})
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    code, output = run(["evaluate", "--model", "squeeze", "--annotations",
                        str(tmp_path / "foreign.json"), "--images", str(tmp_path / "images")])  # fmt: skip
    one_line_error(code, output, "no boxes of COCO's 80 categories")


def test_the_set_keeps_every_labelled_person(tmp_path: Path) -> None:
    images = write_photos(tmp_path / "images")
    data = keypoint_set(images, 16)
    data["annotations"].append({**data["annotations"][0], "id": 99, "num_keypoints": 0})
    (tmp_path / "a.json").write_text(json.dumps(data))
    labeled = load_labeled_set(tmp_path / "a.json", tmp_path / "images", get_spec("hourglass"))
    assert len(labeled.person_boxes) == 2 and labeled.joints == 16
    with pytest.raises(HgDeployError, match="not found"):
        load_labeled_set(tmp_path / "nope.json", tmp_path / "images", get_spec("hourglass"))


def test_every_run_is_written_with_its_ap_difference(tmp_path: Path) -> None:
    """Eager + two deployments: predictions.json is the first deployment's, the others get
    predictions.N.json, metrics.json lists every run with its AP delta, metrics.png draws them."""
    from hgdeploy.evaluation.run import Evaluation, RunScore, _write

    runs = [
        RunScore(label, "x", None, {"AP": ap}, 1.0, [{"image_id": 1, "run": label}])
        for label, ap in (("torch-fp32", 0.8), ("onnxruntime-int8:a.onnx", 0.75), ("b", 0.79))
    ]
    written = _write(Evaluation("hrnet", "a.json", "images", "AP", runs), tmp_path)
    assert [p.name for p in written] == [
        "predictions.json", "predictions.1.json", "predictions.2.json", "metrics.json",
        "metrics.png",
    ]  # fmt: skip
    read = [json.loads(p.read_text())[0]["run"] for p in written[:3]]
    assert read == ["onnxruntime-int8:a.onnx", "torch-fp32", "b"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["AP"] == 0.75 and metrics["label"] == "onnxruntime-int8:a.onnx"
    assert [round(r["AP_delta"], 6) for r in metrics["runs"]] == [0.0, -0.05, -0.01]
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
