"""The report's Grad-CAM figure on a work directory built from synthetic DICOMs (common.synth -> preprocess):
burned-in text never reaches a figure, lesion outlines sit on the lesions, degenerate maps are flagged, and
summary.json's map statistics are those of the arrays drawn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pydicom
import pytest
from helpers import finish_step

from common import gradcam, metrics
from common.model import Architecture, build_end2end
from common.model_folder import Preprocessing
from common.preprocess import preprocess_folder
from common.profile import load_profile
from common.synth import synthesize_cohort
from jobs.cli import main

SEED, STORED_SHAPE = 3, (384, 304)  # seed 3: malignant masses in right breasts (flipped by preprocess)
TEXT_IMAGE = "hospital-0000_L_CC"  # scored highest, so it is the first "surest cancer call"
TEXT_FILE = Path("hospital-0000") / "L_CC.dcm"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    synthesize_cohort(root, patients=4, domain="hospital", seed=SEED, image_shape=STORED_SHAPE, workers=1)
    return root


def edit_dicom(path: Path, *, text: bool, tag: str | None) -> None:
    """Write a fake name and birth date into the pixels outside the breast (left breast: chest wall on the
    left, so the right-hand corners are background), brightest on display; set or remove BurnedInAnnotation."""
    ds = pydicom.dcmread(path)
    if text:
        pixels = ds.pixel_array.copy()
        bright = 0 if ds.PhotometricInterpretation == "MONOCHROME1" else 2 ** int(ds.BitsStored) - 1
        strokes = np.zeros(pixels.shape, np.uint8)  # OpenCV draws text on 8-bit images only
        rows, columns = pixels.shape
        for line, words in enumerate(("DOE^JANE", "1961-04-12")):
            cv2.putText(strokes, words, (int(0.6 * columns), int(0.86 * rows) + 26 * line),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.7, 255, 2)  # fmt: skip
        pixels[strokes > 0] = bright
        ds.PixelData = pixels.tobytes()
    if tag is None:
        del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = tag
    ds.save_as(path, enforce_file_format=True)


def write_workdir(base: Path, cohort: Path, *, text: bool, tag: str | None, dead_head: bool = False) -> Path:
    """preprocess-hospital from the (edited) DICOMs, synth-hospital's lesions.csv, and scores plus a small
    random End2End model in infer-ab-hospital and finetune2-stage2."""
    dicom, root = base / "dicom", base / "work"
    shutil.copytree(cohort / "dicom", dicom)
    edit_dicom(dicom / TEXT_FILE, text=text, tag=tag)
    preprocess_folder(dicom, cohort / "cohort.csv", root / "preprocess-hospital", load_profile("ci"), workers=1)
    (root / "synth-hospital").mkdir()
    shutil.copy(cohort / "lesions.csv", root / "synth-hospital" / "lesions.csv")
    images = pd.read_csv(root / "preprocess-hospital" / "images.csv", dtype={"patient_id": str})
    patient = images["patient_id"].str[-1].astype(int)
    scores = images[["image_id", "patient_id", "view", "laterality", "label"]].assign(
        split=np.where(patient < 2, "test", "validation"),
        score=0.2 + 0.5 * images["label"] + 0.02 * np.arange(len(images)))
    scores.loc[scores["image_id"] == TEXT_IMAGE, "score"] = 0.99
    keras.utils.set_random_seed(0)
    model = build_end2end(Architecture(160, 128, (2, 2, 2, 2, 2), 4), dropout=0.0, weight_decay=0.0)
    if dead_head:  # the log-odds no longer depends on the image: every map must be all zero
        dense = model.get_layer("head").get_layer("head_dense")
        dense.kernel.assign(np.zeros(dense.kernel.shape, np.float32))
    for part in ("preprocess-hospital", "synth-hospital", "infer-ab-hospital", "finetune2-stage2"):
        (root / part).mkdir(exist_ok=True)
        finish_step(root / part)
    for part in ("infer-ab-hospital", "finetune2-stage2"):
        scores.to_csv(root / part / "scores.csv", index=False)
        (root / part / "metrics.json").write_text(json.dumps(metrics.evaluate(scores, level="image", n_boot=20,
                                                                              seed=0)))  # fmt: skip
    model.save(root / "finetune2-stage2" / "model.keras")
    Preprocessing(featurewise_mean=40.0, height=160, width=128, source="test").write(root / "finetune2-stage2")
    return root


def report(root: Path, out: Path, *flags: str) -> dict:
    assert main(["report", "--workdir", str(root), "--out", str(out), "--profile", "ci", *flags]) == 0
    return json.loads((out / "summary.json").read_text())


def figures(out: Path) -> dict[str, np.ndarray]:
    return {path.name: cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted((out / "figures").glob("*.png"))}


def fixed_heat(model, images):
    """A heatmap that ignores the image, so two figures differ only where the image pixels shown differ."""
    height, width = images.shape[1:3]
    yy, xx = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((yy - height / 2) / (height / 4)) ** 2 + ((xx - width / 3) / (width / 4)) ** 2))
    return np.repeat(blob[None].astype(np.float32), len(images), axis=0)


def test_burned_in_text_never_reaches_a_figure(cohort, tmp_path, monkeypatch):
    """A name and birth date rendered into one DICOM's pixels (outside the breast): with BurnedInAnnotation YES
    the image is never shown, with the tag absent only its breast is; every figure's pixels equal those of the
    same report without the text. The control (tag NO: the file promises clean pixels) shows the text."""
    monkeypatch.setattr(gradcam, "gradcam_maps", fixed_heat)
    runs = {}
    for tag in ("YES", None, "NO"):
        for text in (True, False):
            base = tmp_path / f"{tag}-{'text' if text else 'clean'}"
            root = write_workdir(base, cohort, text=text, tag=tag)
            runs[tag, text] = (root, base / "report", report(root, base / "report"))

    # The text is in the network input, outside the breast the report segments.
    text_png, clean_png = (cv2.imread(str(runs["NO", t][0] / "preprocess-hospital" / "images" / f"{TEXT_IMAGE}.png"),
                                      cv2.IMREAD_UNCHANGED) for t in (True, False))  # fmt: skip
    written = np.abs(text_png.astype(np.int64) - clean_png) > 1000
    arrays = np.load(runs["NO", False][1] / "figures" / "gradcam.npz")
    breast = arrays["breast"][list(arrays["image_id"]).index(TEXT_IMAGE)]
    assert written.sum() > 50 and not (written & breast).any()

    for tag in ("YES", None):
        with_text, without = figures(runs[tag, True][1]), figures(runs[tag, False][1])
        assert "gradcam.png" in with_text and with_text.keys() == without.keys()
        for name, pixels in with_text.items():
            assert np.array_equal(pixels, without[name]), f"{name} differs with burned-in text (tag {tag})"
    control_text, control_clean = figures(runs["NO", True][1]), figures(runs["NO", False][1])
    assert not np.array_equal(control_text["gradcam.png"], control_clean["gradcam.png"])

    shown = {tag: {m["image_id"]: m["shown"] for m in runs[tag, True][2]["gradcam"]["maps"]}
             for tag in ("YES", None, "NO")}  # fmt: skip
    assert TEXT_IMAGE not in shown["YES"] and runs["YES", True][2]["gradcam"]["withheld_burned_in_yes"] == 1
    assert shown[None][TEXT_IMAGE] == "breast only" and shown["NO"][TEXT_IMAGE] == "full image"
    html = (runs["YES", True][1] / "report.html").read_text()
    assert "1 test image(s) carry BurnedInAnnotation YES" in html and "--show-burned-in" in html
    assert "only pixels inside the breast mask are shown" in (runs[None, True][1] / "report.html").read_text()

    opted = report(runs["YES", True][0], tmp_path / "opted", "--show-burned-in")
    assert {m["image_id"]: m["shown"] for m in opted["gradcam"]["maps"]}[TEXT_IMAGE] == "full image"
    assert "burned-in text may identify a patient" in (tmp_path / "opted" / "report.html").read_text()


def test_lesion_outlines_sit_on_the_lesions_and_statistics_are_those_of_the_arrays(cohort, tmp_path):
    root = write_workdir(tmp_path, cohort, text=False, tag="NO")
    summary = report(root, tmp_path / "report")
    arrays = np.load(tmp_path / "report" / "figures" / "gradcam.npz")
    maps = summary["gradcam"]["maps"]
    assert list(arrays["image_id"]) == [m["image_id"] for m in maps] and len(maps) == 9
    images = pd.read_csv(root / "preprocess-hospital" / "images.csv").set_index("image_id")
    outlined = 0
    for entry, heat, breast, lesion in zip(maps, arrays["heat"], arrays["breast"], arrays["lesion"], strict=True):
        assert entry["max"] == pytest.approx(float(heat.max()), rel=1e-6) and entry["degenerate"] is None
        assert entry["breast_area_fraction"] == pytest.approx(breast.mean())
        assert entry["breast_mass_fraction"] == pytest.approx(heat[breast].sum() / heat.sum(), rel=1e-5)
        assert entry["lesion_area_fraction"] == pytest.approx(lesion.mean())
        if not lesion.any():
            assert entry["lesion_mass_fraction"] is None
            continue
        outlined += 1
        assert entry["lesion_mass_fraction"] == pytest.approx(heat[lesion].sum() / heat.sum(), rel=1e-5)
        # The synthetic masses are much denser than tissue: inside the outline the network input is brighter
        # than in a ring around it (a mirrored or misplaced outline would not be).
        pixels = cv2.imread(str(root / "preprocess-hospital" / "images" / f"{entry['image_id']}.png"), -1)
        ring = cv2.dilate(lesion.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~lesion & breast
        assert pixels[lesion].mean() > pixels[ring].mean() + 2000, entry["image_id"]
        assert bool(images.loc[entry["image_id"], "flipped"]) == (entry["image_id"].split("_")[1] == "R")
    assert outlined >= 2


def test_degenerate_maps_are_flagged_on_the_figure_and_in_the_report(cohort, tmp_path):
    root = write_workdir(tmp_path, cohort, text=False, tag="NO", dead_head=True)
    summary = report(root, tmp_path / "report")
    cam = summary["gradcam"]
    assert cam["degenerate_maps"] == len(cam["maps"]) == 9
    assert all(m["max"] == 0 and m["degenerate"] == "all zero" and m["breast_mass_fraction"] is None
               for m in cam["maps"])  # fmt: skip
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("is degenerate (all zero): it shows nothing about where the model looks") == 9
    assert "is degenerate" in (tmp_path / "report" / "report.md").read_text()
