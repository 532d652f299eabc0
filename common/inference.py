"""Batched P(cancer) scoring of preprocessed images, with Shen's optional flip test-time augmentation.

tf.data decodes the next batches in parallel while the model runs on the current one, so the CPU or
GPU stays busy. Flip TTA averages the probabilities of the original, the horizontal, the vertical and
the doubly flipped image, evaluated as one batch of four times the size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from common.artifacts import UnusableInput, atomic_write_csv, atomic_write_json
from common.data import SCORE_COLUMNS, evaluation_dataset
from common.model_folder import Preprocessing, image_sizes
from common.profile import Profile
from common.progress import track


def flip_variants(images: tf.Tensor) -> tf.Tensor:
    """[original, horizontal, vertical, both] stacked along the batch axis (NHWC)."""
    return tf.concat([images, tf.reverse(images, [2]), tf.reverse(images, [1]), tf.reverse(images, [1, 2])], axis=0)


def make_scorer(model: keras.Model, *, tta: bool) -> Callable[[tf.Tensor], tf.Tensor]:
    """A compiled function from an input batch to P(cancer) per image."""

    @tf.function(reduce_retracing=True)
    def score(images):
        if not tta:
            return model(images, training=False)[:, 1]
        probabilities = model(flip_variants(images), training=False)[:, 1]
        return tf.reduce_mean(tf.reshape(probabilities, [4, -1]), axis=0)

    return score


def make_scorer_with_features(model: keras.Model, *, tta: bool
                              ) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Like `make_scorer`, plus the penultimate features (the head's global average pool of the original,
    unflipped image) from the same forward pass, for the report's domain-shift diagnostics."""
    trunk, head = model.layers[:-1], model.layers[-1]

    @tf.function(reduce_retracing=True)
    def score(images):
        x = flip_variants(images) if tta else images
        for layer in trunk:
            x = layer(x, training=False)
        probabilities = head(x, training=False)[:, 1]
        if tta:
            probabilities = tf.reduce_mean(tf.reshape(probabilities, [4, -1]), axis=0)
        return probabilities, tf.reduce_mean(tf.cast(x[: tf.shape(images)[0]], tf.float32), axis=[1, 2])

    return score


def predict_scores(
    model: keras.Model, frame: pd.DataFrame, prep: Preprocessing, *, batch_size: int, tta: bool, progress: bool = True
) -> np.ndarray:
    return _predict(model, frame, prep, batch_size, tta, progress, features=False)[0]


def predict_scores_and_features(
    model: keras.Model, frame: pd.DataFrame, prep: Preprocessing, *, batch_size: int, tta: bool, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """P(cancer) per image and its penultimate feature vector (rows in `frame` order)."""
    return _predict(model, frame, prep, batch_size, tta, progress, features=True)


def _predict(model, frame, prep, batch_size, tta, progress, *, features: bool):
    if frame.empty:
        return np.empty(0, dtype=np.float32), np.empty((0, 0), dtype=np.float32)
    image_sizes(frame["path"].iloc[:1], prep.height, prep.width)  # fail early, not deep inside a tf.data graph
    prep.require_model_size(model.input_shape)
    score: Callable[[tf.Tensor], Any] = (make_scorer_with_features if features else make_scorer)(model, tta=tta)
    batches = evaluation_dataset(frame, prep, batch_size=batch_size, labels=False)
    total = math.ceil(len(frame) / batch_size)
    outputs = [score(batch) for batch in track(batches, total, "scoring", "batch", enabled=progress)]
    if not features:
        return np.concatenate([o.numpy() for o in outputs]).astype(float), None
    return (np.concatenate([o[0].numpy() for o in outputs]).astype(float),
            np.concatenate([o[1].numpy() for o in outputs]).astype(np.float32))  # fmt: skip


def score_frame(
    model: keras.Model, frame: pd.DataFrame, prep: Preprocessing, *, batch_size: int, tta: bool
) -> pd.DataFrame:
    """The scores.csv rows: image_id, patient_id, split, view, laterality, label, score."""
    scores = frame[SCORE_COLUMNS].copy()
    scores["score"] = predict_scores(model, frame, prep, batch_size=batch_size, tta=tta)
    return scores


def score_frame_with_features(
    model: keras.Model, frame: pd.DataFrame, prep: Preprocessing, *, batch_size: int, tta: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scores.csv rows and the penultimate.csv rows (image_id, split, f0..f{k-1})."""
    scores = frame[SCORE_COLUMNS].copy()
    scores["score"], vectors = predict_scores_and_features(model, frame, prep, batch_size=batch_size, tta=tta)
    columns = [f"f{i}" for i in range(vectors.shape[1])]
    features = pd.concat([frame[["image_id", "split"]].reset_index(drop=True),
                          pd.DataFrame(vectors, columns=columns)], axis=1)  # fmt: skip
    return scores, features


def write_scores_and_metrics(scores: pd.DataFrame, out_dir: Path, profile: Profile) -> dict[str, Any]:
    """scores.csv and the image-level metrics.json (threshold from validation G-mean, reported on test)."""
    from common.metrics import evaluate

    atomic_write_csv(out_dir / "scores.csv", scores)
    try:
        metrics = evaluate(scores, level="image", n_boot=profile.metrics.bootstrap, seed=profile.metrics.seed)
    except ValueError as error:
        raise UnusableInput(f"cannot evaluate the scores: {error}") from None
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
