"""The okddip_tf side of the CPU step benchmarks: the group's compiled train step on random data.

Shared by benchmarks/torch_vs_tf_cpu.py and benchmarks/step_profile.py. TensorFlow must not be
imported before the caller has set TF_ENABLE_ONEDNN_OPTS (okddip_tf sets its default on import).
"""

import contextlib
import datetime
import json
import os
import re

import okddip_tf  # noqa: F401  (sets the oneDNN default before TensorFlow loads)
import keras
import numpy as np
import tensorflow as tf

from okddip_tf import atomic_files
from okddip_tf.reproduce import machine as machine_info

BATCH, CLASSES = 128, 100
VARIANTS = {
    "okddip_branch_4": dict(method="okddip", num_students=4, sharing="branch"),
    "okddip_network_4": dict(method="okddip", num_students=4, sharing="network"),
    "single": dict(method="baseline", num_students=1),
}


def build(variant, seed=0, layers="fused"):
    """(group, step(batch) -> loss as a float, batch) for a variant, built and compiled.

    layers="keras" builds the same network from Keras' own BatchNormalization and a padding layer
    before every 3x3 conv (okddip_tf's layers before the speed work), to time the difference.
    """
    keras.utils.set_random_seed(seed)
    with plain_keras_layers(layers == "keras"):
        group = okddip_tf.GroupModel(backbone="resnet32", num_classes=CLASSES,
                                     image_shape=(32, 32, 3), **VARIANTS[variant])
    group.compile(optimizer=okddip_tf.CoupledSGD(0.1, momentum=0.9, nesterov=True, l2=5e-4))
    rng = np.random.default_rng(seed)
    batch = (tf.constant(rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)),
             tf.constant(rng.integers(0, CLASSES, BATCH), dtype=tf.int32))
    train_step = tf.function(group.train_step)
    return group, lambda b: float(train_step(b)["loss"]), batch


@contextlib.contextmanager
def plain_keras_layers(enabled):
    """While building: resnet_cifar with keras.layers.BatchNormalization and ZeroPadding2D convs."""
    if not enabled:
        yield
        return
    from okddip_tf.models import common, resnet_cifar

    def padded_conv(filters, kernel_size, stride, name):
        pad = (kernel_size - 1) // 2
        conv = keras.layers.Conv2D(filters, kernel_size, strides=stride, padding="valid",
                                   use_bias=False, kernel_initializer=common.conv_init(),
                                   name=name)
        padding = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad") if pad else None
        return lambda x: conv(padding(x) if padding else x)

    # common.batch_norm builds common.BatchNormalization; resnet_cifar bound common.conv.
    saved = common.BatchNormalization, resnet_cifar.conv
    common.BatchNormalization, resnet_cifar.conv = keras.layers.BatchNormalization, padded_conv
    try:
        yield
    finally:
        common.BatchNormalization, resnet_cifar.conv = saved


def gradients(group, batch):
    """Forward, the group's loss and the gradients, without the optimizer (for profiling)."""
    images, labels = batch
    with tf.GradientTape() as tape:
        outputs = group(images, training=True)
        loss = group.compute_group_loss(labels, outputs)["loss"]
    return tape.gradient(loss, group.trainable_variables)


def machine():
    return machine_info.describe()


def write_json(report, name):
    """Writes benchmarks/results/<name> atomically."""
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "git_commit": machine_info.git_commit(os.path.dirname(os.path.abspath(__file__))),
              **report}
    atomic_files.write_text(out, json.dumps(report, indent=2) + "\n")  # in the order written
    print("wrote", os.path.relpath(out))


def safe_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
