"""The whole DAG on the ci profile, as `make run` runs it (synthetic domains, pretraining, report).

Slow (a few minutes on 2 cores) but it is the promise the README makes: one command, a full report.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import MAMMO

from common import pipeline, runner

ROOT = Path(__file__).resolve().parents[1]
TABLE9 = ("baseline", "baseline+radiomics", "finetune-config1", "finetune-config2")


def _pipeline_run(workdir: Path):
    command = [*MAMMO, "pipeline", "run", "--profile", "ci", "--workdir", str(workdir)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, command, result.stdout


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    return _pipeline_run(tmp_path_factory.mktemp("ci_pipeline"))


@pytest.mark.slow
def test_ci_pipeline_writes_every_table9_row(ci_run):
    workdir, _, stdout = ci_run
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    for row in TABLE9:
        entry = summary["models"][row]
        lo, hi = entry["auc_ci95"]
        assert math.isfinite(entry["auc"]) and lo <= entry["auc"] <= hi, (row, entry)
        assert entry["threshold_source"] == "validation-gmean"
    # The summary repeats the step's own metrics.json rather than recomputing it differently.
    baseline = json.loads((workdir / "infer-ab-hospital" / "metrics.json").read_text())
    assert summary["models"]["baseline"]["auc"] == pytest.approx(baseline["auc"])
    # baseline-infer's penultimate features reach the report's domain-shift diagnostics for every pair.
    assert len(summary["domain_shift"]["pairs"]) == 6
    assert all(math.isfinite(pair["mmd2"]) for pair in summary["domain_shift"]["pairs"])
    html = (workdir / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="figures/' not in html
    assert str(workdir / "report" / "report.html") in stdout


@pytest.mark.slow
def test_ci_report_gradcam_maps_are_not_degenerate(ci_run):
    """The arrays the Grad-CAM figure draws (figures/gradcam.npz) are non-zero, non-constant maps of the
    fine-tuned model, and summary.json's per-map numbers are theirs (mean-gradient Grad-CAM gave 7 of 9 zero)."""
    workdir, _, _ = ci_run
    report = workdir / "report"
    cam = json.loads((report / "summary.json").read_text())["gradcam"]
    arrays = np.load(report / "figures" / "gradcam.npz")
    assert cam["model_folder"] == "finetune2-stage2" and cam["degenerate_maps"] == 0 and cam["lesions_known"]
    assert list(arrays["image_id"]) == [m["image_id"] for m in cam["maps"]] and len(cam["maps"]) == 9
    for entry, heat, breast in zip(cam["maps"], arrays["heat"], arrays["breast"], strict=True):
        assert heat.max() > 0 and np.ptp(heat) > 1e-3 * heat.max(), entry["image_id"]
        assert entry["degenerate"] is None and entry["max"] == pytest.approx(float(heat.max()), rel=1e-6)
        assert entry["shown"] == "full image"  # synthetic hospital DICOMs say BurnedInAnnotation NO
        assert entry["breast_mass_fraction"] == pytest.approx(heat[breast].sum() / heat.sum(), rel=1e-5)
    assert "is degenerate" not in (report / "report.html").read_text()


@pytest.mark.slow
def test_rerun_resumes_without_redoing_tasks(ci_run):
    workdir, command, _ = ci_run
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0
    plan = pipeline.tasks("synthetic", "ci")
    assert result.stdout.count("done earlier, skipped") == len(plan)


@pytest.mark.slow
def test_two_runs_give_identical_model_figures(ci_run, tmp_path):
    """Issue 11: seeded data, splits, augmentation and bootstrap, op determinism and fixed threads, so a second
    run from nothing on the same machine reproduces every model figure exactly (not approximately)."""
    first = json.loads((ci_run[0] / "report" / "summary.json").read_text())
    second_dir, _, _ = _pipeline_run(tmp_path / "again")
    second = json.loads((second_dir / "report" / "summary.json").read_text())
    assert json.dumps(second["models"], sort_keys=True) == json.dumps(first["models"], sort_keys=True)
    for name in ("infer-ab-hospital", "finetune1-stage2", "radiomics"):
        assert (second_dir / name / "scores.csv").read_bytes() == (ci_run[0] / name / "scores.csv").read_bytes(), name


@pytest.mark.slow
def test_another_profile_on_a_finished_work_folder_reuses_nothing(ci_run):
    """The reported bug: `pipeline run --profile demo` on a ci work folder skipped every task."""
    workdir, _, _ = ci_run
    assert runner.decide(pipeline.tasks("synthetic", "ci"), workdir) == [None] * len(pipeline.tasks("synthetic", "ci"))
    reasons = dict(zip([t.name for t in pipeline.tasks("synthetic", "demo")],
                       runner.decide(pipeline.tasks("synthetic", "demo"), workdir), strict=True))
    assert all(reasons.values()), reasons
    assert reasons["synth-film"].startswith("changed: argument --patients, profile synth.patients.film, ")
    assert reasons["report"].startswith("preprocess-film reruns (and ")
