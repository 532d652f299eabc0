"""Batched P(cancer) scoring of preprocessed images, with Shen's optional flip test-time augmentation.

tf.data decodes the next batches in parallel while the model runs on the current one, so the CPU or
GPU stays busy. Flip TTA averages the probabilities of the original, the horizontal, the vertical and
the doubly flipped image, evaluated as one batch of four times the size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from common.artifacts import UnusableInput, atomic_write_csv, atomic_write_json
from common.data import SCORE_COLUMNS, Preprocessing, check_image_size, evaluation_dataset


def flip_variants(images: tf.Tensor) -> tf.Tensor:
    """[original, horizontal, vertical, both] stacked along the batch axis (NHWC)."""
    return tf.concat([images, tf.reverse(images, [2]), tf.reverse(images, [1]), tf.reverse(images, [1, 2])], axis=0)


def make_scorer(model: keras.Model, *, tta: bool):
    """A compiled function from an input batch to P(cancer) per image."""

    @tf.function(reduce_retracing=True)
    def score(images):
        if not tta:
            return model(images, training=False)[:, 1]
        probabilities = model(flip_variants(images), training=False)[:, 1]
        return tf.reduce_mean(tf.reshape(probabilities, [4, -1]), axis=0)

    return score


def predict_scores(
    model: keras.Model, frame: pd.DataFrame, prep: Preprocessing, *, batch_size: int, tta: bool, progress: bool = True
) -> np.ndarray:
    if frame.empty:
        return np.empty(0, dtype=np.float32)
    check_image_size(frame, prep.height, prep.width)
    if tuple(model.input_shape[1:3]) != (prep.height, prep.width):
        raise UnusableInput(f"model input {model.input_shape[1:3]} differs from its preprocessing size")
    score = make_scorer(model, tta=tta)
    batches = evaluation_dataset(frame, prep, batch_size=batch_size, labels=False)
    total = math.ceil(len(frame) / batch_size)
    scores = [score(batch).numpy() for batch in tqdm(batches, total=total, disable=not progress, desc="scoring")]
    return np.concatenate(scores).astype(float)


def score_frame(
    model: keras.Model, frame: pd.DataFrame, prep: Preprocessing, *, batch_size: int, tta: bool
) -> pd.DataFrame:
    """The scores.csv rows: image_id, patient_id, split, view, laterality, label, score."""
    scores = frame[SCORE_COLUMNS].copy()
    scores["score"] = predict_scores(model, frame, prep, batch_size=batch_size, tta=tta)
    return scores


def write_scores_and_metrics(scores: pd.DataFrame, out_dir: Path, profile: dict[str, Any]) -> dict[str, Any]:
    """scores.csv and the image-level metrics.json (threshold from validation G-mean, reported on test)."""
    from common.metrics import evaluate

    atomic_write_csv(out_dir / "scores.csv", scores)
    try:
        metrics = evaluate(
            scores, level="image", n_boot=int(profile["metrics"]["bootstrap"]), seed=int(profile["metrics"]["seed"])
        )
    except ValueError as error:
        raise UnusableInput(f"cannot evaluate the scores: {error}") from None
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
