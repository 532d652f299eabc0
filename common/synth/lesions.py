"""Findings: malignant masses and calcification clusters, and benign decoys every breast may carry.

A finding lives in breast coordinates (depth from the nipple, mediolateral and superoinferior offsets),
so it appears in both views of its breast at the same distance from the nipple - the rule readers use to
match a CC finding with its MLO counterpart. What makes the malignant signal learnable but not trivial:
- malignant masses are 8-25 mm, irregular or spiculated, with ill-defined margins and an excess
  attenuation of MALIGNANT_MASS_CONTRAST times the glandular-fat difference. Real carcinomas are barely
  denser than glandular tissue; the exaggeration is deliberate: the End2End VGG16 topology trained from
  scratch (no ImageNet weights can be downloaded here) at 1/8 width on a few hundred 288x224 images
  learned nothing within the demo's budget at 2-3.6 (about one tissue standard deviation at that size)
  and learns at roughly 4-6 standard deviations;
- benign masses are smooth, circumscribed and fainter (0.5-1.5); benign coarse calcifications are few
  and large, malignant calcifications many, small and pleomorphic within a 6-16 mm cluster over a faint
  ductal density - at 288x224 clusters are the hard cases;
- decoys occur in every breast, cancer or not, so "has a blob" does not predict the label.
Sizes are physical, so a lesion covers more pixels on a finer detector, as on real systems.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common.synth.anatomy import MU_FAT, MU_GLAND, SIDES, ViewGeometry, ViewPhantom
from common.synth.population import Patient

MU_CALCIUM = 1.2  # hydroxyapatite near 20 keV, 1/mm
MALIGNANT_KINDS = ("spiculated_mass", "irregular_mass", "round_mass", "calcification_cluster")
MALIGNANT_WEIGHTS = (0.42, 0.30, 0.08, 0.20)
BENIGN_MASS_RATE = 0.30  # per breast
MALIGNANT_MASS_CONTRAST = (4.5, 7.0)  # uniform range, x (glandular - fat) attenuation
BENIGN_CALCIFICATION_RATE = 0.25


@dataclass(frozen=True)
class Lesion:
    lesion_id: int
    side: str
    kind: str
    malignant: bool
    depth_fraction: float  # 0 at the nipple, 1 at the chest wall
    lateral: float  # -1 medial .. 1 lateral
    superior: float  # -1 inferior .. 1 superior
    radius_mm: float  # mass core or cluster radius
    contrast: float  # excess attenuation relative to fibroglandular tissue (masses) or calcium scale
    shape_seed: int


@dataclass(frozen=True)
class LesionImage:
    """Where a lesion landed in one view (canonical frame, pixels)."""

    lesion: Lesion
    x: float
    y: float
    radius: float


def sample_lesions(patient: Patient) -> list[Lesion]:
    rng = patient.stream(2)
    lesions: list[Lesion] = []

    def place(side: str, kind: str, malignant: bool, radius: float, contrast: float) -> None:
        lesions.append(
            Lesion(
                lesion_id=len(lesions),
                side=side,
                kind=kind,
                malignant=malignant,
                depth_fraction=float(rng.uniform(0.2, 0.8)),
                lateral=float(np.clip(rng.normal(0.2, 0.4), -0.85, 0.85)),  # upper outer quadrant most often
                superior=float(np.clip(rng.normal(0.15, 0.4), -0.85, 0.85)),
                radius_mm=float(radius),
                contrast=float(contrast),
                shape_seed=int(rng.integers(2**31)),
            )
        )

    for side in patient.cancer_sides:
        kind = str(rng.choice(MALIGNANT_KINDS, p=MALIGNANT_WEIGHTS))
        if kind == "calcification_cluster":
            place(side, kind, True, rng.uniform(3.0, 8.0), rng.uniform(0.7, 1.2))
        else:
            radius = np.clip(rng.lognormal(np.log(6.5), 0.3), 4.0, 12.5)
            place(side, kind, True, radius, rng.uniform(*MALIGNANT_MASS_CONTRAST))
    for side in SIDES:
        if rng.random() < BENIGN_MASS_RATE:
            place(side, "benign_mass", False, rng.uniform(3.0, 10.0), rng.uniform(0.5, 1.5))
        if rng.random() < BENIGN_CALCIFICATION_RATE:
            place(side, "benign_calcification", False, rng.uniform(1.5, 6.0), rng.uniform(0.8, 1.2))
    return lesions


def lesion_centre_mm(lesion: Lesion, geometry: ViewGeometry) -> tuple[float, float]:
    """Project the lesion into a view; CC shows the mediolateral offset, MLO a 45-degree mix with height."""
    if geometry.view == "CC":
        offset = -lesion.lateral
    else:
        offset = -float(np.clip(0.7 * lesion.superior + 0.7 * lesion.lateral, -0.85, 0.85))
    x, y = geometry.point(lesion.depth_fraction, offset)
    # A finding is never inside the pectoral muscle: slide it down the breast until it is out.
    while geometry.pectoral_depth(x, y) > -0.1 and offset < 0.85:
        offset += 0.15
        x, y = geometry.point(lesion.depth_fraction, offset)
    return x, y


def add_lesion(phantom: ViewPhantom, lesion: Lesion, view_rng: np.random.Generator) -> LesionImage:
    """Add one lesion's excess attenuation to the phantom in place and report where it went."""
    spacing = phantom.spacing_mm
    x_mm, y_mm = lesion_centre_mm(lesion, phantom.geometry)
    cx, cy = x_mm / spacing, y_mm / spacing
    shape_rng = np.random.default_rng(lesion.shape_seed)
    if lesion.kind in ("calcification_cluster", "benign_calcification"):
        patch, half = _calcifications(lesion, shape_rng, view_rng, spacing, cx, cy)
    else:
        patch, half = _mass(lesion, shape_rng, view_rng, spacing, cx, cy)
    x0, y0 = int(np.floor(cx)) - half, int(np.floor(cy)) - half
    _paste(phantom.attenuation, phantom.mask, patch, x0, y0)
    return LesionImage(lesion, float(cx), float(cy), lesion.radius_mm / spacing)


def _local_grid(half: int, spacing: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Millimetre offsets from the lesion centre over a (2 half + 1)^2 patch anchored at floor(centre)."""
    offsets = np.arange(-half, half + 1, dtype=np.float32)
    dx = (offsets + (np.floor(cx) - cx)) * spacing
    dy = (offsets + (np.floor(cy) - cy)) * spacing
    return np.meshgrid(dx, dy)


def _mass(lesion, shape_rng, view_rng, spacing, cx, cy) -> tuple[np.ndarray, int]:
    r = lesion.radius_mm
    irregular = {"spiculated_mass": 0.12, "irregular_mass": 0.22, "round_mass": 0.05, "benign_mass": 0.04}[lesion.kind]
    harmonics = [(k, shape_rng.uniform(0.3, 1.0) * irregular / np.sqrt(k - 1), shape_rng.uniform(0, 2 * np.pi))
                 for k in range(2, 9)]
    if lesion.kind == "benign_mass":
        harmonics[0] = (2, shape_rng.uniform(0.05, 0.25), harmonics[0][2])  # oval
    n_spicules = {"spiculated_mass": int(shape_rng.integers(12, 26)), "irregular_mass": int(shape_rng.integers(0, 5))}
    spicules = n_spicules.get(lesion.kind, 0)
    reach = r * (1.0 + 2.0 * irregular) + (2.2 * r if spicules else 0.0)
    half = int(np.ceil(reach / spacing)) + 3
    dx, dy = _local_grid(half, spacing, cx, cy)
    rotation = view_rng.uniform(0, 2 * np.pi)  # a different projection shows the outline from another side
    rho = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) + rotation
    boundary = np.full_like(rho, r)
    for k, amplitude, phase in harmonics:
        boundary += r * amplitude * np.cos(k * theta + phase)
    chord = 2.0 * np.sqrt(np.clip(boundary * boundary - rho * rho, 0.0, None))
    excess = lesion.contrast * (MU_GLAND - MU_FAT)
    patch = (excess * chord).astype(np.float32)
    if spicules:
        segments = []
        for _ in range(spicules):
            angle = shape_rng.uniform(0, 2 * np.pi) - rotation
            length = r * shape_rng.uniform(0.7, 2.2)
            width = shape_rng.uniform(0.6, 1.4)
            bend = shape_rng.normal(0.0, 0.12)
            segments += _spicule_segments(half, angle, 0.6 * r, length, width, excess * 3.0 * width, spacing, bend)
        strands = np.zeros_like(patch)
        for value, p0, p1, thickness in sorted(segments, key=lambda segment: segment[0]):
            cv2.line(strands, p0, p1, value, thickness)  # ascending order: overlaps keep the maximum
        patch = np.maximum(patch, strands)
    margin = (0.10 if lesion.malignant else 0.02) * r / spacing
    if margin > 0.4:
        patch = cv2.GaussianBlur(patch, (0, 0), margin)
    return patch, half


def _spicule_segments(half, angle, start, length, width, peak, spacing, bend) -> list:
    """A tapering, slightly bent strand radiating from the mass core, as (value, p0, p1, thickness) lines."""
    steps = 4
    thickness = max(1, int(round(width / spacing)))
    normal = (-np.sin(angle), np.cos(angle))
    points = []
    for j in range(steps + 1):
        t = start + length * j / steps
        sideways = bend * length * (j / steps) ** 2
        points.append((int(round(half + (t * np.cos(angle) + sideways * normal[0]) / spacing)),
                       int(round(half + (t * np.sin(angle) + sideways * normal[1]) / spacing))))
    return [(float(peak * (1.0 - j / steps)), points[j], points[j + 1], thickness) for j in range(steps)]


def _calcifications(lesion, shape_rng, view_rng, spacing, cx, cy) -> tuple[np.ndarray, int]:
    """Point-like calcium deposits splatted with their projected mass, so blurring preserves their sum."""
    r = lesion.radius_mm
    half = int(np.ceil(1.6 * r / spacing)) + 4
    patch = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    if lesion.malignant:
        count = int(shape_rng.integers(20, 50))
        diameters = np.clip(shape_rng.gamma(3.0, 0.17, count), 0.2, 1.1)
        elongation = shape_rng.uniform(1.0, 2.5)  # ductal (linear) distributions are suspicious
    else:
        count = int(shape_rng.integers(1, 4))
        diameters = shape_rng.uniform(1.0, 2.5, count)
        elongation = 1.0
    axis = view_rng.uniform(0, np.pi)
    u = shape_rng.normal(0.0, 0.45 * r, count) * elongation ** 0.5
    v = shape_rng.normal(0.0, 0.45 * r, count) / elongation ** 0.5
    px = np.clip(u * np.cos(axis) - v * np.sin(axis), -1.5 * r, 1.5 * r)
    py = np.clip(u * np.sin(axis) + v * np.cos(axis), -1.5 * r, 1.5 * r)
    volume = np.pi * diameters**3 / 6.0
    weights = lesion.contrast * (MU_CALCIUM - MU_GLAND) * volume / spacing**2
    cols = px / spacing + half + (cx - np.floor(cx))
    rows = py / spacing + half + (cy - np.floor(cy))
    c0, r0 = np.floor(cols).astype(int), np.floor(rows).astype(int)
    fc, fr = cols - c0, rows - r0
    for dc, dr, share in ((0, 0, (1 - fc) * (1 - fr)), (1, 0, fc * (1 - fr)), (0, 1, (1 - fc) * fr), (1, 1, fc * fr)):
        np.add.at(patch, (r0 + dr, c0 + dc), weights * share)
    sigma = max(0.6, 0.18 / spacing)
    patch = np.asarray(cv2.GaussianBlur(patch, (0, 0), sigma), dtype=np.float32)
    if lesion.malignant:  # the faint density of the ductal carcinoma that carries the calcifications
        dx, dy = _local_grid(half, spacing, cx, cy)
        haze = 0.7 * (MU_GLAND - MU_FAT) * 2.0 * np.sqrt(np.clip(r * r - dx * dx - dy * dy, 0.0, None))
        patch += cv2.GaussianBlur(haze.astype(np.float32), (0, 0), 0.3 * r / spacing)
    return patch, half


def _paste(target: np.ndarray, mask: np.ndarray, patch: np.ndarray, x0: int, y0: int) -> None:
    """Add a patch whose top-left corner is (x0, y0), clipped to the image and to the breast."""
    h, w = target.shape
    ph, pw = patch.shape
    tx0, ty0, tx1, ty1 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
    if tx0 >= tx1 or ty0 >= ty1:
        return
    region = patch[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]
    target[ty0:ty1, tx0:tx1] += region * mask[ty0:ty1, tx0:tx1]
