"""Saccade's speed against its AP as its test-time settings move away from upstream's.

Where does Saccade's time go and what does each piece buy? Each variant is one run of the
deployed pipeline (`build_pipeline` on the artifact, `SaccadeSettings` and the decode's K /
num_dets replaced) over a labeled set, scored as `evaluate` scores it (COCOeval through
`hgdeploy.evaluation`); CornerNet runs (with and without upstream's flip test) can sit beside
them on the same images. Times are the pipeline's own stage clock, one pass over the set.
Writes JSON; asserts nothing.

    .venv/bin/python benchmarks/accuracy/saccade_variants.py --artifact saccade_ov_int8.xml \
        --annotations val/annotations.json --images val --variant upstream \
        --variant stage0_only --cornernet cornernet_ov_int8.xml \
        --output benchmarks/accuracy/saccade_variants.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from hgdeploy.base.images import read_image
from hgdeploy.base.zoo import get_spec
from hgdeploy.evaluation.labeled_set import load_labeled_set
from hgdeploy.evaluation.metrics import coco_metrics
from hgdeploy.pipelines.factory import build_pipeline
from hgdeploy.pipelines.saccade import SaccadePipeline, SaccadeSettings

# name -> (SaccadeSettings changes, DecodeSettings changes); "upstream" changes nothing
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "upstream": ({}, {}),
    "stage0_only": ({"max_crops": 0}, {}),
    "max_crops_1": ({"max_crops": 1}, {}),
    "max_crops_2": ({"max_crops": 2}, {}),
    "att_threshold_0.5": ({"att_threshold": 0.5}, {}),
    "att_threshold_0.1": ({"att_threshold": 0.1}, {}),
    "stage0_keep_all": ({"init_score_threshold": -1.0}, {}),
    "k100": ({}, {"K": 100, "num_dets": 100}),
    "k100_stage0_keep_all": ({"init_score_threshold": -1.0}, {"K": 100, "num_dets": 100}),
}


def run(pipeline: Any, labeled: Any) -> dict[str, Any]:
    """One pass over the set after one untimed image: COCO metrics, wall and stage ms per image,
    crops."""
    results, crops, zooms = [], [], []
    pipeline([read_image(labeled.images[0].path)])  # untimed: a runner's first call compiles
    pipeline.times.reset()
    started = time.perf_counter()
    for image in labeled.images:
        (found,) = pipeline([read_image(image.path)])
        results += found.to_coco(image.image_id)
        crops.append(int(found.details.get("crops", 0)))
        zooms += [row[2] for row in found.details.get("locations", [])[: crops[-1]]]
    seconds = time.perf_counter() - started
    count = len(labeled.images)
    metrics = coco_metrics(labeled.coco, results, "bbox")
    stages = {k: 1e3 * v / count for k, v in pipeline.times.as_dict().items()}
    return {
        **metrics,
        "ms_per_image": 1e3 * seconds / count,
        "stages_ms_per_image": stages,
        "crops_mean": sum(crops) / count,
        "crops_max": max(crops),
        "crop_zooms": {  # the crops' scales (crop side = 255 / zoom pixels of the photo)
            "<=1": sum(z <= 1 for z in zooms),
            "(1,2]": sum(1 < z <= 2 for z in zooms),
            ">2": sum(z > 2 for z in zooms),
        },
        "detections_per_image": len(results) / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", help="Saccade's deployed network (omit: CornerNet only)")
    parser.add_argument("--annotations", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=[])
    parser.add_argument(
        "--cornernet",
        action="append",
        default=[],
        help="CornerNet artifact run beside, flip on and off (repeatable; a photo larger than "
        "its input is scaled down to fit, upstream's test_scales < 1)",
    )
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    spec = get_spec("saccade")
    labeled = load_labeled_set(args.annotations, args.images, spec)
    record: dict[str, Any] = {"artifact": args.artifact, "images": len(labeled.images), "runs": {}}
    if args.artifact:
        base = build_pipeline("saccade", artifact=args.artifact)
        for name in args.variant or ["upstream"]:
            settings_changes, decode_changes = VARIANTS[name]
            pipeline = SaccadePipeline(
                spec, base.network, dataclasses.replace(SaccadeSettings(), **settings_changes)
            )
            pipeline.decode = dataclasses.replace(spec.decode, **decode_changes)
            scores = record["runs"][f"saccade:{name}"] = run(pipeline, labeled)
            print(name, round(scores["AP"], 4), round(scores["ms_per_image"], 1), flush=True)
        base.network.close()
    for artifact in args.cornernet:
        for flip in (True, False):
            pipeline = build_pipeline("cornernet", artifact=artifact, flip=flip)
            key = f"cornernet:{Path(artifact).name}:{'flip' if flip else 'no_flip'}"
            scores = record["runs"][key] = run(pipeline, labeled)
            pipeline.network.close()
            print(key, round(scores["AP"], 4), round(scores["ms_per_image"], 1), flush=True)
    Path(args.output).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
