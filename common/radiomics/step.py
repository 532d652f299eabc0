"""The radiomics step (thesis 4.5) from its input tables to its output folder, in the order it happens:

  image results (features of every image, or of a shard's images, or the shards' merged results)
  -> features.csv -> patient vectors (141 attributes) and rejected.csv
  -> PCA + gradient boosting search on the training patients -> cv_results.csv
  -> scores.csv and model.joblib -> metrics.json (patient level, threshold from validation)

`mammo radiomics` (jobs/radiomics.py) only parses its arguments, reads the input tables and calls `fit_and_score`
or `feature_shard` inside its step output.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from common import artifacts, shards
from common.artifacts import UnusableInput, atomic_write_bytes, atomic_write_csv, atomic_write_json, require_success
from common.constants import SPLITS
from common.metrics import evaluate
from common.profile import Profile
from common.radiomics import batch
from common.radiomics.classifier import SearchResult, pair_groups, search
from common.radiomics.patient import attribute_names, build_patient_vectors

REQUIRED_IMAGE_COLUMNS = ("image_id", "patient_id", "laterality", "view")
REQUIRED_SPLIT_COLUMNS = ("patient_id", "age", "label", "split")
REQUIRED_SCORE_COLUMNS = ("image_id", "score")
SHARD_RESULTS = "results.json"


@dataclass
class StepInputs:
    """The three tables the step reads (images.csv, split.csv, the baseline's scores.csv) and the images folder."""

    images_dir: Path
    images: pd.DataFrame
    split: pd.DataFrame
    scores: pd.DataFrame


def read_table(folder: str | Path, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A finished step's table, refused with one line when the folder, the file or a column is missing."""
    require_success(folder)
    return artifacts.read_table(Path(folder) / name, columns)


def fit_and_score(inputs: StepInputs, out: Path, profile: Profile, *, workers: int | None, save_masks: bool,
                  merge_shards: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write every output of the step into `out`; returns its (counts, extra) for `_SUCCESS.json`."""
    results, extra = _image_results(inputs, out, workers, save_masks, merge_shards)
    features, rejected_images = batch.feature_table(results)
    atomic_write_csv(out / "features.csv", features)
    vectors, excluded = _patient_vectors(features, inputs, rejected_images, out)
    found = _search(vectors, inputs.split, profile, workers, out)
    scored = _score(vectors, found, out)
    _metrics(scored, found, vectors, excluded, profile, out)
    counts = {
        "images": len(features),
        "rejected": len(rejected_images),
        "images_from_network_input": sum(r.get("source") == "network" for r in results),
        "patients": len(vectors),
        "patients_excluded": len(excluded),
        "patients_imputed": int((vectors["imputed"] != "").sum()),
        **{f"patients_{s}": int((vectors["split"] == s).sum()) for s in SPLITS},
    }
    fractions = [r["breast_fraction"] for r in results if "breast_fraction" in r]
    extra["breast_fraction_median"] = float(np.median(fractions)) if fractions else None
    extra["best_params"] = found.best_params
    return counts, extra


def _image_results(inputs: StepInputs, out: Path, workers: int | None, save_masks: bool,
                   merge_shards: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-image results: computed here, or the feature shards' (common.shards) in images.csv order."""
    if merge_shards:
        return merged_results(merge_shards, out), {"merged_shards": len(shards.shard_folders(merge_shards))}
    tasks = batch.plan(inputs.images, inputs.images_dir, out / "masks" if save_masks else None)
    return list(batch.run_all(tasks, workers)), {}


def _patient_vectors(features: pd.DataFrame, inputs: StepInputs, rejected_images: pd.DataFrame,
                     out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """patient_vectors.csv, and rejected.csv listing the images and the patients left out (with why)."""
    try:
        vectors, excluded = build_patient_vectors(features, inputs.images, inputs.scores, inputs.split)
    except ValueError as error:
        raise UnusableInput(f"patient vectors: {error}") from error
    atomic_write_csv(out / "patient_vectors.csv", vectors)
    rejected = pd.concat(
        [
            rejected_images.rename(columns={"image_id": "id"}).assign(level="image"),
            excluded.rename(columns={"patient_id": "id"}).assign(level="patient"),
        ],
        ignore_index=True,
    )[["id", "level", "reason"]]
    atomic_write_csv(out / "rejected.csv", rejected)
    return vectors, excluded


def _search(vectors: pd.DataFrame, split: pd.DataFrame, profile: Profile, workers: int | None,
            out: Path) -> SearchResult:
    """The grouped PCA + gradient boosting search on the training patients only; cv_results.csv."""
    train = vectors[vectors["split"] == "train"]
    groups = pair_groups(train["patient_id"], split)
    try:
        found = search(train[attribute_names()].to_numpy(float), train["label"].to_numpy(int), groups,
                       profile.radiomics, n_jobs=workers or -1)
    except ValueError as error:
        raise UnusableInput(f"model search: {error}") from error
    atomic_write_csv(out / "cv_results.csv", found.cv_results)
    return found


def _score(vectors: pd.DataFrame, found: SearchResult, out: Path) -> pd.DataFrame:
    """scores.csv (every patient, every split) and model.joblib (the fitted pipeline and its attributes)."""
    scored = vectors[["patient_id", "split", "label"]].copy()
    scored["score"] = found.model.predict_proba(vectors[attribute_names()].to_numpy(float))[:, 1]
    atomic_write_csv(out / "scores.csv", scored)
    buffer = io.BytesIO()
    joblib.dump({"pipeline": found.model, "attributes": attribute_names(), "best_params": found.best_params},
                buffer)  # fmt: skip
    atomic_write_bytes(out / "model.joblib", buffer.getvalue())
    return scored


def _metrics(scored: pd.DataFrame, found: SearchResult, vectors: pd.DataFrame, excluded: pd.DataFrame,
             profile: Profile, out: Path) -> None:
    """metrics.json: the patient-level contract fields plus how the model was chosen."""
    try:
        metrics = evaluate(scored, level="patient", n_boot=profile.metrics.bootstrap, seed=profile.metrics.seed)
    except ValueError as error:
        raise UnusableInput(f"evaluation: {error}") from error
    metrics.update(
        {
            "model": "baseline+radiomics",
            "best_params": found.best_params,
            "cv_auc": found.best_cv_auc,
            "search": profile.radiomics.search,
            "cv_folds": profile.radiomics.cv_folds,
            "grid_values_dropped": found.dropped,
            "n_attributes": len(attribute_names()),
            "patients_imputed": int((vectors["imputed"] != "").sum()),
            "patients_excluded": len(excluded),
        }
    )
    atomic_write_json(out / "metrics.json", metrics)


def feature_shard(images: pd.DataFrame, images_dir: Path, out: Path, shard: str, *, workers: int | None,
                  save_masks: bool) -> dict[str, Any]:
    """Features of every N-th image only (results.json); the merge fits the model on all of them. Returns counts."""
    index, count = shards.parse(shard)
    tasks = batch.plan(images, images_dir, out / "masks" if save_masks else None)
    ordered = shards.members(list(enumerate(tasks)), index, count)
    results = [{**result, "order": order} for (order, _), result in
               zip(ordered, batch.run_all([task for _, task in ordered], workers), strict=True)]
    atomic_write_json(out / SHARD_RESULTS, results)
    return {"images": len(results), "rejected": sum("reason" in r for r in results)}


def merged_results(folder: str, out: Path) -> list[dict]:
    """The shards' per-image results in images.csv order (as one unsharded run), their mask overlays copied."""
    results = []
    for shard in shards.shard_folders(folder):
        results += json.loads((shard / SHARD_RESULTS).read_text())
        for mask in sorted((shard / "masks").glob("*.png")):
            atomic_write_bytes(out / "masks" / mask.name, mask.read_bytes())
    return [{k: v for k, v in r.items() if k != "order"} for r in sorted(results, key=lambda r: r["order"])]
