"""A paper's "Table 1": who is in each domain and split, and what preprocessing turned away.

Counts come from the step outputs themselves (split.csv for patients and ages, images.csv for images,
views and density, rejected.csv for rejections), so the table describes exactly the data the models saw.
Ages are summarised per patient (mean, SD, median, IQR; missing ages counted, never imputed). Density is
counted per image (ACR A-D, common.subgroups.normalise_density). Rejection reasons are grouped by the text
before the first colon, which names the kind of problem without the file- or id-specific detail.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from common.constants import SPLITS
from common.subgroups import DENSITY_CLASSES, UNKNOWN, normalise_density


def cohort_rows(domain: str, split: pd.DataFrame, images: pd.DataFrame | None) -> list[dict[str, Any]]:
    """One record per split of the domain plus an `all` record."""
    split = split.assign(patient_id=split["patient_id"].astype(str))
    images = _images_with_split(split, images)
    records = []
    for name in (*SPLITS, "all"):
        patients = split if name == "all" else split[split["split"] == name]
        shown = images if name == "all" else images[images["split"] == name]
        ages = pd.to_numeric(patients["age"], errors="coerce")
        known = ages.dropna()
        record: dict[str, Any] = {
            "domain": domain, "split": name, "patients": int(len(patients)),
            "cases": int((pd.to_numeric(patients["label"], errors="coerce") == 1).sum()),
            "images": int(len(shown)), "positive_images": int(pd.to_numeric(shown["label"], errors="coerce").sum()),
            "age_mean": float(known.mean()) if len(known) else float("nan"),
            "age_sd": float(known.std(ddof=1)) if len(known) > 1 else float("nan"),
            "age_median": float(known.median()) if len(known) else float("nan"),
            "age_q1": float(known.quantile(0.25)) if len(known) else float("nan"),
            "age_q3": float(known.quantile(0.75)) if len(known) else float("nan"),
            "age_missing": int(ages.isna().sum()),
            "cc": int((shown["view"] == "CC").sum()), "mlo": int((shown["view"] == "MLO").sum()),
        }  # fmt: skip
        density = shown["density"] if "density" in shown else pd.Series(UNKNOWN, index=shown.index)
        for value in (*DENSITY_CLASSES, UNKNOWN):
            record[f"density_{value}"] = int((density == value).sum())
        records.append(record)
    return records


def has_density(images: pd.DataFrame | None) -> bool:
    return images is not None and "density" in images and (images["density"].map(normalise_density) != UNKNOWN).any()


def rejected_rows(domain: str, rejected: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Rejected files per reason category (no file names)."""
    if rejected is None or rejected.empty or "reason" not in rejected:
        return []
    categories = rejected["reason"].fillna("unknown").astype(str).map(reason_category)
    counts = categories.value_counts().sort_index()
    return [{"domain": domain, "reason": reason, "files": int(n)} for reason, n in counts.items()]


def reason_category(reason: str) -> str:
    return reason.split(":", 1)[0].strip()[:80] or "unknown"


def _images_with_split(split: pd.DataFrame, images: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["patient_id", "view", "label", "density"]
    if images is None:
        return pd.DataFrame(columns=[*columns, "split"])
    images = images.assign(patient_id=images["patient_id"].astype(str))
    if "density" in images:
        images = images.assign(density=images["density"].map(normalise_density))
    keep = [c for c in columns if c in images]
    return images[keep].merge(split[["patient_id", "split"]], on="patient_id", how="inner")


def density_by_image(images: pd.DataFrame, cohort: pd.DataFrame | None) -> pd.DataFrame:
    """images.csv with a normalised `density` column: its own where present, else the cohort's per patient."""
    if "density" in images and images["density"].notna().any():
        return images.assign(density=images["density"].map(normalise_density))
    if cohort is not None and "density" in cohort and "patient_id" in cohort:
        per_patient = dict(zip(cohort["patient_id"].astype(str), cohort["density"].map(normalise_density),
                               strict=True))  # fmt: skip
        return images.assign(density=images["patient_id"].astype(str).map(per_patient).fillna(UNKNOWN))
    return images.assign(density=np.full(len(images), UNKNOWN))
