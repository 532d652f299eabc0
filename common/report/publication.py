"""The report's publication sections: cohort table, calibration, levels, operating points, subgroups and
the domain-shift diagnostics, computed by the science modules (common.calibration, common.levels,
common.operating_points, common.subgroups, common.cohort_summary, common.domain_shift) and only laid
out here. `build` returns everything build_report needs: sections, figures, CSV tables and the
summary.json entries, so build.py only places them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common import calibration, cohort_summary, domain_shift, levels, operating_points, subgroups
from common.constants import TARGET
from common.report import domain, pubfigures, render
from common.report.figures import Figure
from common.report.render import Note, Paragraph, Section, Table
from common.report.tables import ROW, ROWS, TABLE9
from common.report.workdir import DOMAINS, WorkDir

# Each baseline model and the domain it was trained on last (its in-domain reference, thesis Section 6.1).
BASELINE_MODELS = {"ab": "ffdm", "a": "film"}
NO_DENSITY = "no density in this cohort"


@dataclass
class Publication:
    sections: dict[str, Section] = field(default_factory=dict)  # keyed by where build.py puts them
    figures: dict[str, Figure] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def build(workdir: WorkDir, found: dict[str, dict[str, Any]], *, n_boot: int, seed: int) -> Publication:
    out = Publication()
    scores = {key: workdir.scores(ROW[key].folder) for key in found}
    scores = {key: frame for key, frame in scores.items() if frame is not None}
    _cohort(workdir, out)
    _calibration(scores, found, out, n_boot=n_boot, seed=seed)
    _levels(scores, found, out, n_boot=n_boot, seed=seed)
    _operating_points(scores, found, out, n_boot=n_boot, seed=seed)
    _subgroups(workdir, scores, found, out, n_boot=n_boot, seed=seed)
    _domain_shift(workdir, found, out, seed=seed)
    return out


def _label(key: str) -> str:
    row = ROW[key]
    variant = "" if row.setting == "adapted" else (" A+B" if "A+B" in row.pretrained_with else " A")
    return f"{row.model}{variant} on {row.dataset}"


def _ci(low: float, high: float) -> str:
    return f"[{render.fmt(low)}-{render.fmt(high)}]"


def _with_ci(value: float, ci) -> str:
    return f"{render.fmt(value)} {_ci(*ci)}" if ci is not None else render.fmt(value)


# ------------------------------------------------------------------ cohort table


def _cohort(workdir: WorkDir, out: Publication) -> None:
    records, rejected, density_seen = [], [], False
    for name in DOMAINS:
        split = workdir.table(f"split-{name}", "split.csv")
        images = workdir.table(f"preprocess-{name}", "images.csv")
        if split is None:
            continue
        if images is not None:
            images = cohort_summary.density_by_image(images, _cohort_csv(workdir, name))
            density_seen |= cohort_summary.has_density(images)
        records += cohort_summary.cohort_rows(name, split, images)
        rejected += cohort_summary.rejected_rows(name, workdir.table(f"preprocess-{name}", "rejected.csv"))
    section = Section("Cohort (Table 1)")
    out.sections["cohort"] = section
    if not records:
        section.blocks.append(Note("No split.csv in the work directory: no cohort table."))
        return
    frame = pd.DataFrame.from_records(records)
    out.tables["cohort"] = frame
    out.tables["rejected_by_reason"] = pd.DataFrame.from_records(rejected, columns=["domain", "reason", "files"])
    out.summary["cohort"] = {"by_split": records, "rejected": rejected, "density": density_seen}
    layout = pd.DataFrame({
        "Domain": frame["domain"], "Split": frame["split"], "Patients (cases)": [
            f"{p} ({c})" for p, c in zip(frame["patients"], frame["cases"], strict=True)],
        "Images (positive)": [f"{i} ({p})" for i, p in zip(frame["images"], frame["positive_images"], strict=True)],
        "Age mean (SD)": [f"{render.fmt(m, 1)} ({render.fmt(s, 1)})" for m, s in zip(
            frame["age_mean"], frame["age_sd"], strict=True)],
        "Age median [IQR]": [f"{render.fmt(m, 1)} [{render.fmt(a, 1)}-{render.fmt(b, 1)}]" for m, a, b in zip(
            frame["age_median"], frame["age_q1"], frame["age_q3"], strict=True)],
        "Age missing": frame["age_missing"], "CC / MLO": [f"{c} / {m}" for c, m in zip(
            frame["cc"], frame["mlo"], strict=True)],
    })  # fmt: skip
    if density_seen:
        layout["Density A / B / C / D / unknown (images)"] = [" / ".join(str(r[f"density_{v}"]) for v in (
            *subgroups.DENSITY_CLASSES, subgroups.UNKNOWN)) for r in records]  # fmt: skip
    section.blocks.append(Table("Patients, images, positives, ages, views by domain and split", layout,
                                "Patients and ages from split.csv (ages per patient, missing ages counted, never "
                                "imputed); images, views and labels from images.csv. A positive image is a view of "
                                "the breast with the cancer."))  # fmt: skip
    if not density_seen:
        section.blocks.append(Note(f"Breast density: {NO_DENSITY} (no density column in images.csv or cohort.csv)."))
    if rejected:
        section.blocks.append(Table("Files rejected by preprocessing, by reason",
                                    out.tables["rejected_by_reason"].rename(columns=str.capitalize),
                                    "Reason category: the text of rejected.csv before the first colon."))  # fmt: skip
    else:
        section.blocks.append(Paragraph("Preprocessing rejected no file in any domain."))


def _cohort_csv(workdir: WorkDir, name: str) -> pd.DataFrame | None:
    """The domain's cohort.csv as the pipeline made it: from `mammo cohort` (public datasets) or `mammo synth`."""
    for part in (f"cohort-{name}", f"synth-{name}"):
        if workdir.done(part):
            return workdir.table(part, "cohort.csv")
    return None


# ------------------------------------------------------------------ calibration


def _calibration(scores, found, out: Publication, *, n_boot: int, seed: int) -> None:
    results = {}
    for row in ROWS:
        if row.key in scores:
            results[row.key] = calibration.assess(scores[row.key], n_boot=n_boot, seed=seed)
    out.summary["calibration"] = results
    records = []
    for key, result in results.items():
        for method in ("raw", *calibration.METHODS):
            values = result[method]
            records.append({"row": key, "model": _label(key), "scores": method, "n_test": result["n_test"],
                            "n_validation": result["n_validation"], **{name: values.get(name, math.nan) for name in (
                                "brier", "ece", "slope", "intercept", "auc", "threshold", "sensitivity",
                                "specificity")}, "note": values.get("note", "")})  # fmt: skip
    frame = pd.DataFrame.from_records(records)
    out.tables["calibration"] = frame
    section = Section("Calibration: can a score be read as a probability?")
    out.sections["calibration"] = section
    section.blocks.append(Paragraph(
        "Test split of each row. Reliability: 10 equal-width score bins on [0, 1] (empty bins left out), observed "
        "fraction of positives against the mean score, with a pointwise 95% bootstrap band (patients resampled, "
        f"{n_boot} resamples). ECE = sum over bins of (bin share) x |observed - mean score|. Brier = mean squared "
        "error of the score. Calibration slope: b in logit P(y) = a + b logit(score) (1 ideal; < 1: scores too "
        "extreme, > 1: too timid); intercept: calibration-in-the-large, a with b fixed at 1 (0 ideal; > 0: scores "
        "too low). Recalibration (scikit-learn): Platt = LogisticRegression on logit(score), isotonic = "
        "IsotonicRegression, both fitted on the validation split only and applied unchanged to test; thresholds "
        "stay validation G-mean (of the recalibrated scores)."))  # fmt: skip
    if not frame.empty:
        layout = pd.DataFrame({
            "Model": frame["model"], "Scores": frame["scores"].map({"raw": "as scored", "platt": "Platt (val)",
                                                                    "isotonic": "isotonic (val)"}),
            "n test (val)": [f"{a} ({b})" for a, b in zip(frame["n_test"], frame["n_validation"], strict=True)],
            "Brier": frame["brier"], "ECE": frame["ece"], "Slope": frame["slope"], "Intercept": frame["intercept"],
            "AUC": frame["auc"], "Threshold": frame["threshold"], "Sensitivity": frame["sensitivity"],
            "Specificity": frame["specificity"], "Note": frame["note"].replace("", "-"),
        })  # fmt: skip
        section.blocks.append(Table("Calibration before and after recalibration on validation", layout,
                                    "Thresholds: validation G-mean of the scores of that line. Platt scaling is "
                                    "monotone: it keeps the AUC, or reverses the ranking when its validation fit has "
                                    "a negative slope (a model worse than chance on validation)."))  # fmt: skip
    png = pubfigures.reliability_figure({_label(k): r for k, r in results.items()})
    _add(out, "calibration", "Reliability diagrams on the test split (before and after recalibration)",
         "Points: observed fraction of positives per score bin (size ~ images in the bin), bars: 95% bootstrap "
         "band; dashed: Platt, dotted: isotonic, both fitted on validation. Diagonal: perfect calibration.",
         png, "no scores")  # fmt: skip
    _place(section, out, "calibration")


# ------------------------------------------------------------------ levels


def _levels(scores, found, out: Publication, *, n_boot: int, seed: int) -> None:
    results = {}
    for row in ROWS:
        if row.key in scores:
            results[row.key] = levels.evaluate_levels(scores[row.key], found[row.key]["level"], n_boot=n_boot,
                                                      seed=seed)  # fmt: skip
    out.summary["levels"] = results
    records = [{"row": key, "model": _label(key), **record} for key, items in results.items() for record in items]
    frame = pd.DataFrame.from_records(records)
    out.tables["levels"] = frame.assign(**{c: frame[c].map(lambda v: v if not isinstance(v, list) else
                                                           "|".join(f"{x:.6g}" for x in v))
                                           for c in frame.columns if c.endswith("ci95")})  # fmt: skip
    section = Section("Image, breast and exam level")
    out.sections["levels"] = section
    section.blocks.append(Paragraph(
        "Image: one score per view. Breast: the CC and MLO views of one side combined (max or mean of their "
        "scores); a breast is positive when it has the cancer. Exam: all four views of the patient's screening "
        "exam (one exam per patient here, so exam = patient), max or mean; positive for a case. Each level and "
        "rule has its own threshold (validation G-mean at that level); AUC 95% CIs resample patients at every "
        "level; sensitivity and specificity carry Wilson 95% CIs. The radiomics model is patient level by "
        "construction."))  # fmt: skip
    if frame.empty:
        return
    layout = pd.DataFrame({
        "Model": frame["model"], "Level": frame["level"], "Rule": frame["rule"],
        "n (pos)": [_count(n, p) for n, p in zip(frame.get("n"), frame.get("n_pos"), strict=True)],
        "AUC (95% CI)": [_with_ci(a, c) if isinstance(c, list) else "-" for a, c in zip(
            frame.get("auc"), frame.get("auc_ci95"), strict=True)],
        "Threshold": frame.get("threshold"),
        "Sensitivity (95% CI)": [_with_ci(a, c) if isinstance(c, list) else "-" for a, c in zip(
            frame.get("sensitivity"), frame.get("sensitivity_ci95"), strict=True)],
        "Specificity (95% CI)": [_with_ci(a, c) if isinstance(c, list) else "-" for a, c in zip(
            frame.get("specificity"), frame.get("specificity_ci95"), strict=True)],
        "Note": frame["note"].replace("", "-"),
    })  # fmt: skip
    section.blocks.append(Table("Every row at image, breast and exam level (test split)", layout))


def _count(n, p) -> str:
    return "-" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{int(n)} ({int(p)})"


# ------------------------------------------------------------------ operating points


def _operating_points(scores, found, out: Publication, *, n_boot: int, seed: int) -> None:
    results = {row.key: operating_points.assess(scores[row.key], n_boot=n_boot, seed=seed)
               for row in ROWS if row.key in scores}  # fmt: skip
    out.summary["operating_points"] = results
    records = []
    for key, result in results.items():
        for point in result["points"]:
            records.append({"row": key, "model": _label(key), "level": found[key]["level"], **point})
    frame = pd.DataFrame.from_records(records)
    out.tables["operating_points"] = frame.map(lambda v: "|".join(f"{x:.6g}" for x in v) if isinstance(v, list)
                                               else v) if not frame.empty else frame  # fmt: skip
    out.tables["auprc"] = pd.DataFrame.from_records(
        [{"row": k, "level": found[k]["level"], "n": r["n"], "n_pos": r["n_pos"], "prevalence": r["prevalence"],
          "auprc": r["auprc"], "auprc_ci95_low": r["auprc_ci95"][0], "auprc_ci95_high": r["auprc_ci95"][1]}
         for k, r in results.items()])  # fmt: skip
    section = Section("Operating points and precision-recall")
    out.sections["operating_points"] = section
    section.blocks.append(Paragraph(
        "Sensitivity at a fixed specificity and specificity at a fixed sensitivity, two ways. 'On test': read off "
        "the empirical test ROC (the best value whose other coordinate reaches the target, no interpolation), "
        f"with a 95% percentile bootstrap CI (patients resampled, {n_boot} resamples); it describes the curve but "
        "needs the test labels. 'Validation threshold': the threshold that reaches the target on the validation "
        "split, applied unchanged to test; the sensitivity and specificity a programme would actually get (Wilson "
        "95% CIs). AUPRC: scikit-learn's average precision with a patient bootstrap CI; chance level = "
        "prevalence."))  # fmt: skip
    if not frame.empty:
        layout = pd.DataFrame({
            "Model": frame["model"], "Level": frame["level"],
            "Fixed": [f"{f} {t:.2f}" for f, t in zip(frame["fixed"], frame["target"], strict=True)],
            "On test: value (95% CI)": [f"{r} {_with_ci(v, c)}" for r, v, c in zip(
                frame["reported"], frame["on_test"], frame["on_test_ci95"], strict=True)],
            "Validation threshold": frame["validation_threshold"],
            "Achieved sensitivity (95% CI)": [_with_ci(v, c) for v, c in zip(
                frame["achieved_sensitivity"], frame["achieved_sensitivity_ci95"], strict=True)],
            "Achieved specificity (95% CI)": [_with_ci(v, c) for v, c in zip(
                frame["achieved_specificity"], frame["achieved_specificity_ci95"], strict=True)],
        })  # fmt: skip
        section.blocks.append(Table("Screening operating points (test split)", layout))
    auprc = out.tables["auprc"]
    if not auprc.empty:
        section.blocks.append(Table("Area under the precision-recall curve (test split)", pd.DataFrame({
            "Model": [_label(k) for k in auprc["row"]], "Level": auprc["level"],
            "n (pos)": [_count(n, p) for n, p in zip(auprc["n"], auprc["n_pos"], strict=True)],
            "Prevalence": auprc["prevalence"],
            "AUPRC (95% CI)": [f"{render.fmt(a)} {_ci(lo, hi)}" for a, lo, hi in zip(
                auprc["auprc"], auprc["auprc_ci95_low"], auprc["auprc_ci95_high"], strict=True)],
        })))  # fmt: skip
    curves = {_label(k): (scores[k], found[k]["level"]) for k in TABLE9 if k in scores}
    _add(out, "precision_recall", "Precision-recall curves before and after domain adaptation (Table 9 models)",
         "Test split; left: image level (CNN rows), right: exam level (CNN max over views; radiomics is patient "
         "level). Dotted: prevalence (chance level).", pubfigures.precision_recall_figure(curves),
         "no Table 9 scores")  # fmt: skip
    _place(section, out, "precision_recall")


# ------------------------------------------------------------------ subgroups


def _subgroups(workdir: WorkDir, scores, found, out: Publication, *, n_boot: int, seed: int) -> None:
    section = Section("Subgroups")
    out.sections["subgroups"] = section
    split = workdir.table(f"split-{TARGET}", "split.csv")
    images = workdir.table(f"preprocess-{TARGET}", "images.csv")
    if images is not None:
        images = cohort_summary.density_by_image(images, _cohort_csv(workdir, TARGET))
    density = images is not None and cohort_summary.has_density(images)
    strata = {} if split is None else dict(zip(split["patient_id"].astype(str), split["age_stratum"].astype(str),
                                               strict=True))  # fmt: skip
    per_image = {} if images is None else dict(zip(images["image_id"].astype(str), images["density"], strict=True))
    results = {}
    for key in TABLE9:
        if key not in scores:
            continue
        test = scores[key][scores[key]["split"] == "test"].reset_index(drop=True)
        attributes: dict[str, pd.Series] = {}
        if "view" in test and found[key]["level"] == "image":
            attributes["view"] = test["view"].astype(str)
        attributes["age"] = test["patient_id"].astype(str).map(strata)
        if density and "image_id" in test:
            attributes["density"] = test["image_id"].astype(str).map(per_image)
        elif density and images is not None:  # a patient-level row: the patient's most frequent density class
            modes = images.groupby(images["patient_id"].astype(str))["density"].agg(lambda v: v.mode().iloc[0])
            attributes["density"] = test["patient_id"].astype(str).map(modes)
        results[key] = subgroups.subgroup_table(test, attributes, float(found[key]["threshold"]), n_boot=n_boot,
                                                seed=seed)  # fmt: skip
    out.summary["subgroups"] = {"density": "ACR A-D from the cohort" if density else NO_DENSITY, "cells": results}
    records = [{"row": key, "model": _label(key), **cell} for key, cells in results.items() for cell in cells]
    frame = pd.DataFrame.from_records(records)
    out.tables["subgroups"] = frame.map(lambda v: "|".join(f"{x:.6g}" for x in v) if isinstance(v, list) else v) \
        if not frame.empty else frame  # fmt: skip
    section.blocks.append(Paragraph(
        "Target test split, Table 9 models. View: CC or MLO (image-level models). Age: the age stratum of the "
        "split (split.csv age_stratum, the profile's age bins). Density: ACR A-D where the cohort has it. "
        "Thresholds are each model's frozen validation G-mean threshold (not re-chosen per subgroup); AUC CIs "
        f"resample patients ({n_boot} resamples), sensitivity and specificity carry Wilson 95% CIs. Every cell is "
        f"shown; cells with fewer than {subgroups.SMALL_CELL} positives or negatives are marked small."))  # fmt: skip
    if not density:
        section.blocks.append(Note(f"Density: {NO_DENSITY}, so no density subgroup."))
    if frame.empty:
        return
    layout = pd.DataFrame({
        "Model": frame["model"], "Subgroup": [f"{a} = {v}" for a, v in zip(frame["attribute"], frame["value"],
                                                                          strict=True)],
        "n (pos), patients": [f"{n} ({p}), {q}" for n, p, q in zip(frame["n"], frame["n_pos"], frame["patients"],
                                                                    strict=True)],
        "AUC (95% CI)": [_with_ci(a, c) for a, c in zip(frame["auc"], frame["auc_ci95"], strict=True)],
        "Sensitivity (95% CI)": [_with_ci(a, c) for a, c in zip(frame["sensitivity"], frame["sensitivity_ci95"],
                                                                strict=True)],
        "Specificity (95% CI)": [_with_ci(a, c) for a, c in zip(frame["specificity"], frame["specificity_ci95"],
                                                                strict=True)],
        "Note": frame["note"].replace("", "-"),
    })  # fmt: skip
    section.blocks.append(Table("Subgroup results on the target test split", layout))
    _add(out, "subgroups", "Subgroup AUCs with 95% CIs (Table 9 models, target test split)",
         "Each line: one model in one subgroup; open markers: small cells. Cells with one class have no AUC and "
         "are listed in the table only.", pubfigures.forest_figure(frame.assign(model=frame["model"])),
         "no subgroup cells")  # fmt: skip
    _place(section, out, "subgroups")


# ------------------------------------------------------------------ domain shift


def _domain_shift(workdir: WorkDir, found, out: Publication, *, seed: int) -> None:
    section = Section("Domain-shift diagnostics before any training")
    out.sections["domain_shift"] = section
    section.blocks.append(Paragraph(
        "How far each domain is from the one a baseline model was trained on last (film for A, ffdm for A+B), "
        "measured without any label of the new domain: reference = the training domain's validation split, "
        "compared = each domain's test split (the in-domain line compares two held-out splits of one domain and is "
        "the null check). Intensity: 1-Wasserstein distance between the breast-intensity histograms of the network "
        f"inputs (up to {domain.DIAGNOSTIC_SAMPLE} images per split, breast segmented as in the radiomics step). "
        "Features: unbiased MMD^2 between the model's penultimate features (global average pool, standardised, "
        f"Gaussian kernel with the median-distance bandwidth; up to {domain_shift.MAX_SAMPLE} images per split) "
        f"with a permutation p-value ({domain_shift.PERMUTATIONS} permutations). AUC drop = in-domain test AUC - "
        "test AUC on the domain (the same model)."))  # fmt: skip
    histograms = domain.split_histograms(workdir)
    records, agreement = [], {}
    for model, reference in BASELINE_MODELS.items():
        in_key = _row_key(model, reference)
        reference_features = _features(workdir, model, reference, "validation")
        for name in DOMAINS:
            key = _row_key(model, name)
            compared = _features(workdir, model, name, "test")
            record: dict[str, Any] = {"model": model.upper().replace("AB", "A+B"), "reference": reference,
                                      "domain": name, "row": key}  # fmt: skip
            ref_hist, cmp_hist = histograms.get((reference, "validation")), histograms.get((name, "test"))
            record["intensity_distance"] = (domain_shift.histogram_distance(domain.HIST_CENTRES, ref_hist[0],
                                                                            cmp_hist[0])
                                            if ref_hist and cmp_hist else math.nan)  # fmt: skip
            record["histogram_images"] = f"{ref_hist[1] if ref_hist else 0}/{cmp_hist[1] if cmp_hist else 0}"
            if reference_features is not None and compared is not None:
                record |= domain_shift.mmd_test(reference_features, compared, seed=seed)
            else:
                record |= {
                    "mmd2": math.nan,
                    "p_value": math.nan,
                    "n_reference": 0,
                    "n_compared": 0,
                    "note": f"no penultimate.csv in infer-{model}-{reference} or infer-{model}-{name}",
                }
            auc, in_auc = (found.get(key) or {}).get("auc"), (found.get(in_key) or {}).get("auc")
            record["auc"] = auc if auc is not None else math.nan
            record["auc_drop"] = in_auc - auc if auc is not None and in_auc is not None else math.nan
            records.append(record)
        rows = [r for r in records if r["model"] == model.upper().replace("AB", "A+B")]
        agreement[model] = {measure: domain_shift.rank_agreement([r[measure] for r in rows],
                                                                 [r["auc_drop"] for r in rows])
                            for measure in ("intensity_distance", "mmd2")}  # fmt: skip
    frame = pd.DataFrame.from_records(records)
    out.tables["domain_shift_diagnostics"] = frame
    out.summary["domain_shift"] = {"pairs": records, "rank_agreement": agreement,
                                   "in_domain_reference": dict(BASELINE_MODELS)}  # fmt: skip
    layout = pd.DataFrame({
        "Model (trained last on)": [f"{m} ({r})" for m, r in zip(frame["model"], frame["reference"], strict=True)],
        "Domain": [f"{d}{' (in-domain)' if d == r else ''}" for d, r in zip(frame["domain"], frame["reference"],
                                                                          strict=True)],
        "Intensity W1": [render.fmt(v, 4) for v in frame["intensity_distance"]],
        "Images (ref/compared)": frame["histogram_images"],
        "Feature MMD^2": [render.fmt(v, 4) for v in frame["mmd2"]],
        "MMD p": [render.fmt(v, 3) for v in frame["p_value"]],
        "Features n (ref/compared)": [f"{a}/{b}" for a, b in zip(frame["n_reference"], frame["n_compared"],
                                                                 strict=True)],
        "Test AUC": frame["auc"], "AUC drop": frame["auc_drop"],
    })  # fmt: skip
    section.blocks.append(Table("Distance from the training domain next to the AUC drop it predicts", layout))
    for model, measures in agreement.items():
        words = []
        for measure, result in measures.items():
            name = "intensity distance" if measure == "intensity_distance" else "feature MMD"
            if result["same_order"] is None:
                words.append(f"{name}: not enough domains")
            else:
                words.append(f"{name} {'ranks' if result['same_order'] else 'does NOT rank'} the "
                             f"{result['domains']} domains in the order of the AUC drop (Spearman "
                             f"{render.fmt(result['spearman'], 2)})")  # fmt: skip
        section.blocks.append(Paragraph(f"Model {model.upper().replace('AB', 'A+B')}: " + "; ".join(words) + "."))
    _add(out, "domain_shift_diagnostics", "Distance from the training domain against the AUC drop",
         "One point per (model, domain); left: intensity histogram distance, right: feature MMD^2. A measure that "
         "predicts the drop puts the points on a rising line.", pubfigures.shift_figure(frame),
         "no domain-shift pairs")  # fmt: skip
    _place(section, out, "domain_shift_diagnostics")


def _row_key(model: str, name: str) -> str:
    return next(row.key for row in ROWS if row.folder == f"infer-{model}-{name}")


def _features(workdir: WorkDir, model: str, name: str, split: str) -> np.ndarray | None:
    frame = workdir.table(f"infer-{model}-{name}", "penultimate.csv")
    if frame is None or "split" not in frame:
        return None
    rows = frame[frame["split"] == split].sort_values("image_id")
    rows = rows.iloc[domain_shift.evenly_spaced(len(rows))]
    columns = [c for c in rows.columns if c not in {"image_id", "split"}]
    return rows[columns].to_numpy(float) if len(rows) else None


# ------------------------------------------------------------------ shared


def _add(out: Publication, name: str, title: str, caption: str, png: bytes | None, reason: str) -> None:
    if png is None:
        out.skipped[name] = reason
    else:
        out.figures[name] = Figure(name, title, caption, png)


def _place(section: Section, out: Publication, name: str) -> None:
    if name in out.figures:
        section.blocks.append(out.figures[name])
    else:
        section.blocks.append(Note(f"Figure {name} not drawn: {out.skipped.get(name, 'no data')}"))


def pushed_values(summary: dict[str, Any], key: str) -> dict[str, Any]:
    """What common.telemetry.push_model_metrics pushes for one row of summary.json: its metrics.json fields,
    the raw calibration, AUPRC and the operating points read off the test ROC."""
    values: dict[str, Any] = dict(summary["models"][key])
    raw = summary.get("calibration", {}).get(key, {}).get("raw")
    if raw:
        values |= {"brier": raw["brier"], "ece": raw["ece"], "calibration_slope": raw["slope"],
                   "calibration_intercept": raw["intercept"]}  # fmt: skip
    points = summary.get("operating_points", {}).get(key)
    if points:
        values["auprc"] = points["auprc"]
        values["operating_points"] = {(p["fixed"], f"{p['target']:.2f}"): p["on_test"] for p in points["points"]}
    return values
