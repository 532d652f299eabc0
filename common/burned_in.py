"""Burned-in annotations (text written into the pixels: names, birth dates, accession numbers).

DICOM's BurnedInAnnotation (0028,0301), carried by preprocess into images.csv as YES, NO or UNKNOWN, decides
what a figure (the report's Grad-CAM panels, the radiomics step's mask overlays) may show of an image:
- YES: nothing, unless the user opts in (`mammo report --show-burned-in`) - the text could identify a person;
- UNKNOWN (tag absent or another value, or an images.csv from before the column existed): only the pixels
  inside the breast mask; text sits on the film or detector outside the breast, and the breast is what a
  reader needs to judge a heatmap;
- NO: the whole image.
The report states which rule hid what, so a reader knows why an image is missing or masked. The radiomics
overlays (`mammo radiomics --save-masks`) have no opt-in: a YES image gets none.
"""

from __future__ import annotations

import pandas as pd

FULL, BREAST_ONLY, WITHHELD = "full image", "breast only", "withheld"
OPT_IN_FLAG = "--show-burned-in"


def tags(images: pd.DataFrame | None) -> dict[str, str]:
    """image_id -> YES | NO | UNKNOWN from images.csv; images it does not list are UNKNOWN (see `display`)."""
    if images is None or "burned_in_annotation" not in images.columns:
        return {}
    values = images["burned_in_annotation"].fillna("").astype(str).str.strip().str.upper()
    return dict(zip(images["image_id"], values.where(values.isin(["YES", "NO"]), "UNKNOWN"), strict=True))


def display(tag: str, show_burned_in: bool) -> str:
    """What a figure may show of an image whose tag is `tag`."""
    if tag == "YES":
        return FULL if show_burned_in else WITHHELD
    return FULL if tag == "NO" else BREAST_ONLY
