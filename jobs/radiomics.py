"""`mammo radiomics`: 34 features per image, 141-attribute patient vectors, PCA + gradient boosting (thesis 4.5)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from common import shards
from common.artifacts import (
    UnusableInput,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    read_table,
    require_success,
    step_output,
)
from common.metrics import evaluate
from common.profile import ProfileError, load_profile
from common.radiomics import batch
from common.radiomics.classifier import SearchSettings, pair_groups, search
from common.radiomics.patient import attribute_names, build_patient_vectors

HELP = "Radiomic features (34 per image) + baseline scores + age -> patient vectors -> PCA + gradient boosting."
INPUT_ARGS = ("images", "split", "scores", "merge_shards")
OUTPUT_ARG = "out"
IMAGE_COLUMNS = ("image_id", "patient_id", "laterality", "view")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="preprocess output folder (images.csv, hires/, images/)")
    parser.add_argument("--split", required=True, help="split output folder (split.csv)")
    parser.add_argument("--scores", required=True, help="baseline-infer output folder (scores.csv)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--profile", default="demo", help="demo, ci, full or a profile YAML file (section radiomics)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--save-masks", action="store_true",
                        help="write masks/<image_id>.png overlays for the report (none for BurnedInAnnotation YES "
                             "images, only the breast for untagged ones)")
    parser.add_argument("--shard", help="I/N: only the features of shard I of N into --out (common.shards)")
    parser.add_argument("--merge-shards", help="folder of finished feature shards: use their features, then fit")


def _read_csv(folder: str, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    require_success(folder)
    return read_table(Path(folder) / name, columns)


def run(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
        settings = SearchSettings.from_profile(profile)
    except ProfileError:
        raise  # names the profile and the key itself
    except (ValueError, KeyError) as error:
        raise UnusableInput(f"profile {args.profile}: {error}") from error
    images = _read_csv(args.images, "images.csv", IMAGE_COLUMNS)
    if args.shard:
        return _feature_shard(args, images)
    split = _read_csv(args.split, "split.csv", ("patient_id", "age", "label", "split"))
    scores = _read_csv(args.scores, "scores.csv", ("image_id", "score"))
    out = Path(args.out)
    inputs = {"images": args.images, "split": args.split, "scores": args.scores, "profile": args.profile}

    with step_output("radiomics", out, inputs) as record:
        if args.merge_shards:
            results = _merged_results(args.merge_shards, out)
            record.extra["merged_shards"] = len(shards.shard_folders(args.merge_shards))
        else:
            tasks = batch.plan(images, Path(args.images), out / "masks" if args.save_masks else None)
            results = list(batch.run_all(tasks, args.workers))
        features, rejected_images = batch.feature_table(results)
        atomic_write_csv(out / "features.csv", features)

        try:
            vectors, excluded = build_patient_vectors(features, images, scores, split)
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

        train = vectors[vectors["split"] == "train"]
        groups = pair_groups(train["patient_id"], split)
        try:
            found = search(train[attribute_names()].to_numpy(float), train["label"].to_numpy(int), groups, settings,
                           n_jobs=args.workers or -1)  # fmt: skip
        except ValueError as error:
            raise UnusableInput(f"model search: {error}") from error
        atomic_write_csv(out / "cv_results.csv", found.cv_results)

        scored = vectors[["patient_id", "split", "label"]].copy()
        scored["score"] = found.model.predict_proba(vectors[attribute_names()].to_numpy(float))[:, 1]
        atomic_write_csv(out / "scores.csv", scored)
        buffer = io.BytesIO()
        joblib.dump({"pipeline": found.model, "attributes": attribute_names(), "best_params": found.best_params},
                    buffer)  # fmt: skip
        atomic_write_bytes(out / "model.joblib", buffer.getvalue())

        try:
            metrics = evaluate(scored, level="patient", n_boot=int(profile["metrics"]["bootstrap"]),
                               seed=int(profile["metrics"]["seed"]))  # fmt: skip
        except ValueError as error:
            raise UnusableInput(f"evaluation: {error}") from error
        metrics.update(
            {
                "model": "baseline+radiomics",
                "best_params": found.best_params,
                "cv_auc": found.best_cv_auc,
                "search": settings.search,
                "cv_folds": settings.cv_folds,
                "grid_values_dropped": found.dropped,
                "n_attributes": len(attribute_names()),
                "patients_imputed": int((vectors["imputed"] != "").sum()),
                "patients_excluded": len(excluded),
            }
        )
        atomic_write_json(out / "metrics.json", metrics)

        record.counts = {
            "images": len(features),
            "rejected": len(rejected_images),
            "images_from_network_input": sum(r.get("source") == "network" for r in results),
            "patients": len(vectors),
            "patients_excluded": len(excluded),
            "patients_imputed": int((vectors["imputed"] != "").sum()),
            **{f"patients_{s}": int((vectors["split"] == s).sum()) for s in ("train", "validation", "test")},
        }
        fractions = [r["breast_fraction"] for r in results if "breast_fraction" in r]
        record.extra["breast_fraction_median"] = float(np.median(fractions)) if fractions else None
        record.extra["best_params"] = found.best_params
        record.extra["profile"] = args.profile
    return 0



SHARD_RESULTS = "results.json"


def _feature_shard(args: argparse.Namespace, images: pd.DataFrame) -> int:
    """Features of every N-th image only; the merge (`--merge-shards`) fits the model on all of them."""
    index, count = shards.parse(args.shard)
    out = Path(args.out)
    with step_output("radiomics", out, {"images": args.images, "shard": args.shard}) as record:
        tasks = batch.plan(images, Path(args.images), out / "masks" if args.save_masks else None)
        ordered = shards.members(list(enumerate(tasks)), index, count)
        results = [{**result, "order": order} for (order, _), result in
                   zip(ordered, batch.run_all([task for _, task in ordered], args.workers), strict=True)]
        atomic_write_json(out / SHARD_RESULTS, results)
        record.counts = {"images": len(results), "rejected": sum("reason" in r for r in results)}
        record.extra["shard"] = shards.record(index, count)
    return 0


def _merged_results(folder: str, out: Path) -> list[dict]:
    """The shards' per-image results in images.csv order (as one unsharded run), their mask overlays copied."""
    results = []
    for shard in shards.shard_folders(folder):
        results += json.loads((shard / SHARD_RESULTS).read_text())
        for mask in sorted((shard / "masks").glob("*.png")):
            atomic_write_bytes(out / "masks" / mask.name, mask.read_bytes())
    return [{k: v for k, v in r.items() if k != "order"} for r in sorted(results, key=lambda r: r["order"])]
