"""Streaming input pipeline from preprocessed 16-bit PNGs to End2End input tensors.

A training or validation set is decoded once and kept in memory while it fits `DECODED_CACHE_BYTES`
(decoding a 16-bit PNG costs about as much CPU as augmenting it, and the demo repeats it every epoch);
a larger one (the full profile's thousands of 1152x896 images) is decoded on the fly, so memory does not
grow with the number of images. The arithmetic is Shen's, defined once in common.model_folder (0-255
units, three channels, minus one featurewise mean). Augmentation (thesis Table 7) happens here on
training batches only and never inside the exported model, so inference on a saved model needs
nothing but these constants.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
import tensorflow as tf

from common.artifacts import UnusableInput, read_table, require_success
from common.constants import SPLITS
from common.model_folder import RESCALE, Preprocessing, image_sizes, model_input, to_255
from common.profile import Augmentation

SCORE_COLUMNS = ["image_id", "patient_id", "split", "view", "laterality", "label"]
# Decoded training (uint16) or validation (float32, 3 channels) images above this size are read from disk every
# epoch instead.
DECODED_CACHE_BYTES = 1 << 30


@dataclass
class Cohort:
    """Image rows joined with their patient's split; `problems` lists images that were left out and why."""

    frame: pd.DataFrame
    problems: list[str]

    def split(self, *names: str) -> pd.DataFrame:
        return self.frame[self.frame["split"].isin(names)].reset_index(drop=True)

    def with_size(self, height: int, width: int) -> Cohort:
        """Only the images of the model's input size (read from PNG headers); the rest become problems."""
        sizes = image_sizes(self.frame["path"], height, width)
        fits = np.array([size == (height, width) for size in sizes], dtype=bool)
        problems = [
            f"{i}: unreadable PNG" if size is None else f"{i}: {size[0]}x{size[1]}, not {height}x{width}"
            for i, size in zip(self.frame["image_id"], sizes, strict=True)
            if size != (height, width)
        ]
        return Cohort(self.frame[fits].reset_index(drop=True), self.problems + problems)

    def warn(self) -> None:
        """One line on stderr for the images left out; the run goes on without them."""
        if self.problems:
            print(f"left out {len(self.problems)} image(s), e.g. {self.problems[0]}", file=sys.stderr)


def join_images_with_split(images_dir: str | Path, split_dir: str | Path) -> Cohort:
    """Join preprocess's images.csv with split.csv; images lacking a PNG or a split are left out, not fatal."""
    images_dir, split_dir = Path(images_dir), Path(split_dir)
    require_success(images_dir)
    require_success(split_dir)
    images = read_table(images_dir / "images.csv", ["image_id", "patient_id", "laterality", "view", "label"])
    split = read_table(split_dir / "split.csv", ["patient_id", "split"])
    images["patient_id"] = images["patient_id"].astype(str)
    split["patient_id"] = split["patient_id"].astype(str)
    unknown = set(split["split"]) - set(SPLITS)
    if unknown:
        raise UnusableInput(f"{split_dir}/split.csv has unknown split values {sorted(unknown)}")
    frame = images.merge(split[["patient_id", "split"]], on="patient_id", how="left")
    frame["path"] = [str(images_dir / "images" / f"{image_id}.png") for image_id in frame["image_id"]]
    problems = [f"{i}: patient not in split.csv" for i in frame.loc[frame["split"].isna(), "image_id"]]
    exists = frame["path"].map(lambda p: Path(p).is_file())
    problems += [f"{i}: no PNG in {images_dir}/images" for i in frame.loc[~exists & frame["split"].notna(), "image_id"]]
    frame = frame[exists & frame["split"].notna()].reset_index(drop=True)
    if frame.empty:
        raise UnusableInput(f"no usable images: {images_dir} and {split_dir} share no patients with PNGs")
    frame["label"] = frame["label"].astype(int)
    return Cohort(frame[[*SCORE_COLUMNS, "path"]], problems)


def require_both_classes(frame: pd.DataFrame, what: str) -> None:
    counts = frame["label"].value_counts()
    if counts.get(0, 0) == 0 or counts.get(1, 0) == 0:
        raise UnusableInput(f"{what} needs positive and negative images, has {counts.to_dict()}")


def featurewise_mean(paths: Iterable[str | Path], rescale: float = RESCALE) -> float:
    """Mean pixel value (0-255 units) over the given images, streamed one image at a time."""
    total, count = 0.0, 0
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise UnusableInput(f"cannot read {path}")
        total += float(image.sum(dtype=np.float64))
        count += image.size
    if count == 0:
        raise UnusableInput("no training images to compute the featurewise mean from")
    return total / count * rescale


def class_weights(labels: npt.ArrayLike) -> dict[int, float]:
    """Inverse-frequency weights n / (2 n_c): both classes carry equal total weight in the loss."""
    labels = np.asarray(labels).astype(int)
    n = len(labels)
    return {c: float(n / (2 * max(int((labels == c).sum()), 1))) for c in (0, 1)}


def decode(path: tf.Tensor, prep: Preprocessing) -> tf.Tensor:
    """PNG file -> float32 (H, W, 1) in 0-255 units."""
    return from_png_values(read_png(path, prep), prep)


def read_png(path: tf.Tensor, prep: Preprocessing) -> tf.Tensor:
    """PNG file -> its uint16 (H, W, 1) values."""
    image = tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=tf.uint16)
    return tf.ensure_shape(image, [prep.height, prep.width, 1])


def from_png_values(image: tf.Tensor, prep: Preprocessing) -> tf.Tensor:
    return to_255(tf.cast(image, tf.float32), prep)


def inverse_affine(height: int, width: int, *, angle_rad: Any, zoom: Any, shift_x: Any, shift_y: Any,
                   flip: Any) -> tf.Tensor:
    """The 8 ImageProjectiveTransform coefficients mapping output pixels to input pixels.

    Sampling position q = c + zoom * R(angle) * (F(p) - c) + shift about the image centre c, where F
    mirrors x when `flip`. zoom < 1 magnifies (Keras ImageDataGenerator semantics); shifts are in pixels.
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(angle_rad) * zoom, tf.sin(angle_rad) * zoom
    sign = tf.where(flip, -1.0, 1.0)
    fx = tf.where(flip, float(width - 1), 0.0)
    a00, a01, a10, a11 = cos * sign, -sin, sin * sign, cos
    t0 = cos * (fx - cx) - sin * (0.0 - cy) + cx + shift_x
    t1 = sin * (fx - cx) + cos * (0.0 - cy) + cy + shift_y
    zero = tf.zeros_like(a00)
    return tf.stack([a00, a01, t0, a10, a11, t1, zero, zero])


def apply_affine(image: tf.Tensor, transform: tf.Tensor) -> tf.Tensor:
    """Bilinear resampling with edge replication (ImageDataGenerator's default 'nearest' fill)."""
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=tf.reshape(tf.cast(transform, tf.float32), [1, 8]),
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    return out[0]


def random_parameters(aug: Augmentation, height: int, width: int, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """One draw of the Table 7 transform: uniform angle, zoom and shifts, a fair coin for the flip.

    Stateless draws from a per-sample seed make a run reproducible although tf.data maps in parallel.
    """
    u = tf.random.stateless_uniform([5], seed=seed)
    limit = math.radians(aug.rotation_deg)

    def spread(value, half_range):
        return (2.0 * value - 1.0) * half_range

    return {
        "angle_rad": spread(u[0], limit),
        "zoom": 1.0 + spread(u[1], aug.zoom),
        "shift_x": spread(u[2], aug.width_shift) * width,
        "shift_y": spread(u[3], aug.height_shift) * height,
        "flip": tf.logical_and(aug.horizontal_flip, u[4] < 0.5),
    }


def random_augment(image: tf.Tensor, aug: Augmentation, seed: tf.Tensor) -> tf.Tensor:
    height, width = image.shape[0], image.shape[1]
    return apply_affine(image, inverse_affine(height, width, **random_parameters(aug, height, width, seed)))


def one_hot(labels: npt.ArrayLike) -> np.ndarray:
    return np.eye(2, dtype=np.float32)[np.asarray(labels).astype(int)]


def training_dataset(
    frame: pd.DataFrame,
    prep: Preprocessing,
    *,
    batch_size: int,
    augmentation: Augmentation | None,
    weights: dict[int, float],
    seed: int,
    cache_bytes: int = DECODED_CACHE_BYTES,
) -> tf.data.Dataset:
    """(image, one-hot label, class weight) batches, reshuffled every epoch; the decoded images are buffered when
    they fit `cache_bytes`, else only their paths.

    Each sample carries its own augmentation seed from a seeded random stream that is redrawn every
    epoch, so the transforms differ between epochs but a rerun draws the same ones.
    """
    sample_weights = np.array([weights[int(y)] for y in frame["label"]], dtype=np.float32)
    rows = tf.data.Dataset.from_tensor_slices((frame["path"].to_numpy(), one_hot(frame["label"]), sample_weights))
    decoded = _fits_in_memory(len(frame), prep, cache_bytes, value_bytes=2)
    if decoded:  # decoded once in file order; the shuffle below permutes exactly as it permutes file names
        rows = rows.map(lambda path, label, weight: (read_png(path, prep), label, weight),
                        num_parallel_calls=tf.data.AUTOTUNE).cache()
    rows = rows.shuffle(len(frame), seed=seed, reshuffle_each_iteration=True)
    salts = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def load(row, salt):
        path_or_png, label, weight = row
        image = from_png_values(path_or_png if decoded else read_png(path_or_png, prep), prep)
        if augmentation is not None:
            image = random_augment(image, augmentation, tf.stack([tf.constant(seed, tf.int64), salt]))
        return model_input(image, prep), label, weight

    data = tf.data.Dataset.zip((rows, salts)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_without_autotuning())


def evaluation_dataset(frame: pd.DataFrame, prep: Preprocessing, *, batch_size: int, labels: bool,
                       repeated: bool = False, cache_bytes: int = DECODED_CACHE_BYTES) -> tf.data.Dataset:
    """Images in frame order (with one-hot labels for validation), decoded in parallel and prefetched; a
    `repeated` set (validation, read every epoch) is kept in memory after its first pass while it fits."""
    if labels:
        data = tf.data.Dataset.from_tensor_slices((frame["path"].to_numpy(), one_hot(frame["label"])))
        data = data.map(lambda p, y: (model_input(decode(p, prep), prep), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = tf.data.Dataset.from_tensor_slices(frame["path"].to_numpy())
        data = data.map(lambda p: model_input(decode(p, prep), prep), num_parallel_calls=tf.data.AUTOTUNE)
    if repeated and _fits_in_memory(len(frame), prep, cache_bytes, value_bytes=3 * 4):
        data = data.cache()
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_without_autotuning())


def _without_autotuning() -> tf.data.Options:
    """AUTOTUNE parallelism fixed at its starting value (one per schedulable core, at most 16), without the
    optimisation thread that would tune it while the iterator runs.

    Keras makes a new iterator every epoch, and deleting the old one waited for tf.data's autotuning thread:
    ~1.7 s per demo pretraining epoch, a quarter of its time, with nothing computed.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _fits_in_memory(images: int, prep: Preprocessing, cache_bytes: int, *, value_bytes: int) -> bool:
    return images * prep.height * prep.width * value_bytes <= cache_bytes
