"""A model folder (`model.keras` and the `preprocessing.json` that must travel with it) and Shen's input arithmetic.

Training writes model folders, baseline-infer writes one for an imported checkpoint and reads them, fine-tuning
starts from one and the report's Grad-CAM loads one: all through this module, so a folder one step writes is
what every other reads, and a model is always fed the way it was trained.

The arithmetic is Shen's (End2End): a 16-bit PNG value x becomes x * 255/65535 (0-255 units), the gray image is
copied to three channels and one scalar featurewise mean (0-255 units) is subtracted - no division by a std, no
ImageNet statistics. It is written once with arithmetic operators and broadcasting only, so the same definition
runs on numpy arrays (the report) and inside tf.data on TensorFlow tensors (common.data); augmentation happens
between the two halves, on the 0-255 gray image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image

from common.artifacts import UnusableInput, atomic_write_json

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
TRAINING_FILE = "training.json"
RESCALE = 255.0 / 65535.0  # 16-bit PNG values to Shen's 0-255 units
CHANNELS = 3  # VGG16's input: the gray image in each channel

Array = TypeVar("Array")  # a numpy array or a TensorFlow tensor: the arithmetic below works on both


@dataclass(frozen=True)
class Preprocessing:
    """The constants that travel with a model in `preprocessing.json`."""

    featurewise_mean: float
    height: int
    width: int
    source: str
    rescale: float = RESCALE

    def write(self, directory: str | Path) -> None:
        atomic_write_json(Path(directory) / PREPROCESSING_FILE, asdict(self))

    @classmethod
    def read(cls, directory: str | Path) -> Preprocessing:
        path = Path(directory) / PREPROCESSING_FILE
        if not path.is_file():
            raise UnusableInput(f"{directory} has no {PREPROCESSING_FILE}: not a model folder")
        values = json.loads(path.read_text())
        return cls(**{k: values[k] for k in ("featurewise_mean", "height", "width", "source", "rescale")})

    def require_model_size(self, input_shape: tuple[Any, ...]) -> None:
        """The model's input (batch, height, width, channels) must be the size its images are checked against."""
        if tuple(input_shape[1:3]) != (self.height, self.width):
            raise UnusableInput(f"model input {input_shape[1:3]} differs from its preprocessing size")


def to_255(pixels: Array, prep: Preprocessing) -> Array:
    """float32 16-bit PNG values (any shape) in 0-255 units."""
    return pixels * np.float32(prep.rescale)  # type: ignore[operator]


def model_input(gray: Array, prep: Preprocessing) -> Array:
    """(..., H, W, 1) gray in 0-255 units -> (..., H, W, 3) End2End input: broadcasting against one mean per channel
    copies the gray image into the three channels and subtracts the featurewise mean in one float32 step."""
    return gray - np.full(CHANNELS, prep.featurewise_mean, dtype=np.float32)  # type: ignore[operator]


def png_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) from the PNG header, without decoding the pixels; None when it is no image."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError):
        return None


def image_sizes(paths: Iterable[str | Path], height: int, width: int) -> list[tuple[int, int] | None]:
    """The PNG header size of each image; refuses (one line) when not one of them has the model's input size, the
    mistake of preprocessing with one profile and training or scoring with another."""
    sizes = [png_size(path) for path in paths]
    if sizes and not any(size == (height, width) for size in sizes):
        found = "x".join(map(str, sizes[0] or ("unreadable",)))
        raise UnusableInput(f"images are {found} but the model expects {height}x{width}: use the same profile")
    return sizes


def model_path(directory: str | Path) -> Path:
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise UnusableInput(f"{directory} has no {MODEL_FILE}")
    return path


def read(directory: str | Path) -> tuple[keras.Model, Preprocessing]:
    """The model (for inference or as a starting point: no training state) and its preprocessing constants."""
    from common.model import load_model  # TensorFlow loads only when a model does

    path = model_path(directory)
    prep = Preprocessing.read(directory)
    return load_model(path), prep


def write(directory: str | Path, model: keras.Model, prep: Preprocessing,
          training: dict[str, Any] | None = None) -> None:
    """model.keras (atomically), its preprocessing.json and, for a trained model, training.json."""
    out = Path(directory)
    partial = out / "model.partial.keras"
    model.save(partial)
    os.replace(partial, out / MODEL_FILE)
    prep.write(out)
    if training is not None:
        atomic_write_json(out / TRAINING_FILE, training)
