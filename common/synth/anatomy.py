"""Breast anatomy of one view as an X-ray attenuation map (line integral of mu, dimensionless).

The phantom is built in a canonical frame - chest wall on the left (x = 0), nipple pointing right, top
of the image lateral (CC) or superior (MLO) - in millimetres, then sampled on the detector's pixel grid,
so every acquisition domain images the same physical breast. Physics kept because it shapes what a
CNN or a radiomics feature sees:
- the compressed breast is a slab of thickness T whose edge is a half-cylinder of radius T/2, so the
  projected thickness falls to zero over the outer ~T/2 and the 1.5 mm skin shell shows as a bright line;
- the projected glandular fraction comes from a beta ~ 3 power-law field (part of it strands that
  converge on the nipple), pushed away from the skin (subcutaneous fat) and the chest wall
  (retromammary fat), thresholded to the patient's age-dependent density;
- MLO views add the pectoral muscle, a dense triangle in the upper chest-wall corner.
Linear attenuation coefficients are those of adipose, fibroglandular tissue and muscle near 20 keV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common.synth.population import Patient
from common.synth.texture import converging_field, power_law_field

MU_FAT = 0.046  # 1/mm
MU_GLAND = 0.080
MU_SKIN = 0.080
MU_MUSCLE = 0.085
SKIN_MM = 1.5
MAX_GLANDULAR = 0.55  # projected glandular fraction of dense columns (the rest of the path is fat)
TEXTURE_GRID_MM = 0.5
SIDES = ("L", "R")
VIEWS = ("CC", "MLO")


@dataclass(frozen=True)
class Breast:
    """One breast of a patient: what both of its views share."""

    side: str
    depth_mm: float  # chest wall to nipple under CC compression
    half_height_mm: float
    thickness_mm: float
    density: float  # fraction of the breast area that is dense (percent density, as readers estimate it)
    outline: tuple[tuple[int, float, float], ...]  # (harmonic, relative amplitude, phase) of the contour


@dataclass(frozen=True)
class ViewGeometry:
    """Where the breast lies on the detector in one view (canonical frame, millimetres)."""

    view: str
    depth_mm: float
    half_height_mm: float
    centre_y_mm: float
    tilt: float  # radians; MLO nipples point slightly downwards
    nipple_radius_mm: float
    pectoral: tuple[float, float, float, float] | None  # width along top, height along chest wall, thickness, shape

    def point(self, depth_fraction: float, offset: float) -> tuple[float, float]:
        """Point at `depth_fraction` of the way from nipple to chest wall; offset -1 (top) .. 1 (bottom)."""
        along = self.depth_mm * (1.0 - depth_fraction)
        half_width = self.half_height_mm * np.sqrt(max(0.0, 1.0 - (along / self.depth_mm) ** 2))
        across = offset * 0.8 * half_width
        cos_t, sin_t = np.cos(self.tilt), np.sin(self.tilt)
        return along * cos_t - across * sin_t, self.centre_y_mm + along * sin_t + across * cos_t

    def pectoral_depth(self, x_mm: np.ndarray | float, y_mm: np.ndarray | float) -> np.ndarray | float:
        """> 0 inside the pectoral muscle (1 at the corner); -1 everywhere for CC views."""
        if self.pectoral is None:
            return np.full_like(np.asarray(x_mm, dtype=np.float32), -1.0)
        width, height, _, shape = self.pectoral
        xs = np.clip(np.asarray(x_mm, dtype=np.float32) / width, 0.0, None)
        ys = np.clip(np.asarray(y_mm, dtype=np.float32) / height, 0.0, None)
        return 1.0 - xs**shape - ys**shape


@dataclass
class ViewPhantom:
    attenuation: np.ndarray  # float32, rows x columns, 0 in air
    mask: np.ndarray  # bool, breast (including nipple and pectoral)
    geometry: ViewGeometry
    spacing_mm: float


def sample_breast(patient: Patient, side: str, field_mm: tuple[float, float]) -> Breast:
    rng = patient.stream(1, SIDES.index(side))
    shared = patient.stream(1, 9)  # breasts of one woman are alike in size
    field_h, field_w = field_mm
    size = shared.normal(0.0, 1.0)
    depth = float(np.clip(95.0 + 18.0 * size + rng.normal(0, 4), 55.0, 0.78 * field_w))
    half_height = float(np.clip(80.0 + 12.0 * size + rng.normal(0, 3), 50.0, 0.42 * field_h))
    thickness = float(np.clip(52.0 + 7.0 * size + rng.normal(0, 3), 32.0, 80.0))
    density = float(np.clip(patient.density + rng.normal(0.0, 0.02), 0.03, 0.65))
    outline = tuple((k, float(rng.uniform(0.0, 0.04)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 4))
    return Breast(side, depth, half_height, thickness, density, outline)


def view_geometry(breast: Breast, view: str, field_mm: tuple[float, float], rng: np.random.Generator) -> ViewGeometry:
    field_h, _ = field_mm
    nipple = float(rng.uniform(3.5, 6.0))
    if view == "CC":
        return ViewGeometry(
            view=view,
            depth_mm=breast.depth_mm,
            half_height_mm=breast.half_height_mm,
            centre_y_mm=float(field_h * rng.uniform(0.47, 0.53)),
            tilt=float(rng.normal(0.0, 0.03)),
            nipple_radius_mm=nipple,
            pectoral=None,
        )
    # MLO: the breast reaches the axilla (top edge) along the chest wall, nipple points down and out.
    centre = float(field_h * rng.uniform(0.40, 0.47))
    half_height = float(min(centre * rng.uniform(1.08, 1.25), 0.97 * field_h - centre))
    depth = breast.depth_mm * float(rng.uniform(1.0, 1.1))
    pectoral = (
        depth * float(rng.uniform(0.3, 0.55)),
        field_h * float(rng.uniform(0.35, 0.6)),
        float(rng.uniform(25.0, 45.0)),
        float(rng.uniform(0.85, 1.2)),
    )
    return ViewGeometry(
        view=view,
        depth_mm=depth,
        half_height_mm=max(half_height, breast.half_height_mm),
        centre_y_mm=centre,
        tilt=float(rng.uniform(0.08, 0.25)),
        nipple_radius_mm=nipple,
        pectoral=pectoral,
    )


def texture_factor(spacing_mm: float) -> int:
    """Integer subsampling of the pixel grid that gives a texture grid of about TEXTURE_GRID_MM."""
    return max(1, int(round(TEXTURE_GRID_MM / spacing_mm)))


def _grid_mm(shape: tuple[int, int], full_shape: tuple[int, int], spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Millimetre coordinates of a coarse grid's pixel centres, matching cv2.resize's centre alignment."""
    h, w = shape
    full_h, full_w = full_shape
    y = ((np.arange(h, dtype=np.float32) + 0.5) * (full_h / h) - 0.5) * spacing_mm
    x = ((np.arange(w, dtype=np.float32) + 0.5) * (full_w / w) - 0.5) * spacing_mm
    return np.meshgrid(x, y)


def signed_distance(geometry: ViewGeometry, breast: Breast, x: np.ndarray, y: np.ndarray, step: float) -> np.ndarray:
    """Approximate signed distance (mm, > 0 inside) to the skin surface of the projected breast."""
    cos_t, sin_t = np.cos(geometry.tilt), np.sin(geometry.tilt)
    along = x * cos_t + (y - geometry.centre_y_mm) * sin_t
    across = -x * sin_t + (y - geometry.centre_y_mm) * cos_t
    u = np.clip(along, 0.0, None) / geometry.depth_mm
    v = across / geometry.half_height_mm
    rho = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    wobble = np.ones_like(rho)
    for k, amplitude, phase in breast.outline:
        wobble += amplitude * np.cos(k * phi + phase)
    rho = rho / wobble
    gy, gx = np.gradient(rho, step)
    distance = (1.0 - rho) / np.maximum(np.hypot(gx, gy), 1e-6)
    nipple_x = geometry.depth_mm * _wobble_at_axis(breast) + 0.3 * geometry.nipple_radius_mm
    nipple_cx = nipple_x * cos_t
    nipple_cy = geometry.centre_y_mm + nipple_x * sin_t
    distance = np.maximum(distance, geometry.nipple_radius_mm - np.hypot(x - nipple_cx, y - nipple_cy))
    if geometry.pectoral is not None:
        inside = geometry.pectoral_depth(x, y)
        distance = np.maximum(distance, inside * 0.5 * min(geometry.pectoral[0], geometry.pectoral[1]))
    return distance.astype(np.float32)


def _wobble_at_axis(breast: Breast) -> float:
    """Contour scale at the nipple (phi = 0), so the nipple sits on the perturbed skin line."""
    return 1.0 + sum(amplitude * np.cos(phase) for _, amplitude, phase in breast.outline)


def build_view(
    patient: Patient,
    breast: Breast,
    view: str,
    image_shape: tuple[int, int],
    spacing_mm: float,
) -> ViewPhantom:
    """Attenuation map of one view of one breast, lesions not yet added."""
    side_index, view_index = SIDES.index(breast.side), VIEWS.index(view)
    rng = patient.stream(3, side_index, view_index)
    shared = patient.stream(4, view_index)  # left and right texture partly alike (bilateral symmetry)
    h, w = image_shape
    field_mm = (h * spacing_mm, w * spacing_mm)
    geometry = view_geometry(breast, view, field_mm, rng)

    factor = texture_factor(spacing_mm)
    coarse_shape = (-(-h // factor), -(-w // factor))
    coarse_step = spacing_mm * factor
    x, y = _grid_mm(coarse_shape, image_shape, spacing_mm)
    # The signed distance is smooth (near-linear at the skin), so a grid twice as coarse interpolates exactly
    # enough; it is the costliest per-pixel geometry (trigonometry of the contour).
    outline_shape = (-(-coarse_shape[0] // 2), -(-coarse_shape[1] // 2))
    xo, yo = _grid_mm(outline_shape, image_shape, spacing_mm)
    outline = signed_distance(geometry, breast, xo, yo, coarse_step * 2)
    distance = cv2.resize(outline, coarse_shape[::-1], interpolation=cv2.INTER_LINEAR)

    nipple_px = geometry.point(0.0, 0.0)
    nipple_xy = (nipple_px[0] / coarse_step, nipple_px[1] / coarse_step)
    texture = converging_field(coarse_shape, nipple_xy, [(shared, 0.35), (rng, 0.35)], coarse_step, stretch=1.6)
    texture += power_law_field(coarse_shape, shared, spacing_mm=coarse_step) * 0.5
    texture += power_law_field(coarse_shape, rng, spacing_mm=coarse_step) * 0.7
    inside = distance > 0
    texture = (texture - texture[inside].mean()) / (texture[inside].std() + 1e-6)
    prior = -1.8 * np.exp(-np.clip(distance, 0, None) / 10.0) - 1.0 * np.exp(-x / 12.0)
    if geometry.pectoral is not None:
        prior -= 2.0 * np.clip(geometry.pectoral_depth(x, y) + 0.15, 0, None)
    score = texture + prior
    threshold = np.quantile(score[inside], 1.0 - breast.density)
    density = MAX_GLANDULAR / (1.0 + np.exp(-(score - threshold) / 0.7))

    pectoral = np.zeros_like(distance)
    if geometry.pectoral is not None:
        depth = geometry.pectoral_depth(x, y)
        pectoral = geometry.pectoral[2] * np.clip(depth / 0.25, 0.0, 1.0) ** 0.6 * (MU_MUSCLE - MU_FAT)
        pectoral *= 1.0 + 0.05 * power_law_field(coarse_shape, rng, spacing_mm=coarse_step)

    # Tissue attenuation is smooth at the texture grid's scale: build it there and upsample once.
    radius = breast.thickness_mm / 2.0
    offset = np.clip(radius - distance, 0.0, None)
    outer = 2.0 * np.sqrt(np.clip(radius * radius - offset * offset, 0.0, None))
    inner = 2.0 * np.sqrt(np.clip((radius - SKIN_MM) ** 2 - offset * offset, 0.0, None))
    coarse = MU_SKIN * (outer - inner) + inner * (MU_FAT + (MU_GLAND - MU_FAT) * density) + pectoral
    size = (w, h)
    mask = cv2.resize(outline, size, interpolation=cv2.INTER_LINEAR) > 0
    attenuation = cv2.resize(coarse.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    attenuation[~mask] = 0.0
    return ViewPhantom(attenuation, mask, geometry, spacing_mm)
