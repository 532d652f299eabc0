"""Benchmarks: the FLOP counting they divide by, checked against hand counts; their command lines start.

No timings here: a benchmark's numbers depend on the machine and its load, so they are never asserted.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from model_cost import forward_flops, layer_costs, memory_estimate, training_flops  # noqa: E402

from common.model import Architecture, build_end2end, set_phase  # noqa: E402

SCRIPTS = ["preprocess_throughput", "inference_flops", "training_throughput", "radiomics_speed",
           "pipeline_walltime", "onednn_variation", "run_all"]
TINY = Architecture(height=256, width=128, backbone_filters=(2, 3, 4, 5, 6), top_filters=7)


def hand_macs(arch: Architecture) -> dict[str, int]:
    """Multiply-accumulates per layer written out: a 3x3 'same' conv does H*W*9*cin*cout, pools halve H and W."""
    h, w, cin = arch.height, arch.width, 3
    macs = {}
    for block, (filters, convs) in enumerate(zip(arch.backbone_filters, (2, 2, 3, 3, 3), strict=True), start=1):
        for conv in range(1, convs + 1):
            macs[f"block{block}_conv{conv}"] = h * w * 9 * cin * filters
            cin = filters
        h, w = h // 2, w // 2
    macs["block1_conv"] = h * w * 9 * cin * arch.top_filters
    h, w = h // 2, w // 2
    macs["block2_conv"] = h * w * 9 * arch.top_filters * arch.top_filters
    macs["head_dense"] = arch.top_filters * 2
    return macs


@pytest.fixture(scope="module")
def tiny_model():
    return build_end2end(TINY, dropout=0.0, weight_decay=0.0)


def test_forward_flops_equal_twice_the_hand_counted_macs(tiny_model):
    costs = layer_costs(tiny_model)
    expected = hand_macs(TINY)
    counted = {c.name: c.macs for c in costs if c.macs}
    assert counted == expected
    assert forward_flops(costs) == 2 * sum(expected.values())


def test_training_flops_follow_what_each_phase_trains(tiny_model):
    macs = hand_macs(TINY)
    total, first = sum(macs.values()), macs["block1_conv1"]
    set_phase(tiny_model, "stage2")
    # Everything trains: weight gradients everywhere, input gradients everywhere but the first layer.
    assert training_flops(layer_costs(tiny_model)) == 2 * (3 * total - first)
    set_phase(tiny_model, "stage1_config1")
    # Block 2 and the head train: block2_conv needs only its weight gradient (nothing before it trains),
    # the dense layer both; the frozen layers only run forward.
    assert training_flops(layer_costs(tiny_model)) == 2 * (total + macs["block2_conv"] + 2 * macs["head_dense"])
    set_phase(tiny_model, "stage2")


def test_vgg16_backbone_at_224_matches_the_published_15_35_gmacs():
    """Simonyan & Zisserman's VGG16 convolutions at 224x224: 15,346,630,656 multiply-accumulates."""
    arch = Architecture(height=224, width=224, backbone_filters=(64, 128, 256, 512, 512), top_filters=8)
    costs = layer_costs(build_end2end(arch, dropout=0.0, weight_decay=0.0))
    backbone = sum(c.macs for c in costs if re.fullmatch(r"block\d_conv\d", c.name))
    assert backbone == 15_346_630_656


def test_memory_estimate_counts_every_activation_of_a_training_batch(tiny_model):
    costs = layer_costs(tiny_model)
    outputs = sum(math.prod(c.output_shape) for c in costs)
    estimate = memory_estimate(tiny_model, costs, batch_size=4, bytes_per_value=2)
    input_values = TINY.height * TINY.width * 3
    assert estimate["training_activations_gib"] * 2**30 == pytest.approx((input_values + outputs) * 4 * 2)
    assert estimate["parameters"] == tiny_model.count_params()
    # The first convolution's input and output are the largest pair a forward pass holds at once.
    first_output = TINY.height * TINY.width * TINY.backbone_filters[0]
    assert estimate["inference_activations_gib"] * 2**30 == pytest.approx((input_values + first_output) * 4 * 2)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_works(script):
    result = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--results" in result.stdout
