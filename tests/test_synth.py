"""Synthetic cohorts: determinism, DICOM conformance, cohort design, lesion ground truth, domain shift.

Everything runs at the ci image size (384 x 304) on a handful of patients; checks are computed
independently of the generator (pydicom decoding, scipy distances, FFT spectra, pandas on the CSVs).
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy.stats import wasserstein_distance

from common.dicom import read_dicom
from common.profile import load_profile
from common.synth import DOMAINS, render_patient, synthesize_cohort
from common.synth.population import make_patient
from common.synth.texture import power_law_field
from jobs import cli

CI_SHAPE = (load_profile("ci").synth.size.height, load_profile("ci").synth.size.width)
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """One small cohort per domain, written once for the module (two workers, as in production)."""
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for domain in DOMAINS:
        out[domain] = root / domain
        synthesize_cohort(out[domain], 6, domain, seed=3, image_shape=CI_SHAPE, workers=2)
    return out


def _display(path: Path) -> np.ndarray:
    """Pixels as a reader would display them: [0, 1], dense tissue bright (MONOCHROME1 inverted)."""
    ds = pydicom.dcmread(path)
    image = ds.pixel_array.astype(np.float64) / (2**ds.BitsStored - 1)
    return 1.0 - image if ds.PhotometricInterpretation == "MONOCHROME1" else image


def test_same_seed_same_bytes_and_growth_keeps_patients(cohorts, tmp_path):
    again = tmp_path / "again"
    synthesize_cohort(again, 4, "hospital", seed=3, image_shape=CI_SHAPE, workers=1)
    first = cohorts["hospital"]
    for patient in ("hospital-0000", "hospital-0003"):
        for view in ("L_CC", "L_MLO", "R_CC", "R_MLO"):
            name = f"dicom/{patient}/{view}.dcm"
            assert filecmp.cmp(first / name, again / name, shallow=False), name
    small, large = pd.read_csv(again / "cohort.csv"), pd.read_csv(first / "cohort.csv")
    pd.testing.assert_frame_equal(small, large.iloc[: len(small)])
    other = tmp_path / "other"
    synthesize_cohort(other, 2, "hospital", seed=4, image_shape=CI_SHAPE, workers=1)
    assert not filecmp.cmp(first / "dicom/hospital-0000/L_CC.dcm", other / "dicom/hospital-0000/L_CC.dcm", False)


@pytest.mark.parametrize("domain,bits,photometric", [("film", 16, "MONOCHROME2"), ("ffdm", 14, "MONOCHROME2"),
                                                      ("hospital", 12, "MONOCHROME1")])
def test_dicom_tags_and_pixels(cohorts, domain, bits, photometric):
    files = sorted((cohorts[domain] / "dicom").glob("*/*.dcm"))
    assert len(files) == 6 * 4
    spacings, manufacturers = set(), set()
    for path in files:
        ds = pydicom.dcmread(path)
        laterality, view = path.stem.split("_")
        assert ds.SOPClassUID == MG_FOR_PRESENTATION == ds.file_meta.MediaStorageSOPClassUID
        assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.ImageLaterality == ds.Laterality == laterality
        assert ds.ViewPosition == view
        assert ds.PatientID == path.parent.name and ds.PatientID.startswith(f"{domain}-")
        assert len(ds.PatientAge) == 4 and ds.PatientAge.endswith("Y") and 40 <= int(ds.PatientAge[:3]) <= 90
        assert ds.PhotometricInterpretation == photometric
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, bits, bits - 1, 0)
        assert (ds.Rows, ds.Columns) == CI_SHAPE
        assert ds.PixelSpacing[0] == ds.PixelSpacing[1] == ds.ImagerPixelSpacing[0]
        assert str(ds.PatientName) == "" and "PatientBirthDate" not in ds and "InstitutionName" not in ds
        assert ds.PatientOrientation[0] == ("A" if laterality == "L" else "P")
        pixels = ds.pixel_array
        assert pixels.shape == CI_SHAPE and pixels.dtype == np.uint16 and pixels.max() <= 2**bits - 1
        spacings.add(float(ds.PixelSpacing[0]))
        manufacturers.add(ds.Manufacturer)
    assert len(spacings) == 1 and len(manufacturers) == 1
    # A plausible detector: 18-32 cm along the chest wall.
    assert 180 <= spacings.pop() * CI_SHAPE[0] <= 320


def test_domains_use_different_detectors(cohorts):
    spacing = {d: pydicom.dcmread(next((cohorts[d] / "dicom").glob("*/L_CC.dcm"))).PixelSpacing[0] for d in DOMAINS}
    assert spacing["hospital"] < spacing["ffdm"] < spacing["film"]


def test_orientation_breast_against_the_chest_wall(cohorts):
    """Left breasts have the chest wall (and most tissue) on the left of the stored image, right on the right."""
    for domain, root in cohorts.items():
        for path in (root / "dicom").glob("*/*.dcm"):
            image = _display(path)
            left, right = image[:, : image.shape[1] // 4].mean(), image[:, -image.shape[1] // 4 :].mean()
            assert (left > right) == path.stem.startswith("L"), (domain, path)


def test_monochrome1_background_is_stored_bright(cohorts):
    ds = pydicom.dcmread(cohorts["hospital"] / "dicom/hospital-0000/L_CC.dcm")
    pixels = ds.pixel_array
    background = pixels[:, -20:]  # far from the chest wall of a left breast
    assert np.median(background) > 0.95 * (2**ds.BitsStored - 1)
    h = pixels.shape[0]
    assert np.median(pixels[h // 3 : 2 * h // 3, :20]) < 0.8 * np.median(background)


def test_cohort_is_paired_balanced_and_age_matched(cohorts):
    for root in cohorts.values():
        cohort = pd.read_csv(root / "cohort.csv", keep_default_na=False)
        assert list(cohort.columns) == ["patient_id", "age", "label", "pair_id", "cancer_laterality"]
        assert cohort["label"].sum() * 2 == len(cohort)
        for _, pair in cohort.groupby("pair_id"):
            assert sorted(pair["label"]) == [0, 1]
            assert pair["age"].max() - pair["age"].min() <= 1
        assert set(cohort.loc[cohort.label == 1, "cancer_laterality"]) <= {"L", "R", "B"}
        assert set(cohort.loc[cohort.label == 0, "cancer_laterality"]) == {""}
        on_disk = {p.name for p in (root / "dicom").iterdir()}
        assert on_disk == set(cohort["patient_id"])


def test_population_statistics():
    """Sampling only (no rendering): laterality balance, bilateral cancers rare, density falls with age."""
    patients = [make_patient(11, "film", i) for i in range(600)]
    cases = [p for p in patients if p.label == 1]
    sides = pd.Series([p.cancer_laterality for p in cases]).value_counts()
    assert abs(sides.get("L", 0) - sides.get("R", 0)) < 0.2 * len(cases)
    assert sides.get("B", 0) < 0.08 * len(cases)
    ages = np.array([p.age for p in patients])
    density = np.array([p.density for p in patients])
    assert 40 <= ages.min() and ages.max() <= 90 and 55 < ages.mean() < 65
    assert np.corrcoef(ages, density)[0, 1] < -0.4
    assert density[ages < 50].mean() > density[ages > 70].mean() + 0.1


def test_lesions_sit_in_the_cancer_breast_in_both_views(cohorts):
    for domain, root in cohorts.items():
        cohort = pd.read_csv(root / "cohort.csv", keep_default_na=False).set_index("patient_id")
        lesions = pd.read_csv(root / "lesions.csv")
        malignant = lesions[lesions.malignant == 1]
        for patient_id, row in cohort.iterrows():
            found = malignant[malignant.patient_id == patient_id]
            expected = {"L": {"L"}, "R": {"R"}, "B": {"L", "R"}, "": set()}[row.cancer_laterality]
            assert set(found.laterality) == expected, (domain, patient_id)
            for side in expected:
                assert set(found[found.laterality == side].view) == {"CC", "MLO"}
        # Every finding is drawn in both views of its breast, at a similar depth from the chest wall.
        for _, finding in lesions.groupby(["patient_id", "lesion_id"]):
            assert sorted(finding.view) == ["CC", "MLO"]
            depth = np.where(finding.laterality == "R", 1 - finding.center_x, finding.center_x)
            assert abs(depth[0] - depth[1]) < 0.15
        # Centres lie inside the breast, not in the air around it.
        for _, finding in lesions.iterrows():
            image = _display(root / "dicom" / finding.patient_id / f"{finding.laterality}_{finding.view}.dcm")
            row = int(finding.center_y * image.shape[0])
            col = int(finding.center_x * image.shape[1])
            background = np.median(image[:, -10:] if finding.laterality == "L" else image[:, :10])
            assert image[row, col] > background + 0.05, (domain, finding.patient_id)


def _ring_contrast(image: np.ndarray, x: float, y: float, r: float) -> float:
    """Mean inside the lesion radius minus mean of the ring 1.5-2.5 radii out (both clipped to the image)."""
    x0, y0 = max(int(x - 2.5 * r) - 1, 0), max(int(y - 2.5 * r) - 1, 0)
    window = image[y0 : int(y + 2.5 * r) + 2, x0 : int(x + 2.5 * r) + 2]
    yy, xx = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
    distance = np.hypot(xx + x0 - x, yy + y0 - y)
    return window[distance <= r].mean() - window[(distance > 1.5 * r) & (distance <= 2.5 * r)].mean()


def test_malignant_masses_stand_out_more_than_decoys():
    """Ground-truth check on the physical model and on every rendered domain (dense tissue displayed bright)."""
    shape = (576, 448)
    contrast: dict[tuple[str, bool], list[float]] = {}
    for domain in DOMAINS:
        for index in range(12):
            views = render_patient(make_patient(5, domain, index), DOMAINS[domain], 5, shape)
            for view in views:
                display = view.pixels.astype(np.float64) / DOMAINS[domain].max_value
                if DOMAINS[domain].photometric == "MONOCHROME1":
                    display = 1.0 - display
                if view.laterality == "R":
                    display = display[:, ::-1]  # back to the phantom's chest-wall-left frame
                for placed in view.lesions:
                    if "mass" not in placed.lesion.kind:
                        continue
                    r = max(placed.radius, 2.0)
                    raw = _ring_contrast(view.phantom.attenuation, placed.x, placed.y, r)
                    shown = _ring_contrast(display, placed.x, placed.y, r)
                    contrast.setdefault(("raw", placed.lesion.malignant), []).append(raw)
                    contrast.setdefault((domain, placed.lesion.malignant), []).append(shown)
    assert np.mean(np.array(contrast[("raw", True)]) > 0) > 0.95
    assert np.median(contrast[("raw", True)]) > 1.8 * np.median(contrast[("raw", False)])
    for domain in DOMAINS:  # tone curves compress contrast differently, but never hide the difference
        malignant, benign = np.median(contrast[(domain, True)]), np.median(contrast[(domain, False)])
        assert malignant > 0.05 and malignant > 1.4 * benign, (domain, malignant, benign)


def _breast_pixels(root: Path) -> tuple[np.ndarray, float]:
    """Breast-region pixels of all CC views normalised to [0, 1] per image, and high-frequency energy share."""
    values, high = [], []
    for path in sorted((root / "dicom").glob("*/*_CC.dcm")):
        image = _display(path).astype(np.float32)
        lo, hi = np.percentile(image, [1, 99.5])
        mask = image > lo + 0.1 * (hi - lo)
        mask = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        normalised = np.clip((image - lo) / (hi - lo), 0, 1)
        values.append(normalised[mask])
        detail = normalised - cv2.GaussianBlur(normalised, (0, 0), 1.0)
        high.append(detail[mask].var() / normalised[mask].var())
    return np.concatenate(values), float(np.mean(high))


def test_domains_differ_more_than_seeds(cohorts, tmp_path):
    synthesize_cohort(tmp_path / "film2", 6, "film", seed=8, image_shape=CI_SHAPE, workers=2)
    film, film_hf = _breast_pixels(cohorts["film"])
    film2, film2_hf = _breast_pixels(tmp_path / "film2")
    hospital, hospital_hf = _breast_pixels(cohorts["hospital"])
    assert wasserstein_distance(film, hospital) > 3 * wasserstein_distance(film, film2)
    # Film grain and scanner noise against a blurrier, low-noise hospital detector.
    assert abs(np.log(film_hf / hospital_hf)) > 3 * abs(np.log(film_hf / film2_hf))
    assert film_hf > hospital_hf


def test_texture_has_power_law_spectrum():
    """Periodogram slope of the generated field is the requested beta (independent FFT fit)."""
    rng = np.random.default_rng(0)
    for beta in (2.0, 3.0):
        slopes = []
        for _ in range(4):
            field = power_law_field((256, 256), rng, beta=beta, spacing_mm=0.5, low_cut_mm=1e6)
            spectrum = np.abs(np.fft.fft2(field)) ** 2
            f = np.fft.fftfreq(256, d=0.5)
            radial = np.hypot(f[:, None], f[None, :])
            band = (radial > 0.05) & (radial < 0.8)
            slopes.append(-np.polyfit(np.log(radial[band]), np.log(spectrum[band]), 1)[0])
        assert abs(np.mean(slopes) - beta) < 0.15


def test_parenchyma_keeps_a_mammographic_spectrum():
    """beta of the rendered attenuation in the flat central breast is near the measured 2-4 of real mammograms."""
    slopes = []
    for index in range(4):
        for view in render_patient(make_patient(2, "ffdm", index), DOMAINS["ffdm"], 2, (768, 608)):
            if view.view != "CC":
                continue
            spacing = view.phantom.spacing_mm
            x, y = view.phantom.geometry.point(0.55, 0.0)
            half = int(20.0 / spacing)
            patch = view.phantom.attenuation[int(y / spacing) - half : int(y / spacing) + half,
                                             int(x / spacing) - half : int(x / spacing) + half].astype(np.float64)
            window = np.outer(np.hanning(2 * half), np.hanning(2 * half))
            spectrum = np.abs(np.fft.fft2((patch - patch.mean()) * window)) ** 2
            f = np.fft.fftfreq(2 * half, d=spacing)
            radial = np.hypot(f[:, None], f[None, :])
            band = (radial > 0.08) & (radial < 0.6)
            slopes.append(-np.polyfit(np.log(radial[band]), np.log(spectrum[band]), 1)[0])
    assert 2.0 < np.median(slopes) < 4.0


def test_film_labels_are_burned_in_away_from_the_chest_wall(cohorts):
    for path in (cohorts["film"] / "dicom").glob("*/*.dcm"):
        ds = pydicom.dcmread(path)
        if ds.BurnedInAnnotation != "YES":
            continue
        image = _display(path)
        h, w = image.shape
        corner = image[: h // 8, w - w // 3 :] if path.stem.startswith("L") else image[: h // 8, : w // 3]
        assert corner.max() > 0.85, path


def test_cli_writes_a_finished_step(tmp_path):
    out = tmp_path / "synth"
    code = cli.main(["synth", "--out", str(out), "--domain", "ffdm", "--patients", "2", "--seed", "1",
                     "--profile", "ci", "--workers", "1"])
    assert code == 0
    marker = json.loads((out / "_SUCCESS.json").read_text())
    assert marker["counts"]["images"] == 8 and marker["counts"]["cases"] == 1
    assert len(list((out / "dicom").glob("*/*.dcm"))) == 8
    assert cli.main(["synth", "--out", str(tmp_path / "odd"), "--domain", "ffdm", "--patients", "3",
                     "--profile", "ci"]) == 2
    assert not (tmp_path / "odd" / "_SUCCESS.json").exists()


def _breast_median_auc(root: Path) -> float:
    """AUC of each view's median breast brightness (as the pipeline reads it) against the view's label."""
    from sklearn.metrics import roc_auc_score

    cohort = pd.read_csv(root / "cohort.csv").set_index("patient_id")
    medians, labels = [], []
    for path in sorted((root / "dicom").glob("*/*.dcm")):
        pixels = read_dicom(path).pixels.astype(np.float32)
        lo, hi = np.percentile(pixels, [1, 99.5])
        breast = pixels[pixels > lo + 0.1 * (hi - lo)]
        patient = cohort.loc[path.parent.name]
        medians.append(float(np.median(breast)))
        labels.append(int(patient["label"] == 1 and patient["cancer_laterality"] == path.stem.split("_")[0]))
    return float(roc_auc_score(labels, medians))


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_a_cancer_does_not_change_the_brightness_of_its_whole_image(domain, tmp_path):
    """The malignant masses are exaggerated for learnability (lesions.py); an automatic window that sees them
    darkened every image with a cancer (median breast brightness predicted the label with AUC 0.16 on ffdm
    and hospital): a global shortcut no real detector offers, which inverted models across domains."""
    synthesize_cohort(tmp_path, 40, domain, seed=11, image_shape=CI_SHAPE, workers=2)
    assert abs(_breast_median_auc(tmp_path) - 0.5) < 0.15
