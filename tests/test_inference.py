"""Scoring (batched pipeline, flip TTA), learnability on a synthetic task, and Grad-CAM."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import HEIGHT, WIDTH, mammo, random_model, write_cohort, write_profile

from common.data import join_images_with_split
from common.gradcam import DEFAULT_LAYER, gradcam, gradcam_maps, gradcam_raw
from common.inference import predict_scores
from common.metrics import roc_auc
from common.model import load_model
from common.model_folder import Preprocessing

ROOT = Path(__file__).resolve().parents[1]


def reference_inputs(paths, mean: float) -> np.ndarray:
    """Shen's preprocessing written independently with OpenCV and numpy."""
    gray = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.float64) * 255 / 65535 - mean for p in paths]
    return np.stack([np.repeat(g[..., None], 3, axis=2) for g in gray]).astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    images_dir, split_dir = write_cohort(root, n_patients=8, seed=11)
    return join_images_with_split(images_dir, split_dir).frame


def test_batched_scores_equal_per_image_predictions(cohort):
    model = random_model(seed=12, input_scale=20.0)
    prep = Preprocessing(61.0, HEIGHT, WIDTH, "test")
    scores = predict_scores(model, cohort, prep, batch_size=5, tta=False, progress=False)
    expected = model.predict(reference_inputs(cohort["path"], 61.0), verbose=0)[:, 1]
    assert expected.std() > 1e-3
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)


def test_flip_tta_is_the_mean_of_four_flips(cohort):
    model = random_model(seed=13, input_scale=20.0)
    prep = Preprocessing(61.0, HEIGHT, WIDTH, "test")
    frame = cohort.iloc[:7]
    tta = predict_scores(model, frame, prep, batch_size=3, tta=True, progress=False)
    x = reference_inputs(frame["path"], 61.0)
    flips = [x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]
    expected = np.mean([model.predict(np.ascontiguousarray(f), verbose=0)[:, 1] for f in flips], axis=0)
    plain = model.predict(x, verbose=0)[:, 1]
    assert np.abs(expected - plain).max() > 1e-4, "flips must matter for this model, or the test proves nothing"
    np.testing.assert_allclose(tta, expected, rtol=1e-4, atol=1e-6)


def test_cam_equals_class_activation_map_at_the_last_feature_map(cohort):
    """At block2's output the head is GAP + Dense, so Grad-CAM must equal Zhou's CAM from the dense kernel."""
    model = random_model(seed=14, input_scale=20.0)
    x = reference_inputs(cohort["path"].iloc[:3], 61.0)
    features = model.get_layer("block2")(
        model.get_layer("block1")(model.get_layer("backbone")(x, training=False), training=False), training=False
    )
    features = np.asarray(features)
    kernel = model.get_layer("head").get_layer("head_dense").kernel.numpy()
    h, w = features.shape[1:3]
    expected = np.maximum(features @ ((kernel[:, 1] - kernel[:, 0]) / (h * w)), 0)
    np.testing.assert_allclose(gradcam_raw(model, x, "block2_maxpool"), expected, rtol=1e-4, atol=1e-6)
    heat = gradcam(model, x, "block5_conv3")
    assert heat.shape == (3, HEIGHT, WIDTH) and heat.min() >= 0 and heat.max() <= 1
    with pytest.raises(ValueError, match="no layer named"):
        gradcam(model, x, "block9_conv")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ci-size model pretrained through the CLI on the blob task (bright blob = positive)."""
    root = tmp_path_factory.mktemp("learn")
    images_dir, split_dir = write_cohort(root, n_patients=40, seed=21)
    profile = write_profile(root / "ci.yaml", pretrain={"epochs": 6})
    model_dir = root / "model"
    mammo("pretrain", images=images_dir, split=split_dir, out=model_dir, profile=profile)
    return images_dir, split_dir, model_dir, profile


def test_model_learns_the_blob_task_and_baseline_infer_reports_it(trained, tmp_path):
    images_dir, split_dir, model_dir, profile = trained
    out = tmp_path / "infer"
    mammo("baseline-infer", model=model_dir, images=images_dir, split=split_dir, out=out, profile=profile,
          splits="test", tta=True)
    scores = pd.read_csv(out / "scores.csv", dtype={"patient_id": str})
    assert set(scores["split"]) == {"validation", "test"}
    metrics = json.loads((out / "metrics.json").read_text())
    test = scores[scores["split"] == "test"]
    assert metrics["auc"] == pytest.approx(roc_auc(test["label"], test["score"]))
    assert metrics["auc"] >= 0.9, metrics
    assert json.loads((out / "_SUCCESS.json").read_text())["tta"] is True


def test_gradcam_points_at_the_blob(trained):
    images_dir, split_dir, model_dir, _ = trained
    frame = join_images_with_split(images_dir, split_dir).frame
    positives = frame[frame["label"] == 1].iloc[:8]
    prep = Preprocessing.read(model_dir)
    x = reference_inputs(positives["path"], prep.featurewise_mean)
    heat = gradcam(load_model(model_dir / "model.keras"), x, "block4_conv3")
    # The blob is the brightest smoothed spot: the heatmap peaks near it and is hotter there than on average.
    near, hotter = [], []
    for image, h in zip(x[..., 0], heat, strict=True):
        cy, cx = np.unravel_index(np.argmax(cv2.GaussianBlur(image, (0, 0), 5)), image.shape)
        hy, hx = np.unravel_index(np.argmax(h), h.shape)
        near.append(np.hypot(cy - hy, cx - hx) <= 24)
        hotter.append(h[max(cy - 8, 0) : cy + 8, max(cx - 8, 0) : cx + 8].mean() > 1.5 * h.mean())
    assert np.mean(near) >= 0.75 and np.mean(hotter) >= 0.75, (near, hotter)


def test_gradcam_mass_concentrates_on_the_region_the_decision_depends_on(trained):
    """The trained model's decision depends on one known region (the blob: negatives have none). At the layer
    the report uses, every positive image's map is non-zero and its mass per unit area inside that region is a
    clear multiple of the mass per unit area outside it (a uniform map scores 1)."""
    images_dir, split_dir, model_dir, _ = trained
    frame = join_images_with_split(images_dir, split_dir).frame
    positives = frame[frame["label"] == 1].iloc[:12]
    prep = Preprocessing.read(model_dir)
    x = reference_inputs(positives["path"], prep.featurewise_mean)
    maps = gradcam_maps(load_model(model_dir / "model.keras"), x, DEFAULT_LAYER)
    assert maps.shape == x.shape[:3] and maps.min() >= 0
    yy, xx = np.mgrid[: x.shape[1], : x.shape[2]]
    ratios = []
    for image, heat in zip(x[..., 0], maps, strict=True):
        cy, cx = np.unravel_index(np.argmax(cv2.GaussianBlur(image, (0, 0), 5)), image.shape)
        region = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16**2  # the blob: radius 8-13 px Gaussian
        assert heat.max() > 0
        ratios.append(heat[region].mean() / heat[~region].mean())
    assert np.median(ratios) >= 4 and min(ratios) >= 2, np.round(ratios, 2)


def test_baseline_infer_refuses_a_model_folder_without_success(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8)
    result = mammo("baseline-infer", model=tmp_path / "nothing", images=images_dir, split=split_dir,
                   out=tmp_path / "out", profile="ci", check=False)
    assert result.returncode == 2 and "_SUCCESS.json" in result.stderr


def test_penultimate_features_come_from_the_same_pass_as_the_scores(cohort):
    """The domain-shift features: the head's global average pool of the unflipped image, scores unchanged."""
    from common.inference import predict_scores_and_features

    model = random_model(seed=14, input_scale=20.0)
    prep = Preprocessing(61.0, HEIGHT, WIDTH, "test")
    frame = cohort.iloc[:5]
    scores, features = predict_scores_and_features(model, frame, prep, batch_size=2, tta=True, progress=False)
    np.testing.assert_allclose(scores, predict_scores(model, frame, prep, batch_size=2, tta=True, progress=False),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    trunk = model.layers[-1].layers[0](model.layers[2](model.layers[1](model.layers[0](
        reference_inputs(frame["path"], 61.0)))))  # fmt: skip
    assert features.shape == (5, trunk.shape[-1]) and np.asarray(trunk).std() > 0
    np.testing.assert_allclose(features, np.asarray(trunk), rtol=1e-4, atol=1e-6)
