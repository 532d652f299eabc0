"""Assemble the report from a work directory: tables, figures, HTML, Markdown and summary.json.

Protocol stated in every report (thesis 4.6): each model's threshold maximises G-mean on the
validation split and is frozen before the test split is scored; AUC CIs are nonparametric bootstrap
percentile intervals (patients resampled at image level); paired comparisons are DeLong tests.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from common import metrics
from common.artifacts import atomic_write_bytes, atomic_write_csv, atomic_write_text, finite_json
from common.profile import Profile
from common.report import domain, figures, overlays, provenance, publication, render, tables
from common.report.figures import Figure, split_curve
from common.report.render import Code, Note, Paragraph, Section, Table
from common.report.tables import ROW, TABLE9, TABLES
from common.report.workdir import DOMAINS, METRIC_FIELDS, WorkDir

TITLE = "Domain shift of End2End VGG16 on the hospital's mammograms"
GRADCAM_ORDER = ("finetune-config2", "finetune-config1", "baseline")
ABOUT = "About this report"
TABLE9_SECTION = "Before and after domain adaptation (Table 9)"
GRADCAM_SECTION = "Grad-CAM"
PRETRAINED_REFERENCES = ["a-hospital", "a-ffdm", "a-film"]
# Where each publication section goes: after the section of this title (common.report.publication).
PUBLICATION_PLACES = (
    ("cohort", ABOUT),
    ("calibration", TABLE9_SECTION),
    ("levels", "Calibration: can a score be read as a probability?"),
    ("operating_points", "Image, breast and exam level"),
    ("subgroups", "Operating points and precision-recall"),
    ("domain_shift", GRADCAM_SECTION),
)


def build_report(workdir_path: str | Path, out_dir: str | Path, *, profile_name: str, profile: Profile,
                 command: str | None = None, show_burned_in: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write report.html, report.md, tables/, figures/ (PNG and SVG) and summary.json into `out_dir`; return the
    summary. `command` is the exact command that made this report (default: the equivalent `mammo report`).

    `show_burned_in`: figures may show images tagged BurnedInAnnotation YES (common.burned_in).
    """
    workdir = WorkDir.open(workdir_path)
    out = Path(out_dir)
    n_boot, seed = profile.metrics.bootstrap, profile.metrics.seed
    found = tables.model_metrics(workdir)
    thesis = {table.name: tables.thesis_table(table, found, workdir) for table in TABLES}
    changes = tables.relative_changes(found)
    tests = tables.paired_tests(found, workdir)
    patient = tables.patient_level_view(found, workdir, n_boot=n_boot, seed=seed)
    made, skipped, domain_features = _figures(workdir, found, n_boot=n_boot, seed=seed, show_burned_in=show_burned_in)
    extra = publication.build(workdir, found, n_boot=n_boot, seed=seed)
    parts = pd.DataFrame(workdir.parts(), columns=["part", "status"])

    context = _context(workdir, profile_name, profile)
    context["command"] = command or provenance.report_command(str(workdir_path), str(out_dir), profile_name)
    sections = _sections(Material(context, thesis, changes, tests, patient, made, skipped, parts, workdir, profile))
    sections = _place_publication(sections, extra)
    made, skipped = {**made, **extra.figures}, {**skipped, **extra.skipped}
    subtitle = (f"profile {profile_name} | data {context['data_source']} | work directory {workdir.root} | "
                f"generated {context['generated']}")  # fmt: skip

    for folder in ("tables", "figures"):  # a re-run must not leave stale files from an earlier report
        shutil.rmtree(out / folder, ignore_errors=True)
    for name, frame in thesis.items():
        atomic_write_csv(out / "tables" / f"{name}.csv", frame)
    atomic_write_csv(out / "tables" / "relative_changes.csv", changes)
    atomic_write_csv(out / "tables" / "paired_tests.csv", tests)
    atomic_write_csv(out / "tables" / "table9_patient_level.csv", patient)
    atomic_write_csv(out / "tables" / "work_directory.csv", parts)
    if not domain_features.empty:
        atomic_write_csv(out / "tables" / "domain_shift_features.csv", domain_features)
    for name, frame in extra.tables.items():
        atomic_write_csv(out / "tables" / f"{name}.csv", frame)
    for figure in made.values():
        atomic_write_bytes(out / "figures" / f"{figure.name}.png", figure.png)
        if figure.svg is not None:
            atomic_write_bytes(out / "figures" / f"{figure.name}.svg", figure.svg)
        if figure.arrays is not None:
            atomic_write_bytes(out / "figures" / f"{figure.name}.npz", figure.arrays)
    atomic_write_text(out / "report.md", render.to_markdown(TITLE, subtitle, sections))
    summary = {**_summary(context, found, changes, tests, patient, workdir, made, skipped), **extra.summary}
    atomic_write_text(out / "summary.json", json.dumps(finite_json(summary), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "report.html", render.to_html(TITLE, subtitle, sections))
    return summary


def _context(workdir: WorkDir, profile_name: str, profile: Profile) -> dict[str, Any]:
    settings = profile.to_dict()
    width = profile.model.backbone_width
    return {
        "profile": profile_name,
        "data_source": workdir.data_source(),
        "backbone_width": width,
        "image_size": settings["image"],
        "bootstrap": settings["metrics"],
        "workdir": str(workdir.root),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": provenance.code_version(),
        "pipeline_command": provenance.pipeline_command(workdir, profile_name),
    }


class Drawn:
    """The figures drawn so far, and for each one not drawn the reason (in drawing order: the report lists them)."""

    def __init__(self) -> None:
        self.made: dict[str, Figure] = {}
        self.skipped: dict[str, str] = {}

    def add(self, name: str, title: str, caption: str, png: bytes | None, reason: str = "") -> None:
        if png is None:
            self.skipped[name] = reason
        else:
            self.made[name] = Figure(name, title, caption, png)


def _figures(workdir: WorkDir, found: dict, *, n_boot: int, seed: int, show_burned_in: bool = False
             ) -> tuple[dict[str, Figure], dict[str, str], pd.DataFrame]:  # fmt: skip
    """Every figure of the report: ROC curves, loss curves, score figures, Grad-CAM, domain shift."""
    drawn = Drawn()
    scores = {key: workdir.scores(ROW[key].folder) for key in found}
    scores = {key: frame for key, frame in scores.items() if frame is not None}
    _roc_figures(drawn, found, scores, n_boot=n_boot, seed=seed)
    _loss_figures(drawn, workdir)
    _score_figures(drawn, found, scores)
    _gradcam_figure(drawn, workdir, found, scores, show_burned_in)
    domain_features = _domain_figures(drawn, workdir)
    return drawn.made, drawn.skipped, domain_features


def _roc_figures(drawn: Drawn, found: dict, scores: dict[str, pd.DataFrame], *, n_boot: int, seed: int) -> None:
    boot = f"shaded: pointwise 95% bootstrap band ({n_boot} resamples, seed {seed})"
    panels = {}
    for dataset in DOMAINS:
        keys = [row.key for row in tables.ROWS if row.dataset == dataset and row.setting != "adapted"]
        curves = [split_curve(f"{ROW[k].pretrained_with}", scores[k], found[k]["level"]) for k in keys if k in scores]
        if curves:
            panels[f"{dataset} test ({'target' if dataset == 'hospital' else 'source'})"] = curves
    drawn.add("roc_domains", "ROC curves of the pretrained variants on each domain (Tables 2-4)",
              f"Image-level test split; {boot}, patients resampled.",
              figures.roc_figure(panels, n_boot=n_boot, seed=seed))

    image_curves = [split_curve(ROW[k].model, scores[k], "image") for k in TABLE9
                    if k in scores and found[k]["level"] == "image"]  # fmt: skip
    patient_curves = [_patient_curve(k, scores[k], found[k]["level"]) for k in TABLE9 if k in scores]
    drawn.add("roc_table9", "ROC curves before and after domain adaptation on the hospital test split (Table 9)",
              f"Left: image level. Right: patient level (CNN scores collapsed by the max over views; radiomics is "
              f"patient level by construction). {boot}.",
              figures.roc_figure({"image level": image_curves, "patient level": patient_curves}, n_boot=n_boot,
                                 seed=seed))  # fmt: skip


def _loss_figures(drawn: Drawn, workdir: WorkDir) -> None:
    """Thesis Figures 3 and 4 (both fine-tuning stages on one axis), then the source pretraining curves."""
    for config, figure_number in ((1, 3), (2, 4)):
        stage1, stage2 = workdir.history(f"finetune{config}-stage1"), workdir.history(f"finetune{config}-stage2")
        name = f"loss_config{config}"
        if stage1 is None and stage2 is None:
            drawn.skipped[name] = f"no history.csv in finetune{config}-stage1 or finetune{config}-stage2"
            continue
        history, boundary = figures.stage_history(stage1, stage2)
        drawn.add(name, f"Loss curves, fine-tuning Config {config} (thesis Figure {figure_number})",
                  "Training and validation loss per epoch, stage 1 then stage 2 on one axis; dashed line: stage "
                  "boundary. The loss includes the L2 weight-decay penalty of the trainable layers: stage 2 penalises "
                  "every layer at its larger decay, so the level jumps at the boundary while the cross-entropy need "
                  "not." + ("" if boundary is not None else " Only one stage's history is available."),
                  figures.loss_figure(history, boundary, f"Config {config}"))
    for model in ("a", "ab"):
        history = workdir.history(f"pretrain-{model}")
        if history is not None:
            frame, _ = figures.stage_history(history, None)
            drawn.add(f"loss_pretrain_{model}", f"Source pretraining curves, pretrain-{model}",
                      "Training and validation loss of the source-domain pretraining.",
                      figures.loss_figure(frame, None, f"pretrain-{model}"))


def _score_figures(drawn: Drawn, found: dict, scores: dict[str, pd.DataFrame]) -> None:
    rows = [(ROW[k].model + f" ({found[k]['level']})", split_curve(ROW[k].model, scores[k], found[k]["level"]),
             float(found[k]["threshold"])) for k in TABLE9 if k in scores]  # fmt: skip
    drawn.add("score_distributions", "Test score distributions by class (Table 9 models)",
              "Dashed line: the threshold frozen on the validation split (G-mean).",
              figures.score_distribution_figure(rows))
    drawn.add("confusion_matrices", "Confusion matrices on the test split at the validation thresholds (Table 9 "
              "models)", "Rows: true class; columns: predicted class.", figures.confusion_figure(rows))


def _gradcam_figure(drawn: Drawn, workdir: WorkDir, found: dict, scores: dict, show_burned_in: bool) -> None:
    cam = _gradcam(workdir, found, scores, show_burned_in)
    if cam.png is None:
        drawn.skipped["gradcam"] = cam.caption
    else:
        drawn.made["gradcam"] = Figure("gradcam", "Grad-CAM overlays of the most and least confident test images",
                                       "Rows: highest scores, lowest scores, scores closest to the frozen validation "
                                       f"threshold. {cam.caption}.", cam.png, cam.warnings, cam.details, cam.arrays)


def _domain_figures(drawn: Drawn, workdir: WorkDir) -> pd.DataFrame:
    """The domain-shift figure (its per-image features are returned for tables/) and the target's radiomic features."""
    png, domain_features, notes = domain.domain_shift_figure(workdir)
    drawn.add("domain_shift", "Domain shift: source vs target network inputs",
              f"An evenly spaced sample of up to {domain.SAMPLE_PER_DOMAIN} images per domain, breast segmented with "
              "the radiomics step's segmentation. " + " ".join(notes), png, " ".join(notes) or "no preprocessed images")
    features = workdir.table("radiomics", "features.csv")
    if features is None:
        drawn.skipped["target_features"] = f"radiomics/features.csv: {workdir.missing.get('radiomics', 'absent')}"
    else:
        drawn.add("target_features", "Radiomic features of the target images (features.csv)",
                  "Each feature standardised over all target images; boxes split by image label.",
                  domain.target_features_figure(features, workdir.table("preprocess-hospital", "images.csv")),
                  "features.csv holds no numeric feature")
    return domain_features


def _patient_curve(key: str, scores: pd.DataFrame, level: str):
    if level == "patient":
        return split_curve(ROW[key].model, scores, "patient")
    collapsed = metrics.patient_scores(scores, how=tables.PATIENT_RULE)
    return split_curve(f"{ROW[key].model} ({tables.PATIENT_RULE})", collapsed, "patient")


def _gradcam(workdir: WorkDir, found: dict, scores: dict, show_burned_in: bool) -> overlays.GradcamFigure:
    key = next((k for k in GRADCAM_ORDER if k in scores and found[k]["level"] == "image"), None)
    if key is None:
        return overlays.GradcamFigure(None, "Grad-CAM skipped: no image-level model scores")
    # The baseline's model lives in pretrain-ab when pretrained here, else beside its scores.
    candidates = (ROW[key].folder,) if key != "baseline" else ("pretrain-ab", ROW[key].folder)
    model_part = next((p for p in candidates if workdir.done(p) and (workdir.path(p) / "model.keras").is_file()), None)
    if model_part is None:
        return overlays.GradcamFigure(
            None, f"Grad-CAM skipped: no finished model folder with model.keras at {' or '.join(candidates)}")
    if not workdir.done("preprocess-hospital"):
        return overlays.GradcamFigure(None, "Grad-CAM skipped: preprocess-hospital is not in the work directory")
    return overlays.gradcam_figure(workdir.path(model_part), workdir.path("preprocess-hospital") / "images",
                                   scores[key], float(found[key]["threshold"]), ROW[key].model,
                                   images=workdir.table("preprocess-hospital", "images.csv"),
                                   lesions=workdir.table("synth-hospital", "lesions.csv"),
                                   show_burned_in=show_burned_in)  # fmt: skip


@dataclass(frozen=True)
class Material:
    """Everything the sections are written from."""

    context: dict[str, Any]
    thesis: dict[str, pd.DataFrame]
    changes: pd.DataFrame
    tests: pd.DataFrame
    patient: pd.DataFrame
    made: dict[str, Figure]
    skipped: dict[str, str]
    parts: pd.DataFrame
    workdir: WorkDir
    profile: Profile

    def figures(self, *names: str) -> list[Any]:
        """The named figures that were drawn, each followed by its warnings."""
        return [block for name in names if name in self.made
                for block in (self.made[name], *(Note(warning) for warning in self.made[name].warnings))]  # fmt: skip

    def thesis_table(self, name: str, caption: str = "") -> Table:
        return Table(_title(name), render.thesis_layout(self.thesis[name]), caption)


def _sections(material: Material) -> list[Section]:
    """The report's sections in reading order, one builder each (SECTIONS)."""
    return [Section(title, build(material)) for title, build in SECTIONS]


def _about(m: Material) -> list[Any]:
    context = m.context
    blocks: list[Any] = [Paragraph(
        f"Profile: {context['profile']} ({m.profile.description}). Input size "
        f"{context['image_size']['height']}x{context['image_size']['width']}. Data source: {context['data_source']}.")]
    if context["data_source"] == "synthetic":
        blocks.append(Note("The data are SYNTHETIC (mammo synth domains film, ffdm and hospital): the numbers show "
                           "the pipeline and the direction of the thesis' effects, not clinical performance."))
    if context["backbone_width"] < 1:
        blocks.append(Note(
            f"Narrowed backbone: this profile's VGG16 keeps the block structure of the published End2End model but "
            f"has {context['backbone_width']:g} of its filters (model.backbone_width), so absolute numbers are not "
            "comparable with the thesis' full-width model."))
    blocks.append(Paragraph(
        "Protocol (thesis 4.6): each model's decision threshold maximises G-mean = sqrt(sensitivity x specificity) "
        "on the validation split and is frozen before the test split is scored; all tabulated metrics are on the "
        f"test split. AUC 95% CIs: nonparametric percentile bootstrap ({context['bootstrap']['bootstrap']} "
        f"resamples, seed {context['bootstrap']['seed']}; at image level whole patients are resampled). Paired "
        "comparisons: DeLong's test on the test cases both models scored. Relative change = (new - reference) / "
        "reference x 100, as in the thesis. Domain names: film = CBIS-DDSM analogue (source A), ffdm = INbreast "
        "analogue (source B), hospital = the target (the thesis' private data set)."))
    missing = m.parts[m.parts["status"] != "ok"]
    if len(missing):
        blocks.append(Note("Missing parts (shown as missing, never filled in): " + "; ".join(
            f"{r.part}: {r.status}" for r in missing.itertuples())))
    blocks.extend(Note(f"Figure {name} not drawn: {reason}") for name, reason in m.skipped.items())
    return blocks


def _baselines(m: Material) -> list[Any]:
    drops = m.changes[m.changes["comparison"] == "in-domain -> out-of-domain"]
    return [
        *(m.thesis_table(name) for name in ("table2_in_domain_ffdm", "table3_in_domain_film", "table4_out_of_domain")),
        Table("Section 6.1: change from in-domain to out-of-domain (same model, different cases)",
              _changes_layout(drops), "No paired test: the cases differ."),
        Table("Paired DeLong tests between the pretrained variants",
              _tests_layout(m.tests[m.tests["reference"].isin(PRETRAINED_REFERENCES)])),
        *m.figures("roc_domains"),
    ]


def _radiomics(m: Material) -> list[Any]:
    return [m.thesis_table("table5_radiomics", "Patient level: 4 baseline CNN scores + 4 x 34 radiomic features + "
                                               "age, PCA and gradient boosting (radiomics step).")]


def _finetune(m: Material) -> list[Any]:
    return [m.thesis_table("table8_finetune", "Config 1: stage 1 trains Block 2 and the head; Config 2: Block 1, "
                                              "Block 2 and the head; stage 2 trains all layers (thesis Table 6 "
                                              "settings of the profile)."),
            *m.figures("loss_config1", "loss_config2", "loss_pretrain_a", "loss_pretrain_ab")]


def _comparison(m: Material) -> list[Any]:
    return [
        m.thesis_table("table9_comparison"),
        Table("Relative change against the baseline",
              _changes_layout(m.changes[m.changes["comparison"] == "vs baseline"])),
        Table("Paired DeLong tests on the hospital test split",
              _tests_layout(m.tests[~m.tests["reference"].isin(PRETRAINED_REFERENCES)]),
              f"Comparisons involving the patient-level radiomics model use the CNN's {tables.PATIENT_RULE} over "
              "views."),
        Table("Table 9 at patient level (like-for-like with the radiomics row)", _patient_layout(m.patient),
              "Computed by the report from scores.csv with common.metrics.evaluate (validation G-mean threshold, test "
              "split, patients resampled)."),
        *m.figures("roc_table9", "score_distributions", "confusion_matrices"),
    ]


def _gradcam_section(m: Material) -> list[Any]:
    return m.figures("gradcam") or [Note(m.skipped.get("gradcam", "Grad-CAM skipped"))]


def _shift(m: Material) -> list[Any]:
    return [block for name in ("domain_shift", "target_features")
            for block in (m.figures(name) or [Note(f"{name}: {m.skipped.get(name, 'not drawn')}")])]  # fmt: skip


def _reproduce(m: Material) -> list[Any]:
    context = m.context
    blocks: list[Any] = [
        Paragraph(f"Code: {provenance.describe(context['code'])}. This report was made by the second command; the "
                  "first rebuilds the work directory it read."),
        Code(f"{context['pipeline_command']}\n{context['command']}"),
    ]
    if context["data_source"] != "synthetic":
        blocks.append(Paragraph("Real data: the inputs each step read (DICOM folders, cohorts, checkpoint) are listed "
                                "in the table at the end of this section."))
    blocks.append(Paragraph(f"Profile {context['profile']} as used (every setting a step reads):"))
    blocks.append(Code(yaml.safe_dump(m.profile.to_dict(), sort_keys=False).rstrip()))
    differing = {part: name for part, name in _recorded_profiles(m.workdir).items() if name != context["profile"]}
    if differing:
        blocks.append(Note("Steps recorded a different profile than this report's: " + ", ".join(
            f"{part}: {name}" for part, name in differing.items())))
    blocks.append(Table("Work directory parts and what each step recorded", _parts_layout(m.parts, m.workdir)))
    return blocks


# The report's sections in reading order: (title, builder of its blocks).
SECTIONS: tuple[tuple[str, Callable[[Material], list[Any]]], ...] = (
    (ABOUT, _about),
    ("Baselines in-domain and out-of-domain (Tables 2, 3, 4)", _baselines),
    ("Baseline plus radiomic features (Table 5)", _radiomics),
    ("Fine-tuning (Table 8, Figures 3 and 4)", _finetune),
    (TABLE9_SECTION, _comparison),
    (GRADCAM_SECTION, _gradcam_section),
    ("Domain shift", _shift),
    ("Reproduce", _reproduce),
)


def _summary(context, found, changes, tests, patient, workdir, made, skipped) -> dict[str, Any]:
    models = {}
    for key, values in found.items():
        row = ROW[key]
        models[key] = {**{name: values[name] for name in METRIC_FIELDS}, "model": row.model,
                       "pretrained_with": row.pretrained_with, "dataset": row.dataset, "setting": row.setting,
                       "source": row.folder, "tables": [t.name for t in TABLES if key in t.rows]}  # fmt: skip
    return {
        "profile": context["profile"],
        "data_source": context["data_source"],
        "backbone_width": context["backbone_width"],
        "image_size": context["image_size"],
        "bootstrap": context["bootstrap"],
        "workdir": context["workdir"],
        "generated": context["generated"],
        "provenance": {**context["code"], "command": context["command"],
                       "pipeline_command": context["pipeline_command"]},  # fmt: skip
        "models": models,
        "table9_rows": [key for key in TABLE9 if key in models],
        "missing_models": {row.key: workdir.missing.get(row.folder, workdir.status(row.folder))
                           for row in tables.ROWS if row.key not in models},  # fmt: skip
        "missing_parts": {part: status for part, status in workdir.parts() if status != "ok"},
        "relative_changes": changes.to_dict(orient="records"),
        "paired_tests": tests.to_dict(orient="records"),
        "patient_level": patient.to_dict(orient="records"),
        "figures": sorted(made),
        "figures_skipped": skipped,
        "gradcam": made["gradcam"].details if "gradcam" in made else None,
    }


def _place_publication(sections: list[Section], extra: publication.Publication) -> list[Section]:
    """The publication sections inserted after the sections PUBLICATION_PLACES names (at the end if absent)."""
    placed = list(sections)
    for key, after in PUBLICATION_PLACES:
        if key not in extra.sections:
            continue
        titles = [section.title for section in placed]
        position = titles.index(after) + 1 if after in titles else len(placed)
        placed.insert(position, extra.sections[key])
    return placed


def _recorded_profiles(workdir: WorkDir) -> dict[str, str]:
    """The profile each step wrote into its _SUCCESS.json (common.artifacts.step_output), where it ran with one."""
    recorded = {}
    for part, status in workdir.parts():
        marker = workdir.marker(part) if status == "ok" else None
        profile = (marker or {}).get("profile")
        if isinstance(profile, dict) and isinstance(profile.get("name"), str):
            recorded[part] = profile["name"]
    return recorded


def _parts_layout(parts: pd.DataFrame, workdir: WorkDir) -> pd.DataFrame:
    rows = []
    for part, status in parts.itertuples(index=False):
        marker = workdir.marker(part) if status == "ok" else None
        inputs = ", ".join(f"{k}={v}" for k, v in (marker or {}).get("inputs", {}).items())
        versions = (marker or {}).get("versions", {})
        rows.append({"part": part, "status": status, "inputs": inputs or "-",
                     "versions": ", ".join(f"{k} {v}" for k, v in versions.items()) or "-"})  # fmt: skip
    return pd.DataFrame.from_records(rows)


def _changes_layout(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Model": [_label(k) for k in frame["row"]],
        "Reference": [_label(k) for k in frame["reference"]],
        "Metric": frame["metric"],
        "Reference value": frame["reference_value"],
        "Value": frame["value"],
        "Relative change": [render.fmt(v, 2) if math.isnan(v) else f"{v:+.2f}%" for v in frame["relative_change_pct"]],
    })  # fmt: skip


def _tests_layout(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Model": [_label(k) for k in frame["row"]],
        "Reference": [_label(k) for k in frame["reference"]],
        "Level": frame["level"],
        "n (pos)": [f"{n:.0f} ({p:.0f})" if not math.isnan(n) else "-" for n, p in zip(
            frame["n"].astype(float), frame["n_pos"].astype(float), strict=True)],
        "AUC": frame["auc"],
        "AUC reference": frame["auc_reference"],
        "Difference": frame["difference"],
        "DeLong p": [render.fmt(p, 4) for p in frame["p_value"].astype(float)],
        "Note": frame["note"].fillna("").replace("", "-"),
    })  # fmt: skip


def _patient_layout(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Model": frame["model"],
        "n (pos)": [f"{n:.0f} ({p:.0f})" if not math.isnan(n) else "-" for n, p in zip(
            frame["n"].astype(float), frame["n_pos"].astype(float), strict=True)],
        "AUC (95% CI)": [f"{render.fmt(a)} [{render.fmt(lo)}-{render.fmt(hi)}]" for a, lo, hi in zip(
            frame["auc"], frame["auc_ci95_low"], frame["auc_ci95_high"], strict=True)],
        "Sensitivity": frame["sensitivity"],
        "Specificity": frame["specificity"],
        "Threshold": frame["threshold"],
        "Note": frame["note"],
    })  # fmt: skip


def _label(key: str) -> str:
    """A row's name that tells the pretrained variants apart, e.g. 'VGG16 End2End A on ffdm'."""
    row = ROW[key]
    variant = "" if row.setting == "adapted" else (" A+B" if "A+B" in row.pretrained_with else " A")
    return f"{row.model}{variant} on {row.dataset}"


def _title(name: str) -> str:
    return next(table.title for table in TABLES if table.name == name)
