"""Shen's published Keras 2 HDF5 checkpoints, loaded into the Keras 3 End2End model with h5py.

Keras 3 cannot deserialise those files (Keras 2.0 layer configs, Python 2 era), so the architecture
is built in code and the arrays are copied across. The HDF5 holds a nested VGG sub-model (`model_1`)
followed by conv2d_1, batch_normalization_1, conv2d_2, batch_normalization_2 and the dense layer.

How layers are paired, and why:
- Backbone layers by name. VGG16's names (block1_conv1 ... block5_conv3) are stable across Keras
  versions, but their position inside `model_1` is not: Keras 2 lists a sub-model's trainable weights
  first, so a file saved with a layer frozen lists that layer last. block5_conv1-3 share one shape, so
  pairing by position would load such a file silently wrong.
- Top layers by order and kind. Their names carry Keras 2 auto-numbering that differs between files,
  but the file's `layer_names` is the model's layer order, and the name's prefix (conv2d_, dense_ ...)
  still says the kind, which is checked.
- Only a file whose sub-model names no VGG layer falls back to order and shape, and says so.
Any missing, leftover, repeated or ill-fitting layer stops the load with its name before anything is
assigned, because a silently half-loaded model is the worst outcome (it still gives plausible scores).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np

from common.model import leaf_layers

# Featurewise means (0-255 units) that go with Shen's published checkpoints.
PUBLISHED_MEANS = {"inbreast": 44.33, "ddsm": 52.18}

# Canonical array order per layer kind, by Keras 2 weight-name suffix.
_ARRAY_ORDER = {
    "conv": ("kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}


class CheckpointMismatch(ValueError):
    """The HDF5 file does not fit the model; the message names the first layer that does not fit."""


@dataclass(frozen=True)
class FileLayer:
    name: str
    names: tuple[str, ...]  # weight names without the ':0' suffix
    arrays: tuple[np.ndarray, ...]
    nested: bool  # inside a sub-model group (the VGG backbone), not a top-level layer

    def describe(self) -> str:
        return f"'{self.name}' {[tuple(a.shape) for a in self.arrays]}"


def published_mean(path: str | Path) -> float | None:
    """The mean that goes with a published checkpoint, recognised from its file name."""
    stem = Path(path).name.lower()
    for prefix, mean in PUBLISHED_MEANS.items():
        if stem.startswith(prefix):
            return mean
    return None


def read_keras2_layers(path: str | Path) -> list[FileLayer]:
    """Layers holding weights, in file order, with nested sub-models expanded."""
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise CheckpointMismatch(f"{path} is not a readable HDF5 file ({error})") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise CheckpointMismatch(f"{path} has no Keras 2 'layer_names' attribute: not a Keras 2 weight file")
        layers: list[FileLayer] = []
        for group_name in _strings(root.attrs["layer_names"]):
            group = root[group_name]
            weight_names = _strings(group.attrs.get("weight_names", []))
            # A nested model lists the weights of all its layers as '<layer>/<weight>:0'.
            by_layer: dict[str, list[tuple[str, np.ndarray]]] = {}
            for weight_name in weight_names:
                parts = weight_name.split("/")
                layer = parts[-2] if len(parts) >= 2 else group_name
                suffix = parts[-1].split(":")[0]
                if any(suffix == seen for seen, _ in by_layer.get(layer, [])):
                    raise CheckpointMismatch(
                        f"checkpoint layer '{layer}' is listed more than once in {Path(path).name} "
                        f"(weight '{suffix}' twice): ambiguous, not loaded"
                    )
                by_layer.setdefault(layer, []).append((suffix, np.asarray(group[weight_name])))
            nested = any(len(name.split("/")) >= 2 and name.split("/")[-2] != group_name for name in weight_names)
            for layer, weights in by_layer.items():
                layers.append(FileLayer(layer, tuple(n for n, _ in weights), tuple(a for _, a in weights), nested))
        return layers


def _strings(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _kind(layer: keras.Layer) -> str:
    if isinstance(layer, keras.layers.Conv2D):
        return "conv"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    raise TypeError(f"no Keras 2 counterpart known for {type(layer).__name__} {layer.name}")


def _ordered(file_layer: FileLayer, kind: str) -> tuple[np.ndarray, ...]:
    """Arrays in Keras 3 order when the weight names say which is which, else in file order."""
    order = _ARRAY_ORDER[kind]
    if sorted(file_layer.names) == sorted(order):
        lookup = dict(zip(file_layer.names, file_layer.arrays, strict=True))
        return tuple(lookup[name] for name in order)
    return file_layer.arrays


@dataclass(frozen=True)
class CheckpointMatch:
    """What a load paired: the rule used and (checkpoint layer, model layer) per weighted layer."""

    rule: str
    pairs: list[tuple[str, str]]

    def as_json(self) -> dict:
        return {"rule": self.rule, "pairs": [{"checkpoint": c, "model": m} for c, m in self.pairs]}


BY_NAME = "backbone by layer name, top layers by order and kind"
BY_ORDER = "file order and shape (the file names no backbone layers)"
_VGG_NAME = re.compile(r"block[1-5]_conv[1-3]")
# Keras 2 auto-generated name prefixes of the top layers, by kind.
_KERAS2_PREFIX = {"conv": "conv2d", "bn": "batch_normalization", "dense": "dense"}


def load_keras2_weights(model: keras.Model, path: str | Path) -> CheckpointMatch:
    """Copy a Keras 2 HDF5 checkpoint into `model`; returns the rule and the layer pairs used.

    Nothing is assigned unless every layer fits, so a failed load leaves the model untouched.
    """
    targets = [layer for layer in leaf_layers(model) if layer.weights]
    sources = read_keras2_layers(path)
    file = Path(path).name
    if any(s.nested and _VGG_NAME.fullmatch(s.name) for s in sources):
        rule = BY_NAME
        backbone = [t for t in targets if _VGG_NAME.fullmatch(t.name)]
        pairs = _pair_by_name([s for s in sources if s.nested], backbone, file)
        top = [t for t in targets if not _VGG_NAME.fullmatch(t.name)]
        pairs += _pair_in_order([s for s in sources if not s.nested], top, file, check_kind=True)
    else:
        rule = BY_ORDER
        pairs = _pair_in_order(sources, targets, file, check_kind=False)
    assignments = [(target, _fitting(source, target, file)) for source, target in pairs]
    for target, arrays in assignments:
        target.set_weights(list(arrays))
    return CheckpointMatch(rule, [(source.name, target.name) for source, target in pairs])


def _pair_by_name(sources: list[FileLayer], targets: list[keras.Layer], file: str):
    by_name = {s.name: s for s in sources}
    wanted = {t.name for t in targets}
    leftover = [s.name for s in sources if s.name not in wanted]
    if leftover:
        raise CheckpointMismatch(f"checkpoint layer(s) {', '.join(leftover)} in {file} match no model layer")
    missing = [t.name for t in targets if t.name not in by_name]
    if missing:
        raise CheckpointMismatch(f"model layer(s) {', '.join(missing)} have no counterpart in {file}")
    return [(by_name[t.name], t) for t in targets]


def _pair_in_order(sources: list[FileLayer], targets: list[keras.Layer], file: str, *, check_kind: bool):
    pairs = []
    for index, target in enumerate(targets):
        if index >= len(sources):
            last = sources[-1].name if sources else "nothing"
            raise CheckpointMismatch(
                f"model layer '{target.name}' has no counterpart in {file}: the file ends after {last}"
            )
        source = sources[index]
        prefix = _KERAS2_PREFIX[_kind(target)]
        if check_kind and not re.fullmatch(rf"{prefix}(_\d+)?", source.name):
            raise CheckpointMismatch(
                f"checkpoint layer {source.describe()} (top layer {index + 1}) does not fit model layer "
                f"'{target.name}' ({type(target).__name__}, a Keras 2 '{prefix}_N' layer) in {file}"
            )
        pairs.append((source, target))
    if len(sources) > len(targets):
        extra = ", ".join(s.name for s in sources[len(targets) :])
        after = targets[-1].name if targets else "the start"
        raise CheckpointMismatch(f"{file} has layers the model lacks after '{after}': {extra}")
    return pairs


def _fitting(source: FileLayer, target: keras.Layer, file: str) -> tuple[np.ndarray, ...]:
    expected = [tuple(w.shape) for w in target.weights]
    arrays = _ordered(source, _kind(target))
    if [tuple(a.shape) for a in arrays] != expected:
        raise CheckpointMismatch(
            f"checkpoint layer {source.describe()} does not fit model layer "
            f"'{target.name}' ({type(target).__name__}, expects {expected}) in {file}"
        )
    return arrays
