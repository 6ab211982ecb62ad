"""Labeled sets, person boxes and accuracy targets are inputs too (issue 24).

Each case is what a new user hit on main 4f0ed8d: an annotation file replaced by a build's
sidecar, NaN accepted as a target or a box, broken COCO records scored silently or failing with
"unexpected". As in test_reliability: the exit code, one stderr line (not the catch-all's),
every input byte-identical afterwards and no output written. The property test at the end
mutates a valid set 600 times (300 box, 300 keypoint) and holds evaluate's loader and scorer to pycocotools run on the
same file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from coco_sets import as_results, box_set, keypoint_set, write_photos
from conftest import invoke_in as _invoke
from conftest import one_stderr_line, use_cached_models
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import get_spec
from hgdeploy.evaluation.labeled_set import load_labeled_set
from hgdeploy.evaluation.metrics import coco_metrics
from hgdeploy.predict import predict


@pytest.fixture(autouse=True)
def cached(monkeypatch: pytest.MonkeyPatch) -> None:
    use_cached_models(monkeypatch)


def _one_line_error(code: int, stderr: str, expected: str) -> None:
    one_stderr_line(code, stderr, expected)
    assert "unexpected" not in stderr, stderr  # a message of its own, not the catch-all's


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))  # NaN and Infinity as JSON's readers accept them
    return path


# --- 1. a build never replaces its held-out set, its calibration images or its weights ---------


@pytest.fixture()
def build_dir(tmp_path: Path) -> Path:
    """A held-out set (two photos, one person each), its annotations under names a user could
    collide with, a model file and a calibration-image directory named like a statistics cache."""
    images = write_photos(tmp_path / "val")
    annotations = json.dumps(keypoint_set(images, 17))
    for name in ("val/ann.json", "coll4/m.onnx.json", "coll3/ann.onnx", "coll5/x.onnx.calib.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(annotations)
    (tmp_path / "m.onnx").write_bytes(b"the user's model")
    (tmp_path / "w.bin").write_bytes(b"the user's checkpoint")
    shutil.copytree(tmp_path / "val", tmp_path / "out.xml.nncf-stats")
    return tmp_path


_TARGET = ["build", "--model", "hrnet", "--backend", "onnxruntime", "--onnx", "m.onnx", "--int8"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # The two cases: the annotations as the output's sidecar, then as the output
        # itself with --force (which may replace a foreign output, never an input).
        ([*_TARGET, "--max-ap-drop", "100", "--annotations", "coll4/m.onnx.json", "--images", "val", "--output", "coll4/m.onnx"],
         "would replace coll4/m.onnx.json, the --annotations input"),
        ([*_TARGET, "--max-ap-drop", "100", "--annotations", "coll3/ann.onnx", "--images", "val", "--output", "coll3/ann.onnx", "--force"],
         "is also the --annotations input"),
        ([*_TARGET, "--max-ap-drop", "1", "--annotations", "val/ann.json", "--images", "val", "--output", "val/coffee.png", "--force"],
         "is also the --images image input"),
        # A companion: ONNX Runtime's calibration cache beside the output.
        ([*_TARGET, "--max-ap-drop", "1", "--annotations", "coll5/x.onnx.calib.json", "--images", "val", "--output", "coll5/x.onnx"],
         "would replace coll5/x.onnx.calib.json, the --annotations input"),
        ([*_TARGET, "--calib-dir", "val", "--output", "val/astronaut.png", "--force"],
         "is also the --calib-dir file input"),
        (["build", "--model", "hrnet", "--backend", "openvino", "--int8", "--onnx", "m.onnx", "--calib-dir", "out.xml.nncf-stats", "--output", "out.xml"],
         "would replace out.xml.nncf-stats, the --calib-dir input"),
        (["build", "--model", "hrnet", "--backend", "openvino", "--onnx", "m.onnx", "--checkpoint", "w.bin", "--output", "w.xml", "--force"],
         "would replace w.bin, the --checkpoint input"),
        # Targets that cannot end (NaN searched for 150 s+) or mean nothing.
        ([*_TARGET, "--max-ap-drop", "nan", "--annotations", "val/ann.json", "--images", "val", "--output", "t.onnx"],
         "--max-ap-drop must be a finite number >= 0 AP points, got nan"),
        ([*_TARGET, "--max-ap-drop", "inf", "--annotations", "val/ann.json", "--images", "val", "--output", "t.onnx"],
         "got inf"),
        ([*_TARGET, "--max-ap-drop", "-0.5", "--annotations", "val/ann.json", "--images", "val", "--output", "t.onnx"],
         "got -0.5"),
    ],
)  # fmt: skip
def test_builds_refuse_outputs_that_would_replace_an_input_before_any_work(
    build_dir: Path, args: list[str], message: str
) -> None:
    before = _snapshot(build_dir)
    started = time.perf_counter()
    code, stderr = _invoke(args, build_dir)
    _one_line_error(code, stderr, message)
    assert _snapshot(build_dir) == before  # every input byte-identical, nothing written
    assert time.perf_counter() - started < 20  # before any export, calibration or search


# --- 2. person boxes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("nan,1,2,3", "--box nan,1,2,3: every number must be finite"),
        ("0,0,inf,5", "every number must be finite"),
        ("1,2,3", "give x,y,w,h"),
        ("1,1,0,5", "width and height must be > 0"),
        ("5000,5000,10,10", "lies outside the 512x512 image"),
        ("-50,-50,40,40", "lies outside"),
    ],
)
def test_bad_person_boxes_get_one_line_and_write_nothing(
    tmp_path: Path, box: str, message: str
) -> None:
    code, stderr = _invoke(
        ["predict", "--model", "hrnet", "--box", box, "--output", "out"], tmp_path
    )
    _one_line_error(code, stderr, message)
    assert list(tmp_path.iterdir()) == []


def test_a_box_reaching_past_the_image_is_cut_to_it_and_said(tmp_path: Path) -> None:
    huge = predict("hrnet", box=(0.0, 0.0, 1e9, 1e9))
    whole = predict("hrnet", box=(0.0, 0.0, 512.0, 512.0))  # the bundled astronaut's size
    np.testing.assert_array_equal(
        huge.predictions[0].found.keypoints, whole.predictions[0].found.keypoints
    )
    assert huge.warnings == [
        "--box 0,0,1e+09,1e+09 reaches past the edges of 1 of 1 image(s) (e.g. astronaut): cut "
        "to the image there"
    ]
    assert whole.warnings == []
    code, stderr = _invoke(["predict", "--model", "hrnet", "--box", "-20,0,100,600"], tmp_path)
    assert code == 0, stderr
    assert (
        stderr.startswith("warning: --box -20,0,100,600 reaches past") and stderr.count("\n") == 1
    )


# --- 3. broken records in a labeled set -----------------------------------------------------------


def _first(data: dict, kind: str = "annotations") -> dict:
    return data[kind][0]


# name -> (model, how to break the valid set, what the one line says)
_BROKEN: dict[str, tuple[str, Callable[[dict, Path], None], str]] = {
    "short keypoints": ("hrnet", lambda d, _: _first(d).update(keypoints=_first(d)["keypoints"][:-3]),
                        "annotation id 1: keypoints not 17 x [x, y, v] like the other 1 people's"),
    "long keypoints": ("hrnet", lambda d, _: _first(d)["keypoints"].extend([1.0, 1.0, 2]),
                       "annotation id 1: keypoints not 17 x [x, y, v]"),
    "keypoints as strings": ("hrnet", lambda d, _: _first(d).update(keypoints=[str(v) for v in _first(d)["keypoints"]]),
                             "annotation id 1: keypoints hold a value that is not a finite number"),
    "visibility 3": ("hrnet", lambda d, _: _first(d)["keypoints"].__setitem__(2, 3),
                     "annotation id 1: a keypoint visibility is not 0, 1 or 2"),
    "negative box width": ("squeeze", lambda d, _: _first(d)["bbox"].__setitem__(2, -5.0),
                           "annotation id 10: bbox [40.0, 60.0, -5.0, 150.0] has a negative width"),
    "NaN box": ("squeeze", lambda d, _: _first(d)["bbox"].__setitem__(0, math.nan),
                "annotation id 10: bbox [nan, 60.0, 200.0, 150.0] holds a value that is not a finite"),
    "box of 3 numbers": ("squeeze", lambda d, _: _first(d).update(bbox=[1.0, 2.0, 3.0]),
                         "annotation id 10: bbox must be 4 numbers [x, y, w, h], got 3 values"),
    "duplicate image id": ("squeeze", lambda d, _: d["images"][1].update(id=1),
                           "image id 1: id 1 is used by an earlier image"),
    "duplicate annotation id": ("squeeze", lambda d, _: d["annotations"][1].update(id=10),
                                "annotation id 10: id 10 is used by an earlier annotation"),
    "category not in categories": ("squeeze", lambda d, _: _first(d).update(category_id=44),
                                   "annotation id 10: category_id 44 is not in 'categories'"),
    "image id with no image": ("squeeze", lambda d, _: _first(d).update(image_id=999),
                               "annotation id 10: image_id 999 is not in 'images'"),
    "size unlike the file": ("squeeze", lambda d, _: _first(d, "images").update(height=500),
                             "image id 1 (astronaut.png): the set says 512x500, the file is 512x512"),
    "file_name leaving --images": ("squeeze", lambda d, _: _first(d, "images").update(file_name="../img/good.png"),
                                   "image id 1: file_name '../img/good.png' leaves the images directory"),
    "absolute file_name": ("squeeze", lambda d, root: _first(d, "images").update(file_name=str(root / "img" / "good.png")),
                           "leaves the images directory"),
    "no area": ("squeeze", lambda d, _: _first(d).pop("area"), "annotation id 10: area must be a finite number, got None"),
    "iscrowd 2": ("squeeze", lambda d, _: _first(d).update(iscrowd=2), "annotation id 10: iscrowd must be 0 or 1, got 2"),
    "boolean id": ("squeeze", lambda d, _: _first(d).update(id=True), "annotation #0 in 'annotations': id must be an integer, got True"),
    "string height": ("hrnet", lambda d, _: _first(d, "images").update(height="512"), "image id 1: height must be an integer, got '512'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_BROKEN))
def test_broken_records_are_refused_in_one_line_naming_the_record(
    tmp_path: Path, case: str
) -> None:
    model, breaks, message = _BROKEN[case]
    images = write_photos(tmp_path / "images")
    write_photos(tmp_path / "img")  # what an escaping file_name would read
    (tmp_path / "img" / "astronaut.png").rename(tmp_path / "img" / "good.png")
    data = keypoint_set(images, 17) if model == "hrnet" else box_set(images)
    breaks(data, tmp_path)
    _write(tmp_path / "set.json", data)
    before = _snapshot(tmp_path)
    args = ["evaluate", "--model", model, "--annotations", "set.json", "--images", "images",
            "--output", "out"]  # fmt: skip
    code, stderr = _invoke(args, tmp_path)
    _one_line_error(code, stderr, message)
    assert "set.json" in stderr  # the file, then the record
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_evaluate_never_writes_over_an_image_of_its_set(tmp_path: Path) -> None:
    images = write_photos(tmp_path / "val")
    (tmp_path / "val" / "out").mkdir()
    (tmp_path / "val" / "coffee.png").rename(tmp_path / "val" / "out" / "metrics.png")
    images[1]["file_name"] = "out/metrics.png"  # a photo named like evaluate's plot
    _write(tmp_path / "val" / "set.json", box_set(images))
    before = _snapshot(tmp_path)
    args = ["evaluate", "--model", "squeeze", "--annotations", "val/set.json", "--images", "val",
            "--output", "val/out", "--force"]  # fmt: skip
    code, stderr = _invoke(args, tmp_path)
    _one_line_error(code, stderr, "is also the --images image input")
    assert _snapshot(tmp_path) == before


# --- 4. property: refused in one line, or pycocotools' own AP -------------------------------------

_VALUES: tuple[Any, ...] = (None, "7", True, -1, 0, 2, 1.5, math.nan, math.inf, -math.inf, [],
                            [1.0, 2.0, 3.0], {}, 10**12, "../x.png")  # fmt: skip


def _mutations(rng: np.random.Generator, data: dict, count: int) -> Iterator[tuple[str, dict]]:
    """`count` seeded mutations of `data`: a field dropped, retyped or given a bad value, a
    list lengthened or cut, a record duplicated or dropped, an unknown field added."""
    for _ in range(count):
        mutated = copy.deepcopy(data)
        section = str(rng.choice(["images", "annotations", "annotations", "categories"]))
        records = mutated[section]
        index = int(rng.integers(len(records)))
        record = records[index]
        field = str(rng.choice(sorted(record)))
        action = str(rng.choice(["drop", "value", "value", "longer", "shorter", "duplicate",
                                 "remove", "extra", "shuffle"]))  # fmt: skip
        if action == "drop":
            record.pop(field)
        elif action == "value":
            record[field] = copy.deepcopy(_VALUES[int(rng.integers(len(_VALUES)))])
        elif action in ("longer", "shorter") and isinstance(record[field], list):
            record[field] = record[field] + [1.0] if action == "longer" else record[field][:-1]
        elif action == "duplicate":
            records.append(copy.deepcopy(record))
        elif action == "remove" and len(records) > 1:
            records.pop(index)
        elif action == "extra":
            record["note"] = _VALUES[int(rng.integers(len(_VALUES)))]
        else:
            rng.shuffle(records)
            field = "order"
        yield f"{section}[{index}].{field}: {action}", mutated


def _pycocotools_ap(path: Path, results: list[dict], iou_type: str) -> float:
    """pycocotools alone on the file, as its README runs it."""
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(path))
        evaluator = COCOeval(truth, truth.loadRes([dict(r) for r in results]), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


@pytest.mark.parametrize(("model", "iou_type"), [("hrnet", "keypoints"), ("squeeze", "bbox")])
def test_mutated_sets_are_refused_in_one_line_or_scored_as_pycocotools_scores_them(
    tmp_path: Path, model: str, iou_type: str
) -> None:
    images = write_photos(tmp_path / "images")
    valid = keypoint_set(images, 17) if model == "hrnet" else box_set(images)
    predictions = as_results(valid, shift=3.0)  # imperfect, so AP is neither 0 nor 1
    spec = get_spec(model)
    refused = scored = 0
    valid_ap = _pycocotools_ap(_write(tmp_path / "valid.json", valid), predictions, iou_type)
    for what, mutated in _mutations(np.random.default_rng(24), valid, 300):
        path = _write(tmp_path / "set.json", mutated)
        try:
            labeled = load_labeled_set(path, tmp_path / "images", spec)
        except HgDeployError as refusal:
            assert str(refusal) and "\n" not in str(refusal), what
            refused += 1
            continue
        kept = {image.image_id for image in labeled.images}
        results = [r for r in predictions if r["image_id"] in kept]
        ours = coco_metrics(labeled.coco, results, iou_type)["AP"]
        theirs = _pycocotools_ap(path, results, iou_type) if results else 0.0
        assert ours == pytest.approx(theirs, abs=1e-12), what
        if what.endswith((": extra", ": shuffle")):  # changes nothing COCO reads
            assert ours == pytest.approx(valid_ap, abs=1e-12), what
        scored += 1
    # Both paths exercised: the generator breaks most sets and leaves some intact.
    print(f"{model}: {refused} mutations refused, {scored} scored")
    assert refused >= 100 and scored >= 40, (refused, scored)
