"""Loading Shen's Keras 2 HDF5 checkpoints: a file in the Keras 2 layout, written here from a model with
random weights, must reproduce that model's predictions; a file that does not fit must say where."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import mammo, random_model, write_cohort

from common.checkpoint import CheckpointMismatch, load_keras2_weights, published_mean
from common.inference import predict_scores
from common.model import Architecture, build_end2end, leaf_layers, load_model
from common.model_folder import Preprocessing
from common.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
ARCH = Architecture.from_profile(load_profile("ci"))

# Keras 2 auto-numbered top layers of Shen's VGG16 "512x1" file, in order; None marks weightless layers.
TOP = [
    ("conv2d_1", "block1_conv"),
    ("batch_normalization_1", "block1_bn"),
    ("activation_1", None),
    ("dropout_1", None),
    ("max_pooling2d_1", None),
    ("conv2d_2", "block2_conv"),
    ("batch_normalization_2", "block2_bn"),
    ("activation_2", None),
    ("dropout_2", None),
    ("max_pooling2d_2", None),
    ("global_average_pooling2d_1", None),
    ("dropout_3", None),
    ("dense_1", "head_dense"),
]
SUFFIXES = {2: ("kernel", "bias"), 4: ("gamma", "beta", "moving_mean", "moving_variance")}


def write_keras2_h5(
    model, path: Path, *, drop=(), reshape=(), root_group: bool = True, nested_last=(), rename=None
) -> None:
    """Write `model` in the Keras 2.0 layout: model_weights/<layer>/<layer>/<weight>:0 with layer_names and
    weight_names attributes, the VGG part nested as `model_1` (its weight names prefixed by their layer).

    `nested_last` lists backbone layers whose weights go last inside `model_1`, as Keras 2 orders a sub-model
    saved while those layers were frozen (trainable weights first); `rename` renames backbone layers.
    """
    rename = rename or {}
    layers = {layer.name: layer for layer in leaf_layers(model)}
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = b"2.0.8"
        handle.attrs["backend"] = b"tensorflow"
        root = handle.create_group("model_weights") if root_group else handle
        layer_names = [b"input_1", b"model_1"] + [name.encode() for name, _ in TOP if name not in drop]
        root.attrs["layer_names"] = layer_names
        root.create_group("input_1").attrs["weight_names"] = []
        nested = root.create_group("model_1")
        names = []
        backbone = model.get_layer("backbone").layers
        ordered = sorted(backbone, key=lambda layer: layer.name in nested_last)  # stable: the rest keep their order
        for layer in ordered:
            for suffix, weight in zip(SUFFIXES.get(len(layer.weights), ()), layer.weights, strict=False):
                name = f"{rename.get(layer.name, layer.name)}/{suffix}:0"
                if name not in nested:  # a rename onto an existing layer lists its weights twice
                    nested.create_dataset(name, data=weight.numpy())
                names.append(name.encode())
        nested.attrs["weight_names"] = names
        for keras2_name, ours in TOP:
            if keras2_name in drop:
                continue
            group = root.create_group(keras2_name)
            weights = layers[ours].weights if ours else []
            names = []
            for suffix, weight in zip(SUFFIXES.get(len(weights), ()), weights, strict=False):
                name = f"{keras2_name}/{suffix}:0"
                value = weight.numpy()
                if keras2_name in reshape and suffix == "kernel":
                    value = value[..., :-1]
                group.create_dataset(name, data=value)
                names.append(name.encode())
            group.attrs["weight_names"] = names


def images(seed: int, n: int = 4):
    return np.random.default_rng(seed).normal(0, 1, (n, ARCH.height, ARCH.width, 3)).astype("float32")


@pytest.mark.parametrize("root_group", [True, False], ids=["model-file", "weights-file"])
def test_keras2_file_reproduces_predictions(tmp_path, root_group):
    source = random_model(seed=1)
    path = tmp_path / "inbreast_vgg16_512x1.h5"
    write_keras2_h5(source, path, root_group=root_group)
    target = build_end2end(ARCH, dropout=0.5, weight_decay=0.0)
    pairs = load_keras2_weights(target, path).pairs
    assert pairs[0] == ("block1_conv1", "block1_conv1") and pairs[-1] == ("dense_1", "head_dense")
    assert ("batch_normalization_2", "block2_bn") in pairs
    x = images(seed=2)
    expected = source.predict(x, verbose=0)
    assert expected[:, 1].std() > 1e-3, "the random model must not be constant, or the comparison proves nothing"
    np.testing.assert_allclose(target.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_backbone_layers_pair_by_name_not_position(tmp_path):
    """A file saved with block5_conv1 frozen lists it last in model_1; shapes of block5_conv1-3 are equal, so only
    the names can pair them correctly."""
    source = random_model(seed=11)
    path = tmp_path / "frozen_save.h5"
    write_keras2_h5(source, path, nested_last=("block5_conv1",))
    target = build_end2end(ARCH, dropout=0.5, weight_decay=0.0)
    match = load_keras2_weights(target, path)
    assert match.rule == "backbone by layer name, top layers by order and kind"
    assert ("block5_conv1", "block5_conv1") in match.pairs
    x = images(seed=12)
    expected = source.predict(x, verbose=0)
    assert expected[:, 1].std() > 1e-3
    np.testing.assert_allclose(target.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-4)


def test_a_backbone_name_that_does_not_fit_is_refused_even_if_the_shape_does(tmp_path):
    path = tmp_path / "renamed.h5"
    write_keras2_h5(random_model(seed=13), path, rename={"block5_conv2": "block5_conv9"})
    target = build_end2end(ARCH, dropout=0.2, weight_decay=0.0)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(CheckpointMismatch, match=r"block5_conv9.*no model layer|block5_conv2.*no counterpart"):
        load_keras2_weights(target, path)
    for a, b in zip(before, target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_backbone_layer_listed_twice_is_ambiguous(tmp_path):
    path = tmp_path / "twice.h5"
    write_keras2_h5(random_model(seed=14), path, rename={"block5_conv2": "block5_conv1"})
    with pytest.raises(CheckpointMismatch, match=r"'block5_conv1'.*more than once"):
        load_keras2_weights(build_end2end(ARCH, dropout=0.2, weight_decay=0.0), path)


def test_a_file_without_vgg_names_falls_back_to_order_and_says_so(tmp_path):
    """A backbone built without VGG names (Keras 2 auto-numbered conv2d_N) can only be paired by order."""
    source = random_model(seed=15)
    backbone = [layer.name for layer in source.get_layer("backbone").layers if layer.weights]
    path = tmp_path / "anonymous.h5"
    write_keras2_h5(source, path, rename={name: f"conv2d_{i + 10}" for i, name in enumerate(backbone)})
    target = build_end2end(ARCH, dropout=0.2, weight_decay=0.0)
    match = load_keras2_weights(target, path)
    assert match.rule == "file order and shape (the file names no backbone layers)"
    x = images(seed=16)
    np.testing.assert_allclose(target.predict(x, verbose=0), source.predict(x, verbose=0), rtol=1e-5, atol=1e-4)


def test_missing_layer_is_named_and_nothing_is_loaded(tmp_path):
    source, target = random_model(seed=3), random_model(seed=4)
    path = tmp_path / "broken.h5"
    write_keras2_h5(source, path, drop=("batch_normalization_1",))
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(CheckpointMismatch, match=r"'conv2d_2'.*'block1_bn'"):
        load_keras2_weights(target, path)
    for a, b in zip(before, target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_wrong_shape_is_named(tmp_path):
    path = tmp_path / "narrow.h5"
    write_keras2_h5(random_model(seed=5), path, reshape=("conv2d_2",))
    with pytest.raises(CheckpointMismatch, match=r"'conv2d_2'.*'block2_conv'"):
        load_keras2_weights(build_end2end(ARCH, dropout=0.2, weight_decay=0.0), path)


def test_truncated_file_and_non_hdf5_are_refused(tmp_path):
    path = tmp_path / "short.h5"
    write_keras2_h5(random_model(seed=6), path, drop=("dense_1",))
    with pytest.raises(CheckpointMismatch, match="'head_dense' has no counterpart"):
        load_keras2_weights(build_end2end(ARCH, dropout=0.2, weight_decay=0.0), path)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(CheckpointMismatch, match="not a readable HDF5"):
        load_keras2_weights(build_end2end(ARCH, dropout=0.2, weight_decay=0.0), junk)


def test_published_means_follow_the_file_name():
    assert published_mean("/x/inbreast_vgg16_512x1.h5") == 44.33
    assert published_mean("ddsm_vgg16_s10_512x1.h5") == 52.18
    assert published_mean("mine.h5") is None


def test_baseline_infer_with_a_checkpoint(tmp_path):
    """The CLI loads the file, subtracts the given mean and scores like the source model in process."""
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8, seed=7)
    source = random_model(seed=8, input_scale=20.0)
    checkpoint = tmp_path / "ddsm_vgg16_s10_512x1.h5"
    write_keras2_h5(source, checkpoint)
    out = tmp_path / "infer"
    done = mammo("baseline-infer", checkpoint=checkpoint, images=images_dir, split=split_dir, out=out, profile="ci",
                 tta=False)
    assert "backbone by layer name" in done.stderr
    audit = json.loads((out / "checkpoint_match.json").read_text())
    assert audit["checkpoint"] == checkpoint.name and audit["rule"].startswith("backbone by layer name")
    weighted = [layer.name for layer in leaf_layers(source) if layer.weights]
    assert [p["model"] for p in audit["pairs"]] == weighted
    assert {"checkpoint": "block5_conv1", "model": "block5_conv1"} in audit["pairs"]
    scores = pd.read_csv(out / "scores.csv", dtype={"patient_id": str})
    frame = scores.assign(path=[str(images_dir / "images" / f"{i}.png") for i in scores["image_id"]])
    prep = Preprocessing(52.18, ARCH.height, ARCH.width, "test")
    expected = predict_scores(source, frame, prep, batch_size=8, tta=False, progress=False)
    assert scores["score"].std() > 1e-3
    np.testing.assert_allclose(scores["score"], expected, rtol=1e-4, atol=1e-6)
    assert (out / "metrics.json").is_file() and (out / "_SUCCESS.json").is_file()
    # The imported checkpoint is kept as a model folder so fine-tuning on real data can start from it.
    imported = load_model(out / "model.keras")
    assert Preprocessing.read(out).featurewise_mean == 52.18
    again = predict_scores(imported, frame, prep, batch_size=8, tta=False, progress=False)
    np.testing.assert_allclose(again, expected, rtol=1e-4, atol=1e-6)

    broken = tmp_path / "ddsm_broken.h5"
    write_keras2_h5(source, broken, drop=("conv2d_1",))
    result = mammo("baseline-infer", checkpoint=broken, images=images_dir, split=split_dir, out=out, profile="ci",
                   tta=False, check=False)
    assert result.returncode == 2
    assert "block1_conv" in result.stderr and "batch_normalization_1" in result.stderr
