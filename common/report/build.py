"""Assemble the report from a work directory: tables, figures, HTML, Markdown and summary.json.

Protocol stated in every report (thesis 4.6): each model's threshold maximises G-mean on the
validation split and is frozen before the test split is scored; AUC CIs are nonparametric bootstrap
percentile intervals (patients resampled at image level); paired comparisons are DeLong tests.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from common import metrics
from common.artifacts import atomic_write_bytes, atomic_write_csv, atomic_write_text, finite_json
from common.report import domain, figures, overlays, provenance, publication, render, tables
from common.report.figures import Figure, split_curve
from common.report.render import Code, Note, Paragraph, Section, Table
from common.report.tables import ROW, TABLE9, TABLES
from common.report.workdir import DOMAINS, METRIC_FIELDS, WorkDir

TITLE = "Domain shift of End2End VGG16 on the hospital's mammograms"
GRADCAM_ORDER = ("finetune-config2", "finetune-config1", "baseline")
# Where each publication section goes: after the section of this title (common.report.publication).
PUBLICATION_PLACES = (
    ("cohort", "About this report"),
    ("calibration", "Before and after domain adaptation (Table 9)"),
    ("levels", "Calibration: can a score be read as a probability?"),
    ("operating_points", "Image, breast and exam level"),
    ("subgroups", "Operating points and precision-recall"),
    ("domain_shift", "Grad-CAM"),
)


def build_report(workdir_path: str | Path, out_dir: str | Path, *, profile_name: str, profile: dict,
                 command: str | None = None, show_burned_in: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write report.html, report.md, tables/, figures/ (PNG and SVG) and summary.json into `out_dir`; return the
    summary. `command` is the exact command that made this report (default: the equivalent `mammo report`).

    `show_burned_in`: figures may show images tagged BurnedInAnnotation YES (common.burned_in).
    """
    workdir = WorkDir.open(workdir_path)
    out = Path(out_dir)
    n_boot, seed = int(profile["metrics"]["bootstrap"]), int(profile["metrics"]["seed"])
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
    sections = _sections(context, thesis, changes, tests, patient, made, skipped, parts, workdir, profile)
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


def _context(workdir: WorkDir, profile_name: str, profile: dict) -> dict[str, Any]:
    width = float(profile.get("model", {}).get("backbone_width", 1.0))
    return {
        "profile": profile_name,
        "profile_settings": profile,
        "data_source": workdir.data_source(),
        "backbone_width": width,
        "image_size": profile.get("image"),
        "bootstrap": profile["metrics"],
        "workdir": str(workdir.root),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": provenance.code_version(),
        "pipeline_command": provenance.pipeline_command(workdir, profile_name),
    }


def _figures(workdir: WorkDir, found: dict, *, n_boot: int, seed: int, show_burned_in: bool = False):
    made: dict[str, Figure] = {}
    skipped: dict[str, str] = {}

    def add(name: str, title: str, caption: str, png: bytes | None, reason: str = "") -> None:
        if png is None:
            skipped[name] = reason
        else:
            made[name] = Figure(name, title, caption, png)

    scores = {key: workdir.scores(ROW[key].folder) for key in found}
    scores = {key: frame for key, frame in scores.items() if frame is not None}
    boot = f"shaded: pointwise 95% bootstrap band ({n_boot} resamples, seed {seed})"

    panels = {}
    for dataset in DOMAINS:
        keys = [row.key for row in tables.ROWS if row.dataset == dataset and row.setting != "adapted"]
        curves = [split_curve(f"{ROW[k].pretrained_with}", scores[k], found[k]["level"]) for k in keys if k in scores]
        if curves:
            panels[f"{dataset} test ({'target' if dataset == 'hospital' else 'source'})"] = curves
    add("roc_domains", "ROC curves of the pretrained variants on each domain (Tables 2-4)",
        f"Image-level test split; {boot}, patients resampled.", figures.roc_figure(panels, n_boot=n_boot, seed=seed))

    image_curves = [split_curve(ROW[k].model, scores[k], "image") for k in TABLE9
                    if k in scores and found[k]["level"] == "image"]  # fmt: skip
    patient_curves = [_patient_curve(k, scores[k], found[k]["level"]) for k in TABLE9 if k in scores]
    add("roc_table9", "ROC curves before and after domain adaptation on the hospital test split (Table 9)",
        f"Left: image level. Right: patient level (CNN scores collapsed by the max over views; radiomics is "
        f"patient level by construction). {boot}.",
        figures.roc_figure({"image level": image_curves, "patient level": patient_curves}, n_boot=n_boot, seed=seed))

    for config, figure_number in ((1, 3), (2, 4)):
        stage1, stage2 = workdir.history(f"finetune{config}-stage1"), workdir.history(f"finetune{config}-stage2")
        name = f"loss_config{config}"
        if stage1 is None and stage2 is None:
            skipped[name] = f"no history.csv in finetune{config}-stage1 or finetune{config}-stage2"
            continue
        history, boundary = figures.stage_history(stage1, stage2)
        add(name, f"Loss curves, fine-tuning Config {config} (thesis Figure {figure_number})",
            "Training and validation loss per epoch, stage 1 then stage 2 on one axis; dashed line: stage boundary."
            " The loss includes the L2 weight-decay penalty of the trainable layers: stage 2 penalises every layer"
            " at its larger decay, so the level jumps at the boundary while the cross-entropy need not."
            + ("" if boundary is not None else " Only one stage's history is available."),
            figures.loss_figure(history, boundary, f"Config {config}"))
    for model in ("a", "ab"):
        history = workdir.history(f"pretrain-{model}")
        if history is not None:
            frame, _ = figures.stage_history(history, None)
            add(f"loss_pretrain_{model}", f"Source pretraining curves, pretrain-{model}",
                "Training and validation loss of the source-domain pretraining.",
                figures.loss_figure(frame, None, f"pretrain-{model}"))

    rows = [(ROW[k].model + f" ({found[k]['level']})", split_curve(ROW[k].model, scores[k], found[k]["level"]),
             float(found[k]["threshold"])) for k in TABLE9 if k in scores]  # fmt: skip
    add("score_distributions", "Test score distributions by class (Table 9 models)",
        "Dashed line: the threshold frozen on the validation split (G-mean).", figures.score_distribution_figure(rows))
    add("confusion_matrices", "Confusion matrices on the test split at the validation thresholds (Table 9 models)",
        "Rows: true class; columns: predicted class.", figures.confusion_figure(rows))

    cam = _gradcam(workdir, found, scores, show_burned_in)
    if cam.png is None:
        skipped["gradcam"] = cam.caption
    else:
        made["gradcam"] = Figure("gradcam", "Grad-CAM overlays of the most and least confident test images",
                                 "Rows: highest scores, lowest scores, scores closest to the frozen validation "
                                 f"threshold. {cam.caption}.", cam.png, cam.warnings, cam.details, cam.arrays)

    png, domain_features, notes = domain.domain_shift_figure(workdir)
    add("domain_shift", "Domain shift: source vs target network inputs",
        f"An evenly spaced sample of up to {domain.SAMPLE_PER_DOMAIN} images per domain, breast segmented with the "
        "radiomics step's segmentation. " + " ".join(notes), png, " ".join(notes) or "no preprocessed images")
    features = workdir.table("radiomics", "features.csv")
    if features is None:
        skipped["target_features"] = f"radiomics/features.csv: {workdir.missing.get('radiomics', 'absent')}"
    else:
        add("target_features", "Radiomic features of the target images (features.csv)",
            "Each feature standardised over all target images; boxes split by image label.",
            domain.target_features_figure(features, workdir.table("preprocess-hospital", "images.csv")),
            "features.csv holds no numeric feature")
    return made, skipped, domain_features


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


def _sections(context, thesis, changes, tests, patient, made, skipped, parts, workdir, profile) -> list[Section]:
    about = Section("About this report")
    about.blocks.append(Paragraph(
        f"Profile: {context['profile']} ({profile.get('description', '')}). Input size "
        f"{context['image_size']['height']}x{context['image_size']['width']}. Data source: {context['data_source']}."))
    if context["data_source"] == "synthetic":
        about.blocks.append(Note("The data are SYNTHETIC (mammo synth domains film, ffdm and hospital): the "
                                 "numbers show the pipeline and the direction of the thesis' effects, not clinical "
                                 "performance."))
    if context["backbone_width"] < 1:
        about.blocks.append(Note(
            f"Narrowed backbone: this profile's VGG16 keeps the block structure of the published End2End model but "
            f"has {context['backbone_width']:g} of its filters (model.backbone_width), so absolute numbers are not "
            "comparable with the thesis' full-width model."))
    about.blocks.append(Paragraph(
        "Protocol (thesis 4.6): each model's decision threshold maximises G-mean = sqrt(sensitivity x specificity) "
        "on the validation split and is frozen before the test split is scored; all tabulated metrics are on the "
        f"test split. AUC 95% CIs: nonparametric percentile bootstrap ({context['bootstrap']['bootstrap']} "
        f"resamples, seed {context['bootstrap']['seed']}; at image level whole patients are resampled). Paired "
        "comparisons: DeLong's test on the test cases both models scored. Relative change = (new - reference) / "
        "reference x 100, as in the thesis. Domain names: film = CBIS-DDSM analogue (source A), ffdm = INbreast "
        "analogue (source B), hospital = the target (the thesis' private data set)."))
    missing = parts[parts["status"] != "ok"]
    if len(missing):
        about.blocks.append(Note("Missing parts (shown as missing, never filled in): " + "; ".join(
            f"{r.part}: {r.status}" for r in missing.itertuples())))
    for name, reason in skipped.items():
        about.blocks.append(Note(f"Figure {name} not drawn: {reason}"))

    baselines = Section("Baselines in-domain and out-of-domain (Tables 2, 3, 4)")
    for name in ("table2_in_domain_ffdm", "table3_in_domain_film", "table4_out_of_domain"):
        baselines.blocks.append(Table(_title(name), render.thesis_layout(thesis[name])))
    drops = changes[changes["comparison"] == "in-domain -> out-of-domain"]
    baselines.blocks.append(Table("Section 6.1: change from in-domain to out-of-domain (same model, different cases)",
                                  _changes_layout(drops), "No paired test: the cases differ."))
    baselines.blocks.append(Table("Paired DeLong tests between the pretrained variants",
                                  _tests_layout(tests[tests["reference"].isin(["a-hospital", "a-ffdm", "a-film"])])))
    _add_figure(baselines, made, "roc_domains")

    radiomics = Section("Baseline plus radiomic features (Table 5)")
    radiomics.blocks.append(Table(_title("table5_radiomics"), render.thesis_layout(thesis["table5_radiomics"]),
                                  "Patient level: 4 baseline CNN scores + 4 x 34 radiomic features + age, PCA and "
                                  "gradient boosting (radiomics step)."))

    finetune = Section("Fine-tuning (Table 8, Figures 3 and 4)")
    finetune.blocks.append(Table(_title("table8_finetune"), render.thesis_layout(thesis["table8_finetune"]),
                                 "Config 1: stage 1 trains Block 2 and the head; Config 2: Block 1, Block 2 and the "
                                 "head; stage 2 trains all layers (thesis Table 6 settings of the profile)."))
    for name in ("loss_config1", "loss_config2", "loss_pretrain_a", "loss_pretrain_ab"):
        _add_figure(finetune, made, name)

    comparison = Section("Before and after domain adaptation (Table 9)")
    comparison.blocks.append(Table(_title("table9_comparison"), render.thesis_layout(thesis["table9_comparison"])))
    comparison.blocks.append(Table("Relative change against the baseline",
                                   _changes_layout(changes[changes["comparison"] == "vs baseline"])))
    comparison.blocks.append(Table("Paired DeLong tests on the hospital test split", _tests_layout(
        tests[~tests["reference"].isin(["a-hospital", "a-ffdm", "a-film"])]),
        f"Comparisons involving the patient-level radiomics model use the CNN's {tables.PATIENT_RULE} over views."))
    comparison.blocks.append(Table("Table 9 at patient level (like-for-like with the radiomics row)",
                                   _patient_layout(patient),
                                   "Computed by the report from scores.csv with common.metrics.evaluate (validation "
                                   "G-mean threshold, test split, patients resampled)."))
    for name in ("roc_table9", "score_distributions", "confusion_matrices"):
        _add_figure(comparison, made, name)

    gradcam = Section("Grad-CAM")
    if "gradcam" in made:
        _add_figure(gradcam, made, "gradcam")
    else:
        gradcam.blocks.append(Note(skipped.get("gradcam", "Grad-CAM skipped")))

    shift = Section("Domain shift")
    for name in ("domain_shift", "target_features"):
        if name in made:
            _add_figure(shift, made, name)
        else:
            shift.blocks.append(Note(f"{name}: {skipped.get(name, 'not drawn')}"))

    reproduce = Section("Reproduce")
    reproduce.blocks.append(Paragraph(f"Code: {provenance.describe(context['code'])}. This report was made by the "
                                      "second command; the first rebuilds the work directory it read."))
    reproduce.blocks.append(Code(f"{context['pipeline_command']}\n{context['command']}"))
    if context["data_source"] != "synthetic":
        reproduce.blocks.append(Paragraph("Real data: the inputs each step read (DICOM folders, cohorts, checkpoint) "
                                          "are listed in the table at the end of this section."))
    reproduce.blocks.append(Paragraph(f"Profile {context['profile']} as used (every setting a step reads):"))
    reproduce.blocks.append(Code(yaml.safe_dump(profile, sort_keys=False).rstrip()))
    recorded = _recorded_profiles(workdir)
    differing = {part: name for part, name in recorded.items() if name != context["profile"]}
    if differing:
        reproduce.blocks.append(Note("Steps recorded a different profile than this report's: " + ", ".join(
            f"{part}: {name}" for part, name in differing.items())))
    reproduce.blocks.append(Table("Work directory parts and what each step recorded", _parts_layout(parts, workdir)))
    return [about, baselines, radiomics, finetune, comparison, gradcam, shift, reproduce]


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
    """The profile each step wrote into its _SUCCESS.json, where it recorded one."""
    recorded = {}
    for part, status in workdir.parts():
        marker = workdir.marker(part) if status == "ok" else None
        if not marker:
            continue
        for holder in (marker, marker.get("settings") or {}, marker.get("inputs") or {}):
            if isinstance(holder, dict) and isinstance(holder.get("profile"), str):
                recorded[part] = holder["profile"]
                break
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


def _add_figure(section: Section, made: dict[str, Figure], name: str) -> None:
    if name in made:
        section.blocks.append(made[name])
        section.blocks.extend(Note(warning) for warning in made[name].warnings)

