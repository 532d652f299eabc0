"""Synthetic four-view mammography cohorts, because no mammography data set can be downloaded here.

One physical model of women, breasts and findings (population, texture, anatomy, lesions) is imaged
through several acquisition chains (domains: film, ffdm, hospital), mirroring the thesis' scanned-film
source, full-field digital source and hospital target; cohort writes it to disk as DICOM plus
ground-truth tables. Conventions other steps rely on:
- `dicom/<patient_id>/<L|R>_<CC|MLO>.dcm`, stored as real mammograms are: left breasts with the chest
  wall on the left of the pixel matrix, right breasts with it on the right (preprocessing flips);
- `cohort.csv`: patient_id (`<domain>-NNNN`), age, label, pair_id, cancer_laterality; even indices are
  cases, the next odd index their age-matched control;
- `lesions.csv`: one row per finding and view, centre and radius as fractions of the stored image
  (center_x = column / width, center_y = row / height, radius = radius / width), malignant 0/1.
"""

from common.synth.cohort import render_patient, synthesize_cohort
from common.synth.domains import DOMAINS, Domain

__all__ = ["DOMAINS", "Domain", "render_patient", "synthesize_cohort"]
