"""The model folder module: one definition of Shen's input arithmetic on numpy and in tf.data, one image size check,
and a folder written by one step read back by another."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from common import model_folder
from common.artifacts import UnusableInput
from common.model_folder import Preprocessing

PREP = Preprocessing(featurewise_mean=44.33, height=12, width=10, source="test")


def _pngs(tmp_path, shapes):
    rng = np.random.default_rng(0)
    paths = []
    for k, shape in enumerate(shapes):
        path = tmp_path / f"i{k}.png"
        cv2.imwrite(str(path), rng.integers(0, 65536, shape, dtype=np.uint16))
        paths.append(str(path))
    return paths


def test_numpy_and_tensorflow_inputs_are_the_same_floats_and_shens_arithmetic(tmp_path):
    from common.data import evaluation_dataset

    paths = _pngs(tmp_path, [(12, 10)] * 3)
    frame = pd.DataFrame({"path": paths})
    from_tf = np.concatenate([batch.numpy() for batch in evaluation_dataset(frame, PREP, batch_size=2, labels=False)])
    pixels = [cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in paths]
    from_numpy = np.stack([model_folder.model_input(model_folder.to_255(p.astype(np.float32)[..., None], PREP), PREP)
                           for p in pixels])  # fmt: skip
    assert from_tf.dtype == from_numpy.dtype == np.float32 and from_tf.shape == (3, 12, 10, 3)
    assert from_tf.tobytes() == from_numpy.tobytes()
    # Shen's definition written out by hand, in float64: x * 255 / 65535 in every channel, minus the mean
    expected = np.stack([np.repeat(p[..., None] * 255.0 / 65535.0, 3, axis=-1) - 44.33 for p in pixels])
    assert np.abs(from_numpy - expected).max() < 1e-4


def test_one_image_size_check_refuses_a_cohort_of_another_profile(tmp_path):
    paths = _pngs(tmp_path, [(12, 10), (24, 20)])
    assert model_folder.image_sizes(paths, 12, 10) == [(12, 10), (24, 20)]
    with pytest.raises(UnusableInput, match="images are 12x10 but the model expects 24x18: use the same profile"):
        model_folder.image_sizes(paths, 24, 18)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UnusableInput, match="images are unreadable"):
        model_folder.image_sizes([str(broken)], 12, 10)
    with pytest.raises(UnusableInput, match="differs from its preprocessing size"):
        PREP.require_model_size((None, 24, 20, 3))
    PREP.require_model_size((None, 12, 10, 3))


def test_a_written_folder_reads_back(tmp_path):
    from common.model import Architecture, build_end2end
    from common.profile import load_profile

    arch = Architecture.from_profile(load_profile("ci"))
    model = build_end2end(arch, dropout=0.0, weight_decay=0.0)
    prep = Preprocessing(50.0, arch.height, arch.width, "test")
    model_folder.write(tmp_path, model, prep, training={"phase": "pretrain"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "preprocessing.json", "training.json"]
    loaded, read_prep = model_folder.read(tmp_path)
    assert read_prep == prep
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True))
    (tmp_path / "model.keras").unlink()
    with pytest.raises(UnusableInput, match="has no model.keras"):
        model_folder.read(tmp_path)
