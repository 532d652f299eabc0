"""The 34 features against independent computations: numpy/scipy for the histogram group, hand-written
matrices and plain loops for co-occurrence and run length, scipy/pywt filters for sharpness."""

from __future__ import annotations

import math
from collections import Counter

import cv2
import numpy as np
import pytest
import pywt
from scipy import ndimage, stats

from common.radiomics import FEATURE_NAMES, extract_features
from common.radiomics.density import dense_tissue
from common.radiomics.fractal import fractal_features
from common.radiomics.glcm import OFFSETS, cooccurrence, glcm_features
from common.radiomics.glcm import quantise as glcm_quantise
from common.radiomics.histogram import histogram_features
from common.radiomics.runlength import glrl_features, runs
from common.radiomics.runlength import quantise as glrl_quantise
from common.radiomics.sharpness import sharpness_features

REFERENCE_ORDER = (
    "imin imax iavg istd iran ient ip05 ip30 ip70 ip95 iba1 iba2 iske ikur cene ccor ccon chom cent "
    "rSRE rLRE rGLN rRPE rRLN rLGR rHGR sgra stev slap swas swav swar fdim pd"
).split()


def random_case(seed: int, shape=(40, 33), integer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.gamma(3.0, 400.0, size=shape)
    if integer:
        image = np.rint(image).clip(0, 65535).astype(np.uint16)
    mask = ndimage.binary_opening(rng.random(shape) < 0.75)
    mask[shape[0] // 2, :] = True  # never empty
    return image, mask


# ---------------------------------------------------------------- histogram group (independent numpy/scipy)


def hazen_percentile(x: np.ndarray, q: float) -> float:
    """MATLAB prctile: sorted values sit at percentages 100 (i - 0.5) / n; linear in between, clamped."""
    s = np.sort(x)
    n = s.size
    position = q / 100 * n + 0.5  # 1-based
    if position <= 1:
        return float(s[0])
    if position >= n:
        return float(s[-1])
    lower = int(math.floor(position))
    return float(s[lower - 1] + (position - lower) * (s[lower] - s[lower - 1]))


def expected_histogram(x: np.ndarray) -> dict[str, float]:
    x = x.astype(float)
    n = x.size
    mean = x.sum() / n
    p05, p30, p70, p95 = (hazen_percentile(x, q) for q in (5, 30, 70, 95))
    bins = np.minimum(np.floor((x - x.min()) / (x.max() - x.min()) * 256), 255).astype(int)
    p = np.bincount(bins, minlength=256) / n
    p = p[p > 0]
    eps = np.finfo(float).eps
    return {
        "imin": x.min(),
        "imax": x.max(),
        "iavg": mean,
        "istd": math.sqrt(((x - mean) ** 2).sum() / (n - 1)),
        "iran": x.max() - x.min(),
        "ient": float(-(p * np.log2(p)).sum()),
        "ip05": p05,
        "ip30": p30,
        "ip70": p70,
        "ip95": p95,
        "iba1": (p95 - mean + eps) / (mean - p05 + eps),
        "iba2": (p70 - mean + eps) / (mean - p30 + eps),
        "iske": float(stats.skew(x, bias=True)),
        "ikur": float(stats.kurtosis(x, fisher=False, bias=True)),
    }


@pytest.mark.parametrize("seed", range(6))
def test_histogram_features_match_independent_computation(seed):
    image, mask = random_case(seed, integer=seed % 2 == 0)
    found = histogram_features(image[mask])
    expected = expected_histogram(image[mask])
    assert list(found) == REFERENCE_ORDER[:14]
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


def test_hazen_percentile_matches_numpy_hazen_and_matlab_example():
    # MATLAB doc example: prctile([1 2 3 4], 50) = 2.5 and prctile(1:4, 10) = 1 (clamped).
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert hazen_percentile(x, 50) == 2.5
    assert hazen_percentile(x, 10) == 1.0
    found = histogram_features(np.array([1.0, 2.0, 3.0, 4.0, 10.0]))
    assert found["ip05"] == 1.0 and found["ip95"] == 10.0
    assert found["ip30"] == 2.0  # position 0.3 * 5 + 0.5 = 2.0 -> the 2nd sorted value
    assert found["ip70"] == 4.0  # position 0.7 * 5 + 0.5 = 4.0 -> the 4th sorted value


# ---------------------------------------------------------------- co-occurrence: a 4x4 image by hand

# Values 0..127 with max 127 quantise to themselves under floor(128 (x - 0) / 127) clipped to 127.
HAND = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 2, 2, 2], [2, 2, 127, 127]], dtype=float)
HAND_MASK = np.ones((4, 4), dtype=bool)
HAND_MASK[3, 3] = False  # its 127 must not count; the other 127 keeps the in-mask maximum at 127
LEVELS = [0, 1, 2, 127]

# Symmetric counts over LEVELS, written from the image by hand (pairs with pixel (3,3) left out).
HAND_GLCM = {
    (0, 1): [[4, 2, 1, 0], [2, 4, 0, 0], [1, 0, 6, 1], [0, 0, 1, 0]],  # 11 horizontal pairs
    (-1, 1): [[4, 1, 0, 0], [1, 2, 2, 0], [0, 2, 4, 1], [0, 0, 1, 0]],  # 9 pairs along r + c
    (-1, 0): [[6, 0, 2, 0], [0, 4, 2, 0], [2, 2, 2, 1], [0, 0, 1, 0]],  # 11 vertical pairs
    (-1, -1): [[2, 1, 3, 0], [1, 2, 1, 0], [3, 1, 0, 1], [0, 0, 1, 0]],  # 8 pairs along r - c
}


def glcm_props_by_formula(counts: np.ndarray, levels: list[int]) -> dict[str, float]:
    """graycoprops definitions evaluated term by term over the listed grey levels."""
    total = counts.sum()
    terms = [(levels[a], levels[b], counts[a, b] / total) for a in range(len(levels)) for b in range(len(levels))]
    mu_i = sum(i * p for i, _, p in terms)
    mu_j = sum(j * p for _, j, p in terms)
    sd_i = math.sqrt(sum((i - mu_i) ** 2 * p for i, _, p in terms))
    sd_j = math.sqrt(sum((j - mu_j) ** 2 * p for _, j, p in terms))
    return {
        "cene": sum(p * p for *_, p in terms),
        "ccor": sum((i - mu_i) * (j - mu_j) * p for i, j, p in terms) / (sd_i * sd_j),
        "ccon": sum((i - j) ** 2 * p for i, j, p in terms),
        "chom": sum(p / (1 + abs(i - j)) for i, j, p in terms),
        "cent": -sum(p * math.log2(p) for *_, p in terms if p > 0),
    }


def test_glcm_quantisation_of_the_hand_image():
    q = glcm_quantise(HAND, HAND_MASK)
    assert q[3, 3] == -1
    np.testing.assert_array_equal(q[HAND_MASK], HAND[HAND_MASK].astype(int))


@pytest.mark.parametrize("offset", OFFSETS)
def test_cooccurrence_matrices_equal_the_hand_written_ones(offset):
    counts = cooccurrence(glcm_quantise(HAND, HAND_MASK), offset)
    np.testing.assert_array_equal(counts[np.ix_(LEVELS, LEVELS)], HAND_GLCM[offset])
    assert counts.sum() == np.sum(HAND_GLCM[offset])  # nothing outside those levels


def test_glcm_features_of_the_hand_image():
    expected = [glcm_props_by_formula(np.array(HAND_GLCM[o], float), LEVELS) for o in OFFSETS]
    found = glcm_features(HAND, HAND_MASK)
    for name in REFERENCE_ORDER[14:19]:
        assert found[name] == pytest.approx(np.mean([e[name] for e in expected]), rel=1e-12), name
    # One number checked by hand: ASM at 0 degrees = (16 + 4 + 1 + 4 + 16 + 1 + 36 + 1 + 1) / 22^2.
    assert expected[0]["cene"] == pytest.approx(80 / 484)


def test_masked_pixels_do_not_change_texture_features():
    wild = HAND.copy()
    wild[3, 3] = 60000.0  # would change the quantisation range and add pairs/runs if it were used
    for function in (glcm_features, glrl_features):
        assert function(wild, HAND_MASK) == pytest.approx(function(HAND, HAND_MASK))


def loop_glcm_features(image: np.ndarray, mask: np.ndarray, levels: int = 128) -> dict[str, float]:
    """Independent reference: per-pixel loops, graycomatrix quantisation, graycoprops formulas."""
    lo, hi = image[mask].min(), image[mask].max()
    rows, cols = image.shape
    per_direction = []
    for dr, dc in OFFSETS:
        counts = np.zeros((levels, levels))
        for r in range(rows):
            for c in range(cols):
                r2, c2 = r + dr, c + dc
                if not (0 <= r2 < rows and 0 <= c2 < cols and mask[r, c] and mask[r2, c2]):
                    continue
                a = min(int(levels * (image[r, c] - lo) / (hi - lo)), levels - 1)
                b = min(int(levels * (image[r2, c2] - lo) / (hi - lo)), levels - 1)
                counts[a, b] += 1
                counts[b, a] += 1
        per_direction.append(glcm_props_by_formula(counts, list(range(levels))))
    return {name: float(np.mean([d[name] for d in per_direction])) for name in per_direction[0]}


@pytest.mark.parametrize("seed", range(3))
def test_glcm_features_equal_a_loop_implementation(seed):
    image, mask = random_case(seed, shape=(12, 10))
    found = glcm_features(image, mask)
    for name, value in loop_glcm_features(image, mask).items():
        assert found[name] == pytest.approx(value, rel=1e-10), name


# ---------------------------------------------------------------- run length: the same 4x4 image by hand

# Quantised to 256 levels: round(255 x / 127) -> 0 -> 0, 1 -> 2, 2 -> 4, 127 -> 255 (0-based levels).
Q = {0: 0, 1: 2, 2: 4, 127: 255}
HAND_RUNS = {  # (value, run length), read off the image by hand; pixel (3,3) is outside the mask
    0: [(0, 2), (1, 2), (0, 2), (1, 2), (0, 1), (2, 3), (2, 2), (127, 1)],
    90: [(0, 3), (2, 1), (0, 2), (2, 2), (1, 2), (2, 1), (127, 1), (1, 2), (2, 1)],
    45: [(0, 1), (0, 2), (1, 1), (0, 2), (1, 2), (2, 2), (1, 1), (2, 2), (2, 1), (127, 1)],
    135: [(1, 1), (1, 2), (0, 1), (1, 1), (2, 1), (0, 2), (2, 1), (0, 1), (2, 1), (127, 1), (0, 1), (2, 1), (2, 1)],
}


def tang_features(run_list: list[tuple[int, int]], n_pixels: int) -> dict[str, float]:
    """Tang 1998 with GLN/RLN over the number of runs, 1-based grey levels, term by term."""
    n = len(run_list)
    level_counts = Counter(g for g, _ in run_list)
    length_counts = Counter(j for _, j in run_list)
    return {
        "rSRE": sum(1 / j**2 for _, j in run_list) / n,
        "rLRE": sum(j**2 for _, j in run_list) / n,
        "rGLN": sum(c**2 for c in level_counts.values()) / n,
        "rRPE": n / n_pixels,
        "rRLN": sum(c**2 for c in length_counts.values()) / n,
        "rLGR": sum(1 / (g + 1) ** 2 for g, _ in run_list) / n,
        "rHGR": sum((g + 1) ** 2 for g, _ in run_list) / n,
    }


@pytest.mark.parametrize("direction", [0, 45, 90, 135])
def test_runs_equal_the_hand_written_ones(direction):
    levels, lengths = runs(glrl_quantise(HAND, HAND_MASK), direction)
    expected = sorted((Q[v], j) for v, j in HAND_RUNS[direction])
    assert sorted(zip(levels.tolist(), lengths.tolist(), strict=True)) == expected


def test_glrl_features_of_the_hand_image():
    per_direction = [tang_features([(Q[v], j) for v, j in HAND_RUNS[d]], 15) for d in (0, 45, 90, 135)]
    found = glrl_features(HAND, HAND_MASK)
    for name in REFERENCE_ORDER[19:26]:
        assert found[name] == pytest.approx(np.mean([d[name] for d in per_direction]), rel=1e-12), name
    assert found["rRPE"] == pytest.approx((8 + 10 + 9 + 13) / 4 / 15)


def test_a_masked_pixel_breaks_a_run():
    image = np.full((1, 7), 5.0)
    image[0, 0] = 0.0  # a second level so the range is not empty
    mask = np.ones((1, 7), dtype=bool)
    mask[0, 3] = False
    levels, lengths = runs(glrl_quantise(image, mask), 0)
    assert sorted(zip(levels.tolist(), lengths.tolist(), strict=True)) == [(0, 1), (255, 2), (255, 3)]


def loop_runs(image: np.ndarray, mask: np.ndarray, step: tuple[int, int], levels: int = 256) -> list[tuple[int, int]]:
    """Independent reference: walk every line pixel by pixel, MATLAB-rounded 256-level quantisation."""
    lo, hi = image[mask].min(), image[mask].max()
    rows, cols = image.shape
    dr, dc = step
    found = []
    for r in range(rows):
        for c in range(cols):
            if not mask[r, c]:
                continue
            level = math.floor((levels - 1) * (image[r, c] - lo) / (hi - lo) + 0.5)
            pr, pc = r - dr, c - dc
            if 0 <= pr < rows and 0 <= pc < cols and mask[pr, pc]:
                previous = math.floor((levels - 1) * (image[pr, pc] - lo) / (hi - lo) + 0.5)
                if previous == level:
                    continue  # not the start of a run
            length = 1
            nr, nc = r + dr, c + dc
            while 0 <= nr < rows and 0 <= nc < cols and mask[nr, nc]:
                if math.floor((levels - 1) * (image[nr, nc] - lo) / (hi - lo) + 0.5) != level:
                    break
                length += 1
                nr, nc = nr + dr, nc + dc
            found.append((level, length))
    return found


@pytest.mark.parametrize("seed", range(3))
def test_glrl_features_equal_a_loop_implementation(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 6, size=(11, 9)).astype(float) * 51  # few levels, so runs are long
    mask = rng.random(image.shape) < 0.8
    steps = {0: (0, 1), 45: (1, -1), 90: (1, 0), 135: (1, 1)}
    per_direction = [tang_features(loop_runs(image, mask, s), int(mask.sum())) for s in steps.values()]
    for d, s in steps.items():
        levels, lengths = runs(glrl_quantise(image, mask), d)
        assert sorted(zip(levels.tolist(), lengths.tolist(), strict=True)) == sorted(loop_runs(image, mask, s))
    found = glrl_features(image, mask)
    for name in REFERENCE_ORDER[19:26]:
        assert found[name] == pytest.approx(np.mean([d[name] for d in per_direction]), rel=1e-12), name


# ---------------------------------------------------------------- sharpness, fractal, density


@pytest.mark.filterwarnings("ignore:Level value of 3 is too high")  # a 64 x 48 image; boundary effects are fine
def test_sharpness_features_match_scipy_and_pywt_reconstructions():
    image, mask = random_case(7, shape=(64, 48))
    found = sharpness_features(image, mask)
    gx = ndimage.sobel(image, axis=1, mode="nearest")
    gy = ndimage.sobel(image, axis=0, mode="nearest")
    magnitude = np.hypot(gx, gy)[mask]
    lap = np.abs(ndimage.convolve1d(image, [-1, 2, -1], axis=1, mode="nearest")) + np.abs(
        ndimage.convolve1d(image, [-1, 2, -1], axis=0, mode="nearest")
    )
    assert found["sgra"] == pytest.approx(magnitude.mean(), rel=1e-5)
    assert found["stev"] == pytest.approx(magnitude.std(ddof=1), rel=1e-5)
    assert found["slap"] == pytest.approx(lap[mask].mean(), rel=1e-5)

    def band(level_coeffs, keep):  # reconstruct one sub-band alone with pywt.waverec2
        zeroed = [np.zeros_like(level_coeffs[0]) if keep != "a" else level_coeffs[0]]
        for k, details in enumerate(level_coeffs[1:]):
            zeroed.append(tuple(d if (keep == i and k == len(level_coeffs) - 2) else np.zeros_like(d)
                                for i, d in enumerate(details)))  # fmt: skip
        return pywt.waverec2(zeroed, "db6", mode="symmetric")[: image.shape[0], : image.shape[1]]

    one = pywt.wavedec2(image, "db6", mode="symmetric", level=1)
    h, v, d = (np.abs(band(one, i))[mask] for i in range(3))
    assert found["swas"] == pytest.approx(np.mean(h + v + d), rel=1e-9)
    assert found["swav"] == pytest.approx(h.var(ddof=1) + v.var(ddof=1) + d.var(ddof=1), rel=1e-9)
    approx = sum(np.abs(band(pywt.wavedec2(image, "db6", mode="symmetric", level=k), "a"))[mask] for k in (1, 2, 3))
    assert found["swar"] == pytest.approx(np.mean(h**2 + v**2 + d**2) / np.mean(approx), rel=1e-9)


def test_fractal_dimension_equals_block_average_surface_areas():
    rng = np.random.default_rng(3)
    image = rng.normal(1000, 50, size=(64, 64))
    mask = np.ones_like(image, dtype=bool)
    spacing = 0.1
    # Independent: exact 2^n block means by reshape; no pair outside the (full) mask to drop.
    log_eps, log_area = [], []
    for n in range(5):  # floor(log2 64) - 2 = 4
        f = 2**n
        blocks = image.reshape(64 // f, f, 64 // f, f).mean(axis=(1, 3))
        eps = spacing * f
        steps = np.abs(np.diff(blocks, axis=0)).sum() + np.abs(np.diff(blocks, axis=1)).sum()
        area = blocks.size * eps**2 + eps * steps
        log_eps.append(math.log(eps))
        log_area.append(math.log(area))
    expected = -np.polyfit(log_eps, log_area, 1)[0]
    assert fractal_features(image, mask, spacing)["fdim"] == pytest.approx(expected, rel=1e-5)


def fractional_surface(hurst: float, size: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    amplitude = radius ** -(hurst + 1)
    amplitude[0, 0] = 0.0
    phase = np.exp(2j * np.pi * rng.random((size, size)))
    surface = np.real(np.fft.ifft2(amplitude * phase))
    return 1000 + 200 * surface / surface.std()


def test_rougher_surfaces_have_a_higher_fractal_dimension():
    mask = np.ones((256, 256), dtype=bool)
    rough = fractal_features(fractional_surface(0.2), mask, 0.1)["fdim"]
    smooth = fractal_features(fractional_surface(0.8), mask, 0.1)["fdim"]
    assert 0 < smooth < rough < 1  # minus the slope = D - 2 with D = 3 - H


def test_percent_density_finds_a_dense_disk_and_ignores_small_blobs_and_skin():
    spacing = 0.5
    rng = np.random.default_rng(0)
    # Fat within one of the 25 levels, so the area curve drops all at once where the fat ends.
    image = rng.normal(1000, 3, size=(300, 240))
    yy, xx = np.mgrid[:300, :240]
    breast = (xx / 200.0) ** 2 + ((yy - 150) / 140.0) ** 2 <= 1
    disk = (xx - 70) ** 2 + (yy - 150) ** 2 <= 35**2
    speck = (xx - 150) ** 2 + (yy - 60) ** 2 <= 2**2  # ~13 px = 3 mm^2 < 16 mm^2
    image[disk | speck] += 600
    dense = dense_tissue(image, breast, spacing)
    assert (dense & disk).sum() / disk.sum() > 0.95
    assert not (dense & speck).any()
    assert not (dense & ~disk).any()
    features = extract_features(image, breast, spacing)
    assert features["pd"] == pytest.approx(dense.sum() / breast.sum())
    assert features["pd"] == pytest.approx(disk.sum() / breast.sum(), rel=0.05)


# ---------------------------------------------------------------- the public function


def test_extract_features_returns_the_34_names_in_reference_order_all_finite():
    image, mask = random_case(11, shape=(160, 120), integer=True)
    features = extract_features(image, mask, 0.4)
    assert list(features) == REFERENCE_ORDER == list(FEATURE_NAMES)
    assert len(features) == 34
    assert all(np.isfinite(v) for v in features.values())


def test_cropping_to_the_breast_changes_no_filter_value_inside_it():
    """The bounding-box crop (margin 96 px, origin on the 8-pixel grid) must equal the uncropped filters."""
    rng = np.random.default_rng(12)
    image = rng.gamma(3.0, 400.0, size=(400, 360))
    yy, xx = np.mgrid[:400, :360]
    mask = ((yy - 205) / 60.0) ** 2 + ((xx - 181) / 50.0) ** 2 <= 1
    uncropped = {**sharpness_features(image, mask), **glcm_features(image, mask), **glrl_features(image, mask),
                 **histogram_features(image[mask])}  # fmt: skip
    found = extract_features(image, mask, 0.1)
    for name, value in uncropped.items():
        assert found[name] == pytest.approx(value, rel=1e-9), name


@pytest.mark.parametrize(
    "image, mask, message",
    [
        (np.ones((20, 20)), np.ones((20, 20), bool), "single intensity"),
        (np.arange(400.0).reshape(20, 20), np.zeros((20, 20), bool), "fewer than"),
        (np.ones((20, 20)), np.ones((10, 10), bool), "same shape"),
    ],
)
def test_unusable_regions_raise_a_clear_error(image, mask, message):
    with pytest.raises(ValueError, match=message):
        extract_features(image, mask, 0.1)


def test_density_erosion_does_not_treat_the_chest_wall_edge_as_skin():
    spacing = 0.5
    image = np.full((200, 200), 100.0)
    image[:, :40] = 400.0  # dense band along the left edge (chest wall side)
    image += np.random.default_rng(1).normal(0, 5, image.shape)
    mask = np.zeros((200, 200), bool)
    mask[20:180, :150] = True
    dense = dense_tissue(image, mask, spacing)
    side = round(16 / spacing)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
    assert dense[100, :20].all()  # at the image edge: kept
    assert not (dense & ~inner).any()  # never inside the 8 mm skin band
