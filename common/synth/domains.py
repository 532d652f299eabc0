"""Acquisition domains: how a detector, its processing and its DICOM encoding render one attenuation map.

The same phantoms go through every domain; only the imaging chain differs, as between the thesis'
CBIS-DDSM (scanned film), INbreast (full-field digital) and the hospital's system:
- film: exposure -> film characteristic (H&D) curve, a sigmoid in log exposure that saturates dense
  tissue and background; film grain grows with optical density; a scanner digitises optical density
  to 16 bits (MONOCHROME2) with its own noise and column streaks; view labels burned into the film and
  sometimes an unexposed film edge;
- ffdm: linear detector, low quantum noise, log transform, mild thickness equalisation and a linear
  window, 14 bits MONOCHROME2, sharp;
- hospital: lower dose (more quantum noise) plus correlated detector noise, more blur, strong
  peripheral equalisation and a concave tone curve that compresses dense tissue (lesion contrast
  falls), 12 bits stored MONOCHROME1 (inverted), finer pixel pitch on a smaller detector.
A model trained on one chain meets other intensities, lesion contrasts, noise and texture scales on
another, while the anatomy and the lesions stay the same - the shift is real and adaptable.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FILM_FOG, FILM_DMAX, SCANNER_DMAX = 0.2, 3.6, 3.65
SCANNER_NOISE = 0.003  # std of the digitiser's white noise, in [0, 1] brightness
# Optical density the automatic exposure control aims the breast at (screen-film practice: 1.4-2.2). Aimed at
# 1.2-1.8 with a gradient of 2.6, dense tissue and masses sat on the toe of the H&D curve where film contrast
# vanishes, while the steep gradient amplified the tissue texture around them: a malignant mass stood ~3 texture
# standard deviations out at the demo's input size (ffdm ~5) and a from-scratch model never learned film.
FILM_TARGET_OD = (1.7, 2.3)
# The digital window's top sits this fraction of the tissue's range above the densest tissue, so the (exaggerated)
# masses keep their shape above it instead of clipping flat: without it their contrast-to-noise fell from 5.2 to 2.6.
WINDOW_HEADROOM = 0.6


@dataclass(frozen=True)
class Domain:
    name: str
    chain: str  # "film" or "digital"
    field_height_mm: float  # detector (or digitised film) extent along the chest wall
    bits_stored: int
    photometric: str
    manufacturer: str
    model_name: str
    detector_type: str
    blur_mm: float  # system unsharpness (focal spot, screen or detector), Gaussian sigma
    quantum_noise: float  # std of the log signal at 0.1 mm pixels at the exposure reference
    correlated_noise: float = 0.0
    correlated_noise_mm: float = 0.0
    equalisation: float = 0.0  # fraction of the large-scale thickness fall-off removed
    tone: float = 1.0  # film: H&D gradient; digital: gamma (> 0) or concave log-curve strength (< 0)
    grain: float = 0.0  # film: optical-density grain at 0.1 mm pixels
    burned_in_labels: bool = False

    def spacing_mm(self, rows: int) -> float:
        """Square pixel pitch that maps the domain's field onto the profile's row count."""
        return self.field_height_mm / rows

    @property
    def max_value(self) -> int:
        return 2**self.bits_stored - 1


DOMAINS: dict[str, Domain] = {
    "film": Domain(
        name="film",
        chain="film",
        field_height_mm=300.0,  # a 24 x 30 cm film digitised whole
        bits_stored=16,
        photometric="MONOCHROME2",
        manufacturer="SYNTHETIC Film Digitiser",
        model_name="Synth-Scan LD",
        detector_type="FILM",
        blur_mm=0.08,
        quantum_noise=0.02,
        tone=2.2,
        grain=0.05,
        burned_in_labels=True,
    ),
    "ffdm": Domain(
        name="ffdm",
        chain="digital",
        # A 25 cm detector at 70 um: the breast fills more of the frame than on a film digitised whole, so a
        # lesion covers ~1.2x more of the network's input than on film (one of the shifts a film model meets).
        field_height_mm=250.0,
        bits_stored=14,
        photometric="MONOCHROME2",
        manufacturer="SYNTHETIC Digital Mammography",
        model_name="Synth-FFDM 70",
        detector_type="DIRECT",
        blur_mm=0.05,
        quantum_noise=0.012,
        equalisation=0.3,
        # A presentation gamma below 1 brightens the mid-tones. With gamma 1 and the 286 mm field of INbreast's
        # detector the demo's film model scored ffdm as well as film (0.853 vs 0.847) and showed no shift; with
        # both changes it falls to 0.72 while a model that also trains on ffdm reaches 0.90 (issue 12).
        tone=0.8,
    ),
    "hospital": Domain(
        name="hospital",
        chain="digital",
        field_height_mm=230.0,  # 19 x 23 cm detector
        bits_stored=12,
        photometric="MONOCHROME1",
        manufacturer="SYNTHETIC Hospital Imaging",
        model_name="Synth-Senograph 100",
        detector_type="SCINTILLATOR",
        blur_mm=0.35,
        quantum_noise=0.03,
        correlated_noise=0.02,
        correlated_noise_mm=0.6,
        equalisation=0.45,
        # The vendor's presentation curve: concave, so dense tissue and masses crowd into the top of the display
        # range; the masses stay clear (contrast-to-noise 0.72 of ffdm's, above film's). Calibrated on the demo's
        # seed-0 A+B model once the windows no longer saw the lesions and ffdm had its own gamma (issue 12):
        # hospital AUC 0.865 at -2.6 (no real drop from ffdm's 0.90), 0.786 at -3.2, 0.736 at -3.4, 0.545 at
        # -4.0; at -3.4 both fine-tuning configurations recover part of it, as thesis Tables 4 and 9
        # (0.967 -> 0.755, fine-tuned up to 0.80).
        tone=-3.4,
    ),
}


@dataclass
class Rendering:
    pixels: np.ndarray  # uint16 stored values, photometric and bit depth of the domain
    window: tuple[float, float] | None  # (centre, width) in stored values, for "for presentation" display
    burned_in: bool


def render(
    domain: Domain,
    attenuation: np.ndarray,
    mask: np.ndarray,
    spacing_mm: float,
    rng: np.random.Generator,
    label: str,
    chest_wall_left: bool,
    findings: np.ndarray | None = None,
) -> Rendering:
    """Stored pixel values of one view; `label` (e.g. 'LCC') is what a film would carry burned in.

    `findings` marks the pixels the lesions added attenuation to. The exposure reference, the digital
    window and the display window are measured on the breast without them: the malignant masses are
    exaggerated for learnability (lesions.py), and a window that saw them darkened every image with a
    cancer - median breast brightness alone predicted the label with an AUC of 0.16 on ffdm and hospital,
    a global shortcut no real detector offers (a real mass, barely denser than gland, does not move a
    histogram), and models trained on one domain ranked the other's cancers below its normals.
    """
    tissue = mask if findings is None else mask & ~findings
    sigma = domain.blur_mm / spacing_mm
    if sigma > 0.3:
        attenuation = cv2.GaussianBlur(attenuation, (0, 0), sigma)
    reference = float(np.median(attenuation[::4, ::4][tissue[::4, ::4]]))
    noise_scale = 0.1 / spacing_mm  # per-pixel noise falls with pixel size (more quanta / grains averaged)
    quantum = domain.quantum_noise * noise_scale * np.exp(np.clip(attenuation - reference, -8, 4) / 2)
    signal = attenuation + quantum * _normal(rng, attenuation.shape)
    if domain.chain == "film":
        brightness, burned_in = _film(domain, signal, mask, reference, noise_scale, rng, label, chest_wall_left)
    else:
        brightness, burned_in = _digital(domain, signal, attenuation, mask, tissue, reference, spacing_mm, rng), False
    stored = np.rint(np.clip(brightness, 0.0, 1.0) * domain.max_value).astype(np.uint16)
    if domain.photometric == "MONOCHROME1":
        stored = (domain.max_value - stored).astype(np.uint16)
    window = None
    if domain.chain == "digital":
        low, high = np.percentile(stored[::4, ::4][tissue[::4, ::4]], [0.5, 99.5])
        margin = 0.1 * (high - low)
        low, high = max(low - margin, 0.0), min(high + margin, float(domain.max_value))
        window = (float(round((low + high) / 2)), float(max(round(high - low), 2)))
    return Rendering(stored, window, burned_in)


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean unit-variance noise with a triangular density: the sum of two uniforms is visually and
    spectrally indistinguishable from Gaussian noise here and several times faster to draw."""
    noise = rng.random(shape, dtype=np.float32)
    noise += rng.random(shape, dtype=np.float32)
    noise -= 1.0
    noise *= np.float32(np.sqrt(6.0))
    return noise


def _film(domain, signal, mask, reference, noise_scale, rng, label, chest_wall_left) -> tuple[np.ndarray, bool]:
    gradient = domain.tone * rng.uniform(0.9, 1.1)
    slope = 4.0 * gradient / (FILM_DMAX - FILM_FOG) / np.log(10.0)  # per unit attenuation
    target = rng.uniform(*FILM_TARGET_OD)
    p = (target - FILM_FOG) / (FILM_DMAX - FILM_FOG)
    midpoint = reference + np.log(p / (1 - p)) / slope
    density = FILM_FOG + (FILM_DMAX - FILM_FOG) / (1.0 + np.exp(np.clip(slope * (signal - midpoint), -30, 30)))
    brightness = 1.0 - density / SCANNER_DMAX
    # Film grain (grows with optical density) and the scanner's white noise are independent, so one noise
    # field with their combined standard deviation has the same distribution as the two added.
    grain = domain.grain * noise_scale / SCANNER_DMAX
    brightness += np.sqrt(grain * grain * density + SCANNER_NOISE**2) * _normal(rng, density.shape)
    h, w = brightness.shape
    streaks = cv2.GaussianBlur(rng.normal(0.0, 1.0, (1, w)).astype(np.float32), (0, 0), 2.0)
    brightness += 0.006 * streaks / (streaks.std() + 1e-6)
    if rng.random() < 0.35:  # unexposed film edge under the cassette frame
        depth = int(h * rng.uniform(0.01, 0.035))
        band = slice(0, depth) if rng.random() < 0.5 else slice(h - depth, h)
        brightness[band] = rng.uniform(0.75, 0.92) + 0.01 * _normal(rng, brightness[band].shape)
    burned_in = domain.burned_in_labels and rng.random() < 0.85
    if burned_in:
        _burn_label(brightness, label, chest_wall_left, rng)
    return brightness, burned_in


def _burn_label(brightness: np.ndarray, label: str, chest_wall_left: bool, rng: np.random.Generator) -> None:
    """Bright view label in the top corner away from the chest wall, as film identification stamps are."""
    h, w = brightness.shape
    scale = h / 700.0 * rng.uniform(0.8, 1.2)
    thickness = max(1, int(round(scale * 2)))
    (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin_x = int(w * rng.uniform(0.03, 0.08))
    margin_y = int(h * rng.uniform(0.03, 0.08))
    x = w - margin_x - text_w if chest_wall_left else margin_x
    stamp = np.zeros((h, w), np.uint8)
    cv2.putText(stamp, label, (x, margin_y + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    alpha = stamp.astype(np.float32) / 255.0
    brightness *= 1.0 - alpha
    brightness += alpha * rng.uniform(0.9, 0.98)


def _digital(domain, signal, attenuation, mask, tissue, reference, spacing_mm, rng) -> np.ndarray:
    if domain.correlated_noise:
        field = cv2.GaussianBlur(_normal(rng, signal.shape), (0, 0), domain.correlated_noise_mm / spacing_mm)
        signal = signal + domain.correlated_noise * field / (field.std() + 1e-6)
    if domain.equalisation:
        signal = signal + domain.equalisation * (reference - _breast_mean(attenuation, mask, spacing_mm))
        signal = np.where(mask, signal, 0.0) * np.clip(attenuation / 0.6, 0.0, 1.0)
    low, high = np.percentile(signal[::4, ::4][tissue[::4, ::4]], [1.0, 99.8])
    low *= 0.6
    high += WINDOW_HEADROOM * (high - low)
    x = np.clip((signal - low) / (high - low), 0.0, 1.0)
    if domain.tone > 0:
        return x**domain.tone
    strength = -domain.tone
    return (1.0 - np.exp(-strength * x)) / (1.0 - np.exp(-strength))


def _breast_mean(attenuation: np.ndarray, mask: np.ndarray, spacing_mm: float, scale_mm: float = 20.0) -> np.ndarray:
    """Local mean attenuation over the breast only (normalised convolution at a ~2 mm grid)."""
    h, w = attenuation.shape
    factor = max(1, int(round(2.0 / spacing_mm)))
    small = (max(1, w // factor), max(1, h // factor))
    a = cv2.resize(attenuation * mask, small, interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    sigma = scale_mm / (spacing_mm * w / small[0])
    mean = cv2.GaussianBlur(a, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(m, (0, 0), sigma), 1e-3)
    return cv2.resize(mean, (w, h), interpolation=cv2.INTER_LINEAR)
