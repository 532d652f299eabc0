"""Preprocess step: a folder of DICOMs plus cohort.csv -> oriented, resized 16-bit PNGs and their index.

Every file under the input root is tried (any name, any depth). A file that cannot become a mammogram of a
cohort patient becomes one row of rejected.csv with a one-line reason, and the batch goes on; so does every
path that is not a readable regular file (common.input_files). Files are processed by a pool of worker
processes in a fixed (sorted) order; workers write their PNGs themselves and send back only a small row, so
memory does not grow with the number of images. A killed worker costs a retry of the files it took down
(common.workers); a killed step costs only the files not finished, because each finished file is journaled
(common.journal) and a rerun takes it from there. When two files claim the same patient/laterality/view, the
first in path order is kept and the second is rejected.

Outputs (docs/contracts.md): images/<image_id>.png at the profile size, hires/<image_id>.png at the
profile's radiomics.target_spacing_mm, images.csv, rejected.csv. images.csv also carries `age` (cohort age,
or DICOM PatientAge when the cohort leaves it empty) and `burned_in_annotation` (YES, NO or UNKNOWN: the
report never shows a YES image, and only the breast of an UNKNOWN one).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from common import journal, shards
from common.artifacts import SUCCESS, UnusableInput, atomic_write_csv, one_line
from common.cohort import flag_four_views, image_label, match_patient, read_cohort_csv
from common.constants import ASSUMED_SPACING_MM, IMAGE_COLUMNS
from common.dicom import DicomError, cbis_patient_id, read_dicom
from common.input_files import find_input_files
from common.profile import Profile
from common.progress import progress_bar
from common.workers import run_tasks

# Orientation analysis happens on a thumbnail of this many rows: enough to find the breast, cheap to do.
THUMBNAIL_ROWS = 256
# Scanner borders of digitised film sit in the outermost few percent of the image; they are cut away
# before looking for the breast.
BORDER_FRACTION = 0.03
REJECTED_COLUMNS = ["file", "reason"]
# A shard's unindexed rows: images.csv needs every shard (four views, ages, duplicates across shards).
SHARD_ROWS = "rows.csv"
ROW_COLUMNS = ["image_id", "patient_id", "laterality", "view", "label", "source_file", "original_height",
               "original_width", "pixel_spacing_mm", "hires_spacing_mm", "flipped", "burned_in_annotation", "dicom_age",
               "order"]
# PNG encoding is the largest cost per image after decoding. OpenCV's default is zlib's run-length strategy
# (with the SUB row filter); it is pinned here because any explicit IMWRITE_PNG_COMPRESSION level switches
# OpenCV to zlib's default strategy and adaptive filters. Measured on the 8 real files, both outputs of a
# full-profile image (2.6 MB with run-length): level 1 or 3 is 3x slower and 8% larger; level 0 (stored, no
# filter) 5x faster but 3.2x larger - the disk, upload and read cost of every later step, to save ~0.05 s once.
PNG_SETTINGS = [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
AGE_TOLERANCE_YEARS = 1.5


@dataclass(frozen=True)
class Settings:
    """What a worker needs to turn one file into outputs (picklable, sent once per worker)."""

    input_root: Path
    images_dir: Path
    hires_dir: Path
    height: int
    width: int
    target_spacing_mm: float
    patients: dict[str, tuple[int, str]]  # patient_id -> (label, cancer_laterality)
    partial_dir: Path  # the journal of finished files (common.journal)
    # With an image table (`mammo cohort`): source_file -> (patient_id, laterality, view, image label).
    table: dict[str, tuple[str, str, str, int]] | None = None


def preprocess_folder(
    input_dir: str | Path,
    cohort_path: str | Path,
    out_dir: str | Path,
    profile: Profile,
    workers: int | None = None,
    image_table: str | Path | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, int]:
    """Run the step body; writes images/, hires/, images.csv, rejected.csv and returns counts.

    With `image_table` (written by `mammo cohort`) only the files it lists are read, each with the patient
    and the per-image label the dataset's metadata gave it, instead of matching PatientIDs to the cohort.

    With `shard=(i, n)` only every n-th file from the i-th is converted (common.shards) and the folder holds
    rows.csv instead of images.csv: `merge_shards` builds the index once every shard is there, because four-view
    flags, ages and duplicate views are decided over the whole set.

    Raises UnusableInput (after writing rejected.csv) when no file could be used, so the step fails visibly.
    """
    input_root, out = Path(input_dir), Path(out_dir)
    if not input_root.is_dir():
        raise UnusableInput(f"input {input_root} is not a directory")
    cohort = read_cohort_csv(cohort_path)
    settings = Settings(
        input_root=input_root,
        images_dir=out / "images",
        hires_dir=out / "hires",
        height=profile.image.height,
        width=profile.image.width,
        target_spacing_mm=profile.radiomics.target_spacing_mm,
        patients={r.patient_id: (int(r.label), r.cancer_laterality) for r in cohort.itertuples()},
        partial_dir=out / journal.FOLDER,
    )
    # A re-run starts from empty image folders and no index, so nothing stale outlives its run; only the
    # journal of an interrupted run is kept, and each entry is checked before it is used.
    _clear_outputs(out)
    if image_table is None:
        files, rejected = find_input_files(input_root, skip={Path(cohort_path).resolve(), out.resolve()})
    else:
        table, files, rejected = read_image_table(image_table, input_root, set(settings.patients))
        settings = replace(settings, table=table)
    # `order`: a file's place in the whole sorted list, so a merge of shards decides as one run would.
    position = {path.relative_to(input_root).as_posix(): index for index, path in enumerate(files)}
    if shard is not None:
        files = shards.members(files, *shard)
        rejected = rejected if shard[0] == 0 else []  # rejections before any file is read: one shard lists them
    rejected = [{**row, "order": -1} for row in rejected]

    rows, kept, claimed, resumed = [], [], {}, 0
    for result in _run(files, settings, workers):
        resumed += bool(result.pop("resumed", False))
        if "reason" in result:
            rejected.append({"file": result["file"], "reason": result["reason"], "order": position[result["file"]]})
            continue
        row = {**result["row"], "order": position[result["row"]["source_file"]]}
        if row["image_id"] in claimed:
            rejected.append(_duplicate(row, claimed))
            continue
        claimed[row["image_id"]] = row["source_file"]
        rows.append(row)
        kept.append(result["pending"])
    # Named only now: until every file is done, the journal keeps all of them for a rerun after a kill.
    for row, (image, hires) in zip(rows, kept, strict=True):
        os.replace(image, settings.images_dir / f"{row['image_id']}.png")
        os.replace(hires, settings.hires_dir / f"{row['image_id']}.png")
    if shard is not None:
        atomic_write_csv(out / SHARD_ROWS, pd.DataFrame(rows, columns=ROW_COLUMNS))
        atomic_write_csv(out / "rejected.csv", pd.DataFrame(rejected, columns=[*REJECTED_COLUMNS, "order"]))
        journal.remove(settings.partial_dir)
        return {"files": len(files), "images": len(rows), "rejected": len(rejected), "resumed": resumed}
    counts = _write_index(rows, rejected, cohort, out, str(input_root), len(files))
    journal.remove(settings.partial_dir)
    return {**counts, "processed": len(files) - resumed, "resumed": resumed}


def merge_shards(folders: list[Path], cohort_path: str | Path, out_dir: str | Path) -> dict[str, int]:
    """The step's output from its finished shards: the same files and tables as one unsharded run.

    Rows are taken in the original file order, so of two files claiming one view the same one wins as without
    shards; PNGs are hard-linked from the shard folders where the file system allows (else copied).
    """
    out = Path(out_dir)
    cohort = read_cohort_csv(cohort_path)
    _clear_outputs(out)
    frames, rejected, files = [], [], 0
    for folder in folders:
        text = {"image_id": str, "patient_id": str, "source_file": str, "burned_in_annotation": str}
        frames.append(pd.read_csv(folder / SHARD_ROWS, dtype=text, keep_default_na=False,
                                  na_values={"pixel_spacing_mm": [""], "dicom_age": [""]}).assign(_folder=str(folder)))
        rejected.append(pd.read_csv(folder / "rejected.csv", dtype={"file": str, "reason": str}))
        files += int(json.loads((folder / SUCCESS).read_text())["counts"]["files"])
    everything = pd.concat(frames, ignore_index=True).sort_values("order", kind="stable")
    rows, claimed, duplicates = [], {}, []
    for row in everything.to_dict("records"):
        folder = Path(row.pop("_folder"))
        if row["image_id"] in claimed:
            duplicates.append(_duplicate(row, claimed))
            continue
        claimed[row["image_id"]] = row["source_file"]
        for kind in ("images", "hires"):
            _link_or_copy(folder / kind / f"{row['image_id']}.png", out / kind / f"{row['image_id']}.png")
        rows.append(row)
    rejected_rows = pd.concat([*rejected, pd.DataFrame(duplicates, columns=[*REJECTED_COLUMNS, "order"])],
                              ignore_index=True).to_dict("records")
    return _write_index(rows, rejected_rows, cohort, out, f"{len(folders)} shards", files)


def _duplicate(row: dict[str, Any], claimed: dict[str, str]) -> dict[str, Any]:
    reason = f"duplicate view: {row['image_id']} already taken by {claimed[row['image_id']]}"
    return {"file": row["source_file"], "reason": reason, "order": row["order"]}


def _write_index(rows: list[dict[str, Any]], rejected: list[dict[str, Any]], cohort: pd.DataFrame, out: Path,
                 source: str, files: int) -> dict[str, int]:
    """rejected.csv (in file order), then images.csv and the counts, for an unsharded run or a merge."""
    rejected_table = pd.DataFrame(rejected, columns=[*REJECTED_COLUMNS, "order"]).sort_values("order", kind="stable")
    atomic_write_csv(out / "rejected.csv", rejected_table[REJECTED_COLUMNS])
    if not rows:
        raise UnusableInput(f"no usable mammogram in {source}: {len(rejected)} file(s) rejected, see rejected.csv")
    images, age_mismatches = _index(rows, cohort)
    atomic_write_csv(out / "images.csv", images[IMAGE_COLUMNS])
    if age_mismatches:
        print(f"preprocess: {age_mismatches} patient(s) whose DICOM PatientAge differs from the cohort age by more "
              f"than {AGE_TOLERANCE_YEARS} years; the cohort age is used", file=sys.stderr)
    return {
        "files": files,
        "images": len(images),
        "rejected": len(rejected),
        "patients": int(images["patient_id"].nunique()),
        "patients_four_views": int(images.loc[images["four_views"], "patient_id"].nunique()),
        "cohort_patients_without_images": int((~cohort["patient_id"].isin(images["patient_id"])).sum()),
        "flipped": int(images["flipped"].sum()),
        "positive_images": int(images["label"].sum()),
        "assumed_spacing_images": int(images["pixel_spacing_mm"].isna().sum()),
        "age_mismatches": age_mismatches,
    }


def read_image_table(path: str | Path, input_root: Path, patients: set[str]
                     ) -> tuple[dict[str, tuple[str, str, str, int]], list[Path], list[dict[str, str]]]:
    """(table by source_file, files to read, rejected rows) from image_table.csv; bad rows are rejected, not fatal."""
    columns = ["file", "patient_id", "laterality", "view", "label"]
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UnusableInput(f"image table {path}: not a readable CSV ({type(error).__name__})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UnusableInput(f"image table {path}: missing columns {', '.join(missing)}")
    table: dict[str, tuple[str, str, str, int]] = {}
    files: list[Path] = []
    rejected: list[dict[str, str]] = []
    for row in frame.itertuples():
        if row.file in table:
            reason = "listed twice in the image table"
        elif row.patient_id not in patients:
            reason = "patient of the image table not in cohort.csv"
        elif row.label not in ("0", "1") or row.laterality not in ("L", "R") or row.view not in ("CC", "MLO"):
            reason = "image table row needs label 0/1, laterality L/R and view CC/MLO"
        elif not (input_root / row.file).is_file():
            reason = "listed in the image table but not in the input folder"
        else:
            table[row.file] = (row.patient_id, row.laterality, row.view, int(row.label))
            files.append(input_root / row.file)
            continue
        rejected.append({"file": row.file, "reason": reason})
    return table, files, rejected


def _clear_outputs(out: Path) -> None:
    """A re-run starts from empty image folders and no index, so nothing stale outlives its run."""
    for folder in (out / "images", out / "hires"):
        _clear_pngs(folder)
    (out / "images.csv").unlink(missing_ok=True)
    (out / SHARD_ROWS).unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def chest_wall_on_right(pixels: np.ndarray) -> bool:
    """Decide from the image whether the chest wall is on the right, i.e. whether to flip it.

    Rule: on a thumbnail with the outer 3% cut off (scanner borders), separate tissue from background with
    the triangle threshold (made for one dominant background peak; unlike Otsu it does not split bright
    burned-in labels from the breast and drop the breast), open with a 7-pixel disk (breaks thin border lines
    and text strokes off the breast), keep the largest connected component - the breast; labels and markers
    are smaller, separate blobs - and compare the intensity mass of that component in the left and right
    halves. The breast is thickest, and the pectoral muscle lies, at the chest wall, so that half holds more
    mass. Ties (blank images) do not flip.
    """
    rows, columns = pixels.shape
    scale = min(1.0, THUMBNAIL_ROWS / rows)
    size = (max(8, round(columns * scale)), max(8, round(rows * scale)))
    thumb = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    margin_y, margin_x = int(BORDER_FRACTION * thumb.shape[0]), int(BORDER_FRACTION * thumb.shape[1])
    inner = thumb[margin_y : thumb.shape[0] - margin_y, margin_x : thumb.shape[1] - margin_x]
    low, high = float(inner.min()), float(inner.max())
    if high <= low:
        return False
    weights = inner - low
    scaled = cv2.GaussianBlur((weights * (255.0 / (high - low))).astype(np.uint8), (5, 5), 0)
    _, mask = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_TRIANGLE)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count > 1:
        breast = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        weights = np.where(labels == breast, weights, 0.0)
    column_mass = weights.sum(axis=0)
    half = column_mass.size // 2
    return float(column_mass[-half:].sum()) > float(column_mass[:half].sum())


def resample_to_spacing(pixels: np.ndarray, spacing_mm: tuple[float, float], target_mm: float) -> np.ndarray:
    """Isotropic `target_mm` pixels: area averaging when shrinking (no aliasing), linear when enlarging."""
    rows, columns = pixels.shape
    new_rows = max(1, round(rows * spacing_mm[0] / target_mm))
    new_columns = max(1, round(columns * spacing_mm[1] / target_mm))
    shrinking = new_rows * new_columns <= rows * columns
    return cv2.resize(
        pixels, (new_columns, new_rows), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )


def _run(files: list[Path], settings: Settings, workers: int | None) -> Iterator[dict[str, Any]]:
    """Results in file order: from the journal of an interrupted run where still valid, else computed now."""
    digest = journal.settings_digest(settings.height, settings.width, settings.target_spacing_mm,
                                     sorted(settings.patients.items()), sorted((settings.table or {}).items()))
    results: dict[int, dict[str, Any]] = {}
    tasks = []
    for index, path in enumerate(files):
        relative = path.relative_to(settings.input_root).as_posix()
        key, stamp = journal.entry_key(relative), journal.fingerprint(path, digest)
        earlier = journal.lookup(settings.partial_dir, key, stamp)
        if earlier is not None:
            results[index] = {**earlier, "resumed": True}
        else:
            tasks.append((index, path, relative, key, stamp))
    settings.partial_dir.mkdir(parents=True, exist_ok=True)
    progress = progress_bar(len(files), "preprocess", "file", initial=len(results))
    with progress:
        computed = run_tasks(_process_file, tasks, workers, on_lost=_lost, label="preprocess", done=progress.update,
                             initializer=_init_worker, initargs=(settings, True), in_process_initargs=(settings, False))
        for index in range(len(files)):
            result = results.pop(index, None)
            if result is None:
                result = next(computed)
            if "row" in result:
                key = journal.entry_key(result["row"]["source_file"])
                result["pending"] = journal.outputs(settings.partial_dir, key)
            yield result


_SETTINGS: Settings | None = None


def _init_worker(settings: Settings, single_threaded: bool) -> None:
    global _SETTINGS
    _SETTINGS = settings
    if single_threaded:
        cv2.setNumThreads(1)  # one process per core already; OpenCV threads inside would oversubscribe


def _process_file(task: tuple[int, Path, str, str, dict[str, Any]]) -> dict[str, Any]:
    """One file to a row (its PNGs in the journal folder) or a rejection; journaled either way."""
    _, path, relative, key, stamp = task
    settings = _SETTINGS
    try:
        result = {"row": _convert(key, path, relative, settings)}
    except DicomError as error:
        result = {"file": relative, "reason": str(error)}
    except MemoryError:
        result = {"file": relative, "reason": "image too large to decode in memory"}
    except Exception as error:  # one odd file (decoder or OpenCV failure) must not stop the batch
        result = {"file": relative, "reason": f"cannot process ({type(error).__name__}): {one_line(str(error))}"}
    journal.record(settings.partial_dir, key, stamp, result)
    return result


def _lost(task: tuple[int, Path, str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"file": task[2], "reason": "its worker process was killed twice while processing it (out of memory?)"}


def _convert(key: str, path: Path, relative: str, settings: Settings) -> dict[str, Any]:
    header = read_dicom(path, name_hint=relative, with_pixels=False)
    if settings.table is not None:
        patient_id, laterality, view, table_label = settings.table[relative]
        if (header.laterality, header.view) != (laterality, view):
            raise DicomError(f"DICOM says {header.laterality} {header.view}, the image table {laterality} {view}")
    else:
        patient_id = match_patient((*header.patient_id_candidates, cbis_patient_id(relative)),
                                   settings.patients.keys())
        if patient_id is None:
            raise DicomError("patient not in cohort.csv (neither PatientID nor a CBIS-DDSM id in it or the path)")
    image = read_dicom(path, name_hint=relative)
    pixels = image.pixels
    resized = cv2.resize(pixels, (settings.width, settings.height), interpolation=cv2.INTER_AREA)
    spacing = image.pixel_spacing_mm or (ASSUMED_SPACING_MM, ASSUMED_SPACING_MM)
    hires = resample_to_spacing(pixels, spacing, settings.target_spacing_mm)
    # Orient after resizing: a horizontal flip commutes with area and linear resizing (to within rounding,
    # 1 grey level), so flipping the two small outputs replaces a flip of the full image, and the decision's
    # thumbnail comes from the hires copy when that is still at least thumbnail-sized (about 4x less work).
    flipped = chest_wall_on_right(hires if THUMBNAIL_ROWS <= hires.shape[0] < pixels.shape[0] else pixels)
    if flipped:
        resized, hires = cv2.flip(resized, 1), cv2.flip(hires, 1)
    image_path, hires_path = journal.outputs(settings.partial_dir, key)
    _write_png(image_path, resized)
    _write_png(hires_path, hires)
    label, cancer_laterality = settings.patients[patient_id]
    return {
        "image_id": f"{patient_id}_{image.laterality}_{image.view}",
        "patient_id": patient_id,
        "laterality": image.laterality,
        "view": image.view,
        "label": table_label if settings.table is not None else image_label(label, cancer_laterality,
                                                                             image.laterality),
        "source_file": relative,
        "original_height": int(image.pixels.shape[0]),
        "original_width": int(image.pixels.shape[1]),
        "pixel_spacing_mm": float(np.mean(image.pixel_spacing_mm)) if image.pixel_spacing_mm else np.nan,
        "hires_spacing_mm": settings.target_spacing_mm,
        "flipped": bool(flipped),
        "dicom_age": np.nan if image.age_years is None else image.age_years,
        "burned_in_annotation": image.burned_in_annotation,
    }


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """16-bit lossless PNG; OpenCV writes no text chunks, so nothing but pixels leaves the file."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels, dtype=np.uint16), PNG_SETTINGS)
    if not ok:
        raise DicomError("PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())


def _clear_pngs(folder: Path) -> None:
    """Idempotent: pathlib's glob also matches dot-files (older runs' `.pending-N.png`), each removed once."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in set(folder.glob("*.png")):
        stale.unlink(missing_ok=True)


def _index(rows: list[dict[str, Any]], cohort: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """images.csv rows sorted by image_id, with four_views and age (cohort first, DICOM PatientAge second)."""
    images = pd.DataFrame(rows).sort_values("image_id", ignore_index=True)
    images["four_views"] = flag_four_views(images)
    dicom_age = images.groupby("patient_id")["dicom_age"].agg(lambda ages: ages.dropna().median())
    cohort_age = cohort.set_index("patient_id")["age"]
    ages = pd.DataFrame({"cohort": cohort_age.reindex(dicom_age.index), "dicom": dicom_age})
    mismatches = int(((ages["cohort"] - ages["dicom"]).abs() > AGE_TOLERANCE_YEARS).sum())
    images["age"] = images["patient_id"].map(ages["cohort"].fillna(ages["dicom"]))
    return images, mismatches
