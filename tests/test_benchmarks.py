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

import run_all  # noqa: E402
from model_cost import forward_flops, layer_costs, memory_estimate, training_flops  # noqa: E402

from common.model import Architecture, build_end2end, set_phase  # noqa: E402

SCRIPTS = [*run_all.SCRIPTS, "run_all"]  # every script run_all runs exists and starts
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


def test_growth_projection_follows_the_critical_path(tmp_path, monkeypatch):
    """Sharded CPU steps over all CPU cores; inference, then the two fine-tuning chains (in parallel from two GPU
    nodes on) alongside radiomics; everything linear in the images. Hand-computed for two cluster shapes."""
    import _common
    import growth

    hours = {"infer-ab-hospital": 1528 * 1e-4, "finetune1-stage1": 1528 * 2e-4, "finetune1-stage2": 1528 * 3e-4,
             "finetune2-stage1": 1528 * 4e-4, "finetune2-stage2": 1528 * 3e-4}
    walltime = {"projection": {"tasks": [{"task": t, "device": "gpu", "hours": h} for t, h in hours.items()]
                               + [{"task": "radiomics", "device": "cpu", "hours": 9.0}]}}
    (tmp_path / "pipeline_walltime.json").write_text(__import__("json").dumps(walltime))
    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(growth, "CLUSTERS", [(1, 1, 1), (2, 1, 4), (2, 4, 4)])
    costs = {"preprocess": {"s_per_image_4x": 0.5}, "radiomics": {"s_per_image_4x": 2.0}}
    rows = {(r["images"], r["gpu_nodes"] * r["gpus_per_node"]): r for r in growth.project(costs)["rows"]}
    cores = growth.CPU_NODE_CORES
    # 1 GPU node: both chains one after the other (1e-4 x (2+3+4+3)) ; 1 CPU node.
    n = 100_000
    expected = n * 0.5 / cores / 3600 + n * 1e-4 + max(n * 12e-4, n * 2.0 / cores / 3600)
    assert rows[(n, 1)]["hours"] == pytest.approx(expected)
    # 2 GPU nodes: the longer chain (4+3); 4 CPU nodes.
    expected = n * 0.5 / (4 * cores) / 3600 + n * 1e-4 + max(n * 7e-4, n * 2.0 / (4 * cores) / 3600)
    assert rows[(n, 2)]["hours"] == pytest.approx(expected)
    assert rows[(1528, 2)]["hours"] == pytest.approx(rows[(n, 2)]["hours"] * 1528 / n)
    # 2 nodes x 4 GPUs: the chains mirrored at 0.9 x 4; inference still on one GPU.
    expected = n * 0.5 / (4 * cores) / 3600 + n * 1e-4 + max(n * 7e-4 / 3.6, n * 2.0 / (4 * cores) / 3600)
    assert rows[(n, 8)]["hours"] == pytest.approx(expected)
