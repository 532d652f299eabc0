"""End2End architecture: parameter counts per phase, named parts, stage reconfiguration, freezing."""

from __future__ import annotations

import json
import subprocess

import keras
import numpy as np
import pytest
from helpers import MAMMO

from common.model import (
    VGG16_CONVS_PER_BLOCK,
    Architecture,
    build_end2end,
    leaf_layers,
    parameter_counts,
    phase_summary,
    reconfigure,
    set_phase,
)
from common.profile import load_profile
from common.training import compile_for

CI_ARCH = Architecture.from_profile(load_profile("ci"))


def expected_counts(arch: Architecture) -> dict[str, dict[str, int]]:
    """Parameter arithmetic written out independently of Keras: conv 9*cin*cout + cout, BN 4*c, dense."""
    backbone, cin = 0, 3
    for filters, convs in zip(arch.backbone_filters, VGG16_CONVS_PER_BLOCK, strict=True):
        for _ in range(convs):
            backbone += 9 * cin * filters + filters
            cin = filters
    t = arch.top_filters
    block1_conv, block2_conv = 9 * cin * t + t, 9 * t * t + t
    bn_trainable = bn_moving = 2 * t
    dense = 2 * t + 2
    total = backbone + block1_conv + block2_conv + 2 * (bn_trainable + bn_moving) + dense
    config1 = block2_conv + bn_trainable + dense
    config2 = config1 + block1_conv + bn_trainable
    stage2 = total - 2 * bn_moving
    return {
        "stage1_config1": {"total": total, "trainable": config1, "non_trainable": total - config1},
        "stage1_config2": {"total": total, "trainable": config2, "non_trainable": total - config2},
        "stage2": {"total": total, "trainable": stage2, "non_trainable": total - stage2},
    }


def test_full_profile_has_the_thesis_parameter_counts():
    summary = phase_summary(Architecture.from_profile(load_profile("full")))
    assert summary["total"] == 19_439_426
    assert summary["phases"]["stage1_config1"]["trainable"] == 2_361_858
    assert summary["phases"]["stage1_config2"]["trainable"] == 4_722_690
    assert summary["phases"]["stage2"]["trainable"] == 19_437_378
    assert summary["parts"]["backbone"] == 14_714_688


@pytest.mark.parametrize("profile", ["full", "demo", "ci"])
def test_phase_counts_match_independent_arithmetic(profile):
    arch = Architecture.from_profile(load_profile(profile))
    assert phase_summary(arch)["phases"] == expected_counts(arch)


def test_model_summary_cli_prints_json():
    result = subprocess.run(
        [*MAMMO, "model", "summary", "--profile", "full"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["profile"] == "full"
    assert summary["total"] == 19_439_426
    assert summary["phases"]["stage1_config2"]["trainable"] == 4_722_690


def test_parts_are_named_and_shaped_like_end2end():
    full = Architecture.from_profile(load_profile("full"))
    model = build_end2end(full, dropout=0.2, weight_decay=1e-4)
    backbone = model.get_layer("backbone")
    names = [layer.name for layer in backbone.layers]
    assert names[0] == "block1_conv1" and names[-1] == "block5_pool" and "block5_conv3" in names
    assert backbone.output.shape[1:] == (36, 28, 512)
    assert model.get_layer("block1").output.shape[1:] == (18, 14, 512)
    assert model.get_layer("block2").output.shape[1:] == (9, 7, 512)
    block = model.get_layer("block2")
    kinds = [type(layer).__name__ for layer in block.layers]
    assert kinds == ["Conv2D", "BatchNormalization", "Activation", "Dropout", "MaxPooling2D"]
    assert block.layers[0].use_bias and block.layers[0].kernel_size == (3, 3) and block.layers[0].padding == "same"
    head = model.get_layer("head").layers
    assert [type(layer).__name__ for layer in head] == ["GlobalAveragePooling2D", "Dropout", "Dense"]
    assert head[-1].units == 2 and head[-1].get_config()["activation"] == "softmax"
    assert not any("Random" in type(layer).__name__ for layer in leaf_layers(model)), "no augmentation in the model"


def _kernels(model):
    return [layer.kernel for layer in leaf_layers(model) if hasattr(layer, "kernel")]


def test_reconfigure_really_changes_dropout_and_weight_decay():
    rng = np.random.default_rng(0)
    stage1 = build_end2end(CI_ARCH, dropout=0.2, weight_decay=1e-4)
    stage1.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in stage1.get_weights()])
    stage2 = reconfigure(stage1, dropout=0.5, weight_decay=1.5e-3)
    for a, b in zip(stage1.get_weights(), stage2.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    dropouts = [layer for layer in leaf_layers(stage2) if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == 3 and all(layer.get_config()["rate"] == 0.5 for layer in dropouts)
    regularisers = {
        layer.get_config()["kernel_regularizer"]["config"]["l2"]
        for layer in leaf_layers(stage2)
        if layer.get_config().get("kernel_regularizer")
    }
    assert len(regularisers) == 1 and regularisers.pop() == pytest.approx(1.5e-3)

    # The dropout rate acts: in training mode about half of the head's inputs are zeroed.
    zeros = np.mean(keras.ops.convert_to_numpy(dropouts[-1](np.ones((200, 64), "float32"), training=True)) == 0)
    assert 0.43 < zeros < 0.57

    # The decay acts on exactly what the phase trains: the penalty equals wd * sum(kernel^2) of trainable kernels.
    for phase, trained in [("stage1_config1", ("block2_conv", "head_dense")), ("stage2", None)]:
        set_phase(stage2, phase)
        kernels = [k for k in _kernels(stage2) if trained is None or k.path.split("/")[-2] in trained]
        expected = 1.5e-3 * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)
        penalty = sum(float(keras.ops.convert_to_numpy(loss)) for loss in stage2.losses)
        assert penalty == pytest.approx(expected, rel=1e-5)


def test_training_loss_includes_the_weight_decay_penalty():
    """The optimised objective = cross-entropy (numpy) + the L2 penalty of the trainable kernels only."""
    rng = np.random.default_rng(1)
    model = build_end2end(CI_ARCH, dropout=0.0, weight_decay=1.5e-3)
    set_phase(model, "stage1_config1")
    settings = load_profile("ci").training.phase("stage2")
    compile_for(model, settings, jit_compile=False)
    # Small inputs keep the untrained softmax away from saturation, where Keras uses the logits directly.
    x = rng.normal(0, 0.05, (8, CI_ARCH.height, CI_ARCH.width, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[[0, 1] * 4]
    p = model.predict(x, verbose=0)
    assert p.min() > 1e-3
    cross_entropy = -np.mean(np.sum(y * np.log(p), axis=1))
    penalty = 1.5e-3 * sum(
        float(np.sum(np.square(k.numpy())))
        for k in _kernels(model)
        if k.path.split("/")[-2] in ("block2_conv", "head_dense")
    )
    loss = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(cross_entropy + penalty, rel=1e-4)


def test_stage1_freezes_backbone_and_block1_including_batchnorm_statistics():
    rng = np.random.default_rng(2)
    model = build_end2end(CI_ARCH, dropout=0.2, weight_decay=1e-4)
    set_phase(model, "stage1_config1")
    assert parameter_counts(model)["trainable"] == expected_counts(CI_ARCH)["stage1_config1"]["trainable"]
    compile_for(model, load_profile("ci").training.phase("stage1_config1"), jit_compile=False)
    before = {w.path: w.numpy().copy() for w in model.weights}
    x = rng.normal(0, 50, (8, CI_ARCH.height, CI_ARCH.width, 3)).astype("float32")
    model.train_on_batch(x, np.eye(2, dtype="float32")[[0, 1] * 4])
    after = {w.path: w.numpy() for w in model.weights}
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert all(path.startswith(("end2end/block2/", "end2end/head/")) for path in changed)
    assert "end2end/block2/block2_bn/moving_mean" in changed  # trainable BN learns its statistics
    assert "end2end/block1/block1_bn/moving_mean" not in changed  # frozen BN runs in inference mode
    assert "end2end/block2/block2_conv/kernel" in changed and "end2end/head/head_dense/kernel" in changed
