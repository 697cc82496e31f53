"""CIFAR ResNets as in the OKDDip code (He et al. 2016, CIFAR variant), plus a tiny test net.

Each network is stem -> stage1 -> stage2 -> stage3 -> global average pool -> linear. The trunk is
stem, stage1 and stage2; a head is stage3, the pooling and the classifier, so a branch-based group
shares everything up to the last stage (the paper's CIFAR split).

Fidelity to the PyTorch code: post-activation blocks, BatchNorm momentum 0.9 / epsilon 1e-5
(PyTorch's 0.1 / 1e-5), Kaiming-normal fan-out conv init, PyTorch's uniform Linear init, and
stride-2 convolutions padded by one on every side ("same" in TF pads asymmetrically).

Speed without changing the maths: BatchNorm trains with TensorFlow's fused kernel
(`okddip_tf.models.batchnorm`), and stride-1 3x3 convolutions pad inside the convolution ("same",
symmetric at stride 1) instead of through a separate padding layer.
"""

import functools

import keras
from keras import layers

from okddip_tf.attention import torch_linear_initializer
from okddip_tf.models.batchnorm import BatchNormalization
from okddip_tf.models import Backbone, register_backbone


def conv_init():
    """Kaiming-normal, fan-out, ReLU gain: a new instance per layer.

    A Keras 3 initializer without a seed returns the same values every time one instance is
    called, so a shared module-level instance would give every same-shaped conv (and every
    student's head) identical weights.
    """
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def batch_norm(name, sync_batchnorm):
    kwargs = {"synchronized": True} if sync_batchnorm else {}
    return BatchNormalization(momentum=0.9, epsilon=1e-5, name=name, **kwargs)


def conv(filters, kernel_size, stride, name):
    """A bias-free conv with PyTorch's symmetric padding of (kernel_size - 1) // 2.

    At stride 1 an odd kernel's "same" padding is that symmetric padding, done inside the
    convolution; at stride 2 "same" would pad only after, so a padding layer pads both sides.
    """
    pad = (kernel_size - 1) // 2
    inside = stride == 1 and kernel_size % 2 == 1
    ops_ = [layers.ZeroPadding2D(pad, name=f"{name}_pad")] if pad and not inside else []
    ops_.append(
        layers.Conv2D(
            filters, kernel_size, strides=stride, padding="same" if inside else "valid",
            use_bias=False, kernel_initializer=conv_init(), name=name,
        )
    )

    def apply(x):
        for op in ops_:
            x = op(x)
        return x

    return apply


def basic_block(x, planes, stride, name, sync_bn):
    """conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1-conv-BN shortcut, then ReLU."""
    y = conv(planes, 3, stride, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(batch_norm(f"{name}_bn1", sync_bn)(y))
    y = conv(planes, 3, 1, f"{name}_conv2")(y)
    y = batch_norm(f"{name}_bn2", sync_bn)(y)
    return add_shortcut(x, y, stride, name, sync_bn)


def bottleneck_block(x, planes, stride, name, sync_bn):
    """1x1-3x3-1x1 bottleneck with expansion 4 (torchvision style, stride on the 3x3)."""
    y = conv(planes, 1, 1, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(batch_norm(f"{name}_bn1", sync_bn)(y))
    y = conv(planes, 3, stride, f"{name}_conv2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(batch_norm(f"{name}_bn2", sync_bn)(y))
    y = conv(planes * 4, 1, 1, f"{name}_conv3")(y)
    y = batch_norm(f"{name}_bn3", sync_bn)(y)
    return add_shortcut(x, y, stride, name, sync_bn)


def add_shortcut(x, y, stride, name, sync_bn):
    """relu(y + shortcut(x)): identity, or a strided 1x1 conv + BN where the shape changes."""
    channels = y.shape[-1]
    shortcut = x
    if stride != 1 or x.shape[-1] != channels:
        shortcut = conv(channels, 1, stride, f"{name}_down_conv")(x)
        shortcut = batch_norm(f"{name}_down_bn", sync_bn)(shortcut)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def stage(x, block, planes, num_blocks, stride, name, sync_bn):
    for i in range(num_blocks):
        x = block(x, planes, stride if i == 0 else 1, f"{name}_block{i}", sync_bn)
    return x


def build_trunk(name, sync_batchnorm, *, block, depths, widths, stem_width):
    """Stem, stage 1 and stage 2; spatial size is left dynamic."""
    images = keras.Input(shape=(None, None, 3), name="normalized_images")
    x = conv(stem_width, 3, 1, "stem_conv")(images)
    x = layers.ReLU(name="stem_relu")(batch_norm("stem_bn", sync_batchnorm)(x))
    x = stage(x, block, widths[0], depths[0], 1, "stage1", sync_batchnorm)
    x = stage(x, block, widths[1], depths[1], 2, "stage2", sync_batchnorm)
    return keras.Model(images, x, name=name)


def build_head(name, num_classes, sync_batchnorm, *, block, depths, widths, trunk_channels):
    """Stage 3, global average pooling and the linear classifier: -> [features, logits]."""
    feature_map = keras.Input(shape=(None, None, trunk_channels), name="trunk_features")
    x = stage(feature_map, block, widths[2], depths[2], 2, "stage3", sync_batchnorm)
    pooled = layers.GlobalAveragePooling2D(name="pool")(x)
    feature_dim = pooled.shape[-1]
    logits = layers.Dense(
        num_classes,
        kernel_initializer=torch_linear_initializer(feature_dim),
        bias_initializer=torch_linear_initializer(feature_dim),
        name="classifier",
    )(pooled)
    # Under a mixed-precision policy the loss still sees float32 features and logits.
    features = layers.Activation("linear", dtype="float32", name="features")(pooled)
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(feature_map, [features, logits], name=name)


def register_resnet(name, block, depths, widths=(16, 32, 64), stem_width=16):
    expansion = 4 if block is bottleneck_block else 1
    trunk_channels = widths[1] * expansion
    shape = dict(block=block, depths=depths, widths=widths)
    register_backbone(
        Backbone(
            name=name,
            build_trunk=functools.partial(build_trunk, stem_width=stem_width, **shape),
            build_head=functools.partial(build_head, trunk_channels=trunk_channels, **shape),
            trunk_channels=trunk_channels,
            feature_dim=widths[2] * expansion,
        )
    )


register_resnet("resnet20", basic_block, (3, 3, 3))
register_resnet("resnet32", basic_block, (5, 5, 5))
register_resnet("resnet56", basic_block, (9, 9, 9))
# The "ResNet-110" of the OKDDip tables is the authors' bottleneck network: Bottleneck [12, 12, 12],
# widths 16/32/64 with expansion 4 (final features 256). `resnet110_basic` is He et al.'s
# basic-block ResNet-110 ([18, 18, 18], 64 features) for those who want the standard one.
register_resnet("resnet110_bottleneck", bottleneck_block, (12, 12, 12))
register_resnet("resnet110_basic", basic_block, (18, 18, 18))
# For tests and smoke runs only: one basic block per stage, 8/16/16 channels.
register_resnet("tiny", basic_block, (1, 1, 1), widths=(8, 16, 16), stem_width=8)
