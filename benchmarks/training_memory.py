"""Peak memory of a fine-tuning run on 4x the images against the same run on 1x: tf.data must stream.

Each run is a real `mammo finetune-stage1` subprocess (one epoch, the profile's size and batch) on a
synthetic cohort of N or 4N patients; its peak resident set size comes from the kernel's rusage of that
child (os.wait4), so the measurement includes TensorFlow, the model and the input pipeline. A pipeline
that held decoded images would grow with the cohort; the streaming one stays flat. Pass: ratio <= 1.15.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

NAME = "training_memory"
LIMIT = 1.15


def write_cohort(root: Path, patients: int, height: int, width: int) -> tuple[Path, Path]:
    """Preprocess-like and split-like folders: smooth random 16-bit images, a quarter of them positive."""
    import cv2
    import numpy as np
    import pandas as pd

    from common.artifacts import step_output

    rng = np.random.default_rng(patients)
    images_dir, split_dir = root / "preprocess", root / "split"
    splits = ["train"] * 7 + ["validation", "test", "test"]
    rows, split_rows = [], []
    with step_output("preprocess", images_dir, {}):
        (images_dir / "images").mkdir(parents=True, exist_ok=True)
        for p in range(patients):
            patient, case = f"B{p:05d}", p % 2 == 1
            for side in "LR":
                for view in ("CC", "MLO"):
                    image_id = f"{patient}_{side}_{view}"
                    image = cv2.GaussianBlur(rng.normal(20000, 6000, (height, width)), (0, 0), 3)
                    image = np.clip(image, 0, 65535).astype("uint16")
                    cv2.imwrite(str(images_dir / "images" / f"{image_id}.png"), image)
                    label = int(case and side == "L")
                    rows.append(
                        {"image_id": image_id, "patient_id": patient, "laterality": side, "view": view, "label": label}
                    )
            split_rows.append({"patient_id": patient, "label": int(case), "split": splits[(p // 2) % len(splits)]})
        pd.DataFrame(rows).to_csv(images_dir / "images.csv", index=False)
    with step_output("split", split_dir, {}):
        pd.DataFrame(split_rows).to_csv(split_dir / "split.csv", index=False)
    return images_dir, split_dir


def write_model(root: Path, profile: dict) -> Path:
    """A freshly initialised model folder to fine-tune (the weights do not matter for memory)."""
    from common.artifacts import step_output
    from common.model import Architecture, build_end2end
    from common.model_folder import Preprocessing

    arch = Architecture.from_profile(profile)
    folder = root / "model"
    with step_output("pretrain", folder, {}):
        build_end2end(arch, dropout=0.2, weight_decay=1e-4).save(folder / "model.keras")
        Preprocessing(70.0, arch.height, arch.width, "benchmark").write(folder)
    return folder


def one_epoch_profile(root: Path, name: str) -> Path:
    import yaml

    from common.profile import load_profile

    profile = load_profile(name).replaced({"training.stage1.epochs": 1})
    path = root / f"{name}-one-epoch.yaml"
    path.write_text(yaml.safe_dump(profile.to_dict()))
    return path


def peak_rss_of_finetune(model: Path, images: Path, split: Path, out: Path, profile: Path) -> dict:
    from helpers import mammo_command

    command = mammo_command("finetune-stage1", model=model, images=images, split=split, config=2, out=out,
                            profile=profile)
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=_common.REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    stderr = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"fine-tuning run failed:\n{stderr[-2000:]}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - started}


def main() -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="profile of image size and batch (default: demo; ci with --quick)")
    p.add_argument("--patients", type=int, default=None, help="patients of the 1x cohort (default 40; 16 with --quick)")
    args = p.parse_args()
    started = _common.machine()
    name = args.profile or ("ci" if args.quick else "demo")
    patients = args.patients or (16 if args.quick else 40)

    from common.profile import load_profile

    profile = load_profile(name)
    height, width = profile.image.height, profile.image.width
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        profile_path = one_epoch_profile(root, name)
        model = write_model(root, profile)
        for factor in (1, 4):
            images, split = write_cohort(root / f"x{factor}", patients * factor, height, width)
            result = peak_rss_of_finetune(model, images, split, root / f"out{factor}", profile_path)
            rows.append(
                {"cohort": f"{factor}x", "patients": patients * factor, "images": 4 * patients * factor, **result}
            )
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    _common.table(
        f"Peak RSS of one fine-tuning epoch ({name} profile, {height}x{width})",
        rows,
        ["cohort", "patients", "images", "peak_rss_mb", "seconds"],
    )
    verdict = "PASS" if ratio <= LIMIT else "FAIL"
    print(f"peak RSS ratio 4x/1x = {ratio:.3f} (limit {LIMIT}): {verdict}")
    _common.write_result(
        NAME,
        args.results,
        args.quick,
        started,
        profile=name,
        runs=rows,
        ratio=ratio,
        limit=LIMIT,
        passed=ratio <= LIMIT,
    )
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
