"""Training in half precision where the hardware has it, and model folders that are float32 whatever trained them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from helpers import mammo, write_cohort

from common.model import Architecture, build_end2end, leaf_layers, load_model
from common.precision import cpu_flags, training_policy
from common.profile import load_profile

NATIVE_BFLOAT16 = bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def _cpuinfo(tmp_path, name: str, flags: str):
    path = tmp_path / name
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\nflags\t\t: fpu sse2 {flags}\n")
    return path


def test_half_precision_only_where_the_hardware_computes_it(tmp_path):
    amx = _cpuinfo(tmp_path, "amx", "amx_tile amx_bf16")
    avx512 = _cpuinfo(tmp_path, "avx512", "avx512f avx512_bf16")
    plain = _cpuinfo(tmp_path, "plain", "avx512f avx2")
    assert training_policy(True, 0, amx) == training_policy(True, 0, avx512) == "mixed_bfloat16"
    assert training_policy(True, 0, plain) == "float32", "emulated bfloat16 would be slower than float32"
    assert training_policy(True, 0, tmp_path / "missing") == "float32"
    assert training_policy(True, 1, plain) == "mixed_float16"
    assert training_policy(False, 1, amx) == training_policy(False, 0, amx) == "float32"
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(avx512)


@pytest.mark.skipif(not NATIVE_BFLOAT16, reason="this CPU has no bfloat16 units: training stays float32")
def test_a_model_trained_in_bfloat16_is_saved_in_float32_with_its_trained_weights(tmp_path):
    images_dir, split_dir = write_cohort(tmp_path, n_patients=8, seed=5)
    settings = load_profile("ci").to_dict()
    settings["model"]["mixed_precision"] = True
    settings["training"]["pretrain"] = {**settings["training"]["pretrain"], "epochs": 1}
    profile = tmp_path / "bf16.yaml"
    profile.write_text(yaml.safe_dump(settings))
    out = tmp_path / "pretrain"
    mammo("pretrain", "--images", str(images_dir), "--split", str(split_dir), "--profile", str(profile),
          "--out", str(out), "--source-name", "film")  # fmt: skip

    runtime = json.loads((out / "training.json").read_text())["runtime"]
    assert runtime["precision"] == "mixed_bfloat16" and runtime["mixed_precision"] is True
    saved = load_model(out / "model.keras")
    assert {layer.dtype_policy.name for layer in leaf_layers(saved)} == {"float32"}
    # The weights are the trained ones: those of the best epoch, which the run also wrote on their own.
    best = build_end2end(Architecture.from_profile(load_profile(profile)), dropout=0.0, weight_decay=0.0,
                         dtype="float32")  # fmt: skip
    best.load_weights(out / "best.weights.h5")
    saved_weights, best_weights = saved.get_weights(), best.get_weights()
    assert len(saved_weights) == len(best_weights)
    assert all(np.array_equal(a, b) for a, b in zip(saved_weights, best_weights, strict=True))
