"""README figures from result files, never by hand: `python -m common.report.readme [--check]`.

The README's demo table, its findings list, the seed study and its performance table sit between
`<!-- generated: NAME -->` and `<!-- end generated: NAME -->` markers and are rewritten from
docs/demo-summary.json (the report's summary.json of the demo run made for the README),
docs/demo-seeds.json (the same findings on other `--seed` values) and benchmarks/results/*.json.
`--check` rewrites nothing and exits 1 when the README disagrees with those files (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from common.report.findings import findings
from common.report.growth_readme import growth_section

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEMO_SUMMARY = ROOT / "docs" / "demo-summary.json"
DEMO_SEEDS = ROOT / "docs" / "demo-seeds.json"
RESULTS = ROOT / "benchmarks" / "results"

DEMO_ROWS = (
    ("a-film", "source A (`film`) in domain (Table 3 analogue)"),
    ("a-ffdm", "source A on `ffdm` (Table 2)"),
    ("ab-ffdm", "baseline A+B in domain (`ffdm` test, Table 2)"),
    ("a-hospital", "source A on `hospital` (Table 4)"),
    ("baseline", "baseline A+B on `hospital` (out of domain, Table 4)"),
    ("baseline+radiomics", "baseline + radiomics (Table 5)"),
    ("finetune-config1", "fine-tuning config 1 (Table 8)"),
    ("finetune-config2", "fine-tuning config 2 (Table 8)"),
)
SEED_COLUMNS = ("a-film", "a-ffdm", "ab-ffdm", "a-hospital", "baseline", "baseline+radiomics",
                "finetune-config1", "finetune-config2")


def demo_table(summary: dict[str, Any]) -> str:
    lines = ["| model | level | n (pos) | AUC (95% CI) | sensitivity | specificity |", "|---|---|---|---|---|---|"]
    for key, label in DEMO_ROWS:
        m = summary["models"].get(key)
        if m is None:
            lines.append(f"| {label} | - | - | missing from the run | - | - |")
            continue
        lo, hi = m["auc_ci95"]
        lines.append(f"| {label} | {m['level']} | {m['n']} ({m['n_pos']}) | {m['auc']:.3f} ({lo:.3f}-{hi:.3f}) "
                     f"| {m['sensitivity']:.3f} | {m['specificity']:.3f} |")
    return "\n".join(lines)


def findings_list(summary: dict[str, Any]) -> str:
    mark = {True: "yes", False: "**no**", None: "not computable"}
    return "\n".join(f"- {f.claim}: {mark[f.holds]} ({f.evidence})" for f in findings(summary))


def seeds_table(seeds: dict[str, Any]) -> str:
    """AUC per row and whether every finding holds, one line per `--seed` value."""
    header = "| --seed | " + " | ".join(SEED_COLUMNS) + " | findings that hold |"
    lines = [header, "|" + "---|" * (len(SEED_COLUMNS) + 2)]
    for seed, summary in sorted(seeds["runs"].items(), key=lambda item: int(item[0])):
        aucs = [f"{summary['models'][k]['auc']:.3f}" if k in summary["models"] else "-" for k in SEED_COLUMNS]
        found = findings(summary)
        failed = [f.key for f in found if not f.holds]
        held = f"{sum(bool(f.holds) for f in found)}/{len(found)}" + (f" (not: {', '.join(failed)})" if failed else "")
        lines.append(f"| {seed} | " + " | ".join(aucs) + f" | {held} |")
    return "\n".join(lines)


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _training_rows(tr: dict[str, Any]) -> list[str]:
    """Stage 1 (config 1) / stage 2 images/s per profile: against float32 where the profile trained in half
    precision, else as a fraction of the same-run matmul peak."""
    s, rows = tr["summary"], []
    peak = tr["matmul_peak"]["peak_gflops"]
    precision = {(r["profile"], r["phase"]): r["precision"] for r in tr["phases"] if not r["comparison"]}
    for name, label in (("full", "full size"), ("demo", "demo")):
        if f"{name}_stage2_images_per_s" not in s:
            continue
        one, two = s[f"{name}_stage1_config1_images_per_s"], s[f"{name}_stage2_images_per_s"]
        digits = 3 if two < 10 else 1
        measured = f"{one:.{digits}f} / {two:.{digits}f} images/s"
        policy = precision[name, "stage2"]
        if f"{name}_stage2_half_precision_speedup" in s:
            rows.append(f"| training, {label} stage 1 / stage 2 in {policy} | {measured} "
                        f"| float32: {s[f'{name}_stage1_config1_float32_images_per_s']:.{digits}f} / "
                        f"{s[f'{name}_stage2_float32_images_per_s']:.{digits}f} images/s "
                        f"| {s[f'{name}_stage1_config1_half_precision_speedup']:.2f}x / "
                        f"{s[f'{name}_stage2_half_precision_speedup']:.2f}x | - |")
        else:
            rows.append(f"| training, {label} stage 1 / stage 2 | {measured} | TF float32 matmul peak {peak:.0f} "
                        f"GFLOP/s | {s[f'{name}_stage1_config1_fraction_of_peak']:.2f} / "
                        f"{s[f'{name}_stage2_fraction_of_peak']:.2f} | - |")
    return rows


def performance_table(results: Path) -> str:
    """One row per benchmark headline, each cell taken from that benchmark's JSON as it stands."""
    lines = ["| stage | measured | reference in the same run | ratio | target (met) |", "|---|---|---|---|---|"]
    pre = _load(results, "preprocess_throughput")
    if pre:
        s, t = pre["summary"], pre["targets"]
        runs = {r["workers"]: r for r in pre["runs"]}
        best = max(runs)
        naive = pre["naive"]["images_per_s"]
        lines.append(f"| preprocess, {pre['images']} real CBIS-DDSM DICOMs, {pre['profile']} profile "
                     f"| {s['images_per_s']:.2f} images/s ({best} workers) | naive loop {naive:.2f} images/s "
                     f"| {s['speedup_vs_naive']:.2f}x "
                     f"| >= {t['speedup_vs_naive_min']:g}x ({_yes(s['meets_naive_target'])}) |")
        one = runs.get(1)
        also = f"; 1 worker: {one['core_s_vs_isolated']:.2f}x" if one and best != 1 else ""
        lines.append(f"| preprocess core-seconds per image "
                     f"| {runs[best]['core_s_per_image']:.3f} s ({best} workers{also}) "
                     f"| decode + resizes + encodes in isolation {pre['isolated']['floor_s_per_image']:.3f} s "
                     f"| {s['core_s_vs_isolated']:.2f}x | <= {t['core_s_vs_isolated_max']:g}x "
                     f"({_yes(s['meets_isolated_target'])}) |")
    inf = _load(results, "inference_flops")
    if inf:
        s, peak = inf["summary"], inf["summary"]["matmul_peak_gflops"]
        target = inf["target_fraction_of_peak"]
        for name, label in (("full", "End2End VGG16 1152x896"), ("demo", "demo profile")):
            p = inf["profiles"][name]["best"]
            lines.append(f"| inference, {label} | {p['gflops']:.0f} GFLOP/s at batch {p['batch_size']} "
                         f"| TF float32 matmul peak {peak:.0f} GFLOP/s | {p['fraction_of_peak']:.2f} "
                         f"| >= {target:g} ({_yes(s[f'{name}_meets_target'])}) |")
    tr = _load(results, "training_throughput")
    if tr:
        lines.extend(_training_rows(tr))
    mem = _load(results, "training_memory")
    if mem:
        rss = {r["cohort"]: r["peak_rss_mb"] for r in mem["runs"]}
        lines.append(f"| fine-tuning peak RSS, 4x vs 1x images ({mem['profile']} profile) | {rss['4x']:.0f} vs "
                     f"{rss['1x']:.0f} MB | - | {mem['ratio']:.3f} | <= {mem['limit']:g} ({_yes(mem['passed'])}) |")
    rad = _load(results, "radiomics_speed")
    if rad:
        s = rad["summary"]
        lines.append(f"| radiomics, {rad['spacing_mm']:g} mm | {s['segmentation_s_per_image']:.2f} s segmentation + "
                     f"{s['features_34_s_per_image']:.2f} s 34 features per image | - | - | - |")
    syn = _load(results, "synth_throughput")
    if syn:
        s = syn["summary"]
        lines.append(f"| synthetic data | {s['images_per_s']:.1f} images/s | - | - "
                     f"| ({_yes(s['meets_targets'])}) |")
    wall = _load(results, "pipeline_walltime")
    if wall and wall["summary"].get("demo_wall_s"):
        s = wall["summary"]
        peak = s.get("tf_matmul_peak_gflops")
        if peak:
            lines.append(f"| demo pipeline (`make run`) | {s['demo_wall_s'] / 60:.1f} min wall, {s['demo_core_s']:.0f} "
                         f"core-s | TF float32 matmul peak {peak:.0f} GFLOP/s ({s['peak_measured']}) "
                         f"| {s['demo_wall_peak_tflop']:.0f} peak-TFLOP | <= 68 peak-TFLOP (10 min at 113 GFLOP/s) "
                         f"({_yes(s['demo_wall_peak_tflop'] <= 67.8)}) |")
        else:
            lines.append(f"| demo pipeline (`make run`) | {s['demo_wall_s'] / 60:.1f} min wall "
                         "| not measured | - | - |")
    return "\n".join(lines)


def demo_cost(results: Path) -> str:
    """Where the demo's time goes, and the projection for the thesis cohort, from pipeline_walltime.json."""
    wall = _load(results, "pipeline_walltime")
    if not wall:
        return "Not measured: run `python benchmarks/pipeline_walltime.py --run`."
    text = []
    breakdown = wall.get("breakdown")
    if breakdown:
        steps = ", ".join(f"{row['step']} {row['share']:.0%}" + (f" ({row['core_s']:.0f} core-s)" if row.get("core_s")
                                                                   else "") for row in breakdown["steps"])
        jobs = breakdown.get("jobs") or 1
        overlap = f"; tasks run {jobs} at a time, so the shares are of their summed times" if jobs > 1 else ""
        shared = breakdown.get("preloaded_core_s") or 0.0
        imports = f", and {shared:.0f} core-s of imports the forked tasks share" if shared else ""
        text.append(f"Where the demo's task time goes, by step (`benchmarks/pipeline_walltime.py`{overlap}): "
                    f"{steps}{imports}.")
    s, a = wall["summary"], wall["assumptions"]
    memory = wall["projection"]["gpu_memory_per_training_batch_gib"]
    text.append(f"Projected full profile on the thesis' {a['images']:,}-image cohort with one {a['gpu']} (assumed "
                f"{a['gpu_tflops_fp32']:g} TFLOP/s fp32 at {a['gpu_utilisation']:.0%} sustained; epochs at their "
                f"maximum, so an upper bound): {s['projected_gpu_hours']:.1f} GPU hours + "
                f"{s['projected_cpu_hours']:.1f} CPU hours. A full-size training batch needs about "
                f"{memory['float32']:.1f} GiB in float32 and {memory['mixed_float16']:.1f} GiB with mixed float16, "
                "which the full profile enables on a GPU.")
    return "\n".join(text)


def onednn_note(results: Path) -> str:
    data = _load(results, "onednn_variation")
    if not data:
        return "not measured on two CPU types here (only one type was available)."
    s = data["summary"]
    return (f"measured as TF_ENABLE_ONEDNN_OPTS=1 against =0 on one machine (`benchmarks/onednn_variation.py`, "
            f"{data['what']}): scores differ by up to {s['max_abs_score_difference']:.2g}, AUC by "
            f"{s['auc_difference']:.2g}; runs with the same setting were identical: "
            f"{_yes(s['same_setting_identical'])}.")


def _layer_mb(image: dict[str, Any], marker: str) -> float:
    return sum(layer["bytes"] for layer in image["layers"] if marker in layer["created_by"]) / 1e6


def container_images(results: Path) -> str:
    """Image sizes, layer costs and build times, and the `make image-test` times, from container_images.json."""
    data = _load(results, "container_images")
    if not data:
        return "Not measured: run `make image-test` (see benchmarks/results/container_images.json's `how`)."
    cpu, base, gpu, test = data["cpu"], data["base"], data["gpu"], data["image_test"]
    light, model = cpu["images"]["synth"], cpu["images"]["pretrain"]
    seconds = {step: cpu["build_seconds"][info["image"]] for step, info in cpu["images"].items()}
    model_steps = [s for s, i in cpu["images"].items() if _layer_mb(i, "model.txt")]
    light_steps = [s for s in cpu["images"] if s not in model_steps]

    def later(steps: list[str]) -> str:
        rest = [seconds[s] for s in steps[1:]]
        return f"{seconds[steps[0]]:.0f} s (first), then {min(rest):.0f}-{max(rest):.0f} s each"

    rows = [
        "| image | size | of which | build (empty store) |", "|---|---|---|---|",
        f"| base (debootstrap) | {base['bytes'] / 1e6:.0f} MB | {base['made_by']} | {base['build_seconds']:.0f} s |",
        f"| {', '.join(light_steps)} | {light['bytes'] / 1e6:.0f} MB | base {base['bytes'] / 1e6:.0f} + venv "
        f"{_layer_mb(light, 'python -m venv'):.0f} + deps {_layer_mb(light, 'base.txt'):.0f} + package "
        f"{_layer_mb(light, '--no-deps') + _layer_mb(light, 'COPY dir'):.1f} | {later(light_steps)} |",
        f"| {', '.join(model_steps)} | {model['bytes'] / 1e6:.0f} MB | the {light['bytes'] / 1e6:.0f} MB above + "
        f"TensorFlow CPU {_layer_mb(model, 'model.txt'):.0f} | {later(model_steps)} |",
        f"| the {len(cpu['images'])} CPU images together | {cpu['set_bytes'] / 1e6:.0f} MB distinct layers | "
        f"{cpu['set_over_largest']:.3f} x the largest image | {cpu['total_build_seconds']:.0f} s |",
        f"| pretrain GPU (`tensorflow[and-cuda]`, measured {gpu['measured_on']}) | {gpu['bytes'] / 1e6:.0f} MB | "
        f"the same deps + TensorFlow with CUDA wheels {gpu['tensorflow_bytes'] / 1e6:.0f} | "
        f"{gpu['build_seconds']:.0f} s |",
    ]
    first, last = test["load_average"]
    text = [
        f"Measured {data['measured_on']} ({data['machine']}, shared: 1-min load average "
        f"{cpu['load_average_at_end'][0]:.1f} at the end of the builds, {first:.1f} at the start and {last:.1f} "
        "at the end of `make image-test`, so wall times are inflated):",
        "", *rows, "",
        f"`make image-test` from an empty image store (podman installed, `.venv` present, as after `make test`): "
        f"{test['seconds'] / 60:.1f} min, of which base and image builds {test['build_seconds'] / 60:.1f} min and "
        f"the ci pipeline {test['in_process_seconds']:.0f} s in-process against {test['containers_seconds']:.0f} s "
        f"as {test['containers']} containers, one after the other (ratio "
        f"{test['containers_seconds'] / test['in_process_seconds']:.2f}; the in-process run uses both cores for its "
        "shards, the two runs are timed one after the other under the others' changing load), with identical model "
        "figures.",
    ]
    return "\n".join(text)


def _blocks(summary: dict | None, seeds: dict | None, results: Path) -> dict[str, Callable[[], str]]:
    blocks: dict[str, Callable[[], str]] = {"performance-table": lambda: performance_table(results),
                                            "demo-cost": lambda: demo_cost(results),
                                            "onednn": lambda: onednn_note(results),
                                            "growth": lambda: growth_section(results),
                                            "container-images": lambda: container_images(results)}
    if summary is not None:
        blocks["demo-table"] = lambda: demo_table(summary)
        blocks["demo-findings"] = lambda: findings_list(summary)
    if seeds is not None:
        blocks["demo-seeds"] = lambda: seeds_table(seeds)
    return blocks


def render(readme: str, summary: dict | None, seeds: dict | None, results: Path) -> str:
    """The README with every generated block rewritten; a marker pair the README lacks is not added."""
    for name, make in _blocks(summary, seeds, results).items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end generated: {name} -->)", re.S)
        readme = pattern.sub(partial(_generated, make=make), readme)
    return readme


def _generated(match: re.Match[str], make: Callable[[], str]) -> str:
    return match.group(1) + make() + "\n" + match.group(2)


def add_seed_run(seeds_path: Path, seed: int, summary_path: Path) -> None:
    """Keep the model figures of one seed's run (the rest of a summary.json is not needed here)."""
    summary = json.loads(summary_path.read_text())
    seeds = json.loads(seeds_path.read_text()) if seeds_path.is_file() else {"runs": {}}
    seeds["runs"][str(seed)] = {"profile": summary["profile"], "models": summary["models"]}
    seeds_path.write_text(json.dumps(seeds, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.report.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md disagrees with the result files")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--summary", type=Path, default=DEMO_SUMMARY)
    parser.add_argument("--seeds", type=Path, default=DEMO_SEEDS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--add-seed", nargs=2, metavar=("SEED", "SUMMARY_JSON"),
                        help="record a `pipeline run --seed SEED` report's summary.json in the seeds file first")
    args = parser.parse_args(argv)
    if args.add_seed:
        add_seed_run(args.seeds, int(args.add_seed[0]), Path(args.add_seed[1]))
    summary = json.loads(args.summary.read_text()) if args.summary.is_file() else None
    seeds = json.loads(args.seeds.read_text()) if args.seeds.is_file() else None
    current = args.readme.read_text()
    updated = render(current, summary, seeds, args.results)
    if args.check:
        if updated != current:
            print(f"{args.readme} disagrees with its result files: run python -m common.report.readme",
                  file=sys.stderr)
            return 1
        return 0
    if updated != current:
        args.readme.write_text(updated)
        print(f"rewrote the generated blocks of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
