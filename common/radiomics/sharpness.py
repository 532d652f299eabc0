"""Sharpness features (OpenBreast GLSM group): gradient, Laplacian and wavelet energy measures.

Filters run on the whole (cropped) image with replicated borders like MATLAB `imfilter(...,
'replicate')`/`imgradient`, then are averaged over the mask. Wavelet measures use db6 with
half-sample symmetric extension (MATLAB's default `sym` mode = pywt `symmetric`) and, like
OpenBreast's `wrcoef2`, reconstruct each sub-band alone back to full resolution so the breast mask
applies pixel for pixel.
"""

from __future__ import annotations

import cv2
import numpy as np
import pywt

NAMES = ("sgra", "stev", "slap", "swas", "swav", "swar")
WAVELET = "db6"
EPS = float(np.finfo(float).eps)


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """MATLAB `imgradient` (Sobel, unnormalised kernel [-1 0 1; -2 0 2; -1 0 1])."""
    img = image.astype(np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx.astype(np.float64) ** 2 + gy.astype(np.float64) ** 2)


def laplacian_energy(image: np.ndarray) -> np.ndarray:
    """|Lx| + |Ly| with the 1-D kernel [-1 2 -1] along each axis."""
    img = image.astype(np.float32)
    kernel = np.array([[-1.0, 2.0, -1.0]], dtype=np.float32)
    lx = cv2.filter2D(img, cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE)
    ly = cv2.filter2D(img, cv2.CV_32F, kernel.T, borderType=cv2.BORDER_REPLICATE)
    return np.abs(lx.astype(np.float64)) + np.abs(ly.astype(np.float64))


def _reconstruct(coefficients: list, shapes: list[tuple[int, int]]) -> np.ndarray:
    """Single-branch inverse transform: `coefficients` = (cA or None, details or None) per level, coarsest first."""
    current: np.ndarray | None = None
    for (approx, details), shape in zip(coefficients, shapes, strict=True):
        if current is not None:
            approx = current
        current = pywt.idwt2((approx, details), WAVELET, mode="symmetric")[: shape[0], : shape[1]]
    if current is None:
        raise ValueError("no wavelet level to reconstruct")
    return current


def wavelet_bands(image: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Full-resolution level-1 details [H, V, D] and approximations [A1, A2, A3] of a 3-level db6 transform."""
    shapes = [image.shape]
    approximations = [image.astype(np.float64)]
    level1_details: tuple = ()
    for level in (1, 2, 3):
        approx, details = pywt.dwt2(approximations[-1], WAVELET, mode="symmetric")
        if level == 1:
            level1_details = details
        approximations.append(approx)
        shapes.append(approx.shape)
    details = []
    for band in range(3):
        only = tuple(d if k == band else None for k, d in enumerate(level1_details))
        details.append(_reconstruct([(None, only)], [shapes[0]]))
    approx_images = []
    for level in (1, 2, 3):
        chain = [(approximations[level], (None, None, None))] + [(None, (None, None, None))] * (level - 1)
        approx_images.append(_reconstruct(chain, shapes[level - 1 :: -1]))
    return details, approx_images


def sharpness_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    gradient = sobel_magnitude(image)[mask]
    (h, v, d), (a1, a2, a3) = wavelet_bands(image)
    h, v, d = np.abs(h[mask]), np.abs(v[mask]), np.abs(d[mask])
    high = float(np.mean(h**2 + v**2 + d**2))
    low = float(np.mean(np.abs(a1[mask]) + np.abs(a2[mask]) + np.abs(a3[mask])))
    return {
        "sgra": float(gradient.mean()),
        "stev": float(gradient.std(ddof=1)),
        "slap": float(laplacian_energy(image)[mask].mean()),
        "swas": float(np.mean(h + v + d)),
        "swav": float(h.var(ddof=1) + v.var(ddof=1) + d.var(ddof=1)),
        "swar": (high + EPS) / (low + EPS),
    }
