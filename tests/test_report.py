"""The report step on a small fake work directory written here: numbers copied faithfully, thesis table
rows, relative changes and paired tests checked by independent arithmetic, a self-contained HTML,
and missing parts stated rather than faked."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers import breast_png, finish_step, make_workdir, run_report
from sklearn.metrics import roc_curve

from common import metrics
from common.report import overlays
from common.report.figures import roc_points
from jobs.cli import main


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
    from common.model import Architecture, build_end2end
    from common.model_folder import Preprocessing

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

    def failing(model, images):
        raise RuntimeError("no gradient reached block4_conv3\n(traceback detail)")

    monkeypatch.setattr(gradcam, "gradcam_maps", failing)
    scores = pd.read_csv(root / "finetune2-stage2" / "scores.csv")
    cam = overlays.gradcam_figure(root / "finetune2-stage2", root / "preprocess-hospital" / "images",
                                  scores, 0.5, "Config 2",
                                  images=pd.read_csv(root / "preprocess-hospital" / "images.csv"))  # fmt: skip
    assert cam.png is None
    assert cam.caption == "Grad-CAM skipped: the hook failed (RuntimeError: no gradient reached block4_conv3)"


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


def _test_split(root, folder):
    scores = pd.read_csv(root / folder / "scores.csv", dtype={"patient_id": str})
    return scores[scores["split"] == "test"]


def test_calibration_levels_and_operating_points_match_independent_computations(built):
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import average_precision_score, brier_score_loss

    root, _, out, summary = built
    for key, folder in (("baseline", "infer-ab-hospital"), ("finetune-config1", "finetune1-stage2"),
                        ("baseline+radiomics", "radiomics")):  # fmt: skip
        test = _test_split(root, folder)
        raw = summary["calibration"][key]["raw"]
        assert raw["brier"] == pytest.approx(brier_score_loss(test["label"], test["score"]))
        observed, predicted = calibration_curve(test["label"], test["score"], n_bins=10, strategy="uniform")
        np.testing.assert_allclose(raw["curve"]["observed"], observed)
        np.testing.assert_allclose(raw["curve"]["mean_score"], predicted)
        assert summary["operating_points"][key]["auprc"] == pytest.approx(
            average_precision_score(test["label"], test["score"]))
    levels = {(r["level"], r["rule"]): r for r in summary["levels"]["baseline"]}
    test = _test_split(root, "infer-ab-hospital")
    breasts = test.groupby(["patient_id", "laterality"]).agg(label=("label", "max"), score=("score", "max"))
    assert levels[("breast", "max")]["auc"] == pytest.approx(metrics.roc_auc(breasts["label"], breasts["score"]))
    assert levels[("breast", "max")]["n"] == 16 and levels[("exam", "mean")]["n"] == 8
    assert [(r["level"], r["rule"]) for r in summary["levels"]["baseline+radiomics"]] == [
        ("exam", "patient-level model")]
    written = pd.read_csv(out / "tables" / "calibration.csv")
    assert set(written["scores"]) == {"raw", "platt", "isotonic"} and set(written["row"]) == set(summary["models"])


def test_subgroups_cohort_table_and_no_density_note(built):
    root, _, out, summary = built
    cells = {(c["attribute"], c["value"]): c for c in summary["subgroups"]["cells"]["baseline"]}
    test = _test_split(root, "infer-ab-hospital")
    assert cells[("view", "CC")]["n"] == (test["view"] == "CC").sum()
    split = pd.read_csv(root / "split-hospital" / "split.csv", dtype={"patient_id": str})
    strata = test["patient_id"].map(dict(zip(split["patient_id"], split["age_stratum"], strict=True)))
    for stratum in strata.unique():
        assert cells[("age", stratum)]["n"] == (strata == stratum).sum()
    assert not any(a == "density" for a, _ in cells)
    assert summary["subgroups"]["density"] == "no density in this cohort"
    page = (out / "report.html").read_text()
    assert "no density in this cohort" in page
    cohort = pd.read_csv(out / "tables" / "cohort.csv").set_index(["domain", "split"])
    assert cohort.loc[("hospital", "test"), "patients"] == 8 and cohort.loc[("hospital", "all"), "images"] == 32
    test_ages = split.loc[split["split"] == "test", "age"]
    assert cohort.loc[("hospital", "test"), "age_mean"] == pytest.approx(test_ages.mean())
    rejected = pd.read_csv(out / "tables" / "rejected_by_reason.csv")
    assert rejected.to_dict(orient="records") == [{"domain": "film", "reason": "not a DICOM file", "files": 2},
                                                  {"domain": "hospital", "reason": "not a DICOM file", "files": 2}]


def test_density_subgroup_appears_when_the_cohort_has_it(tmp_path):
    root, _ = make_workdir(tmp_path)
    images = pd.read_csv(root / "preprocess-hospital" / "images.csv")
    images["density"] = np.resize(["A", "B", "3", "4"], len(images))
    images.to_csv(root / "preprocess-hospital" / "images.csv", index=False)
    summary = run_report(root, tmp_path / "report")
    cells = {(c["attribute"], c["value"]): c for c in summary["subgroups"]["cells"]["baseline"]}
    test = _test_split(root, "infer-ab-hospital")
    density = test["image_id"].map(dict(zip(images["image_id"], images["density"].map(
        {"A": "A", "B": "B", "3": "C", "4": "D"}), strict=True))).fillna("unknown")  # fmt: skip
    assert density.value_counts()["unknown"] == 16  # patients 36-39 have no images.csv row here: shown as unknown
    assert {v for a, v in cells if a == "density"} == set(density)
    for value in ("A", "B", "C", "D", "unknown"):
        assert cells[("density", value)]["n"] == (density == value).sum()
    assert "no density in this cohort" not in (tmp_path / "report" / "report.html").read_text()


def test_domain_shift_diagnostics_rank_the_shifted_features(built):
    _, _, _, summary = built
    pairs = {(p["model"], p["domain"]): p for p in summary["domain_shift"]["pairs"]}
    assert pairs[("A+B", "hospital")]["mmd2"] > pairs[("A+B", "film")]["mmd2"] > pairs[("A+B", "ffdm")]["mmd2"]
    assert pairs[("A+B", "hospital")]["p_value"] < 0.01
    assert pairs[("A+B", "ffdm")]["p_value"] > 0.01  # the in-domain null check
    assert pairs[("A+B", "hospital")]["auc_drop"] == pytest.approx(
        summary["models"]["ab-ffdm"]["auc"] - summary["models"]["baseline"]["auc"])
    # The fake work directory has no ffdm images, so the intensity distance only exists where both sides do.
    assert np.isnan(pairs[("A+B", "ffdm")]["intensity_distance"] or np.nan)
    assert pairs[("A", "hospital")]["intensity_distance"] > 0.1  # film 0.5 vs hospital 0.75 brightness


def test_svg_figures_provenance_and_reproduce_commands(built):
    import subprocess
    import xml.etree.ElementTree as ElementTree

    root, _, out, summary = built
    for name in summary["figures"]:
        svg = ElementTree.parse(out / "figures" / f"{name}.svg").getroot()
        assert svg.tag.endswith("svg"), name
    assert {"calibration", "precision_recall", "subgroups", "domain_shift_diagnostics"} <= set(summary["figures"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert summary["provenance"]["git_commit"] == head
    assert summary["provenance"]["command"] == f"mammo report --workdir {root} --out {out} --profile ci"
    page = (out / "report.html").read_text()
    reproduce = page[page.index("<h2>Reproduce</h2>"):]
    assert summary["provenance"]["command"] in reproduce and head in reproduce
    assert f"mammo pipeline run --profile ci --workdir {root}" in reproduce
    assert not re.search(r"&lt;[A-Z_]+&gt;", reproduce)  # no <OUT>-style placeholder


def test_real_data_pipeline_command_is_rebuilt_from_the_step_records(tmp_path):
    from common.report import provenance
    from common.report.workdir import WorkDir

    def marker(folder, **record):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "_SUCCESS.json").write_text(json.dumps(record))

    marker("preprocess-hospital", inputs={"input": "/data/hospital dicom", "cohort": "/data/cohort.csv"})
    marker("infer-ab-hospital", inputs={"checkpoint": "/models/inbreast_vgg16_512x1.h5"},
           preprocessing={"featurewise_mean": 44.33})  # fmt: skip
    (tmp_path / "finetune2-stage1").mkdir()
    command = provenance.pipeline_command(WorkDir(tmp_path), "full")
    assert command == (f"mammo pipeline run --profile full --workdir {tmp_path} --configs 2 "
                       "--dicom '/data/hospital dicom' --cohort /data/cohort.csv "
                       "--checkpoint /models/inbreast_vgg16_512x1.h5 --checkpoint-mean 44.33")  # fmt: skip
    # A target read from a public dataset by `mammo cohort` is given back as --target DATASET:METADATA:DICOM.
    marker("cohort-hospital", inputs={"dataset": "vindr-mammo", "metadata": str(["/v/breast.csv", "/v/find.csv"]),
                                      "dicom": "/v/images"})  # fmt: skip
    marker("preprocess-hospital", inputs={"input": "/v/images", "cohort": str(tmp_path / "cohort-hospital/cohort.csv")})
    command = provenance.pipeline_command(WorkDir(tmp_path), "full")
    assert "--target vindr-mammo:/v/breast.csv,/v/find.csv:/v/images --checkpoint" in command
    assert "--dicom" not in command and "--cohort" not in command


def test_density_from_the_cohort_step_reaches_the_subgroups_and_cohort_table(tmp_path):
    """A public dataset's cohort.csv (mammo cohort) with per-patient density 1-4: no images.csv column needed."""
    root, _ = make_workdir(tmp_path)
    split = pd.read_csv(root / "split-hospital" / "split.csv", dtype={"patient_id": str})
    cohort = split[["patient_id", "age", "label"]].assign(density=[str(1 + i % 4) for i in range(len(split))])
    (root / "cohort-hospital").mkdir()
    cohort.to_csv(root / "cohort-hospital" / "cohort.csv", index=False)
    finish_step(root / "cohort-hospital")
    summary = run_report(root, tmp_path / "report")
    acr = cohort["density"].map({"1": "A", "2": "B", "3": "C", "4": "D"})
    per_patient = dict(zip(cohort["patient_id"], acr, strict=True))
    images = pd.read_csv(root / "preprocess-hospital" / "images.csv", dtype={"patient_id": str})
    test = _test_split(root, "infer-ab-hospital")
    known = test["patient_id"].isin(images["patient_id"])  # density reaches the images preprocessing kept
    cells = {(c["attribute"], c["value"]): c["n"] for c in summary["subgroups"]["cells"]["baseline"]}
    expected = test.loc[known, "patient_id"].map(per_patient).value_counts()
    assert {v: n for (a, v), n in cells.items() if a == "density" and v != "unknown"} == expected.to_dict()
    table = pd.read_csv(tmp_path / "report" / "tables" / "cohort.csv").set_index(["domain", "split"])
    all_images = images["patient_id"].map(per_patient).value_counts()
    assert table.loc[("hospital", "all"), "density_A"] == all_images.get("A", 0)


def test_the_report_names_steps_that_recorded_another_profile(built, tmp_path):
    """Steps record their profile in one place (`_SUCCESS.json` `profile.name`, common.artifacts.step_output)."""
    import shutil

    from common.artifacts import step_output
    from common.profile import load_profile

    root = tmp_path / "work"
    shutil.copytree(built[0], root)
    for folder, name in (("preprocess-film", "demo"), ("split-film", "ci")):
        with step_output(folder.split("-")[0], root / folder, {}, load_profile(name)):
            pass  # only the marker is rewritten; the folder's files stay
    run_report(root, tmp_path / "report")
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Steps recorded a different profile than this report's: preprocess-film: demo" in page
    assert "split-film: ci" not in page
