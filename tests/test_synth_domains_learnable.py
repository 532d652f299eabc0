"""Film is the harder source domain, but its malignant masses must still be visible at the network's input size.

Before the fix the film chain exposed the breast at optical density 1.2-1.8 on a steep H&D curve: dense
tissue and the denser masses sat on the toe of the curve, where film contrast vanishes, and the steep
gradient amplified the tissue texture around them. At 288x224 a malignant mass stood ~3 texture standard
deviations above its surroundings (ffdm ~5), and the demo's source-A model stayed at chance (AUC 0.53).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from helpers import MAMMO

from common.dicom import read_dicom
from common.profile import load_profile
from common.synth import DOMAINS, render_patient
from common.synth.population import make_patient

ROOT = Path(__file__).resolve().parents[1]
DEMO = load_profile("demo")
NETWORK = (DEMO.image.height, DEMO.image.width)  # the demo's input (rows, columns)
SOURCE = (DEMO.synth.size_of("film").height, DEMO.synth.size_of("film").width)  # its source-domain synthetic size

def mass_contrast_to_noise(domain: str, cases: int = 12, seed: int = 5) -> float:
    """Median over malignant masses of (mean inside - mean of the ring 1.5r-3r) / ring std, at network size."""
    values = []
    for index in range(0, 2 * cases, 2):  # even indices are cases
        patient = make_patient(seed, domain, index)
        for view in render_patient(patient, DOMAINS[domain], seed, SOURCE):
            pixels = view.pixels.astype(np.float64) / DOMAINS[domain].max_value
            if DOMAINS[domain].photometric == "MONOCHROME1":
                pixels = 1.0 - pixels
            if view.laterality == "R":  # back to the canonical frame the lesion positions are given in
                pixels = pixels[:, ::-1]
            small = cv2.resize(pixels, NETWORK[::-1], interpolation=cv2.INTER_AREA)
            scale = NETWORK[1] / SOURCE[1]
            rows, cols = np.mgrid[: NETWORK[0], : NETWORK[1]]
            for placed in view.lesions:
                if not placed.lesion.malignant or placed.lesion.kind == "calcification_cluster":
                    continue
                radius = max(placed.radius * scale, 1.0)
                distance = np.hypot(cols - placed.x * scale, rows - placed.y * scale)
                inside, ring = small[distance <= radius], small[(distance > 1.5 * radius) & (distance <= 3 * radius)]
                values.append((inside.mean() - ring.mean()) / ring.std())
    return float(np.median(values))

@pytest.mark.slow
def test_film_masses_are_learnable_but_harder_than_ffdm():
    film, ffdm = mass_contrast_to_noise("film"), mass_contrast_to_noise("ffdm")
    assert 3.5 <= film, film  # below ~3.5 the from-scratch demo model does not learn (issue 12 experiments)
    assert film < ffdm, (film, ffdm)

def display_spread(domain: str, folder: Path, cases: int = 6, seed: int = 5) -> tuple[float, float]:
    """Mean over views of the breast's display percentiles (p50, p90) as preprocess reads them (window, photometric)."""
    quantiles = []
    for index in range(cases):
        patient = make_patient(seed, domain, index)
        for view in render_patient(patient, DOMAINS[domain], seed, SOURCE):
            path = folder / f"{domain}-{index}-{view.laterality}{view.view}.dcm"
            path.write_bytes(view.dicom)
            pixels = read_dicom(path).pixels.astype(np.float64) / 65535.0
            mask = view.phantom.mask if view.laterality == "L" else view.phantom.mask[:, ::-1]
            quantiles.append(np.percentile(pixels[mask], [50, 90]))
    return tuple(float(q) for q in np.mean(quantiles, axis=0))

@pytest.mark.slow
def test_hospital_shift_changes_the_look_but_keeps_the_lesions(tmp_path):
    """The thesis' A+B model loses AUC on the private set and fine-tuning wins it back (Tables 4, 9): the hospital's
    imaging chain must change how tissue looks, not hide the lesions. Its concave presentation curve crowds dense
    tissue into the top of the display range. Issue 12: with the upper half of the breast's display range at 0.64
    of ffdm's (tone -1.3) the demo's A+B model stayed in domain (hospital AUC 0.822, ffdm 0.862) and fine-tuning
    had nothing to recover; at 0.52 (tone -3.4, lesion-free windows, ffdm gamma 0.8) it drops from 0.90 to 0.74
    and both recover part of it. The masses stay clearer than on film, the domain the model learned first.
    """
    ffdm_median, ffdm_p90 = display_spread("ffdm", tmp_path)
    median, p90 = display_spread("hospital", tmp_path)
    assert (p90 - median) <= 0.55 * (ffdm_p90 - ffdm_median), (p90 - median, ffdm_p90 - ffdm_median)
    assert median > ffdm_median + 0.1, (median, ffdm_median)  # a brighter look, not merely a narrower one
    hospital, ffdm = mass_contrast_to_noise("hospital", cases=6), mass_contrast_to_noise("ffdm", cases=6)
    film = mass_contrast_to_noise("film", cases=6)
    assert hospital >= max(0.65 * ffdm, film), (hospital, ffdm, film)  # the lesions stay visible: adaptable

def test_a_profile_gives_source_domains_their_own_size(tmp_path):
    profile = tmp_path / "small.yaml"
    text = (ROOT / "common" / "profiles" / "ci.yaml").read_text()
    profile.write_text(text.replace("synth:\n", "synth:\n  size_by_domain: {film: {height: 192, width: 152}}\n"))
    for domain in ("film", "hospital"):
        out = tmp_path / domain
        command = [*MAMMO, "synth", "--out", str(out), "--domain", domain,
                   "--patients", "2", "--seed", "1", "--profile", str(profile), "--workers", "1"]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)

    film = pydicom.dcmread(next((tmp_path / "film" / "dicom").rglob("*.dcm")))
    hospital = pydicom.dcmread(next((tmp_path / "hospital" / "dicom").rglob("*.dcm")))
    assert (film.Rows, film.Columns) == (192, 152)
    assert (hospital.Rows, hospital.Columns) == (384, 304)  # the ci profile's synth.size
    assert json.loads((tmp_path / "film" / "_SUCCESS.json").read_text())["image_size"]["height"] == 192
