"""Best served rate against the offline pipeline, per model, body format and round, from the
files run.sh leaves (run in this directory: python summarize.py b1 b2 b3 c1 c2 c3)."""

import json
import sys
from pathlib import Path

for model in ("hrnet", "squeeze"):
    for body in ("png", "jpeg"):
        for tag in sys.argv[1:]:
            offline = json.loads(Path(f"{model}_{body}_offline_{tag}.json").read_text())
            row = next(r for r in offline["rows"] if r["backend"] == "openvino")
            rate = 1000 / row["end_to_end_ms"]
            levels = json.loads(Path(f"{model}_{body}_served_{tag}.json").read_text())["levels"]
            best = max(levels, key=lambda level: level["throughput"])
            one = next(level for level in levels if level["concurrency"] == 1)
            worst_tail = max(level["p99_ms"] / level["p50_ms"] for level in levels)
            print(
                f"{model:8s} {body:5s} {tag}: offline {rate:5.1f}/s, served best "
                f"{best['throughput']:5.1f}/s at {best['concurrency']} clients = "
                f"{100 * best['throughput'] / rate:3.0f}%; p99/p50 at 1 client "
                f"{one['p99_ms'] / one['p50_ms']:.2f}, worst level {worst_tail:.2f}"
            )
