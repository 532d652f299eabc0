"""The report step on a small fake work directory written here: numbers copied faithfully, thesis table
rows, relative changes and paired tests checked by independent arithmetic, a self-contained HTML,
and missing parts stated rather than faked."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_curve

from common import metrics
from common.report import overlays
from common.report.figures import roc_points
from jobs.cli import main

VIEWS = (("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO"))
PATIENTS = 40
N_BOOT = 60
# separation of cancer scores per model: the adapted models separate better than the baseline
SEPARATION = {"infer-a-film": 2.2, "infer-ab-film": 1.6, "infer-ab-ffdm": 2.4, "infer-a-hospital": 0.7,
              "infer-ab-hospital": 0.9, "finetune1-stage2": 1.5, "finetune2-stage2": 1.8}  # fmt: skip


def image_frame(seed: int) -> pd.DataFrame:
    """40 patients x 4 views; odd patients are cases with cancer in the left breast; 28/4/8 split."""
    rows = []
    for p in range(PATIENTS):
        split = "train" if p < 28 else "validation" if p < 32 else "test"
        for laterality, view in VIEWS:
            label = int(p % 2 == 1 and laterality == "L")
            rows.append({"image_id": f"P{p:03d}_{laterality}_{view}", "patient_id": f"P{p:03d}", "split": split,
                         "view": view, "laterality": laterality, "label": label})  # fmt: skip
    return pd.DataFrame(rows)


def write_model(folder, separation: float, seed: int, shuffle: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    frame = image_frame(seed)
    frame["score"] = 1 / (1 + np.exp(-(separation * frame["label"] + rng.normal(0, 1, len(frame)) - 1)))
    if shuffle:  # the report must pair models by image_id, not by row order
        frame = frame.sample(frac=1, random_state=seed)
    folder.mkdir(parents=True)
    frame.to_csv(folder / "scores.csv", index=False)
    values = metrics.evaluate(frame, level="image", n_boot=N_BOOT, seed=seed)
    (folder / "metrics.json").write_text(json.dumps(values))
    (folder / "_SUCCESS.json").write_text("{}")
    return values


def write_history(folder, stage: int, epochs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    epoch = np.arange(epochs)
    pd.DataFrame({"epoch": epoch, "stage": stage, "loss": 1.0 - 0.05 * epoch, "val_loss": 1.05 - 0.03 * epoch,
                  "val_auc": 0.6 + 0.01 * epoch, "lr": 1e-4}).to_csv(folder / "history.csv", index=False)  # fmt: skip
    (folder / "_SUCCESS.json").write_text("{}")


def breast_png(path, seed: int, bright: float, shape: tuple[int, int] = (96, 72)) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    inside = (x / (0.75 * shape[1])) ** 2 + ((y - shape[0] / 2) / (0.42 * shape[0])) ** 2 <= 1
    image = np.where(inside, bright + 0.15 * rng.standard_normal(shape), 0.03)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (np.clip(image, 0, 1) * 65535).astype(np.uint16))


def make_workdir(base):
    """Everything but infer-a-ffdm and the pretrain folders; radiomics is patient level."""
    root = base / "work"
    written = {}
    for number, (folder, separation) in enumerate(SEPARATION.items()):
        written[folder] = write_model(root / folder, separation, seed=number, shuffle=folder.startswith("finetune"))
    for config in (1, 2):
        write_history(root / f"finetune{config}-stage1", 1, 5)
        write_history(root / f"finetune{config}-stage2", 2, 3)
    images = image_frame(0)
    patients = images.groupby("patient_id", as_index=False).agg(split=("split", "first"), label=("label", "max"))
    patients["score"] = np.random.default_rng(9).uniform(size=len(patients)) * 0.5 + 0.4 * patients["label"]
    (root / "radiomics").mkdir()
    patients.to_csv(root / "radiomics" / "scores.csv", index=False)
    written["radiomics"] = metrics.evaluate(patients, level="patient", n_boot=N_BOOT, seed=3)
    (root / "radiomics" / "metrics.json").write_text(json.dumps(written["radiomics"]))
    features = image_frame(0)[["image_id", "patient_id"]].assign(iavg=np.linspace(0, 1, 160), cene=1.0)
    features.to_csv(root / "radiomics" / "features.csv", index=False)
    (root / "radiomics" / "_SUCCESS.json").write_text("{}")
    for domain, bright in (("film", 0.5), ("hospital", 0.75)):
        images = image_frame(0).head(8).assign(pixel_spacing_mm=0.1, original_width=720)
        for number, image_id in enumerate(images["image_id"]):
            breast_png(root / f"preprocess-{domain}" / "images" / f"{image_id}.png", number, bright)
        images.to_csv(root / f"preprocess-{domain}" / "images.csv", index=False)
        (root / f"preprocess-{domain}" / "_SUCCESS.json").write_text("{}")
    (root / "synth-hospital").mkdir()
    (root / "infer-a-ffdm").mkdir()  # started but never finished: must count as missing
    return root, written


def run_report(root, out) -> dict:
    assert main(["report", "--workdir", str(root), "--out", str(out), "--profile", "ci"]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One fake work directory (no model.keras anywhere) and its report, shared by the checks."""
    base = tmp_path_factory.mktemp("report")
    root, written = make_workdir(base)
    summary = run_report(root, base / "report")
    return root, written, base / "report", summary


def test_summary_copies_every_metric_and_states_what_is_missing(built):
    _, written, _, summary = built
    folders = {"baseline": "infer-ab-hospital", "baseline+radiomics": "radiomics",
               "finetune-config1": "finetune1-stage2", "finetune-config2": "finetune2-stage2",
               "a-film": "infer-a-film", "ab-film": "infer-ab-film", "ab-ffdm": "infer-ab-ffdm",
               "a-hospital": "infer-a-hospital"}  # fmt: skip
    assert set(summary["models"]) == set(folders)
    for key, folder in folders.items():
        for name in ("level", "split", "n", "n_pos", "auc", "auc_ci95", "threshold", "threshold_source",
                     "sensitivity", "specificity", "accuracy"):  # fmt: skip
            assert summary["models"][key][name] == pytest.approx(written[folder][name]), (key, name)
    assert summary["table9_rows"] == ["baseline", "baseline+radiomics", "finetune-config1", "finetune-config2"]
    assert "did not finish" in summary["missing_models"]["a-ffdm"]
    assert "pretrain-a" in summary["missing_parts"] and "ab-ffdm" not in summary["missing_models"]
    assert summary["data_source"] == "synthetic" and summary["backbone_width"] == 0.0625


def test_tables_changes_and_paired_tests(built):
    root, written, out, _ = built
    table9 = pd.read_csv(out / "tables" / "table9_comparison.csv")
    assert list(table9["row"]) == ["baseline", "baseline+radiomics", "finetune-config1", "finetune-config2"]
    assert table9["auc"].tolist() == pytest.approx([written[f]["auc"] for f in (
        "infer-ab-hospital", "radiomics", "finetune1-stage2", "finetune2-stage2")])
    table2 = pd.read_csv(out / "tables" / "table2_in_domain_ffdm.csv")
    assert table2.loc[0, "row"] == "a-ffdm" and table2.loc[0, "status"].startswith("missing")
    assert np.isnan(table2.loc[0, "auc"]) and table2.loc[1, "auc"] == pytest.approx(written["infer-ab-ffdm"]["auc"])

    changes = pd.read_csv(out / "tables" / "relative_changes.csv").set_index(["row", "reference", "metric"])
    base = written["infer-ab-hospital"]
    for key, folder in (("finetune-config1", "finetune1-stage2"), ("baseline+radiomics", "radiomics")):
        for name in ("auc", "sensitivity", "specificity"):
            expected = 100 * (written[folder][name] - base[name]) / base[name]
            assert changes.loc[(key, "baseline", name), "relative_change_pct"] == pytest.approx(expected)
    drop = 100 * (base["auc"] - written["infer-ab-ffdm"]["auc"]) / written["infer-ab-ffdm"]["auc"]
    assert changes.loc[("baseline", "ab-ffdm", "auc"), "relative_change_pct"] == pytest.approx(drop)
    assert ("a-hospital", "a-ffdm", "auc") not in changes.index  # a-ffdm is missing, so no comparison is made up

    tests = pd.read_csv(out / "tables" / "paired_tests.csv").set_index(["row", "reference"])
    baseline = pd.read_csv(root / "infer-ab-hospital" / "scores.csv").sort_values("image_id")
    tuned = pd.read_csv(root / "finetune1-stage2" / "scores.csv").sort_values("image_id")
    test = (baseline["split"] == "test").to_numpy()
    assert (baseline["image_id"].to_numpy() == tuned["image_id"].to_numpy()).all()
    _, _, p = metrics.delong_test(baseline["label"][test], tuned["score"][test], baseline["score"][test])
    assert tests.loc[("finetune-config1", "baseline"), "p_value"] == pytest.approx(p)
    assert tests.loc[("finetune-config1", "baseline"), "n"] == test.sum()
    radiomics_row = tests.loc[("baseline+radiomics", "baseline")]
    assert radiomics_row["level"] == "patient" and radiomics_row["n"] == 8  # the 8 test patients
    assert radiomics_row["auc_reference"] == pytest.approx(
        metrics.roc_auc(*_max_over_views(baseline[baseline["split"] == "test"])))


def _max_over_views(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    per_patient = {}
    for row in frame.itertuples():
        label, score = per_patient.get(row.patient_id, (0, -np.inf))
        per_patient[row.patient_id] = (max(label, row.label), max(score, row.score))
    labels, scores = zip(*per_patient.values(), strict=True)
    return np.array(labels), np.array(scores)


def test_html_is_self_contained_and_notes_skipped_parts(built):
    _, _, out, summary = built
    page = (out / "report.html").read_text()
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.IGNORECASE)
    assert references and all(ref.startswith("data:image/png;base64,") for ref in references)
    assert page.count("data:image/png;base64,") == len(summary["figures"])
    assert {"roc_table9", "roc_domains", "loss_config1", "loss_config2", "score_distributions",
            "confusion_matrices", "domain_shift", "target_features"} <= set(summary["figures"])  # fmt: skip
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(summary["figures"])
    assert "Grad-CAM skipped: no finished model folder with model.keras at finetune2-stage2" in page
    assert "gradcam" in summary["figures_skipped"]
    assert "infer-a-ffdm" in page and "SYNTHETIC" in page and "Narrowed backbone" in page
    markdown = (out / "report.md").read_text()
    assert "| VGG16 Baseline |" in markdown and "](figures/roc_table9.png)" in markdown


def test_roc_points_match_scikit_learn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # ties on purpose
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    ours = roc_points(y, s)
    np.testing.assert_allclose(ours[0], fpr)
    np.testing.assert_allclose(ours[1], tpr)


def test_gradcam_overlays_come_from_the_model_code(tmp_path, monkeypatch):
    """A tiny real End2End model in finetune2-stage2: the hook loads it and calls common.gradcam."""
    from common import gradcam
    from common.data import Preprocessing
    from common.model import Architecture, build_end2end

    root, _ = make_workdir(tmp_path)
    build_end2end(Architecture(160, 128, (2, 2, 2, 2, 2), 4), dropout=0.0, weight_decay=0.0).save(
        root / "finetune2-stage2" / "model.keras")
    Preprocessing(featurewise_mean=40.0, height=160, width=128, source="test").write(root / "finetune2-stage2")
    test = pd.read_csv(root / "finetune2-stage2" / "scores.csv").query("split == 'test'")
    for image_id in test["image_id"]:
        breast_png(root / "preprocess-hospital" / "images" / f"{image_id}.png", 0, 0.6, shape=(160, 128))
    test.assign(pixel_spacing_mm=0.5, original_height=160, original_width=128, flipped=False,
                burned_in_annotation="NO").to_csv(root / "preprocess-hospital" / "images.csv", index=False)
    batches, original = [], gradcam.gradcam_maps

    def spy(model, images):
        batches.append(images.shape)
        return original(model, images)

    monkeypatch.setattr(gradcam, "gradcam_maps", spy)
    summary = run_report(root, tmp_path / "report")
    assert "gradcam" in summary["figures"], summary["figures_skipped"]
    assert batches == [(9, 160, 128, 3)]  # highest, lowest and nearest-threshold 3 test images, as model input

    monkeypatch.setattr(overlays, "GRADCAM_MODULE", "common.no_such_gradcam")
    scores = pd.read_csv(root / "finetune2-stage2" / "scores.csv")
    cam = overlays.gradcam_figure(root / "finetune2-stage2", root / "preprocess-hospital" / "images",
                                  scores, 0.5, "Config 2",
                                  images=pd.read_csv(root / "preprocess-hospital" / "images.csv"))  # fmt: skip
    assert cam.png is None and cam.caption == "Grad-CAM skipped: common.no_such_gradcam is not available in this build"


def test_without_the_baseline_the_report_refuses(tmp_path, capsys):
    root, _ = make_workdir(tmp_path)
    (root / "infer-ab-hospital" / "_SUCCESS.json").unlink()
    assert main(["report", "--workdir", str(root), "--out", str(tmp_path / "report"), "--profile", "ci"]) == 2
    assert "infer-ab-hospital is required" in capsys.readouterr().err
    assert not (tmp_path / "report" / "_SUCCESS.json").exists()


def test_data_source_is_read_from_synth_folders_or_preprocess_inputs(tmp_path):
    from common.report.workdir import WorkDir

    def marker(folder, source):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "_SUCCESS.json").write_text(json.dumps({"inputs": {"input": source}}))

    marker("preprocess-hospital", "/data/hospital/dicom")
    assert WorkDir(tmp_path).data_source() == "real"
    marker("preprocess-film", "/work/synth-film/dicom")  # on Argo the synth folders are not mounted
    assert WorkDir(tmp_path).data_source() == "synthetic"
