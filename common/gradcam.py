"""Grad-CAM (Selvaraju et al. 2017) in its element-wise form: where in the mammogram the End2End model looks.

The target is the cancer log-odds (z_pos - z_neg, the pre-softmax difference), which unlike the
probability does not saturate for confident images. Classic Grad-CAM weights each channel of a feature
map by the spatial MEAN of the target's gradient and takes the ReLU of the weighted channel sum. On the
End2End models this pipeline trains that map is exactly zero for most images: every max pooling after
the layer passes gradient to one cell in four (at block5_conv3 75% of the gradient is zero), the ReLUs of
the two top blocks gate it further, and the channels whose mean gradient is negative outweigh the rest at
every cell, so the final ReLU clears the whole map (ci models: 7-24 of 24 hospital images at block5_conv1
to block5_conv3; demo: all nine maps of the report).

So the weight is the gradient at each cell itself (HiResCAM, Draelos & Carin 2020): the map is the ReLU of
sum_k dy/dA_k(i, j) * A_k(i, j), the first-order share of the log-odds each cell contributes. It equals
CAM where the head is pooling + dense, and it is never all zero while some cell raises the log-odds. It is
taken at block4_conv3 (1/8 of the input: 36x28 cells at the demo's 288x224), where on a model trained to
find a bright blob its mass per unit area on the blob is ~6x that elsewhere, against ~2x for classic
Grad-CAM at block5_conv3 (tests/test_inference.py measures it).

Because End2End is a plain chain of layers, the forward pass is replayed layer by layer and the chosen
layer's output is watched - no second model needs to be built.
"""

from __future__ import annotations

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from common.model import leaf_layers

DEFAULT_LAYER = "block4_conv3"
METHOD = "element-wise Grad-CAM (HiResCAM) of the cancer log-odds"


def _forward_log_odds(model: keras.Model, images: tf.Tensor, layer_name: str, tape: tf.GradientTape):
    features, x = None, images
    layers = leaf_layers(model)
    for layer in layers[:-1]:
        x = layer(x, training=False)
        if layer.name == layer_name:
            features = x
            tape.watch(features)
    if features is None:
        raise ValueError(f"no layer named {layer_name!r} before the output layer")
    dense = layers[-1]
    logits = tf.matmul(tf.cast(x, dense.kernel.dtype), dense.kernel) + dense.bias
    return features, logits[:, 1] - logits[:, 0]


def gradcam_raw(model: keras.Model, images: npt.ArrayLike, layer_name: str = DEFAULT_LAYER) -> np.ndarray:
    """Maps at the layer's resolution, shape (N, h, w), in log-odds units per cell (>= 0)."""
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        features, target = _forward_log_odds(model, images, layer_name, tape)
    gradients = tape.gradient(target, features)
    return tf.nn.relu(tf.reduce_sum(gradients * features, axis=-1)).numpy()


def gradcam_maps(model: keras.Model, images: npt.ArrayLike, layer_name: str = DEFAULT_LAYER) -> np.ndarray:
    """Maps (N, H, W) at input resolution (bilinear upsampling), unnormalised: the report compares them."""
    raw = gradcam_raw(model, images, layer_name)
    height, width = int(np.shape(images)[1]), int(np.shape(images)[2])
    return tf.image.resize(raw[..., np.newaxis], (height, width), method="bilinear")[..., 0].numpy()


def gradcam(model: keras.Model, images: npt.ArrayLike, layer_name: str = DEFAULT_LAYER) -> np.ndarray:
    """Heatmaps (N, H, W) in [0, 1]: `gradcam_maps` with each map scaled by its max (an all-zero map stays zero)."""
    maps = gradcam_maps(model, images, layer_name)
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peaks > 0, peaks, 1.0)[:, None, None]
