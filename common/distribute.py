"""How a training step spreads over the devices of its pod: `tf.distribute.MirroredStrategy` over every GPU the
pod was given (the thesis trained on 8 V100s), the default one-device strategy otherwise.

The global batch stays the profile's `training.batch_size` (16 in the full profile, as in the thesis): Keras splits
each batch over the replicas (8 per GPU on 2 GPUs) and averages their gradients, so the optimisation and the
learning rates of Table 6 are those of one device. More GPUs make an epoch faster, not its steps larger; scaling
the batch with the GPU count would need the learning rate scaled with it and would change the thesis' setting.
BatchNorm runs synchronised (common.model), so its batch statistics are the global batch's too.

The GPU count is what the pod's `nvidia.com/gpu` limit gives it (the Argo parameter `gpus`); the device plugin
makes exactly those GPUs visible. `MAMMO_CPU_REPLICAS=N` splits the CPU into N logical devices and mirrors over
them: the multi-device path without GPUs, for the test and for trying a change on a laptop.
"""

from __future__ import annotations

import os

import tensorflow as tf

CPU_REPLICAS_ENV = "MAMMO_CPU_REPLICAS"


def split_cpu(replicas: int) -> list[str]:
    """Make the CPU appear as `replicas` logical devices; only possible before TensorFlow starts its runtime."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) != replicas:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def training_strategy() -> tf.distribute.Strategy:
    """Mirrored over all visible GPUs when there are several (or over MAMMO_CPU_REPLICAS CPUs), else the default."""
    cpu_replicas = int(os.environ.get(CPU_REPLICAS_ENV, "0") or 0)
    if cpu_replicas > 1:
        return tf.distribute.MirroredStrategy(split_cpu(cpu_replicas))
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in gpus])
    return tf.distribute.get_strategy()
