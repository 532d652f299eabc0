"""Digital Mammography X-Ray Image (For Presentation) objects for synthetic views.

Orientation follows the DICOM/IHE mammography convention seen in real archives (and in the CBIS-DDSM
files): a left breast is stored with the chest wall on the left of the pixel matrix, a right breast with
the chest wall on the right; the top of the image is lateral (CC) or superior (MLO). PatientOrientation
states it: rows run towards anterior (A) for left and posterior (P) for right breasts. UIDs are derived
from the cohort seed so the same seed writes byte-identical files. No identifying data: PatientName is
empty, no birth date, institution or accession number.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from common.synth.domains import Domain, Rendering

MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}
STUDY_DATE = "20240101"


@dataclass(frozen=True)
class ViewIdentity:
    patient_id: str
    age: int
    laterality: str
    view: str
    seed: int
    domain: Domain

    def uid(self, *parts: str) -> str:
        return generate_uid(entropy_srcs=["mammo-synth", str(self.seed), self.domain.name, self.patient_id, *parts])


def mammogram_bytes(identity: ViewIdentity, rendering: Rendering, spacing_mm: float) -> bytes:
    domain = identity.domain
    rows, columns = rendering.pixels.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(MAMMOGRAPHY_FOR_PRESENTATION)
    sop_uid = identity.uid("image", identity.laterality, identity.view)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds.SOPClassUID = MAMMOGRAPHY_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = identity.uid("study")
    ds.SeriesInstanceUID = identity.uid("series", identity.laterality, identity.view)
    ds.FrameOfReferenceUID = identity.uid("frame", identity.laterality)
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1 + ["LCC", "RCC", "LMLO", "RMLO"].index(identity.laterality + identity.view)
    ds.BodyPartExamined = "BREAST"

    ds.PatientName = ""
    ds.PatientID = identity.patient_id
    ds.PatientSex = "F"
    ds.PatientAge = f"{identity.age:03d}Y"

    ds.Manufacturer = domain.manufacturer
    ds.ManufacturerModelName = domain.model_name
    ds.DetectorType = domain.detector_type
    ds.ImagerPixelSpacing = [round(spacing_mm, 6)] * 2
    ds.PixelSpacing = [round(spacing_mm, 6)] * 2
    ds.Laterality = identity.laterality
    ds.ImageLaterality = identity.laterality
    ds.ViewPosition = identity.view
    ds.PatientOrientation = ORIENTATION[(identity.laterality, identity.view)]
    code, meaning = VIEW_CODES[identity.view]
    view_code = Dataset()
    view_code.CodeValue, view_code.CodingSchemeDesignator, view_code.CodeMeaning = code, "SCT", meaning
    ds.ViewCodeSequence = [view_code]
    ds.BurnedInAnnotation = "YES" if rendering.burned_in else "NO"

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = domain.photometric
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = 16
    ds.BitsStored = domain.bits_stored
    ds.HighBit = domain.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if domain.photometric == "MONOCHROME1" else -1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    if rendering.window is not None:
        ds.WindowCenter, ds.WindowWidth = rendering.window
        ds.VOILUTFunction = "LINEAR"
    ds.PixelData = np.ascontiguousarray(rendering.pixels, dtype="<u2").tobytes()

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
