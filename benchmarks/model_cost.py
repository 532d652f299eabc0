"""Arithmetic and memory of an End2End model counted from its layer shapes, not from a profiler.

Convention: FLOPs = 2 x multiply-accumulates of the convolution and dense layers (the way VGG16's
"15.5 G" at 224x224 is usually quoted, as MACs; 31 GFLOP here). Bias adds, batch normalisation,
ReLU and pooling are left out: together they are under 1% of VGG16's arithmetic and not matmul work.

Training: the backward pass of a layer with trainable weights costs one forward's worth for the
weight gradient, and one more for the gradient of its input - needed only when some trainable layer
lies before it. So stage 1 (frozen backbone) costs little more than a forward pass, stage 2 about three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # per image, without the batch axis
    macs: int  # per image
    params: int
    trainable: bool  # has trainable weights in the model's current phase


def layer_costs(model) -> list[LayerCost]:
    """One entry per leaf layer in execution order, shapes propagated from the model's input."""
    from common.model import leaf_layers

    shape = tuple(model.input_shape)
    costs = []
    for layer in leaf_layers(model):
        shape = tuple(layer.compute_output_shape(shape))
        kernel = getattr(layer, "kernel", None)
        # Conv2D and Dense alike: every output position (all axes but the channel) does one
        # multiply-accumulate per kernel entry, kernel (kh, kw, cin/groups, cout) or (in, out).
        macs = math.prod(shape[1:-1]) * math.prod(kernel.shape) if kernel is not None else 0
        costs.append(
            LayerCost(
                name=layer.name,
                kind=type(layer).__name__,
                output_shape=tuple(int(d) for d in shape[1:]),
                macs=int(macs),
                params=sum(math.prod(w.shape) for w in layer.weights),
                trainable=bool(layer.trainable_weights),
            )
        )
    return costs


def forward_flops(costs: list[LayerCost]) -> int:
    """FLOPs of one image's forward pass."""
    return 2 * sum(c.macs for c in costs)


def training_flops(costs: list[LayerCost]) -> int:
    """FLOPs of one image's training step (forward, then backward as far as the first trainable layer)."""
    total, seen_trainable = 0, False
    for cost in costs:
        backward = (cost.macs if cost.trainable else 0) + (cost.macs if seen_trainable else 0)
        total += 2 * (cost.macs + backward)
        seen_trainable = seen_trainable or cost.trainable
    return total


def memory_estimate(model, costs: list[LayerCost], batch_size: int, bytes_per_value: int) -> dict[str, Any]:
    """Lower-bound estimates of accelerator memory for one batch, in GiB.

    Training keeps every layer's output for the backward pass; inference needs at most one layer's input
    and output at a time. Adam holds weights, gradients and two moments (4 values per parameter, float32
    even under mixed precision). Framework workspace (cuDNN scratch, allocator slack) comes on top.
    """
    input_values = math.prod(model.input_shape[1:])
    outputs = [math.prod(c.output_shape) for c in costs]
    previous = [input_values, *outputs[:-1]]
    params = sum(c.params for c in costs)
    gib = 2**30
    activations_training = (input_values + sum(outputs)) * batch_size * bytes_per_value
    activations_inference = max(a + b for a, b in zip(previous, outputs, strict=True)) * batch_size * bytes_per_value
    return {
        "batch_size": batch_size,
        "bytes_per_activation": bytes_per_value,
        "parameters": params,
        "weights_gib": params * 4 / gib,
        "training_activations_gib": activations_training / gib,
        "training_total_gib": (activations_training + 4 * params * 4) / gib,
        "inference_activations_gib": activations_inference / gib,
        "inference_total_gib": (activations_inference + params * 4) / gib,
    }
