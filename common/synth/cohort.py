"""A synthetic cohort on disk: four DICOM views per patient, cohort.csv and lesions.csv.

Patients are independent given the seed, so they are generated in a process pool (one patient per
task) and the tables are assembled in patient order afterwards: the output does not depend on the
number of workers. Lesion positions are written in the stored pixel frame (right breasts mirrored),
as fractions of the image: center_x = column / width, center_y = row / height, radius = radius / width.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from common.artifacts import atomic_write_bytes, atomic_write_csv
from common.progress import progress_bar
from common.synth.anatomy import SIDES, VIEWS, ViewPhantom, build_view, sample_breast
from common.synth.dicom_writer import ViewIdentity, mammogram_bytes
from common.synth.domains import DOMAINS, Domain, render
from common.synth.lesions import LesionImage, add_lesion, sample_lesions
from common.synth.population import Patient, make_patient

COHORT_COLUMNS = ["patient_id", "age", "label", "pair_id", "cancer_laterality"]
SPAWN = multiprocessing.get_context("spawn")  # the CLI process may hold TensorFlow's threads: never fork it
LESION_COLUMNS = ["patient_id", "laterality", "view", "lesion_id", "kind", "malignant",
                  "center_x", "center_y", "radius", "radius_mm"]


@dataclass
class View:
    """One rendered view with its ground truth (canonical phantom kept for tests and previews)."""

    laterality: str
    view: str
    phantom: ViewPhantom
    lesions: list[LesionImage]
    dicom: bytes
    pixels: np.ndarray  # stored values, stored orientation


def render_patient(patient: Patient, domain: Domain, seed: int, image_shape: tuple[int, int]) -> list[View]:
    """All four views of one patient; identical for identical (seed, domain, index, image shape)."""
    rows, columns = image_shape
    spacing = domain.spacing_mm(rows)
    field = (rows * spacing, columns * spacing)
    lesions = sample_lesions(patient)
    views = []
    for side in SIDES:
        breast = sample_breast(patient, side, field)
        for view in VIEWS:
            phantom = build_view(patient, breast, view, image_shape, spacing)
            view_rng = patient.stream(5, SIDES.index(side), VIEWS.index(view))
            tissue = phantom.attenuation.copy()
            placed = [add_lesion(phantom, lesion, view_rng) for lesion in lesions if lesion.side == side]
            attenuation, mask = phantom.attenuation, phantom.mask
            findings = attenuation > tissue
            if side == "R":  # stored with the chest wall on the right (see dicom_writer)
                attenuation, mask, findings = attenuation[:, ::-1], mask[:, ::-1], findings[:, ::-1]
            rendering = render(domain, np.ascontiguousarray(attenuation), np.ascontiguousarray(mask), spacing,
                               patient.stream(6, SIDES.index(side), VIEWS.index(view)), side + view,
                               chest_wall_left=side == "L", findings=np.ascontiguousarray(findings))
            identity = ViewIdentity(patient.patient_id, patient.age, side, view, seed, domain)
            views.append(View(side, view, phantom, placed, mammogram_bytes(identity, rendering, spacing),
                              rendering.pixels))
    return views


def lesion_rows(patient: Patient, views: list[View], image_shape: tuple[int, int]) -> list[dict[str, Any]]:
    rows, columns = image_shape
    table = []
    for view in views:
        for placed in view.lesions:
            x = columns - 1 - placed.x if view.laterality == "R" else placed.x
            table.append({
                "patient_id": patient.patient_id,
                "laterality": view.laterality,
                "view": view.view,
                "lesion_id": placed.lesion.lesion_id,
                "kind": placed.lesion.kind,
                "malignant": int(placed.lesion.malignant),
                "center_x": round((x + 0.5) / columns, 5),
                "center_y": round((placed.y + 0.5) / rows, 5),
                "radius": round(placed.radius / columns, 5),
                "radius_mm": round(placed.lesion.radius_mm, 2),
            })
    return table


def cohort_row(patient: Patient) -> dict[str, Any]:
    return {
        "patient_id": patient.patient_id,
        "age": patient.age,
        "label": patient.label,
        "pair_id": patient.pair_id,
        "cancer_laterality": patient.cancer_laterality,
    }


def _single_threaded() -> None:
    """Pool initialiser: one patient per process, so OpenCV's own threads would only oversubscribe the cores."""
    cv2.setNumThreads(1)


def _write_patient(index: int, out: Path, domain_name: str, seed: int, image_shape: tuple[int, int]) -> tuple:
    patient = make_patient(seed, domain_name, index)
    views = render_patient(patient, DOMAINS[domain_name], seed, image_shape)
    for view in views:
        atomic_write_bytes(out / "dicom" / patient.patient_id / f"{view.laterality}_{view.view}.dcm", view.dicom)
    return cohort_row(patient), lesion_rows(patient, views, image_shape)


def synthesize_cohort(
    out: str | Path,
    patients: int,
    domain: str,
    seed: int,
    image_shape: tuple[int, int],
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, int]:
    """Write `dicom/<patient_id>/<L|R>_<CC|MLO>.dcm`, `cohort.csv` and `lesions.csv` under `out`."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}: use one of {', '.join(DOMAINS)}")
    if patients < 2 or patients % 2:
        raise ValueError(f"--patients must be an even number >= 2 (case-control pairs), got {patients}")
    out = Path(out)
    shutil.rmtree(out / "dicom", ignore_errors=True)  # a re-run must not leave patients of an older cohort
    shape = (int(image_shape[0]), int(image_shape[1]))
    task = partial(_write_patient, out=out, domain_name=domain, seed=seed, image_shape=shape)
    workers = min(workers or os.cpu_count() or 1, patients)
    results = []
    with (
        progress_bar(patients, f"synth {domain}", "patient", enabled=progress) as bar,
        ProcessPoolExecutor(workers, SPAWN, initializer=_single_threaded) if workers > 1 else nullcontext() as pool,
    ):
        for result in (pool.map if pool else map)(task, range(patients)):
            results.append(result)
            bar.update()
    cohort = pd.DataFrame([row for row, _ in results], columns=COHORT_COLUMNS)
    lesions = pd.DataFrame([row for _, rows in results for row in rows], columns=LESION_COLUMNS)
    atomic_write_csv(out / "cohort.csv", cohort)
    atomic_write_csv(out / "lesions.csv", lesions)
    return {
        "patients": patients,
        "images": 4 * patients,
        "cases": int(cohort["label"].sum()),
        "malignant_lesions": int(lesions.loc[lesions["view"] == "CC", "malignant"].sum()),
        "benign_lesions": int((lesions.loc[lesions["view"] == "CC", "malignant"] == 0).sum()),
    }
