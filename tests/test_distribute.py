"""Multi-device training (common.distribute) on CPU: two logical CPU devices stand in for two GPUs.

The same data, seed and global batch must give the same loss trajectory under MirroredStrategy as on one device:
each replica gets half of every batch, the gradients are averaged and BatchNorm is synchronised, so the only
difference left is the order of floating-point sums. Tolerance: relative 1e-4 on every epoch's loss and
val_loss (float32 reduction order; a per-replica BatchNorm or a batch not split but duplicated is off by far more).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RELATIVE_TOLERANCE = 1e-4

SCRIPT = r"""
import json, os, sys
from pathlib import Path

from common import distribute

distribute.split_cpu(2)  # before TensorFlow starts: one process, both strategies
import keras
import numpy as np
import tensorflow as tf

from common.model import Architecture, build_end2end, set_phase
from common.profile import load_profile
from common.profile import StageSettings
from common.training import compile_for, fit

profile = load_profile("ci")
settings = StageSettings(phase="pretrain", learning_rate=1e-3, weight_decay=1e-4, dropout=0.0, epochs=3,
                         batch_size=8, reduce_lr_patience=10, early_stopping_patience=10)
rng = np.random.default_rng(3)
height, width = profile.image.height, profile.image.width
x = rng.normal(size=(32, height, width, 3)).astype("float32")
labels = (np.arange(32) % 3 == 0).astype(int)
x[labels == 1, height // 3:height // 2, width // 3:width // 2] += 1.5  # something to learn
y = np.eye(2, dtype="float32")[labels]
w = np.where(labels == 1, 1.5, 0.75).astype("float32")
train = tf.data.Dataset.from_tensor_slices((x[:24], y[:24], w[:24])).batch(settings.batch_size)
validation = tf.data.Dataset.from_tensor_slices((x[24:], y[24:])).batch(settings.batch_size)

out = {}
for label, replicas in (("one", "0"), ("mirrored", "2")):
    os.environ[distribute.CPU_REPLICAS_ENV] = replicas
    strategy = distribute.training_strategy()
    keras.utils.set_random_seed(7)
    with strategy.scope():
        model = build_end2end(Architecture.from_profile(profile), dropout=0.0, weight_decay=1e-4)
        set_phase(model, "pretrain")
        compile_for(model, settings, jit_compile=False)
        start = float(sum(np.abs(v).sum() for v in model.get_weights()))
        outcome = fit(model, train, validation, settings, Path(sys.argv[1]) / label, step="pretrain",
                      fingerprint=label, verbose=0)
    out[label] = {"replicas": strategy.num_replicas_in_sync, "start": start,
                  "loss": outcome.history["loss"].tolist(), "val_loss": outcome.history["val_loss"].tolist()}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_two_logical_devices_follow_the_one_device_loss_trajectory(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PUSHGATEWAY_URL", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [row for row in result.stdout.splitlines() if row.startswith("RESULT ")][-1]
    runs = json.loads(line.removeprefix("RESULT "))
    one, mirrored = runs["one"], runs["mirrored"]
    assert (one["replicas"], mirrored["replicas"]) == (1, 2)
    assert one["start"] == pytest.approx(mirrored["start"], rel=1e-7)  # same initial weights: a fair comparison
    assert len(one["loss"]) == len(mirrored["loss"]) == 3
    assert one["loss"][0] != pytest.approx(one["loss"][-1], rel=1e-3)  # it trained: the trajectory is not flat
    np.testing.assert_allclose(mirrored["loss"], one["loss"], rtol=RELATIVE_TOLERANCE)
    np.testing.assert_allclose(mirrored["val_loss"], one["val_loss"], rtol=RELATIVE_TOLERANCE)
