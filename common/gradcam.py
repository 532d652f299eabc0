"""Grad-CAM (Selvaraju et al. 2017): where in the mammogram the End2End model looks.

The target is the cancer log-odds (z_pos - z_neg, the pre-softmax difference), which unlike the
probability does not saturate for confident images. The channel weights are the spatial means of its
gradient with respect to a convolutional feature map; the map is the ReLU of the weighted channel sum.
Because End2End is a plain chain of layers, the forward pass is replayed layer by layer and the
chosen layer's output is watched - no second model needs to be built.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from common.model import leaf_layers

# The last backbone convolution: at the demo's 288x224 input Block 2's map is only 4x3 cells, block5_conv3's
# is 18x14 (72x56 at 1152x896), fine enough to show a lesion.
DEFAULT_LAYER = "block5_conv3"


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


def gradcam_raw(model: keras.Model, images, layer_name: str = DEFAULT_LAYER) -> np.ndarray:
    """Unnormalised Grad-CAM maps at the layer's resolution, shape (N, h, w)."""
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        features, target = _forward_log_odds(model, images, layer_name, tape)
    gradients = tape.gradient(target, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()


def gradcam(model: keras.Model, images, layer_name: str = DEFAULT_LAYER) -> np.ndarray:
    """Heatmaps (N, H, W) in [0, 1] at input resolution (bilinear upsampling, each map scaled by its max)."""
    raw = gradcam_raw(model, images, layer_name)
    height, width = int(np.shape(images)[1]), int(np.shape(images)[2])
    maps = tf.image.resize(raw[..., np.newaxis], (height, width), method="bilinear")[..., 0].numpy()
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peaks > 0, peaks, 1.0)[:, None, None]
