"""Run every benchmark (each in its own process, so TensorFlow state and peak memory do not leak between them)
and print the headline figures of their JSON results; `make bench` runs this with --quick.

Order matters once: pipeline_walltime goes last because its projection reads the per-image costs that
preprocess_throughput and radiomics_speed have just written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import _common

NAME = "summary"
SCRIPTS = (
    "synth_throughput",
    "preprocess_throughput",
    "radiomics_speed",
    "inference_flops",
    "training_throughput",
    "training_memory",
    "onednn_variation",
    "pipeline_walltime",
    "growth",  # after pipeline_walltime: its projection reads the GPU costs that one writes
)


def main() -> int:
    p = _common.parser("run_all", "Run all benchmarks and summarise their results.", result=NAME)
    p.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these benchmarks")
    args = p.parse_args()
    started = _common.machine()
    runs = []
    for name in args.only or SCRIPTS:
        script = _common.BENCH_DIR / f"{name}.py"
        command = [sys.executable, str(script), "--results", str(args.results), *(["--quick"] if args.quick else [])]
        print(f"=== {name}: {' '.join(command[1:])}", flush=True)
        began = time.perf_counter()
        code = subprocess.run(command, cwd=_common.REPO_ROOT).returncode
        runs.append({"benchmark": name, "status": "ok" if code == 0 else f"exit {code}",
                     "seconds": time.perf_counter() - began})

    rows = []
    for run in runs:
        path = args.results / f"{run['benchmark']}.json"
        if run["status"] != "ok" or not path.is_file():
            continue
        for metric, value in headline(json.loads(path.read_text())).items():
            rows.append({"benchmark": run["benchmark"], "metric": metric, "value": value})
    _common.table("benchmark runs", runs, ["benchmark", "status", "seconds"])
    _common.table("headline figures (details in benchmarks/results/*.json)", rows, ["benchmark", "metric", "value"])
    _common.write_result(NAME, args.results, args.quick, started, runs=runs, headline=rows)
    return 0 if all(r["status"] == "ok" for r in runs) else 1


def headline(result: dict) -> dict:
    """A benchmark's `summary`; for a result without one, its top-level numbers and flags."""
    if isinstance(result.get("summary"), dict):
        return result["summary"]
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and k not in ("finished_unixtime", "quick")}


if __name__ == "__main__":
    raise SystemExit(main())
