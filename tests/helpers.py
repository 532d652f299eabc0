"""What tests and benchmarks share: running `mammo`, finished step folders, and the small cohorts, models and
work directories several test modules build (import it as `helpers`; benchmarks put tests/ on their path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import yaml

from common import metrics
from common.artifacts import step_output
from common.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
MAMMO = (sys.executable, "-m", "jobs.cli")  # `mammo` of this checkout, whatever is installed
CI = load_profile("ci")
HEIGHT, WIDTH = CI.image.height, CI.image.width


# --- running mammo ------------------------------------------------------------------------------------------------

def mammo_command(step: str, *args: str, **options: Any) -> list[str]:
    """`mammo STEP ARGS... --option value ...` as a subprocess command line; an option's underscores become dashes,
    True is a bare flag and False its --no- form (argparse's BooleanOptionalAction), None leaves it out."""
    command = [*MAMMO, *step.split(), *map(str, args)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is False:
            command.append("--no-" + name.replace("_", "-"))
        elif value is not None:
            command += [flag, str(value)]
    return command


def mammo(step: str, *args: str, check: bool = True, timeout: float | None = None, env: dict[str, str] | None = None,
          **options: Any) -> subprocess.CompletedProcess:
    """Run `mammo_command(...)` from the checkout, capturing text; with `check` a non-zero exit fails the test with
    the end of its stderr."""
    result = subprocess.run(mammo_command(step, *args, **options), cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, env=env)  # fmt: skip
    if check and result.returncode != 0:
        import pytest

        pytest.fail(f"mammo {step} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


# --- step outputs -------------------------------------------------------------------------------------------------

def finish_step(folder: Path, step: str = "test", inputs: dict[str, Any] | None = None) -> Path:
    """Mark a hand-made step output folder finished with the `_SUCCESS.json` a real step writes (written last)."""
    with step_output(step, folder, inputs or {}):
        pass
    return folder


# --- a preprocess + split pair of blob images, for the model steps -----------------------------------------------

def blob_image(rng: np.random.Generator, positive: bool, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Smooth tissue-like background; positives get one bright Gaussian blob somewhere inside."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)), (0, 0), 4)
    image = 18000 + 4000 * noise / (noise.std() + 1e-9) + rng.normal(0, 600, (height, width))
    if positive:
        radius = rng.uniform(0.05, 0.08) * height
        cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
        yy, xx = np.mgrid[:height, :width]
        image += 22000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    return np.clip(image, 0, 65535).astype(np.uint16)


def write_cohort(root: Path, n_patients: int = 24, seed: int = 0, height: int = HEIGHT, width: int = WIDTH):
    """Preprocess-like and split-like folders; every second patient is a case with one affected breast."""
    rng = np.random.default_rng(seed)
    images_dir, split_dir = root / "preprocess", root / "split"
    rows, split_rows = [], []
    pattern = ["train", "validation", "test", "train", "train"]  # per (control, case) pair
    with step_output("preprocess", images_dir, {}):
        (images_dir / "images").mkdir(parents=True, exist_ok=True)
        for p in range(n_patients):
            patient = f"P{p:03d}"
            case = p % 2 == 1
            cancer_side = "L" if p % 4 == 1 else "R"
            for side in "LR":
                for view in ("CC", "MLO"):
                    image_id = f"{patient}_{side}_{view}"
                    label = int(case and side == cancer_side)
                    cv2.imwrite(
                        str(images_dir / "images" / f"{image_id}.png"), blob_image(rng, bool(label), height, width)
                    )
                    rows.append(
                        {"image_id": image_id, "patient_id": patient, "laterality": side, "view": view, "label": label}
                    )
            split_rows.append({"patient_id": patient, "label": int(case), "split": pattern[(p // 2) % len(pattern)]})
        pd.DataFrame(rows).to_csv(images_dir / "images.csv", index=False)
    with step_output("split", split_dir, {}):
        pd.DataFrame(split_rows).to_csv(split_dir / "split.csv", index=False)
    return images_dir, split_dir


def write_profile(path: Path, **training) -> Path:
    """The ci profile with some training settings replaced (e.g. more epochs)."""
    profile = load_profile("ci").to_dict()
    for key, value in training.items():
        if isinstance(value, dict):
            profile["training"][key] = {**profile["training"][key], **value}
        else:
            profile["training"][key] = value
    path.write_text(yaml.safe_dump(profile))
    return path



# --- models -----------------------------------------------------------------------------------------------------

def random_model(seed: int, input_scale: float = 1.0):
    """A model whose every weight, BN statistics included, is random but keeps outputs unsaturated.

    Kernels keep their (seeded) he_normal draw, the first one divided by the typical input magnitude.
    """
    import keras

    from common.model import Architecture, build_end2end

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_end2end(Architecture.from_profile(CI), dropout=0.2, weight_decay=1e-4)
    draws = {
        "bias": lambda shape: rng.normal(0, 0.05, shape),
        "gamma": lambda shape: rng.uniform(0.8, 1.2, shape),
        "beta": lambda shape: rng.normal(0, 0.1, shape),
        "moving_mean": lambda shape: rng.normal(0, 0.1, shape),
        "moving_variance": lambda shape: rng.uniform(0.5, 2.0, shape),
    }
    for weight in model.weights:
        kind = weight.path.split("/")[-1]
        if kind in draws:
            weight.assign(draws[kind](weight.shape).astype("float32"))
    first = model.get_layer("backbone").get_layer("block1_conv1").kernel
    first.assign(first / input_scale)
    return model



# --- a report work directory ---------------------------------------------------------------------------------

VIEWS = (("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO"))
PATIENTS = 40
N_BOOT = 60
# separation of cancer scores per model: the adapted models separate better than the baseline
SEPARATION = {"infer-a-film": 2.2, "infer-ab-film": 1.6, "infer-ab-ffdm": 2.4, "infer-a-hospital": 0.7,
              "infer-ab-hospital": 0.9, "finetune1-stage2": 1.5, "finetune2-stage2": 1.8}  # fmt: skip


def image_frame(seed: int) -> pd.DataFrame:
    """40 patients x 4 views; odd patients are cases with cancer in the left breast; 28/4/8 split."""
    rows = []
    for p in range(PATIENTS):
        split = "train" if p < 28 else "validation" if p < 32 else "test"
        for laterality, view in VIEWS:
            label = int(p % 2 == 1 and laterality == "L")
            rows.append({"image_id": f"P{p:03d}_{laterality}_{view}", "patient_id": f"P{p:03d}", "split": split,
                         "view": view, "laterality": laterality, "label": label})  # fmt: skip
    return pd.DataFrame(rows)


def write_model(folder, separation: float, seed: int, shuffle: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    frame = image_frame(seed)
    frame["score"] = 1 / (1 + np.exp(-(separation * frame["label"] + rng.normal(0, 1, len(frame)) - 1)))
    if shuffle:  # the report must pair models by image_id, not by row order
        frame = frame.sample(frac=1, random_state=seed)
    folder.mkdir(parents=True)
    frame.to_csv(folder / "scores.csv", index=False)
    values = metrics.evaluate(frame, level="image", n_boot=N_BOOT, seed=seed)
    (folder / "metrics.json").write_text(json.dumps(values))
    finish_step(folder)
    return values


def write_history(folder, stage: int, epochs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    epoch = np.arange(epochs)
    pd.DataFrame({"epoch": epoch, "stage": stage, "loss": 1.0 - 0.05 * epoch, "val_loss": 1.05 - 0.03 * epoch,
                  "val_auc": 0.6 + 0.01 * epoch, "lr": 1e-4}).to_csv(folder / "history.csv", index=False)  # fmt: skip
    finish_step(folder)


SHIFT = {"film": 0.4, "ffdm": 0.0, "hospital": 1.2}  # penultimate-feature shift of each domain


def write_split(folder) -> None:
    grouped = image_frame(0).groupby("patient_id", as_index=False)
    patients = grouped.agg(split=("split", "first"), label=("label", "max"))
    patients["pair_id"] = ""
    patients["age"] = [45 + (p * 7) % 25 for p in range(len(patients))]
    patients["age_stratum"] = pd.cut(patients["age"], [0, 50, 60, 200], right=False,
                                     labels=["0-50", "50-60", "60-200"]).astype(str)  # fmt: skip
    folder.mkdir(parents=True)
    patients.to_csv(folder / "split.csv", index=False)
    finish_step(folder)


def write_penultimate(folder, shift: float, seed: int) -> None:
    rows = pd.read_csv(folder / "scores.csv").query("split != 'train'")[["image_id", "split"]]
    shifted = shift * (rows["split"] == "test").to_numpy()[:, None]
    features = np.random.default_rng(seed).normal(size=(len(rows), 4)) + shifted
    rows.assign(**{f"f{i}": features[:, i] for i in range(4)}).to_csv(folder / "penultimate.csv", index=False)


def breast_png(path, seed: int, bright: float, shape: tuple[int, int] = (96, 72)) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    inside = (x / (0.75 * shape[1])) ** 2 + ((y - shape[0] / 2) / (0.42 * shape[0])) ** 2 <= 1
    image = np.where(inside, bright + 0.15 * rng.standard_normal(shape), 0.03)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (np.clip(image, 0, 1) * 65535).astype(np.uint16))


def make_workdir(base):
    """Everything but infer-a-ffdm and the pretrain folders; radiomics is patient level."""
    root = base / "work"
    written = {}
    for number, (folder, separation) in enumerate(SEPARATION.items()):
        written[folder] = write_model(root / folder, separation, seed=number, shuffle=folder.startswith("finetune"))
    for config in (1, 2):
        write_history(root / f"finetune{config}-stage1", 1, 5)
        write_history(root / f"finetune{config}-stage2", 2, 3)
    images = image_frame(0)
    patients = images.groupby("patient_id", as_index=False).agg(split=("split", "first"), label=("label", "max"))
    patients["score"] = np.random.default_rng(9).uniform(size=len(patients)) * 0.5 + 0.4 * patients["label"]
    (root / "radiomics").mkdir()
    patients.to_csv(root / "radiomics" / "scores.csv", index=False)
    written["radiomics"] = metrics.evaluate(patients, level="patient", n_boot=N_BOOT, seed=3)
    (root / "radiomics" / "metrics.json").write_text(json.dumps(written["radiomics"]))
    features = image_frame(0)[["image_id", "patient_id"]].assign(iavg=np.linspace(0, 1, 160), cene=1.0)
    features.to_csv(root / "radiomics" / "features.csv", index=False)
    finish_step(root / "radiomics")
    for domain, bright in (("film", 0.5), ("hospital", 0.75)):
        images = image_frame(0).iloc[112:144].assign(pixel_spacing_mm=0.1, original_width=720)  # validation + test
        for number, image_id in enumerate(images["image_id"]):
            breast_png(root / f"preprocess-{domain}" / "images" / f"{image_id}.png", number, bright)
        images.to_csv(root / f"preprocess-{domain}" / "images.csv", index=False)
        finish_step(root / f"preprocess-{domain}")
        (root / f"preprocess-{domain}" / "rejected.csv").write_text(
            "file,reason\nx/1.dcm,not a DICOM file: no preamble\nx/2.dcm,not a DICOM file: truncated\n")
        write_split(root / f"split-{domain}")
    for number, folder in enumerate(f for f in SEPARATION if f.startswith("infer-")):
        write_penultimate(root / folder, shift=SHIFT[folder.rsplit("-", 1)[1]], seed=number)
    (root / "synth-hospital").mkdir()
    (root / "infer-a-ffdm").mkdir()  # started but never finished: must count as missing
    return root, written


def run_report(root, out) -> dict:
    from jobs.cli import main

    assert main(["report", "--workdir", str(root), "--out", str(out), "--profile", "ci"]) == 0
    return json.loads((out / "summary.json").read_text())


