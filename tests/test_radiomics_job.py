"""`mammo radiomics` end to end on small fixture folders (preprocess, split, baseline scores)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import joblib
import numpy as np
import pandas as pd
import pytest
from helpers import finish_step

from common.radiomics import FEATURE_NAMES
from common.radiomics.patient import attribute_names
from jobs.cli import main

SPACING = 0.8  # mm per pixel of the fixture hires images
N_PAIRS = 14
SPLITS = ["train"] * 9 + ["validation"] * 2 + ["test"] * 3
BURNED_IN = {"P00c_L_CC": "YES", "P00n_L_CC": "NO"}  # every other image: tag absent (UNKNOWN)
LABEL = (slice(5, 12), slice(78, 90))  # where breast_png burns its label, outside the breast


def breast_png(path: Path, view: str, dense: bool, seed: int) -> None:
    """A 120 x 96 px (96 x 77 mm) breast against the left edge; cases carry a bright dense region."""
    rng = np.random.default_rng(seed)
    rows, cols = 120, 96
    yy, xx = np.mgrid[:rows, :cols]
    body = (xx / 60.0) ** 2 + ((yy - 60) / 52.0) ** 2 <= 1
    image = np.where(body, 12000 + 4000 * np.clip(1 - xx / 60.0, 0, 1) + rng.normal(0, 600, (rows, cols)), 200.0)
    if dense:
        image[(xx - 25) ** 2 + (yy - 60) ** 2 <= 15**2] += 6000
    if view == "MLO":
        image[(xx / 20.0 + yy / 40.0 < 1)] += 9000
    image[LABEL] = 50000  # burned-in label
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.clip(image, 0, 65535).astype(np.uint16))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("radiomics")
    images, scores, split = [], [], []
    rng = np.random.default_rng(0)
    for pair in range(N_PAIRS):
        for label in (1, 0):
            pid = f"P{pair:02d}{'c' if label else 'n'}"
            split.append({"patient_id": pid, "pair_id": f"pair{pair}", "age": 50 + pair, "label": label,
                          "age_stratum": "[0, 200)", "split": SPLITS[pair % len(SPLITS)]})  # fmt: skip
            for lat in ("L", "R"):
                for view in ("CC", "MLO"):
                    image_id = f"{pid}_{lat}_{view}"
                    if image_id == "P01c_R_MLO":
                        continue  # a missing view
                    positive = int(label == 1 and lat == "L")
                    images.append({"image_id": image_id, "patient_id": pid, "laterality": lat, "view": view,
                                   "label": positive, "pixel_spacing_mm": 0.05, "hires_spacing_mm": SPACING,
                                   "original_height": 1920, "original_width": 1536,
                                   "burned_in_annotation": BURNED_IN.get(image_id, "")})  # fmt: skip
                    breast_png(root / "pre" / "hires" / f"{image_id}.png", view, bool(positive), seed=len(images))
                    score = float(np.clip(0.3 + 0.4 * positive + rng.normal(0, 0.1), 0, 1))
                    scores.append({"image_id": image_id, "patient_id": pid, "split": split[-1]["split"],
                                   "view": view, "laterality": lat, "label": positive, "score": score})  # fmt: skip
    (root / "pre" / "hires" / "P02n_L_CC.png").write_bytes(b"not a png")  # rejected, then imputed from L MLO
    split.append({"patient_id": "P99n", "pair_id": "", "age": 60, "label": 0, "age_stratum": "[0, 200)",
                  "split": "train"})  # in the cohort, but no image at all  # fmt: skip
    for name, frame, file in (("pre", images, "images.csv"), ("split", split, "split.csv"),
                              ("infer", scores, "scores.csv")):  # fmt: skip
        (root / name).mkdir(exist_ok=True)
        pd.DataFrame(frame).to_csv(root / name / file, index=False)
        finish_step(root / name)
    return {"images": root / "pre", "split": root / "split", "scores": root / "infer", "root": root}


@pytest.fixture(scope="module")
def run_output(folders) -> Path:
    out = folders["root"] / "radiomics"
    code = main(["radiomics", "--images", str(folders["images"]), "--split", str(folders["split"]),
                 "--scores", str(folders["scores"]), "--out", str(out), "--profile", "ci", "--workers", "2",
                 "--save-masks"])  # fmt: skip
    assert code == 0
    return out


def test_outputs_follow_the_contract(run_output):
    for name in ("features.csv", "patient_vectors.csv", "model.joblib", "cv_results.csv", "scores.csv",
                 "metrics.json", "rejected.csv", "_SUCCESS.json"):  # fmt: skip
        assert (run_output / name).is_file(), name
    features = pd.read_csv(run_output / "features.csv")
    assert list(features.columns) == ["image_id", *FEATURE_NAMES]
    assert len(features) == 4 * 2 * N_PAIRS - 2  # one view missing, one unreadable
    assert np.isfinite(features[list(FEATURE_NAMES)].to_numpy()).all()
    vectors = pd.read_csv(run_output / "patient_vectors.csv", keep_default_na=False)
    assert list(vectors.columns) == ["patient_id", "split", "label", *attribute_names(), "imputed"]
    assert len(attribute_names()) == 141 and len(vectors) == 2 * N_PAIRS
    scores = pd.read_csv(run_output / "scores.csv")
    assert list(scores.columns) == ["patient_id", "split", "label", "score"]
    assert scores["score"].between(0, 1).all() and len(scores) == len(vectors)


def test_missing_and_unreadable_views_are_imputed_and_recorded(run_output):
    vectors = pd.read_csv(run_output / "patient_vectors.csv", keep_default_na=False).set_index("patient_id")
    assert vectors.loc["P01c", "imputed"] == "RMLO<-RCC"
    assert vectors.loc["P02n", "imputed"] == "LCC<-LMLO"
    assert vectors.loc["P01c", "RMLO_iavg"] == vectors.loc["P01c", "RCC_iavg"]
    assert (vectors.drop(index=["P01c", "P02n"])["imputed"] == "").all()
    rejected = pd.read_csv(run_output / "rejected.csv")
    assert set(zip(rejected["id"], rejected["level"], strict=True)) == {("P02n_L_CC", "image"), ("P99n", "patient")}
    assert "cannot read" in rejected.set_index("id").loc["P02n_L_CC", "reason"]


def test_patient_metrics_and_selected_hyperparameters(run_output):
    metrics = json.loads((run_output / "metrics.json").read_text())
    assert metrics["level"] == "patient" and metrics["split"] == "test"
    assert metrics["threshold_source"] == "validation-gmean"
    assert metrics["n"] == 6 and metrics["n_pos"] == 3  # 3 test pairs
    lo, hi = metrics["auc_ci95"]
    assert lo <= metrics["auc"] <= hi
    assert metrics["best_params"] == {"gb__learning_rate": 0.1, "gb__max_depth": 2, "gb__min_samples_leaf": 2,
                                      "gb__n_estimators": 50, "gb__subsample": 0.8,
                                      "pca__n_components": 5}  # fmt: skip
    assert metrics["auc"] > 0.8  # the fixture's cases are separable by score and dense region
    cv = pd.read_csv(run_output / "cv_results.csv")
    assert len(cv) == 1 and "mean_test_score" in cv
    saved = joblib.load(run_output / "model.joblib")
    assert saved["attributes"] == attribute_names()
    vectors = pd.read_csv(run_output / "patient_vectors.csv", keep_default_na=False)
    again = saved["pipeline"].predict_proba(vectors[attribute_names()].to_numpy(float))[:, 1]
    scores = pd.read_csv(run_output / "scores.csv")
    np.testing.assert_allclose(again, scores["score"], rtol=1e-9)


def test_masks_are_written_for_the_report_and_follow_burned_in_annotation(run_output):
    """No overlay of a BurnedInAnnotation YES image; an untagged image's burned-in label is black in its
    overlay, while a NO image shows everything (the label is bright there)."""
    masks = {path.stem: path for path in (run_output / "masks").glob("*.png")}
    assert len(masks) == 4 * 2 * N_PAIRS - 2 - 1 and "P00c_L_CC" not in masks
    for image_id, path in masks.items():
        picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape == (120, 96, 3)
        label = int(picture[LABEL].max())
        assert label > 200 if image_id == "P00n_L_CC" else label == 0, image_id


def test_refuses_unfinished_inputs(folders, tmp_path, capsys):
    unfinished = tmp_path / "split"
    unfinished.mkdir()
    pd.read_csv(folders["split"] / "split.csv").to_csv(unfinished / "split.csv", index=False)
    code = main(["radiomics", "--images", str(folders["images"]), "--split", str(unfinished),
                 "--scores", str(folders["scores"]), "--out", str(tmp_path / "out"), "--profile", "ci"])  # fmt: skip
    assert code == 2
    assert "_SUCCESS.json" in capsys.readouterr().err
    assert not (tmp_path / "out" / "_SUCCESS.json").exists()


def test_feature_shards_and_merge_equal_the_unsharded_run(folders, run_output, tmp_path):
    """Three feature shards + the merge give the same features, rejected images, model scores and masks."""
    base = ["--images", str(folders["images"]), "--split", str(folders["split"]), "--scores", str(folders["scores"]),
            "--profile", "ci", "--save-masks"]
    parts = tmp_path / "radiomics.shards"
    for index in range(3):
        assert main(["radiomics", *base, "--out", str(parts / str(index)), "--workers", "1",
                     "--shard", f"{index}/3"]) == 0
        assert not (parts / str(index) / "features.csv").exists()
    merged = tmp_path / "radiomics"
    assert main(["radiomics", *base, "--out", str(merged), "--merge-shards", str(parts)]) == 0
    for name in ("features.csv", "rejected.csv", "patient_vectors.csv", "scores.csv"):
        assert (merged / name).read_text() == (run_output / name).read_text(), name
    cv_merged, cv_whole = (pd.read_csv(f / "cv_results.csv") for f in (merged, run_output))
    scores = [c for c in cv_whole.columns if "test_score" in c]  # the *_time columns are wall times
    assert scores and cv_merged[scores].equals(cv_whole[scores])
    masks = [sorted(p.name for p in (f / "masks").iterdir()) for f in (merged, run_output)]
    assert masks[0] == masks[1] and masks[0]
