"""AP and CPU latency of an int8 deployment as its most sensitive layers fall back to float.

The trade-off behind `build --int8 --max-ap-drop`: the layers are ranked once (hgdeploy's
`precision.sensitivity`, as the accuracy target ranks them), then for each count k the top k
are kept out of int8 by the backend's own quantizer (`evaluation.accuracy_target`'s candidate
maker, the same builds the target search makes), and each candidate is scored on the held-out
set (evaluate's pipeline + COCOeval) and timed at batch 1 on this CPU. The backend's fp32
artifact (and OpenVINO's bf16) are timed beside it. Writes JSON and a PNG; asserts nothing.

    .venv/bin/python benchmarks/accuracy/fallback_curve.py --model hrnet \
        --checkpoint CK --onnx FP32.onnx --backend onnxruntime --calib-dir CALIB \
        --annotations VAL/annotations.json --images VAL --counts 0,1,2,4,8,16,32,64,all \
        --output benchmarks/accuracy/hrnet_fallback_onnxruntime
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hgdeploy.backends import BuildRequest
from hgdeploy.backends.base import RunRequest
from hgdeploy.backends.build_job import run_build
from hgdeploy.backends.registry import get_backend
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.images import preprocess
from hgdeploy.base.onnx_files import load_onnx
from hgdeploy.base.zoo import get_spec
from hgdeploy.bench.host import host_info
from hgdeploy.bench.timing import HostClock, TimingPlan, available_cores, time_callable
from hgdeploy.evaluation.accuracy_target import CANDIDATE_MAKERS, RANKING_IMAGES
from hgdeploy.evaluation.labeled_set import load_labeled_set
from hgdeploy.evaluation.run import Deployment, score_deployment
from hgdeploy.precision.calibration import calibration_feeds, sized_for
from hgdeploy.precision.calibration_source import calibration_images, unpack
from hgdeploy.precision.sensitivity import layer_sensitivity
from hgdeploy.precision.tensorrt_graphs import feed_batch


def main() -> None:
    args = _arguments()
    if args.replot:
        report = json.loads(args.output.with_suffix(".json").read_text())
        return _plot(report, args.output.with_suffix(".png"))
    spec = get_spec(args.model)
    labeled = load_labeled_set(args.annotations, args.images, spec)
    source = load_onnx(args.onnx)
    sized = sized_for(spec, source)
    _, pixels = unpack(calibration_images(args.calib_dir, args.calib_batches)[0])
    timing_input = preprocess(sized, pixels[:1])
    request = BuildRequest(args.model, args.backend, "int8", onnx=args.onnx,
                           checkpoint=args.checkpoint, calib_dir=args.calib_dir,
                           calib_batches=args.calib_batches)  # fmt: skip
    eager = score_deployment(spec, labeled, Deployment(), args.checkpoint, 0, None)
    print(f"eager fp32 AP {eager.metrics['AP']:.4f}", flush=True)
    ranking = _ranking(args, spec, source, pixels)
    counts = [len(ranking) if c == "all" else int(c) for c in args.counts.split(",")]
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hgdeploy-fallback-curve-") as scratch:
        maker = CANDIDATE_MAKERS[args.backend](request, Path(scratch), lambda text: None)
        for count in counts:
            candidate = maker.make(ranking[:count])
            point = _measure(args, spec, labeled, candidate, timing_input, count)
            point["drop_points"] = (eager.metrics["AP"] - point["AP"]) * 100
            points.append(point)
            print(json.dumps(points[-1]), flush=True)
        references = [_reference(args, spec, labeled, precision, timing_input, Path(scratch))
                      for precision in _reference_precisions(args.backend)]  # fmt: skip
    report = {
        "model": args.model,
        "backend": args.backend,
        "checkpoint": str(args.checkpoint),
        "held_out": {"annotations": str(args.annotations), "images": len(labeled.images)},
        "calibration": {"images": args.calib_batches, "method": "max (the tool's MinMax)"},
        "ranking": "hgdeploy sensitivity: each conv/Add alone in symmetric int8, worst output "
        "relative L2 on the calibration images",
        "eager_fp32_ap": eager.metrics["AP"],
        "timing": {
            "batch": 1,
            "warmup": args.warmup,
            "iterations": args.iterations,
            "statistic": "median_ms",
            "host": host_info("cpu", available_cores()),
        },
        "points": points,
        "references": references,
        "ranked_layers": ranking,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, args.output.with_suffix(".png"))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--onnx", type=Path, required=True, help="fp32 export of the checkpoint")
    parser.add_argument("--backend", choices=sorted(CANDIDATE_MAKERS), default="onnxruntime")
    parser.add_argument("--calib-dir", type=Path, required=True)
    parser.add_argument("--calib-batches", type=int, default=32)
    parser.add_argument(
        "--rank-images",
        type=int,
        default=RANKING_IMAGES,
        help="images the ranking runs each layer on (the build's default)",
    )
    parser.add_argument("--annotations", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--counts", default="0,1,2,4,8,16,32,64,all")
    parser.add_argument("--ranking", type=Path, help="reuse a ranking JSON (list of layers)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--output", type=Path, required=True, help="path stem for .json/.png")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG of --output")
    return parser.parse_args()


def _ranking(args: argparse.Namespace, spec: Any, source: Any, pixels: list) -> list[str]:
    if args.ranking is not None and args.ranking.is_file():
        return list(json.loads(args.ranking.read_text()))
    from hgdeploy.precision.calibration import calibrate

    feeds_all = calibration_feeds(sized_for(spec, source), pixels, feed_batch(source))
    amax = calibrate(source, feeds_all)  # ranges from every calibration image, max
    ranked = layer_sensitivity(source, amax, feeds_all[: args.rank_images], spec.output_names,
                               spec=spec)  # fmt: skip
    layers = [s.layer for s in ranked]
    if args.ranking is not None:
        args.ranking.write_text(json.dumps(layers))
    return layers


def _latency(backend: str, artifact: Path, spec: Any, inputs: Any, args: argparse.Namespace,
             precision: str = "fp32") -> float:  # fmt: skip
    runner = get_backend(backend).runner(RunRequest(artifact, spec, 1, precision))
    with runner:
        feed = {INPUT_NAME: inputs}
        stats = time_callable(lambda: runner.infer(feed, check_inputs=False),
                              TimingPlan(args.warmup, args.iterations), HostClock())  # fmt: skip
    return stats.median_ms


def _measure(args: argparse.Namespace, spec: Any, labeled: Any, candidate: Deployment,
             inputs: Any, count: int) -> dict[str, Any]:  # fmt: skip
    assert candidate.artifact is not None and candidate.backend is not None
    run = score_deployment(spec, labeled, candidate, args.checkpoint, 0, None)
    return {
        "kept": count,
        "AP": run.metrics["AP"],
        "median_ms": _latency(candidate.backend, candidate.artifact, spec, inputs, args, "int8"),
    }


def _reference_precisions(backend: str) -> list[str]:
    return ["fp32", "bf16"] if backend == "openvino" else ["fp32"]


def _reference(args: argparse.Namespace, spec: Any, labeled: Any, precision: str, inputs: Any,
               work: Path) -> dict[str, Any]:  # fmt: skip
    suffix = get_backend(args.backend).artifact_suffix
    built = run_build(BuildRequest(args.model, args.backend, precision, onnx=args.onnx,
                                   checkpoint=args.checkpoint,
                                   output=work / f"reference_{precision}{suffix}"))  # fmt: skip
    assert built.artifact is not None
    run = score_deployment(spec, labeled, Deployment(args.backend, built.artifact),
                           args.checkpoint, 0, None)  # fmt: skip
    return {"precision": precision, "AP": run.metrics["AP"],
            "median_ms": _latency(args.backend, built.artifact, spec, inputs, args, precision)}  # fmt: skip


def _plot(report: dict[str, Any], path: Path) -> None:
    points = report["points"]
    kept = [p["kept"] for p in points]
    figure, ap_axis = plt.subplots(figsize=(7, 4))
    ap_axis.plot(kept, [p["AP"] for p in points], "o-", color="tab:blue", label="int8 AP")
    ap_axis.axhline(report["eager_fp32_ap"], color="tab:blue", ls=":", label="eager fp32 AP")
    ap_axis.axhline(report["eager_fp32_ap"] - 0.01, color="tab:gray", ls="--", lw=0.8,
                    label="1 AP point below fp32")  # fmt: skip
    values = [p["AP"] for p in points] + [report["eager_fp32_ap"] - 0.01]
    ap_axis.set_ylim(min(values) - 0.002, max(values + [report["eager_fp32_ap"]]) + 0.004)
    ap_axis.set_xscale("symlog", linthresh=1)
    ap_axis.set_xlabel("most sensitive layers kept in float")
    ap_axis.set_ylabel("AP (held-out set)")
    time_axis = ap_axis.twinx()
    time_axis.plot(kept, [p["median_ms"] for p in points], "s-", color="tab:red",
                   label="int8 latency")  # fmt: skip
    for ref, style in zip(report["references"], (":", "-."), strict=False):
        time_axis.axhline(ref["median_ms"], color="tab:red", ls=style,
                          label=f"{ref['precision']} latency")  # fmt: skip
    time_axis.set_ylabel("median ms, batch 1, CPU")
    lines = ap_axis.get_legend_handles_labels()
    more = time_axis.get_legend_handles_labels()
    ap_axis.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")
    ap_axis.set_title(f"{report['model']} stand-in, {report['backend']} int8 fallback")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
