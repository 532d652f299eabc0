"""Synthetic cohort throughput: demo-size (1152x896) DICOM views per second, all cores against one.

Two measurements in one run, on the same patients of each domain: `common.synth.synthesize_cohort`
with one worker (the reference) and with every core. Reported: images per second of each, the
parallel speedup (target >= 1.6 on 2 cores) and the all-core rate (target >= 10 images/s on this
2-core machine when it is otherwise idle; the load average is saved next to the numbers).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import _common

NAME = "synth_throughput"
TARGET_IMAGES_PER_S = 10.0
TARGET_SPEEDUP = 1.6


def main() -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--patients", type=int, help="patients per domain and run (default 16, quick 6)")
    p.add_argument("--profile", default="demo", choices=["full", "demo", "ci"], help="image size (default demo)")
    args = p.parse_args()
    started = _common.machine()

    from common.profile import load_profile
    from common.synth import DOMAINS, synthesize_cohort

    size = load_profile(args.profile).synth.size
    shape = (size.height, size.width)
    patients = args.patients or (6 if args.quick else 16)
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        for domain in DOMAINS:
            rates = {}
            for workers in (1, cores):
                out = Path(tmp) / f"{domain}-{workers}"
                began = time.perf_counter()
                synthesize_cohort(out, patients, domain, seed=0, image_shape=shape, workers=workers)
                rates[workers] = 4 * patients / (time.perf_counter() - began)
                shutil.rmtree(out)
            rows.append({"domain": domain, "images": 4 * patients, "one_worker_images_per_s": rates[1],
                         "all_cores_images_per_s": rates[cores], "speedup": rates[cores] / rates[1]})
    overall = sum(r["images"] for r in rows) / sum(r["images"] / r["all_cores_images_per_s"] for r in rows)
    _common.table(f"synth throughput at {shape[0]}x{shape[1]} ({cores} cores)", rows,
                  ["domain", "images", "one_worker_images_per_s", "all_cores_images_per_s", "speedup"])
    print(f"all domains, all cores: {overall:.1f} images/s (target >= {TARGET_IMAGES_PER_S:g} on an idle machine)")
    speedup = min(r["speedup"] for r in rows)
    summary = {"images_per_s": overall, "min_speedup": speedup,
               "meets_targets": overall >= TARGET_IMAGES_PER_S and speedup >= TARGET_SPEEDUP}
    _common.write_result(NAME, args.results, args.quick, started, profile=args.profile, shape=list(shape),
                         domains=rows, target_images_per_s=TARGET_IMAGES_PER_S, target_speedup=TARGET_SPEEDUP,
                         summary=summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
