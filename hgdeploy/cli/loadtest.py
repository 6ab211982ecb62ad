"""`hgdeploy loadtest`: start tritonserver on a repository (loopback, free ports), load it at
each concurrency, stop it; write the figures and the server's own statistics."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from hgdeploy.base.console import console
from hgdeploy.base.errors import HgDeployError
from hgdeploy.cli.options import force_option, path_or_none

if TYPE_CHECKING:
    from hgdeploy.bench.serving_load import LoadTestRun


@click.command("loadtest")
@click.option(
    "--repository", required=True, type=click.Path(file_okay=False),
    help="A repository `hgdeploy repository` wrote; a server is started on it for the test.",
)  # fmt: skip
@click.option(
    "--target", type=click.Choice(["pipeline", "network"]), default="pipeline",
    show_default=True,
    help="pipeline: photos in, results out; network: one preprocessed input per request.",
)  # fmt: skip
@click.option(
    "--images", type=click.Path(file_okay=False), default=None,
    help="Photos the pipeline requests cycle through (default: the bundled sample photos).",
)  # fmt: skip
@click.option(
    "--concurrency", "levels", type=click.IntRange(min=1), multiple=True, default=(1, 2, 4),
    show_default=True, help="Clients sending at once; repeat for several levels.",
)  # fmt: skip
@click.option("--requests", type=click.IntRange(min=1), default=64, show_default=True,
              help="At most this many answers per level.")  # fmt: skip
@click.option("--seconds", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="At most this long per level.")  # fmt: skip
@click.option("--warmup", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Directory for serving.json and serving.md.")  # fmt: skip
@force_option
def loadtest_command(
    repository: str,
    target: str,
    images: str | None,
    levels: tuple[int, ...],
    requests: int,
    seconds: float,
    warmup: int,
    output: str,
    force: bool,
) -> None:
    """A bounded closed-loop load test of a served model: throughput, p50/p95/p99 per
    concurrency, and the batch sizes, queue and compute time the server itself reports."""
    from hgdeploy.base.artifacts import artifact_files, read_sidecar
    from hgdeploy.base.images import image_paths_in, sample_images
    from hgdeploy.base.outputs import check_output
    from hgdeploy.bench import serving_load
    from hgdeploy.pipelines.drawing import encode_png
    from hgdeploy.serving.client import TritonHttp
    from hgdeploy.serving.server import Ports, running_server

    repo = path_or_none(repository, "--repository")
    record = read_sidecar(repo) if repo is not None else None
    if repo is None or record is None or record.get("kind") != "triton-repository":
        raise HgDeployError(f"{repository} is not a repository `hgdeploy repository` wrote")
    out = check_output(output, force=force, directory=True)
    network = record["networks"][0]["name"]
    served = record["pipeline"] if target == "pipeline" else network
    if images is not None:
        photos = [p.read_bytes() for p in image_paths_in(images)]
    else:
        photos = [encode_png(pixels) for _, pixels in sample_images()]
    with tempfile.TemporaryDirectory(prefix="hgdeploy-loadtest-") as scratch:
        log = Path(scratch) / "tritonserver.log"
        with running_server(repo, ports=Ports.free(), log=log) as server:
            client = TritonHttp(server.http_url, timeout=120)
            if target == "pipeline":
                sent = serving_load.pipeline_requests(photos)
            else:
                sent = serving_load.network_requests(client, network)
            form = f"{record['network_form']} network {network}"
            run = serving_load.load_test(
                client, record["model"], served, network, sent, levels, requests, seconds,
                warmup, form, on_level=lambda lv: console.print(
                    f"concurrency {lv.concurrency}: {lv.throughput:.2f}/s, "
                    f"p50 {lv.p50_ms:.0f} ms, p99 {lv.p99_ms:.0f} ms"
                ),
            )  # fmt: skip
    results = run.record()
    results["photos"] = len(photos) if target == "pipeline" else 0
    table = _table(run)
    with artifact_files(out / "serving.json", out / "serving.md") as pending:
        pending.tmp(out / "serving.json").write_text(json.dumps(results, indent=2))
        pending.tmp(out / "serving.md").write_text(_markdown(run))
        pending.describe({"kind": "serving-load-test", "repository": str(repo)})
    console.print(table)
    console.print(f"wrote {out / 'serving.json'}, {out / 'serving.md'}")


def _table(run: LoadTestRun) -> Table:
    table = Table(title=f"{run.target} ({run.server})")
    for column in ("clients", "answers/s", "p50 ms", "p95 ms", "p99 ms", "p99/p50",
                   "network batches", "errors"):  # fmt: skip
        table.add_column(column)
    for level in run.levels:
        batches = level.server.get(run.network, {}).get("batches", {})
        table.add_row(str(level.concurrency), f"{level.throughput:.2f}", f"{level.p50_ms:.0f}",
                      f"{level.p95_ms:.0f}", f"{level.p99_ms:.0f}", f"{level.tail_ratio:.2f}",
                      _batches(batches), str(level.errors))  # fmt: skip
    return table


def _batches(batches: dict[int, int]) -> str:
    return " ".join(f"{size}x{count}" for size, count in batches.items()) or "-"


def _markdown(run: LoadTestRun) -> str:
    lines = [f"# Served {run.target}: {run.server}", "",
             ("| clients | answers/s | p50 ms | p95 ms | p99 ms | p99/p50 | network batches "
             "(size x times) | queue ms/req | compute ms/req | errors |"),
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for level in run.levels:
        net = level.server.get(run.network, {})
        lines.append(
            f"| {level.concurrency} | {level.throughput:.2f} | {level.p50_ms:.0f} | "
            f"{level.p95_ms:.0f} | {level.p99_ms:.0f} | {level.tail_ratio:.2f} | "
            f"{_batches(net.get('batches', {}))} | {net.get('queue_ms_per_request', 0):.1f} | "
            f"{net.get('compute_ms_per_request', 0):.1f} | {level.errors} |"
        )
    return "\n".join(lines) + "\n"
