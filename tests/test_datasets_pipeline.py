"""One command from public-dataset downloads to a report: `mammo pipeline run --profile ci` with the film
source given as CBIS-DDSM (case-description CSVs, TCIA layout, official split), the FFDM source as INbreast
(its sheet), and a target cohort with no ages and no case-control pairs.

The images are synthetic (the ci profile's three domains), re-labelled and laid out in each dataset's own
format; what is under test is that every step accepts such cohorts. Slow: it trains the ci models.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from helpers import MAMMO

from common.cohort import image_label
from common.profile import load_profile
from common.synth import synthesize_cohort

ROOT = Path(__file__).resolve().parents[1]
VIEWS = [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
SIDES = {"L": "LEFT", "R": "RIGHT"}
TABLE9 = ("baseline", "baseline+radiomics", "finetune-config1", "finetune-config2")
CBIS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]


def synthetic(root: Path, domain: str, seed: int) -> tuple[Path, pd.DataFrame]:
    synth = load_profile("ci").synth
    out = root / f"synth-{domain}"
    size = (synth.size.height, synth.size.width)
    synthesize_cohort(out, synth.patients[domain], domain, seed, size, workers=2)
    return out, pd.read_csv(out / "cohort.csv", dtype={"patient_id": str}, keep_default_na=False)


def without_age(source: Path, target: Path, patient_tag: str | None = None) -> None:
    ds = pydicom.dcmread(source)
    del ds.PatientAge
    if patient_tag:
        ds.PatientID = patient_tag
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)


def cbis_download(root: Path) -> tuple[Path, Path, set[str]]:
    source, cohort = synthetic(root, "film", 11)
    top, meta = root / "CBIS-DDSM", root / "cbis-metadata"
    meta.mkdir()
    rows = {"Training": [], "Test": []}
    official_test = set()
    for number, row in enumerate(cohort.itertuples()):
        patient, subset = f"P_{number + 1:05d}", "Test" if number % 5 in (0, 1) else "Training"
        if subset == "Test":
            official_test.add(patient)
        for side, view in VIEWS:
            tag = f"Mass-{subset}_{patient}_{SIDES[side]}_{view}"
            target = top / tag / "07-20-2016-DDSM-NA-1" / "1.000000-full mammogram images-1" / "1-1.dcm"
            without_age(source / "dicom" / row.patient_id / f"{side}_{view}.dcm", target, tag)
            malignant = image_label(int(row.label), row.cancer_laterality, side)
            rows[subset].append([patient, 2, SIDES[side], view, 1, "mass", "OVAL", "CIRCUMSCRIBED", 4,
                                 "MALIGNANT" if malignant else "BENIGN_WITHOUT_CALLBACK", 3,
                                 f"{tag}/1.3.6/1.3.6.1/000000.dcm\n", "", ""])
    for subset, name in (("Training", "train"), ("Test", "test")):
        with open(meta / f"mass_case_description_{name}_set.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([CBIS_HEADER, *rows[subset]])
    return meta, top, official_test


def inbreast_download(root: Path) -> tuple[Path, Path]:
    source, cohort = synthetic(root, "ffdm", 23)
    folder, sheet = root / "INbreast" / "AllDICOMs", root / "INbreast" / "INbreast.csv"
    folder.mkdir(parents=True)
    rows = [["Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads"]]
    for number, row in enumerate(cohort.itertuples()):
        for index, (side, view) in enumerate(VIEWS):
            name = str(50000000 + 4 * number + index)
            shutil.copy(source / "dicom" / row.patient_id / f"{side}_{view}.dcm",
                        folder / f"{name}_{number:016x}_MG_{side}_{view}_ANON.dcm")
            positive = image_label(int(row.label), row.cancer_laterality, side)
            rows.append(["removed", "removed", side, view, "201001", name, "2", "5" if positive else "1"])
    with open(sheet, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return sheet, folder


def hospital_without_ages_or_pairs(root: Path) -> tuple[Path, Path]:
    source, cohort = synthetic(root, "hospital", 37)
    dicom = root / "hospital" / "dicom"
    for path in sorted((source / "dicom").rglob("*.dcm")):
        without_age(path, dicom / path.relative_to(source / "dicom"))
    cohort = cohort.assign(age="", pair_id="")
    cohort.to_csv(root / "hospital" / "cohort.csv", index=False)
    return dicom, root / "hospital" / "cohort.csv"


@pytest.mark.slow
def test_public_sources_and_an_unpaired_ageless_target_reach_a_report(tmp_path):
    meta, cbis, official_test = cbis_download(tmp_path)
    sheet, inbreast = inbreast_download(tmp_path)
    dicom, cohort = hospital_without_ages_or_pairs(tmp_path)
    workdir = tmp_path / "work"
    command = [*MAMMO, "pipeline", "run", "--profile", "ci", "--workdir", str(workdir),
               "--film", f"cbis-ddsm:{meta}:{cbis}", "--ffdm", f"inbreast:{sheet}:{inbreast}",
               "--dicom", str(dicom), "--cohort", str(cohort)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    summary = json.loads((workdir / "report" / "summary.json").read_text())
    for row in TABLE9:
        entry = summary["models"][row]
        assert math.isfinite(entry["auc"]) and entry["threshold_source"] == "validation-gmean", row
    split = pd.read_csv(workdir / "split-hospital" / "split.csv", dtype=str, keep_default_na=False)
    assert set(split["age_stratum"]) == {"unknown"} and (split["pair_id"] == "").all()
    film = pd.read_csv(workdir / "split-film" / "split.csv", dtype=str, keep_default_na=False)
    assert set(film.loc[film["split"] == "test", "patient_id"]) == official_test  # the official test set, whole
    vectors = pd.read_csv(workdir / "radiomics" / "patient_vectors.csv")
    assert vectors["age"].nunique() == 1 and vectors["imputed"].str.contains("age:none in training").all()
