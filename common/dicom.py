"""Reading one mammogram from DICOM into a display-ready 16-bit array plus the few tags the pipeline needs.

Everything downstream (orientation, resizing, the CNN, radiomics) assumes one intensity convention:
`uint16`, full 0..65535 range, dense tissue bright. Hospitals deliver MONOCHROME1 or MONOCHROME2, 10 to 16
stored bits, with or without a VOI window, so the conversion to that convention happens here, once:

1. decode (pydicom; the pylibjpeg plugins cover RLE, JPEG, JPEG-LS and JPEG 2000 transfer syntaxes),
2. keep only the `BitsStored` low bits (the rest are not pixel data, PS3.5 8.1.1),
3. modality LUT / rescale when present (MG rarely has one),
4. VOI LUT or window, only for images meant for presentation: a "FOR PROCESSING" image is raw detector
   signal whose window (if any) is not the vendor's display processing, so it is left linear,
5. map the resulting value range (the BitsStored range, or the VOI output range) onto 0..65535,
6. invert MONOCHROME1 so that dense tissue is bright. In MG/DX the Presentation LUT Shape is tied to the
   photometric interpretation (INVERSE with MONOCHROME1), so inverting once covers both.

Only matching data leaves this module: PatientID (to find the patient in the cohort), PatientAge,
laterality, view, pixel spacing and BurnedInAnnotation (whether text such as a name is written into the
pixels: figures must not show such an image). Names, dates, accession numbers and institutions are never copied.
pydicom's reading-validation warnings are switched off because they would echo raw header values
(possibly a name or birth date) into logs.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pydicom.config
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_voi

from common.artifacts import error_line

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

MAMMOGRAPHY_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "FOR PRESENTATION",  # Digital Mammography X-Ray Image Storage
    "1.2.840.10008.5.1.4.1.1.1.2.1": "FOR PROCESSING",
}
# Plain X-ray modalities some sites use for (computed-radiography) mammograms; accepted only when the body
# part says BREAST. Secondary Capture with modality MG (CBIS-DDSM) passes the MG rule.
BREAST_CAPABLE_MODALITIES = {"CR", "DX", "OT"}
VIEW_CODES = {  # ViewCodeSequence: SNOMED-RT and SNOMED CT codes for the two screening views
    "R-10242": "CC",
    "399162004": "CC",
    "R-10226": "MLO",
    "399368009": "MLO",
}
MIN_SIDE = 32

_LATERALITY_VIEW = re.compile(r"(?<![A-Z])(LEFT|RIGHT|L|R)[ _.\-]?(CC|MLO)(?![A-Z])")
_CBIS_PATIENT = re.compile(r"(?<![A-Z0-9])(P_\d{5})(?!\d)")
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


class DicomError(ValueError):
    """A file that cannot become a mammogram; the message is the one-line reason for rejected.csv."""


@dataclass(frozen=True)
class DicomImage:
    """One decoded mammogram. `pixels` is uint16, 0..65535, dense tissue bright (not yet oriented)."""

    pixels: np.ndarray | None
    laterality: str
    view: str
    pixel_spacing_mm: tuple[float, float] | None  # (row, column) spacing; None when the file does not say
    age_years: float | None
    patient_id: str  # header PatientID: for cohort matching only, never written to outputs
    photometric: str
    bits_stored: int
    voi_applied: bool
    burned_in_annotation: str = "UNKNOWN"  # YES or NO as the file states it; UNKNOWN when absent or other

    @property
    def patient_id_candidates(self) -> tuple[str, ...]:
        """Ids under which the cohort may know this patient: the PatientID itself, then the CBIS-DDSM id."""
        derived = cbis_patient_id(self.patient_id)
        return (self.patient_id,) if derived in (None, self.patient_id) else (self.patient_id, derived)


def read_dicom(path: str | Path, *, name_hint: str | None = None, with_pixels: bool = True) -> DicomImage:
    """Read a mammogram; raises DicomError with a one-line reason for anything unusable.

    Warnings raised while reading are kept out of the log (they can quote header values); an end-of-file
    warning means the file was cut short.

    `name_hint` (e.g. the path relative to the input root) is searched for laterality/view patterns when the
    tags are missing; it defaults to the file name. `with_pixels=False` checks everything but skips decoding.
    """
    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _read_dataset(path)
        if any("end of file" in str(w.message).lower() for w in caught):
            raise DicomError("truncated DICOM file (end of file inside a data element)")
        _check_modality(ds)
        _check_image_type(ds)
        laterality, view = _laterality_and_view(ds, name_hint if name_hint is not None else path.name)
        pixels, voi_applied = (_display_pixels(ds) if with_pixels else (None, False))
    return DicomImage(
        pixels=pixels,
        laterality=laterality,
        view=view,
        pixel_spacing_mm=_pixel_spacing(ds),
        age_years=parse_age(str(ds.get("PatientAge", "") or "")),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        photometric=str(ds.PhotometricInterpretation),
        bits_stored=int(ds.BitsStored),
        voi_applied=voi_applied,
        burned_in_annotation=burned_in_annotation(ds),
    )


def _read_dataset(path: Path) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path, defer_size="256 KB")
    except InvalidDicomError:
        raise DicomError("not a DICOM file (no DICM preamble/file meta header)") from None
    except PermissionError:
        raise DicomError("permission denied: the file cannot be read") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DicomError(f"unreadable DICOM header ({type(error).__name__}): truncated or corrupt file") from None
    if len(ds) == 0:
        raise DicomError("truncated or corrupt DICOM file (no data element could be read)")
    return ds


def burned_in_annotation(ds: pydicom.Dataset) -> str:
    """YES, NO, or UNKNOWN: an absent tag or a value outside the standard's two is not a promise of clean pixels."""
    value = _tag_text(ds, "BurnedInAnnotation")
    return value if value in ("YES", "NO") else "UNKNOWN"


def cbis_patient_id(text: str) -> str | None:
    """`Mass-Test_P_00173_LEFT_CC` -> `P_00173` (CBIS-DDSM puts the patient id inside PatientID and paths)."""
    match = _CBIS_PATIENT.search(text.upper())
    return match.group(1) if match else None


def parse_age(value: str) -> float | None:
    """DICOM Age String (`055Y`, `006M`, ...) in years; None when absent or malformed."""
    match = _AGE.match(value.strip().upper())
    if not match:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]


def laterality_view_from_text(text: str) -> tuple[str | None, str | None]:
    """Find `LEFT_CC`, `R_MLO`, `LCC`, `RIGHT-MLO` ... in a free-text field or path."""
    match = _LATERALITY_VIEW.search(text.upper())
    if not match:
        return None, None
    return match.group(1)[0], match.group(2)


def _check_modality(ds: pydicom.Dataset) -> None:
    modality = str(ds.get("Modality", "") or "").upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality == "MG" or sop_class in MAMMOGRAPHY_SOP_CLASSES:
        return
    body_part = str(ds.get("BodyPartExamined", "") or "").upper()
    if modality in BREAST_CAPABLE_MODALITIES and body_part == "BREAST":
        return
    raise DicomError(f"modality {modality or 'missing'} is not mammography (MG)")


def _check_image_type(ds: pydicom.Dataset) -> None:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError("DICOM without pixel data")
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise DicomError("float pixel data is not a mammogram")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"multi-frame image ({frames} frames, e.g. tomosynthesis) is not a 2D mammogram")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DicomError(f"colour image (SamplesPerPixel={ds.SamplesPerPixel}) is not a mammogram")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(f"photometric interpretation {photometric or 'missing'} is not MONOCHROME1/2")
    allocated, stored = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("BitsStored", 0) or 0)
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        raise DicomError(f"bit depth {stored}/{allocated} (stored/allocated) is not an 8- or 16-bit grey image")
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if min(rows, columns) < MIN_SIDE:
        raise DicomError(f"image of {rows}x{columns} pixels is too small for a mammogram")


def _laterality_and_view(ds: pydicom.Dataset, name_hint: str) -> tuple[str, str]:
    """Tags first; then PatientID, SeriesDescription and the file name (CBIS-DDSM has no ViewPosition)."""
    laterality = next(
        (v for v in (_tag_text(ds, "ImageLaterality"), _tag_text(ds, "Laterality")) if v in ("L", "R")), None
    )
    view = _tag_view(ds)
    for text in (_tag_text(ds, "PatientID"), _tag_text(ds, "SeriesDescription"), name_hint.upper()):
        if laterality and view:
            break
        found_laterality, found_view = laterality_view_from_text(text)
        laterality = laterality or found_laterality
        view = view or found_view
    if laterality is None:
        raise DicomError("laterality unknown (no ImageLaterality/Laterality tag or LEFT/RIGHT name pattern)")
    if view is None:
        raise DicomError("view unknown (no ViewPosition tag or CC/MLO name pattern)")
    return laterality, view


def _tag_view(ds: pydicom.Dataset) -> str | None:
    position = _tag_text(ds, "ViewPosition")
    if position:
        if position not in ("CC", "MLO"):
            raise DicomError(f"view {position} is not a screening view (CC or MLO)")
        return position
    for item in ds.get("ViewCodeSequence", None) or []:
        code = VIEW_CODES.get(str(item.get("CodeValue", "")))
        if code:
            return code
    orientation = _tag_text(ds, "PatientOrientation").replace("\\", "")
    return orientation if orientation in ("CC", "MLO") else None  # CBIS-DDSM stores the view here


def _tag_text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, None)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().upper()


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword, None)
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0:
            return row, column
    return None


def _is_for_presentation(ds: pydicom.Dataset) -> bool:
    intent = str(ds.get("PresentationIntentType", "") or "").upper()
    if intent:
        return intent == "FOR PRESENTATION"
    return MAMMOGRAPHY_SOP_CLASSES.get(str(ds.get("SOPClassUID", "")), "FOR PRESENTATION") == "FOR PRESENTATION"


def _display_pixels(ds: pydicom.Dataset) -> tuple[np.ndarray, bool]:
    try:
        raw = ds.pixel_array
    except Exception as error:  # decoders raise many types; the reason line is what matters
        raise DicomError(f"cannot decode pixel data: {error_line(error, 160)}") from None
    if raw.ndim != 2:
        raise DicomError(f"pixel array of shape {raw.shape} is not a single 2D image")
    bits = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if signed:
        stored = raw.astype(np.int64, copy=False)
    elif bits < 8 * raw.dtype.itemsize:
        stored = np.bitwise_and(raw, high, dtype=raw.dtype)
    else:
        stored = raw  # every allocated bit is pixel data: nothing to mask
    values, low, high = _modality_lut(stored, ds, low, high)
    unit = _voi(values, ds) if _is_for_presentation(ds) else None
    voi_applied = unit is not None
    monochrome1 = ds.PhotometricInterpretation == "MONOCHROME1"
    if unit is None and not signed and values is stored:
        return _stored_to_16_bit(stored, bits, monochrome1), voi_applied
    if unit is None and values.dtype.kind in "iu":
        # Signed or modality-LUT values: a linear rescale as a lookup table in exact integer arithmetic
        # (rounded half up), clipped because a LUT's entries may leave its nominal range.
        low, span = int(low), int(high - low)
        table = (np.arange(span + 1, dtype=np.int64) * 131070 + span) // (2 * span)
        table = (65535 - table if monochrome1 else table).astype(np.uint16)
        index = values if low == 0 else values.astype(np.int64) - low
        return table[np.clip(index, 0, span)], voi_applied
    if unit is None:
        unit = (values.astype(np.float32) - np.float32(low)) * np.float32(1.0 / (high - low))
    np.clip(unit, 0.0, 1.0, out=unit)
    if monochrome1:
        np.subtract(np.float32(1.0), unit, out=unit)
    return np.rint(unit * np.float32(65535.0)).astype(np.uint16), voi_applied


def _stored_to_16_bit(stored: np.ndarray, bits: int, monochrome1: bool) -> np.ndarray:
    """Unsigned stored values 0..2**bits-1 onto 0..65535 as round(v * 65535 / (2**bits - 1)), with no table.

    This is the per-pixel cost of every file, so it avoids a 2**bits table gather: 16 bits is the identity
    (all of CBIS-DDSM), MONOCHROME1 one subtraction. Other depths use OpenCV's scaled multiply (double
    precision scale, rounding to nearest), 2-5x faster than the gather and still exact: no value lies on a
    tie (v * 65535 / (2**bits - 1) = k + 1/2 would make 2 * v * 65535, an even number, equal an odd one)
    and each is at least 1 / (2**17 - 2) away from one, far above the rounding error. Bit replication, the
    usual shortcut, matches only at 1, 2, 4, 8 and 16 bits. tests/test_dicom.py checks every value of every
    depth against the exact integer formula.
    """
    scaled = stored if bits == 16 else cv2.multiply(stored, 65535 / (2**bits - 1), dtype=cv2.CV_16U)
    return 65535 - scaled if monochrome1 else scaled


def _modality_lut(values: np.ndarray, ds: pydicom.Dataset, low: float, high: float):
    """Rescale slope/intercept or a modality LUT; returns values and their new nominal range."""
    sequence = ds.get("ModalityLUTSequence", None)
    if sequence:
        item = sequence[0]
        entries, first, lut_bits = (int(v) for v in item.LUTDescriptor)
        lut = np.asarray(item.LUTData, dtype=np.int64)
        index = np.clip(values.astype(np.int64) - first, 0, (entries or 65536) - 1)
        return lut[np.minimum(index, lut.size - 1)], 0, 2**lut_bits - 1
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return values, low, high
    a, b = low * slope + intercept, high * slope + intercept
    return values.astype(np.float32) * np.float32(slope) + np.float32(intercept), min(a, b), max(a, b)


def _voi(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """VOI LUT (preferred, as in PS3.3 C.11.2) or window as float32 in [0, 1]; None when the file has none."""
    sequence = ds.get("VOILUTSequence", None)
    if sequence:
        lut_bits = int(sequence[0].LUTDescriptor[2])
        mapped = apply_voi(np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values, ds)
        return mapped.astype(np.float32) * np.float32(1.0 / (2**lut_bits - 1))
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = (float(_first(ds[k].value)) for k in ("WindowCenter", "WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    x = values.astype(np.float32)
    if function == "SIGMOID":
        if width <= 0:
            raise DicomError(f"window width {width} is not positive")
        return 1.0 / (1.0 + np.exp(np.float32(-4.0 / width) * (x - np.float32(center))))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise DicomError(f"window width {width} is not positive")
        return (x - np.float32(center)) * np.float32(1.0 / width) + np.float32(0.5)
    if function != "LINEAR":
        raise DicomError(f"VOI LUT function {function} is not supported")
    if width < 1:
        raise DicomError(f"window width {width} is below 1")
    # PS3.3 C.11.2.1.2.1: ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to the output range by the caller.
    return (x - np.float32(center - 0.5)) * np.float32(1.0 / max(width - 1.0, 1e-6)) + np.float32(0.5)


def _first(value):
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value
