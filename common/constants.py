"""Names several modules share, in one place (the domains of the pipeline, the split names, the images.csv
columns, the spacing assumed where a file states none, the retraining defaults).

A fact that two modules must agree on lives here once; a module's own private constants stay in it.
"""

from __future__ import annotations

from dataclasses import dataclass

# The synthetic (and real) domains: two sources the baselines learn on, and the hospital they are adapted to.
SOURCES = ("film", "ffdm")
TARGET = "hospital"
DOMAINS = (*SOURCES, TARGET)

# Patient-level subsets of split.csv, in the order the profile's split fractions are given.
SPLITS = ("train", "validation", "test")

# images.csv, the preprocess step's index of its images (docs/contracts.md).
IMAGE_COLUMNS = [
    "image_id", "patient_id", "laterality", "view", "label", "source_file", "original_height", "original_width",
    "pixel_spacing_mm", "hires_spacing_mm", "flipped", "four_views", "age", "burned_in_annotation",
]

# Pixel spacing used when a file states none. CBIS-DDSM (the only such source here) was digitised at
# 42-50 um per pixel depending on the scanner (DBA 42 um, Howtek 43.5 um, Lumisys 50 um); 0.05 mm keeps the
# high-resolution copies at, or slightly coarser than, the profile's target spacing.
ASSUMED_SPACING_MM = 0.05


@dataclass(frozen=True)
class RetrainDefaults:
    """Scheduled retraining's defaults: `mammo retrain`, its DAG steps and the CronWorkflow's parameters."""

    min_new_studies: int = 20  # fewer new studies end the run early
    margin: float = 0.02  # non-inferiority margin on the AUC difference challenger - champion
    alpha: float = 0.05  # one-sided level of the non-inferiority test
    finetune_config: int = 2  # stage-1 configuration the challenger is fine-tuned with


RETRAIN = RetrainDefaults()
