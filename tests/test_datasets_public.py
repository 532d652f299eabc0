"""INbreast, CMMD and VinDr-Mammo adapters on metadata written in each publisher's format, with matching MG
DICOMs from the synthetic writer (common.synth) laid out as each download lays them out, through preprocess
and split; and bad metadata: one-line reasons and rejected.csv rows, never a traceback."""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers import MAMMO

from common.cohort import image_label
from common.synth import synthesize_cohort

ROOT = Path(__file__).resolve().parents[1]
VIEWS = [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]


def mammo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MAMMO, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """8 synthetic FFDM patients (4 cases): dicom/<pid>/<L|R>_<CC|MLO>.dcm, cohort.csv with the truth."""
    out = tmp_path_factory.mktemp("synthetic")
    synthesize_cohort(out, 8, "ffdm", seed=5, image_shape=(320, 256), workers=1)
    cohort = pd.read_csv(out / "cohort.csv", dtype={"patient_id": str}, keep_default_na=False)
    truth = {(r.patient_id, side, view): image_label(int(r.label), r.cancer_laterality, side)
             for r in cohort.itertuples() for side, view in VIEWS}
    return out, cohort, truth


def preprocess_and_split(cohort_dir: Path, dicom_root: Path, tmp_path: Path, *split_args: str) -> pd.DataFrame:
    pre, split = tmp_path / "pre", tmp_path / "split"
    result = mammo("preprocess", "--input", dicom_root, "--cohort", cohort_dir / "cohort.csv", "--image-table",
                   cohort_dir / "image_table.csv", "--out", pre, "--profile", "ci", "--workers", "1")
    assert result.returncode == 0, result.stderr
    result = mammo("split", "--cohort", cohort_dir / "cohort.csv", "--out", split, "--profile", "ci", *split_args)
    assert result.returncode == 0, result.stderr
    images = pd.read_csv(pre / "images.csv", dtype={"patient_id": str})
    table = pd.read_csv(cohort_dir / "image_table.csv", dtype={"patient_id": str})
    assert sorted(images["source_file"]) == sorted(table["file"])
    merged = images.merge(table, left_on="source_file", right_on="file", suffixes=("", "_table"))
    assert (merged["label"] == merged["label_table"]).all()
    assert (merged["patient_id"] == merged["patient_id_table"]).all()
    splits = pd.read_csv(split / "split.csv", dtype={"patient_id": str})
    assert set(splits["patient_id"]) == set(images["patient_id"])
    return splits


# ---------------------------------------------------------------- INbreast
INBREAST_HEADER = ["Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads"]


def inbreast_download(synthetic, root: Path):
    """AllDICOMs/<File Name>_<hash>_MG_<side>_<view>_ANON.dcm and INbreast.xls rows (BI-RADS from the truth)."""
    source, cohort, truth = synthetic
    folder = root / "AllDICOMs"
    folder.mkdir(parents=True)
    rows, expected = [], {}
    for number, (pid, side, view) in enumerate(sorted(truth)):
        name = str(22678000 + number)
        target = folder / f"{name}_{short_hash(pid)}_MG_{side}_{view}_ANON.dcm"
        shutil.copy(source / "dicom" / pid / f"{side}_{view}.dcm", target)
        positive = truth[(pid, side, view)]
        birads = "4c" if positive else ("3" if number % 5 == 0 else "2")
        rows.append(["removed", "removed", side, view, "201001", name, "2", birads])
        expected[name] = (short_hash(pid), positive, birads)
    return folder, rows, expected


def test_inbreast_csv_export_labels_by_birads_and_runs_through_preprocess_and_split(synthetic, tmp_path):
    folder, rows, expected = inbreast_download(synthetic, tmp_path)
    sheet = tmp_path / "INbreast.csv"
    with open(sheet, "w", newline="") as handle:  # a European spreadsheet's CSV export: ';' separated
        writer = csv.writer(handle, delimiter=";")
        writer.writerows([INBREAST_HEADER, *rows, [""] * len(INBREAST_HEADER)])
    out = tmp_path / "cohort"
    result = mammo("cohort", "inbreast", "--metadata", sheet, "--dicom", folder, "--out", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "image_table.csv", dtype={"patient_id": str})
    assert len(table) == len(expected)
    for row in table.itertuples():
        name = Path(row.file).name.split("_")[0]
        patient, positive, birads = expected[name]
        assert row.patient_id == patient and row.label == int(birads[0] in "456")  # BI-RADS 3 -> negative
        assert row.label == positive
    assert pd.read_csv(out / "rejected.csv").empty
    splits = preprocess_and_split(out, folder, tmp_path)
    assert len(splits) == 8


def test_inbreast_xls_and_birads3_exclude(synthetic, tmp_path):
    xlwt = pytest.importorskip("xlwt")
    folder, rows, expected = inbreast_download(synthetic, tmp_path)
    book = xlwt.Workbook()
    page = book.add_sheet("INbreast")
    for r, values in enumerate([INBREAST_HEADER, *rows]):
        for c, value in enumerate(values):
            page.write(r, c, float(value) if c == 5 and r else value)  # File Name stored as a number
    book.save(str(tmp_path / "INbreast.xls"))
    out = tmp_path / "cohort"
    result = mammo("cohort", "inbreast", "--metadata", tmp_path / "INbreast.xls", "--dicom", folder, "--out", out,
                   "--birads3", "exclude")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "image_table.csv")
    threes = {name for name, (_, _, birads) in expected.items() if birads == "3"}
    assert threes and len(table) == len(expected) - len(threes)
    rejected = pd.read_csv(out / "rejected.csv")
    assert sorted(Path(f).name.split("_")[0] for f in rejected["item"]) == sorted(threes)
    assert rejected["reason"].str.contains("BI-RADS 3").all()


# ---------------------------------------------------------------- CMMD
def test_cmmd_clinical_sheet_labels_each_breast_and_rejects_unlabelled_breasts(synthetic, tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    source, cohort, truth = synthetic
    top = tmp_path / "CMMD"
    book = openpyxl.Workbook()
    page = book.active
    page.append(["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"])
    labelled = {}
    for number, row in enumerate(cohort.itertuples()):
        series = top / row.patient_id / f"07-18-2010-NA-NA-{79000 + number}" / f"1.000000-NA-{70000 + number}"
        series.mkdir(parents=True)
        for image, (side, view) in enumerate(VIEWS, start=1):
            shutil.copy(source / "dicom" / row.patient_id / f"{side}_{view}.dcm", series / f"1-{image}.dcm")
        side = row.cancer_laterality if row.label else "L"  # controls: one examined (benign) breast
        page.append([row.patient_id, side, int(row.age), 2, "mass", "Malignant" if row.label else "Benign", ""])
        labelled[(row.patient_id, side)] = int(row.label)
    book.save(tmp_path / "CMMD_clinicaldata_revision.xlsx")
    out = tmp_path / "cohort"
    result = mammo("cohort", "cmmd", "--metadata", tmp_path / "CMMD_clinicaldata_revision.xlsx", "--dicom", top,
                   "--out", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "image_table.csv", dtype={"patient_id": str})
    assert len(table) == 2 * len(labelled)
    assert all(labelled[(r.patient_id, r.laterality)] == r.label for r in table.itertuples())
    rejected = pd.read_csv(out / "rejected.csv")
    assert len(rejected) == 4 * len(cohort) - len(table)
    assert rejected["reason"].eq("breast not in the clinical sheet (unlabelled)").all()
    ages = pd.read_csv(out / "cohort.csv", dtype={"patient_id": str}).set_index("patient_id")["age"]
    assert dict(ages) == dict(zip(cohort["patient_id"], cohort["age"].astype(float), strict=True))
    preprocess_and_split(out, top, tmp_path)


# ---------------------------------------------------------------- VinDr-Mammo
def test_vindr_breast_level_annotations_with_official_split(synthetic, tmp_path):
    source, cohort, truth = synthetic
    images_dir = tmp_path / "images"
    breast_rows, finding_rows, expected = [], [], {}
    for number, row in enumerate(cohort.itertuples()):
        study = short_hash(row.patient_id)
        (images_dir / study).mkdir(parents=True)
        split = "test" if number % 4 == 0 else "training"
        for side, view in VIEWS:
            image_id = short_hash(f"{row.patient_id}{side}{view}")
            target = images_dir / study / f"{image_id}.dicom"
            shutil.copy(source / "dicom" / row.patient_id / f"{side}_{view}.dcm", target)
            positive = truth[(row.patient_id, side, view)]
            birads = "BI-RADS 5" if positive else "BI-RADS 1"
            breast_rows.append([study, short_hash(study), image_id, side, view, 320, 256, birads, "DENSITY C", split])
            if positive:
                finding_rows.append([study, short_hash(study), image_id, side, view, 320, 256, birads, "DENSITY C",
                                     "['Mass']", "BI-RADS 5", 10, 10, 50, 50, split])
            expected[image_id] = (study, positive, "train" if split == "training" else "test")
    meta = tmp_path / "meta"
    meta.mkdir()
    header = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads",
              "breast_density", "split"]
    pd.DataFrame(breast_rows, columns=header).to_csv(meta / "breast-level_annotations.csv", index=False)
    pd.DataFrame(finding_rows, columns=[*header[:-1], "finding_categories", "finding_birads", "xmin", "ymin", "xmax",
                                        "ymax", "split"]).to_csv(meta / "finding_annotations.csv", index=False)
    out = tmp_path / "cohort"
    result = mammo("cohort", "vindr-mammo", "--metadata", meta, "--dicom", images_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "image_table.csv", dtype={"patient_id": str})
    assert len(table) == len(expected)
    for row in table.itertuples():
        study, positive, split = expected[Path(row.file).stem]
        assert (row.patient_id, row.label, row.split) == (study, positive, split)
        assert ("findings: Mass" in row.source_label) == bool(positive)
    splits = preprocess_and_split(out, images_dir, tmp_path, "--fixed")
    official = {study: split for study, _, split in expected.values()}
    assert all((official[r.patient_id] == "test") == (r.split == "test") for r in splits.itertuples())
    assert {"train", "validation"} <= set(splits.loc[splits["split"] != "test", "split"])


# ---------------------------------------------------------------- bad metadata
CBIS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]


def cbis_row(patient, side, view, abnormality, pathology):
    return [patient, 2, side, view, abnormality, "mass", "OVAL", "CIRCUMSCRIBED", 3, pathology, 3,
            f"Mass-Training_{patient}_{side}_{view}/1.2.3/1.2.3.4/000000.dcm\n", "", ""]


def test_bad_cbis_metadata_becomes_rejected_rows_not_a_traceback(tmp_path, mg_dicom):
    top = tmp_path / "CBIS-DDSM"
    for patient, side, view, suffix in [("P_00001", "LEFT", "CC", ""), ("P_00001", "LEFT", "MLO", ""),
                                        ("P_00002", "RIGHT", "CC", ""), ("P_00003", "LEFT", "CC", ""),
                                        ("P_00001", "LEFT", "CC", "_1")]:
        tag = f"Mass-Training_{patient}_{side}_{view}{suffix}"
        mg_dicom(top / tag / "07-20-2016-DDSM-NA-1" / "1.000000-x-1" / "1-1.dcm", PatientID=tag,
                 ImageLaterality=side[0], ViewPosition=view)
    rows = [
        cbis_row("P_00001", "LEFT", "CC", 1, "MALIGNANT"),    # good
        cbis_row("P_00001", "LEFT", "MLO", 1, "MALIGNANT"),   # listed twice (same abnormality id) ...
        cbis_row("P_00001", "LEFT", "MLO", 1, "MALIGNANT"),   # ... so both rows and the image are rejected
        cbis_row("P_00002", "RIGHT", "CC", 1, "UNPROVEN"),    # unknown pathology
        cbis_row("P_00009", "LEFT", "CC", 1, "BENIGN"),       # row without an image
    ]                                                         # P_00003 LEFT CC: image without a row
    meta = tmp_path / "mass_case_description_train_set.csv"
    with open(meta, "w", newline="") as handle:
        csv.writer(handle).writerows([CBIS_HEADER, *rows])
    out = tmp_path / "cohort"
    result = mammo("cohort", "cbis-ddsm", "--metadata", meta, "--dicom", top, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    table = pd.read_csv(out / "image_table.csv", dtype={"patient_id": str})
    assert list(table["patient_id"]) == ["P_00001"] and list(table["label"]) == [1]
    rejected = pd.read_csv(out / "rejected.csv").set_index("item")["reason"]
    where = "mass_case_description_train_set.csv line "
    assert "listed twice" in rejected[where + "3"] and "listed twice" in rejected[where + "4"]
    assert "unknown pathology 'UNPROVEN'" in rejected[where + "5"]
    assert "no DICOM file" in rejected[where + "6"]
    by_file = {Path(item).parts[0]: reason for item, reason in rejected.items() if item.endswith(".dcm")}
    assert "no case-description row" in by_file["Mass-Training_P_00003_LEFT_CC"]
    assert "rejected" in by_file["Mass-Training_P_00002_RIGHT_CC"]
    assert "rejected" in by_file["Mass-Training_P_00001_LEFT_MLO"]
    assert "ROI mask" in by_file["Mass-Training_P_00001_LEFT_CC_1"]

    # A missing column is unusable input: exit 2 and one line naming it.
    pd.read_csv(meta).drop(columns="pathology").to_csv(meta, index=False)
    result = mammo("cohort", "cbis-ddsm", "--metadata", meta, "--dicom", top, "--out", tmp_path / "again")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    reason = [line for line in result.stderr.splitlines() if "missing column" in line]
    assert len(reason) == 1 and "pathology" in reason[0]


@pytest.mark.parametrize("dataset,content", [
    ("inbreast", "File Name;Laterality;View\n1;L;CC\n"),            # no Bi-Rads column
    ("cmmd", "ID1,Age,classification\nD1-0001,50,Benign\n"),        # no LeftRight column
    ("vindr-mammo", b"\x00\x01\x02 not a sheet \xff\xfe"),           # unreadable
])
def test_missing_column_or_unreadable_sheet_is_one_line_exit_2(tmp_path, mg_dicom, dataset, content):
    mg_dicom(tmp_path / "dicom" / "a.dcm")
    sheet = tmp_path / ("breast-level_annotations.csv" if dataset == "vindr-mammo" else "sheet.csv")
    sheet.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = mammo("cohort", dataset, "--metadata", sheet, "--dicom", tmp_path / "dicom", "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("mammo cohort:") and "s" != line[-1]]
    assert len(lines) == 1 and sheet.name in lines[0]


def test_registry_agrees_with_the_adapters():
    from common.datasets import DATASETS, OFFICIAL_SPLIT, adapter

    assert {name for name in DATASETS if adapter(name).OFFICIAL_SPLIT} == OFFICIAL_SPLIT
    assert all(adapter(name).NAME == name for name in DATASETS)


def test_pipeline_takes_a_profile_yaml_file_and_passes_it_to_every_task(tmp_path):
    custom = tmp_path / "my-ci.yaml"
    custom.write_text((ROOT / "common" / "profiles" / "ci.yaml").read_text().replace("seed: 42", "seed: 7"))
    result = mammo("pipeline", "plan", "--profile", custom, "--workdir", tmp_path / "w")
    assert result.returncode == 0, result.stderr
    from common import pipeline

    plan = pipeline.tasks("synthetic", str(custom))
    assert all(t.argv(tmp_path)[t.argv(tmp_path).index("--profile") + 1] == str(custom) for t in plan
               if "--profile" in t.argv(tmp_path))
    broken = tmp_path / "broken.yaml"
    broken.write_text("image: [unclosed\n")
    result = mammo("pipeline", "plan", "--profile", broken, "--workdir", tmp_path / "w")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_shared_cohort_rules_merge_duplicate_views_and_keep_official_test_whole(tmp_path):
    """CBIS-DDSM lists some mammograms in both its mass and calc collections (two files, one view), and a patient
    can appear in an official training and test list; the cohort must hold one image per view and one subset."""
    from common.datasets.assemble import Assembly, write_cohort

    images = pd.DataFrame([
        # file, patient, side, view, label, split, age, source
        ("Calc-Test_P_1_LEFT_CC/1-1.dcm", "P_1", "L", "CC", 1, "test", float("nan"), "MALIGNANT"),
        ("Mass-Training_P_1_LEFT_CC/1-1.dcm", "P_1", "L", "CC", 0, "train", float("nan"), "BENIGN"),
        ("Mass-Training_P_1_LEFT_MLO/1-1.dcm", "P_1", "L", "MLO", 0, "train", float("nan"), "BENIGN"),
        ("Mass-Training_P_2_RIGHT_CC/1-1.dcm", "P_2", "R", "CC", 0, "train", 50.0, "BENIGN"),
    ], columns=["file", "patient_id", "laterality", "view", "label", "split", "age", "source_label"])
    counts = write_cohort(Assembly(images), tmp_path)
    table = pd.read_csv(tmp_path / "image_table.csv")
    assert list(table["file"]) == ["Calc-Test_P_1_LEFT_CC/1-1.dcm", "Mass-Training_P_1_LEFT_MLO/1-1.dcm",
                                   "Mass-Training_P_2_RIGHT_CC/1-1.dcm"]
    assert list(table["label"]) == [1, 0, 0] and list(table["split"]) == ["test", "test", "train"]
    cohort = pd.read_csv(tmp_path / "cohort.csv", dtype=str, keep_default_na=False).set_index("patient_id")
    assert cohort.loc["P_1"].to_dict() == {"age": "", "label": "1", "pair_id": "", "cancer_laterality": "L",
                                           "split": "test"}
    assert cohort.loc["P_2", "age"] == "50" and cohort.loc["P_2", "split"] == "train"
    rejected = pd.read_csv(tmp_path / "rejected.csv")
    assert list(rejected["item"]) == ["Mass-Training_P_1_LEFT_CC/1-1.dcm"]
    assert counts["merged_duplicate_views"] == 1 and counts["patients_moved_to_test"] == 1
