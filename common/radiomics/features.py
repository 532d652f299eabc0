"""The 34 per-image radiomic features of the thesis (OpenBreast's 33 + percent density).

Computed on the raw intensities of the breast region of an image resampled to about 0.1 mm/pixel
with the chest wall on the left - in the pipeline the `hires/` images written by preprocess, never
the 1152x896 network input, whose texture is smoothed away by the downsampling. The image is first
cropped to the breast's bounding box plus a margin (origin aligned to 8 pixels so the 3-level wavelet
sees the same dyadic grid), which changes nothing inside the mask and saves most of the work.
"""

from __future__ import annotations

import numpy as np

from common.radiomics import density, fractal, glcm, histogram, runlength, sharpness

FEATURE_NAMES: tuple[str, ...] = (
    "imin", "imax", "iavg", "istd", "iran", "ient", "ip05", "ip30", "ip70", "ip95", "iba1", "iba2", "iske", "ikur",
    "cene", "ccor", "ccon", "chom", "cent",
    "rSRE", "rLRE", "rGLN", "rRPE", "rRLN", "rLGR", "rHGR",
    "sgra", "stev", "slap", "swas", "swav", "swar",
    "fdim",
    "pd",
)  # fmt: skip
MIN_PIXELS = 64
CROP_MARGIN = 96  # > the support of the 3-level db6 approximation (~77 px), so in-mask values are unchanged
CROP_ALIGN = 8


def crop_to_mask(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top = max(0, rows[0] - CROP_MARGIN) // CROP_ALIGN * CROP_ALIGN
    left = max(0, cols[0] - CROP_MARGIN) // CROP_ALIGN * CROP_ALIGN
    bottom = min(image.shape[0], rows[-1] + 1 + CROP_MARGIN)
    right = min(image.shape[1], cols[-1] + 1 + CROP_MARGIN)
    return image[top:bottom, left:right], mask[top:bottom, left:right]


def extract_features(image: np.ndarray, mask: np.ndarray, pixel_spacing_mm: float) -> dict[str, float]:
    """The 34 features, in FEATURE_NAMES order, of `image` inside the boolean `mask`.

    Raises ValueError when the region cannot carry texture features (too few pixels, one intensity).
    """
    image = np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 2 or image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be 2-D of the same shape")
    if not pixel_spacing_mm > 0:
        raise ValueError(f"pixel spacing must be positive, got {pixel_spacing_mm}")
    if mask.sum() < MIN_PIXELS:
        raise ValueError(f"mask has {int(mask.sum())} pixels, fewer than {MIN_PIXELS}")
    image, mask = crop_to_mask(image, mask)
    values = image[mask]
    if values.min() == values.max():
        raise ValueError("the masked region has a single intensity: texture features undefined")
    found = {
        **histogram.histogram_features(values),
        **glcm.glcm_features(image, mask),
        **runlength.glrl_features(image, mask),
        **sharpness.sharpness_features(image, mask),
        **fractal.fractal_features(image, mask, pixel_spacing_mm),
        **density.density_features(image, mask, pixel_spacing_mm),
    }
    return {name: found[name] for name in FEATURE_NAMES}
