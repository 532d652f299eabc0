"""Shen et al.'s End2End VGG16 "512x1" whole-image classifier, built in code for Keras 3.

The model is a chain of four named sub-models so the thesis' freezing plan addresses them by name:
`backbone` (VGG16 convolutional topology, block1_conv1 ... block5_pool), `block1` and `block2`
(Conv2D 3x3 -> BatchNorm -> ReLU -> Dropout -> MaxPool 2x2) and `head` (global average pooling ->
Dropout -> Dense(2, softmax); P(cancer) is column 1). No ImageNet download is possible here, so the
backbone starts from he_normal noise or from a user's checkpoint.

Weight decay is an L2 kernel regulariser on every convolution and dense kernel, not AdamW's decoupled
decay: the thesis ran Shen's Keras 2.8 code, where Adam has no decoupled decay and the End2End
`weight_decay` setting is exactly such an L2 penalty. Keras 3 only sums the penalties of *trainable*
variables, so each phase decays precisely what it trains. Dropout and decay are construction-time
settings, so a new stage rebuilds the model with its own values and copies the weights across
(`reconfigure`), which also makes the new values visible in the saved model's config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from common.artifacts import UnusableInput, one_line
from common.profile import Profile

VGG16_FILTERS = (64, 128, 256, 512, 512)
VGG16_CONVS_PER_BLOCK = (2, 2, 3, 3, 3)
PARTS = ("backbone", "block1", "block2", "head")

# Which parts learn in each training phase (thesis section 5.4, configurations 1 and 2).
PHASE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "pretrain": PARTS,
    "stage1_config1": ("block2", "head"),
    "stage1_config2": ("block1", "block2", "head"),
    "stage2": PARTS,
}
SUMMARY_PHASES = ("stage1_config1", "stage1_config2", "stage2")


@dataclass(frozen=True)
class Architecture:
    """Everything that fixes the weight shapes (and the input size) of an End2End model."""

    height: int
    width: int
    backbone_filters: tuple[int, ...]
    top_filters: int
    bn_momentum: float = 0.99

    @classmethod
    def from_profile(cls, profile: Profile) -> Architecture:
        """The profile's input size and model section, with VGG16's filters scaled by its backbone width."""
        model = profile.model
        return cls(
            height=profile.image.height,
            width=profile.image.width,
            backbone_filters=tuple(max(1, round(f * model.backbone_width)) for f in VGG16_FILTERS),
            top_filters=model.top_filters,
            bn_momentum=model.bn_momentum,
        )


def build_end2end(arch: Architecture, *, dropout: float, weight_decay: float, name: str = "end2end",
                  dtype: str | None = None) -> keras.Model:  # fmt: skip
    """A freshly initialised End2End model (all parts trainable).

    `dtype` is the Keras dtype policy of its layers (None: the global one, which a training step sets).
    """
    regulariser = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
    return keras.Sequential(
        [
            keras.Input((arch.height, arch.width, 3), name="image"),
            _backbone(arch.backbone_filters, regulariser, dtype),
            _top_block("block1", arch.top_filters, arch.bn_momentum, dropout, regulariser, dtype),
            _top_block("block2", arch.top_filters, arch.bn_momentum, dropout, regulariser, dtype),
            _head(dropout, regulariser, dtype),
        ],
        name=name,
    )


def _backbone(filters: tuple[int, ...], regulariser, dtype) -> keras.Model:
    layers = []
    for block, (width, convs) in enumerate(zip(filters, VGG16_CONVS_PER_BLOCK, strict=True), start=1):
        for conv in range(1, convs + 1):
            layers.append(
                keras.layers.Conv2D(
                    width,
                    3,
                    padding="same",
                    activation="relu",
                    kernel_initializer="he_normal",
                    kernel_regularizer=regulariser,
                    dtype=dtype,
                    name=f"block{block}_conv{conv}",
                )
            )
        layers.append(keras.layers.MaxPooling2D(2, strides=2, dtype=dtype, name=f"block{block}_pool"))
    return keras.Sequential(layers, name="backbone")


def _top_block(name: str, filters: int, momentum: float, dropout: float, regulariser, dtype) -> keras.Model:
    return keras.Sequential(
        [
            keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=True,
                kernel_initializer="he_normal",
                kernel_regularizer=regulariser,
                dtype=dtype,
                name=f"{name}_conv",
            ),
            # Synchronised: under MirroredStrategy the statistics are the global batch's, as on one device.
            keras.layers.BatchNormalization(momentum=momentum, synchronized=True, dtype=dtype, name=f"{name}_bn"),
            keras.layers.Activation("relu", dtype=dtype, name=f"{name}_relu"),
            keras.layers.Dropout(dropout, dtype=dtype, name=f"{name}_dropout"),
            keras.layers.MaxPooling2D(2, strides=2, dtype=dtype, name=f"{name}_maxpool"),
        ],
        name=name,
    )


def _head(dropout: float, regulariser, dtype) -> keras.Model:
    # float32 output keeps the softmax stable under a mixed_float16 or mixed_bfloat16 policy.
    return keras.Sequential(
        [
            keras.layers.GlobalAveragePooling2D(dtype=dtype, name="head_pool"),
            keras.layers.Dropout(dropout, dtype=dtype, name="head_dropout"),
            keras.layers.Dense(
                2,
                activation="softmax",
                kernel_initializer="he_normal",
                kernel_regularizer=regulariser,
                dtype="float32",
                name="head_dense",
            ),
        ],
        name="head",
    )


def architecture_of(model: keras.Model) -> Architecture:
    """Read the architecture back from a built model (e.g. one loaded from `model.keras`)."""
    _, height, width, _ = model.input_shape
    backbone = model.get_layer("backbone")
    filters = tuple(backbone.get_layer(f"block{b}_conv1").filters for b in range(1, len(VGG16_FILTERS) + 1))
    block1 = model.get_layer("block1")
    return Architecture(
        height=int(height),
        width=int(width),
        backbone_filters=filters,
        top_filters=int(block1.get_layer("block1_conv").filters),
        bn_momentum=float(block1.get_layer("block1_bn").momentum),
    )


def reconfigure(model: keras.Model, *, dropout: float, weight_decay: float, dtype: str | None = None) -> keras.Model:
    """Same weights, new dropout rate and weight decay (and dtype policy): rebuild, then copy every variable across.

    Variables are float32 under every policy, so a change of policy copies them exactly.
    """
    fresh = build_end2end(architecture_of(model), dropout=dropout, weight_decay=weight_decay, name=model.name,
                          dtype=dtype)  # fmt: skip
    fresh.set_weights(model.get_weights())
    return fresh


def computes_in_float32(model: keras.Model) -> bool:
    return all(layer.dtype_policy.name == "float32" for layer in leaf_layers(model))


def set_phase(model: keras.Model, phase: str) -> None:
    """Freeze everything the phase does not train.

    A frozen BatchNormalization layer runs in inference mode in Keras 3, so its moving statistics stay
    those of the source domain, as in the thesis' stage 1.
    """
    if phase not in PHASE_TRAINABLE:
        raise ValueError(f"unknown phase {phase!r}: use one of {', '.join(PHASE_TRAINABLE)}")
    model.trainable = True
    for part in PARTS:
        model.get_layer(part).trainable = part in PHASE_TRAINABLE[phase]


def parameter_counts(model: keras.Model) -> dict[str, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


def phase_summary(arch: Architecture) -> dict[str, Any]:
    """Total and per-phase trainable/non-trainable parameter counts (what `mammo model summary` prints)."""
    model = build_end2end(arch, dropout=0.0, weight_decay=0.0)
    phases = {}
    for phase in SUMMARY_PHASES:
        set_phase(model, phase)
        phases[phase] = parameter_counts(model)
    set_phase(model, "stage2")
    return {
        "input_shape": [arch.height, arch.width, 3],
        "backbone_filters": list(arch.backbone_filters),
        "top_filters": arch.top_filters,
        "parts": {part: parameter_counts(model.get_layer(part))["total"] for part in PARTS},
        "total": parameter_counts(model)["total"],
        "phases": phases,
    }


def leaf_layers(model: keras.Layer) -> list[keras.Layer]:
    """The model's layers in execution order with the nested sub-models expanded."""
    if isinstance(model, keras.Sequential):
        return [leaf for layer in model.layers for leaf in leaf_layers(layer)]
    return [model]


def load_model(path: str | Path) -> keras.Model:
    """Load a saved End2End model for inference or as a starting point (training state is not needed).

    A folder can carry `_SUCCESS.json` and still hold a damaged file (a copy cut short, a full disk on a
    share): that is unusable input, one line and exit 2, not a traceback from the zip reader.
    """
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # zipfile, h5py and Keras raise many classes for a damaged file
        raise UnusableInput(f"{path}: cannot load the model, the file is truncated or not a Keras model "
                            f"({type(error).__name__}: {one_line(str(error), 120)}); rerun the step that wrote it"
                            ) from None
