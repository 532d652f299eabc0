"""Training steps: data pipeline, augmentation, stages, class weights, resume after a kill.

`write_cohort` builds small preprocess/split fixture folders (also used by the other model tests): 16-bit
PNGs whose positives carry a bright blob, so a model can actually learn something from them.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import HEIGHT, ROOT, WIDTH, mammo, mammo_command, write_cohort, write_profile

from common.artifacts import UnusableInput
from common.data import (
    Augmentation,
    apply_affine,
    class_weights,
    evaluation_dataset,
    featurewise_mean,
    inverse_affine,
    join_images_with_split,
    random_parameters,
    training_dataset,
)
from common.model import leaf_layers, load_model
from common.model_folder import Preprocessing
from common.profile import load_profile


def test_featurewise_mean_and_class_weights_match_numpy(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8)
    cohort = join_images_with_split(images_dir, split_dir)
    train = cohort.split("train")
    pixels = np.concatenate([cv2.imread(p, cv2.IMREAD_UNCHANGED).ravel().astype(float) for p in train["path"]])
    assert featurewise_mean(train["path"]) == pytest.approx(pixels.mean() * 255 / 65535, rel=1e-9)
    labels = train["label"].to_numpy()
    weights = class_weights(labels)
    # Equal total weight per class, and the mean weight is one.
    assert weights[1] * labels.sum() == pytest.approx(weights[0] * (1 - labels).sum())
    assert np.mean([weights[y] for y in labels]) == pytest.approx(1.0)


def test_cohort_leaves_out_unusable_images(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8)
    (images_dir / "images" / "P000_L_CC.png").unlink()
    (images_dir / "images" / "P002_L_CC.png").write_bytes(b"not a png")
    cv2.imwrite(str(images_dir / "images" / "P003_R_CC.png"), np.zeros((HEIGHT + 2, WIDTH), np.uint16))
    split = pd.read_csv(split_dir / "split.csv", dtype={"patient_id": str})
    split[split["patient_id"] != "P001"].to_csv(split_dir / "split.csv", index=False)
    cohort = join_images_with_split(images_dir, split_dir)
    assert len(cohort.frame) == 32 - 1 - 4
    assert len(cohort.problems) == 5 and any("P000_L_CC" in p for p in cohort.problems)
    sized = cohort.with_size(HEIGHT, WIDTH)
    assert len(sized.frame) == 32 - 1 - 4 - 2
    assert any("P002_L_CC: unreadable" in p for p in sized.problems)
    assert any(f"P003_R_CC: {HEIGHT + 2}x{WIDTH}" in p for p in sized.problems)
    with pytest.raises(UnusableInput, match="use the same profile"):
        cohort.with_size(HEIGHT * 2, WIDTH * 2)


def test_pipeline_tensors_are_shens_arithmetic(tmp_path):
    """Without augmentation a batch is png * 255/65535 - mean in three identical channels, with class weights."""
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8)
    train = join_images_with_split(images_dir, split_dir).split("train")
    prep = Preprocessing(60.5, HEIGHT, WIDTH, "test")
    weights = {0: 0.75, 1: 1.5}
    data = training_dataset(train, prep, batch_size=4, augmentation=None, weights=weights, seed=0)
    x, y, w = next(iter(data))
    by_path = {}
    for path in train["path"]:
        by_path[path] = cv2.imread(path, cv2.IMREAD_UNCHANGED).astype(np.float64) * 255 / 65535 - 60.5
    assert x.shape == (4, HEIGHT, WIDTH, 3)
    for image, label, weight in zip(x.numpy(), y.numpy(), w.numpy(), strict=True):
        match = [p for p, ref in by_path.items() if np.allclose(image[..., 0], ref, atol=1e-3)]
        assert len(match) == 1, "every batch image is exactly one preprocessed PNG"
        assert np.array_equal(image[..., 0], image[..., 2])
        truth = int(train.loc[train["path"] == match[0], "label"].iloc[0])
        assert label.tolist() == [1 - truth, truth] and weight == weights[truth]


def _epochs(data: tf.data.Dataset, n: int) -> list[list[np.ndarray]]:
    return [[np.concatenate([batch[i].numpy() for batch in data]) for i in range(3)] for _ in range(n)]


def test_decoded_training_images_kept_in_memory_give_the_same_batches_and_are_read_once(tmp_path):
    """The in-memory set shuffles and augments exactly like the streamed one (same seed, same epochs), and a
    second epoch no longer needs the files: they are decoded once."""
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8)
    train = join_images_with_split(images_dir, split_dir).split("train")
    prep = Preprocessing(60.5, HEIGHT, WIDTH, "test")
    aug = Augmentation(rotation_deg=10, width_shift=0.05, height_shift=0.05, zoom=0.1, horizontal_flip=True)
    kwargs = {"batch_size": 4, "augmentation": aug, "weights": {0: 0.75, 1: 1.5}, "seed": 3}
    streamed = _epochs(training_dataset(train, prep, cache_bytes=0, **kwargs), 2)
    kept = training_dataset(train, prep, **kwargs)
    first = _epochs(kept, 1)[0]
    for path in train["path"]:
        Path(path).unlink()
    second = _epochs(kept, 1)[0]
    for ours, theirs in zip([first, second], streamed, strict=True):
        for got, expected in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(first[0], second[0]), "each epoch reshuffles and redraws the augmentation"
    with pytest.raises(tf.errors.NotFoundError):
        _epochs(training_dataset(train, prep, cache_bytes=0, **kwargs), 1)


def test_validation_images_are_kept_in_memory_only_when_read_every_epoch(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8)
    validation = join_images_with_split(images_dir, split_dir).split("train")
    prep = Preprocessing(60.5, HEIGHT, WIDTH, "test")

    def passes(data: tf.data.Dataset) -> list[np.ndarray]:
        return [np.concatenate([x.numpy() for x, _ in data]) for _ in range(2)]

    repeated = evaluation_dataset(validation, prep, batch_size=4, labels=True, repeated=True)
    once = evaluation_dataset(validation, prep, batch_size=4, labels=True)
    first = passes(repeated)[0]
    np.testing.assert_array_equal(first, passes(once)[0])
    for path in validation["path"]:
        Path(path).unlink()
    np.testing.assert_array_equal(passes(repeated)[1], first)
    with pytest.raises(tf.errors.NotFoundError):
        passes(once)


def test_input_pipelines_run_without_the_autotuning_thread(tmp_path):
    """Keras makes a new iterator every epoch, and deleting one with autotuning on waited for tf.data's
    optimisation thread (1.7 s of each demo pretraining epoch): every training and evaluation set opts out."""
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8)
    frame = join_images_with_split(images_dir, split_dir).split("train")
    prep = Preprocessing(60.5, HEIGHT, WIDTH, "test")
    sets = [training_dataset(frame, prep, batch_size=4, augmentation=Augmentation(), weights={0: 1.0, 1: 1.0}, seed=0),
            evaluation_dataset(frame, prep, batch_size=4, labels=True, repeated=True),
            evaluation_dataset(frame, prep, batch_size=4, labels=False)]
    assert [data.options().autotune.enabled for data in sets] == [False, False, False]


def test_affine_augmentation_matches_opencv():
    """The tf.data transform resamples exactly like cv2.warpAffine with the same inverse map."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (HEIGHT, WIDTH)), (0, 0), 2).astype(np.float32)
    for params in [
        {"angle_rad": 0.15, "zoom": 0.92, "shift_x": 5.0, "shift_y": -7.0, "flip": False},
        {"angle_rad": -0.1, "zoom": 1.08, "shift_x": -3.0, "shift_y": 4.0, "flip": True},
    ]:
        transform = inverse_affine(HEIGHT, WIDTH, **params).numpy()
        ours = apply_affine(tf.constant(image[..., None]), transform).numpy()[..., 0]
        # Independent construction of the same map: q = c + zoom * R(angle) * (F(p) - c) + shift.
        c = np.array([(WIDTH - 1) / 2, (HEIGHT - 1) / 2])
        a = params["zoom"] * np.array(
            [
                [math.cos(params["angle_rad"]), -math.sin(params["angle_rad"])],
                [math.sin(params["angle_rad"]), math.cos(params["angle_rad"])],
            ]
        )
        f_mat, f_off = (np.diag([-1.0, 1.0]), np.array([WIDTH - 1, 0.0])) if params["flip"] else (np.eye(2), 0)
        matrix = np.hstack([a @ f_mat, (a @ (f_off - c) + c + [params["shift_x"], params["shift_y"]])[:, None]])
        expected = cv2.warpAffine(
            image,
            matrix,
            (WIDTH, HEIGHT),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        np.testing.assert_allclose(ours[2:-2, 2:-2], expected[2:-2, 2:-2], atol=0.05)


def test_random_parameters_follow_table_7():
    aug = Augmentation()
    draws = [random_parameters(aug, HEIGHT, WIDTH, tf.constant([7, i], tf.int64)) for i in range(400)]
    angles = np.degrees([d["angle_rad"].numpy() for d in draws])
    zooms = np.array([d["zoom"].numpy() for d in draws])
    shifts_x = np.array([d["shift_x"].numpy() for d in draws]) / WIDTH
    shifts_y = np.array([d["shift_y"].numpy() for d in draws]) / HEIGHT
    flips = np.mean([bool(d["flip"].numpy()) for d in draws])
    assert -10 <= angles.min() < -8 and 8 < angles.max() <= 10
    assert 0.9 <= zooms.min() < 0.92 and 1.08 < zooms.max() <= 1.1
    assert 0.04 < np.abs(shifts_x).max() <= 0.05 and 0.04 < np.abs(shifts_y).max() <= 0.05
    assert 0.4 < flips < 0.6
    assert not any(
        bool(d["flip"].numpy())
        for d in (
            random_parameters(Augmentation(horizontal_flip=False), HEIGHT, WIDTH, tf.constant([7, i], tf.int64))
            for i in range(50)
        )
    )


def _read_model(folder: Path):
    return load_model(folder / "model.keras")


def test_pretrain_then_two_stages_through_the_cli(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=16, seed=3)
    profile = write_profile(tmp_path / "ci.yaml", pretrain={"epochs": 2}, stage1={"epochs": 2}, stage2={"epochs": 1})
    common = ["--images", str(images_dir), "--split", str(split_dir), "--profile", str(profile)]
    pre, s1, s2 = tmp_path / "pretrain", tmp_path / "stage1", tmp_path / "stage2"
    mammo("pretrain", *common, "--out", str(pre), "--source-name", "film")
    mammo("finetune-stage1", *common, "--model", str(pre), "--config", "1", "--out", str(s1))
    mammo("finetune-stage2", *common, "--model", str(s1), "--out", str(s2), "--no-tta")

    cohort = join_images_with_split(images_dir, split_dir)
    train = cohort.split("train")
    prep = json.loads((pre / "preprocessing.json").read_text())
    assert prep["featurewise_mean"] == pytest.approx(featurewise_mean(train["path"]))
    assert prep["rescale"] == pytest.approx(255 / 65535) and prep["source"] == "train split of film"
    assert json.loads((s2 / "preprocessing.json").read_text()) == prep, "fine-tuning keeps the model's constants"

    for folder, stage, epochs in [(pre, "pretrain", 2), (s1, "stage1", 2), (s2, "stage2", 1)]:
        history = pd.read_csv(folder / "history.csv")
        assert list(history.columns) == ["epoch", "stage", "loss", "val_loss", "val_auc", "lr"]
        assert history["epoch"].tolist() == list(range(epochs)) and set(history["stage"]) == {stage}
        assert history[["loss", "val_loss", "val_auc"]].notna().all().all()
        assert (folder / "best.weights.h5").is_file() and (folder / "_SUCCESS.json").is_file()
        assert not (folder / "_resume").exists(), "the resume backup is removed after a finished run"

    t1 = json.loads((s1 / "training.json").read_text())
    t2 = json.loads((s2 / "training.json").read_text())
    assert t1["class_weights"] == pytest.approx({str(k): v for k, v in class_weights(train["label"]).items()})
    assert t1["parameters"]["trainable"] == 2386  # ci config 1: block2 conv + BN gamma/beta + dense
    assert (t1["settings"]["learning_rate"], t1["settings"]["weight_decay"], t1["settings"]["dropout"]) == (
        2e-4,
        1e-4,
        0.2,
    )
    assert (t2["settings"]["learning_rate"], t2["settings"]["weight_decay"], t2["settings"]["dropout"]) == (
        2e-7,
        1.5e-3,
        0.5,
    )
    history1 = pd.read_csv(s1 / "history.csv")
    assert history1["lr"].iloc[0] == pytest.approx(2e-4)

    m_pre, m_s1, m_s2 = _read_model(pre), _read_model(s1), _read_model(s2)
    for part, frozen in [("backbone", True), ("block1", True), ("block2", False)]:
        same = all(
            np.array_equal(a, b)
            for a, b in zip(m_pre.get_layer(part).get_weights(), m_s1.get_layer(part).get_weights(), strict=True)
        )
        assert same == frozen, part
    rates = {layer.get_config()["rate"] for layer in leaf_layers(m_s2) if type(layer).__name__ == "Dropout"}
    assert rates == {0.5}
    assert m_s2.get_layer("head").get_layer("head_dense").get_config()["kernel_regularizer"]["config"]["l2"] == (
        pytest.approx(1.5e-3)
    )

    scores = pd.read_csv(s2 / "scores.csv", dtype={"patient_id": str})
    assert list(scores.columns) == ["image_id", "patient_id", "split", "view", "laterality", "label", "score"]
    assert set(scores["image_id"]) == set(cohort.frame["image_id"]) and scores["score"].between(0, 1).all()
    metrics = json.loads((s2 / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["threshold_source"] == "validation-gmean"
    assert metrics["n"] == int((scores["split"] == "test").sum())


def test_unusable_input_exits_2_with_one_line(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8)
    (split_dir / "_SUCCESS.json").unlink()
    result = mammo("pretrain", images=images_dir, split=split_dir, out=tmp_path / "out", profile="ci", check=False)
    assert result.returncode == 2
    assert "_SUCCESS.json" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "_SUCCESS.json").exists()


def test_killed_training_resumes_losing_at_most_one_epoch(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=16, seed=5)
    # Patience beyond the epoch count: the test is about resuming, not about stopping early.
    profile = write_profile(tmp_path / "ci.yaml", pretrain={"epochs": 7}, early_stopping_patience=10)
    out = tmp_path / "pretrain"
    command = mammo_command("pretrain", images=images_dir, split=split_dir, out=out, profile=profile)
    history = out / "history.csv"
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 900  # a safety net only: a loaded machine needs minutes for two epochs
        while time.time() < deadline and process.poll() is None:
            if history.is_file() and len(pd.read_csv(history)) >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "training finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    before = pd.read_csv(history)
    assert 2 <= len(before) < 7 and not (out / "_SUCCESS.json").exists()

    mammo(*command[3:])
    record = json.loads((out / "training.json").read_text())
    after = pd.read_csv(history)
    assert record["resumed_from_epoch"] >= len(before) - 1 >= 1
    assert after["epoch"].tolist() == list(range(7))
    kept = record["resumed_from_epoch"]
    pd.testing.assert_frame_equal(after.iloc[:kept], before.iloc[:kept])


def test_stage_settings_are_table_6_and_pretraining_may_wait_longer():
    full = load_profile("full")
    stage1, stage2 = full.training.phase("stage1_config2"), full.training.phase("stage2")
    assert (stage1.learning_rate, stage1.weight_decay, stage1.dropout, stage1.epochs) == (2e-4, 1e-4, 0.2, 50)
    assert (stage2.learning_rate, stage2.weight_decay, stage2.dropout, stage2.epochs) == (2e-7, 1.5e-3, 0.5, 30)
    for settings in (stage1, stage2):
        assert (settings.batch_size, settings.reduce_lr_patience, settings.early_stopping_patience) == (16, 2, 3)
    demo = load_profile("demo")
    assert demo.training.phase("stage1_config1").early_stopping_patience == 3
    pretrain = demo.training.phase("pretrain")
    assert pretrain.early_stopping_patience == demo.training.pretrain.early_stopping_patience


def test_demo_pretraining_is_not_cut_short_on_its_plateau():
    """From scratch the demo's VGG sits on a val_loss plateau for several epochs before it learns. Issue 12: with
    patiences 4 and 6 a fresh seed-0 run had its learning rate cut at epoch 7 and stopped at 8 with film at chance
    (AUC 0.52), where an earlier run had left the plateau at epoch 9 and reached 0.83."""
    pretrain = load_profile("demo").training.phase("pretrain")
    assert pretrain.reduce_lr_patience >= pretrain.epochs
    assert pretrain.early_stopping_patience >= pretrain.epochs
