"""Where the lesions are in a network input: synth's lesions.csv mapped through preprocessing.

lesions.csv (common/synth) gives each finding's centre as fractions of the STORED image (center_x =
(column + 0.5) / width, center_y = (row + 0.5) / height) and its radius as a fraction of the stored width.
Preprocessing resizes the whole stored image to the network size (no crop) and then mirrors it when
images.csv says `flipped`, so a centre maps by scaling, then mirroring, and a circle of the stored image
becomes an ellipse whenever the two resize factors differ. Real data carry no lesions.csv; nothing here
guesses one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def lesion_masks(lesions: pd.DataFrame | None, row: pd.Series, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(malignant, benign) boolean masks of one images.csv row's findings in its network input of `shape`."""
    height, width = shape
    malignant, benign = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    if lesions is None or lesions.empty:
        return malignant, benign
    mine = lesions[(lesions["patient_id"] == row["patient_id"]) & (lesions["laterality"] == row["laterality"])
                   & (lesions["view"] == row["view"])]  # fmt: skip
    aspect = float(row["original_width"]) / float(row["original_height"])  # NaN when images.csv lacks the row
    aspect = aspect if np.isfinite(aspect) and aspect > 0 else width / height
    yy, xx = np.mgrid[0:height, 0:width]
    for lesion in mine.itertuples():
        x0 = lesion.center_x * width - 0.5
        if bool(row["flipped"]):
            x0 = width - 1 - x0
        y0 = lesion.center_y * height - 0.5
        rx, ry = max(lesion.radius * width, 0.5), max(lesion.radius * aspect * height, 0.5)
        inside = ((xx - x0) / rx) ** 2 + ((yy - y0) / ry) ** 2 <= 1.0
        (malignant if int(lesion.malignant) else benign)[inside] = True
    return malignant, benign
