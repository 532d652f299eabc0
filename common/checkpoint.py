"""Shen's published Keras 2 HDF5 checkpoints, loaded into the Keras 3 End2End model with h5py.

Keras 3 cannot deserialise those files (Keras 2.0 layer configs, Python 2 era), so the architecture
is built in code and the arrays are copied across in layer order: the HDF5 holds a nested VGG
sub-model (`model_1` with block1_conv1 ... block5_conv3) followed by conv2d_1, batch_normalization_1,
conv2d_2, batch_normalization_2 and the dense layer. Layer names carry Keras 2 auto-numbering that
differs between files, so names are reported but order, kind and shapes decide the match; the first
layer that does not fit stops the load with its name, because a silently half-loaded model is the
worst outcome (it still produces plausible-looking scores).
"""

from __future__ import annotations

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
                by_layer.setdefault(layer, []).append((parts[-1].split(":")[0], np.asarray(group[weight_name])))
            for layer, weights in by_layer.items():
                layers.append(FileLayer(layer, tuple(n for n, _ in weights), tuple(a for _, a in weights)))
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


def load_keras2_weights(model: keras.Model, path: str | Path) -> list[tuple[str, str]]:
    """Copy a Keras 2 HDF5 checkpoint into `model`; returns the (file layer, model layer) pairs used.

    Nothing is assigned unless every layer fits, so a failed load leaves the model untouched.
    """
    targets = [layer for layer in leaf_layers(model) if layer.weights]
    sources = read_keras2_layers(path)
    assignments: list[tuple[keras.Layer, tuple[np.ndarray, ...]]] = []
    for index, target in enumerate(targets):
        if index >= len(sources):
            last = sources[-1].name if sources else "nothing"
            raise CheckpointMismatch(
                f"model layer '{target.name}' has no counterpart in {Path(path).name}: the file ends after {last}"
            )
        source = sources[index]
        expected = [tuple(w.shape) for w in target.weights]
        arrays = _ordered(source, _kind(target))
        if [tuple(a.shape) for a in arrays] != expected:
            raise CheckpointMismatch(
                f"checkpoint layer {source.describe()} (position {index + 1}) does not fit model layer "
                f"'{target.name}' ({type(target).__name__}, expects {expected}) in {Path(path).name}"
            )
        assignments.append((target, arrays))
    if len(sources) > len(targets):
        extra = ", ".join(s.name for s in sources[len(targets) :])
        raise CheckpointMismatch(f"{Path(path).name} has layers the model lacks after '{targets[-1].name}': {extra}")
    for target, arrays in assignments:
        target.set_weights(list(arrays))
    return [(source.name, target.name) for source, (target, _) in zip(sources, assignments, strict=False)]
