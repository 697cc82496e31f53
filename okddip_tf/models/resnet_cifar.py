"""CIFAR ResNets as in the OKDDip code (He et al. 2016, CIFAR variant), plus a tiny test net.

Each network is stem -> stage1 -> stage2 -> stage3 -> global average pool -> linear. By default
the trunk is the stem, stage1 and stage2, and a head is stage3, the pooling and the classifier,
so a branch-based group shares everything up to the last stage (the paper's CIFAR split);
`split_stage` moves the split (see okddip_tf.models.common).

Post-activation blocks (torchvision style); initialisation, BatchNorm and padding as described in
okddip_tf.models.common.
"""

from keras import layers

from okddip_tf.models.common import StagedNetwork, batch_norm, conv, register_staged, stage_fn


def basic_block(x, planes, stride, name, norm):
    """conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1-conv-BN shortcut, then ReLU."""
    y = conv(planes, 3, stride, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(batch_norm(f"{name}_bn1", norm)(y))
    y = conv(planes, 3, 1, f"{name}_conv2")(y)
    y = batch_norm(f"{name}_bn2", norm)(y)
    return add_shortcut(x, y, stride, name, norm)


def bottleneck_block(x, planes, stride, name, norm, width_factor=1):
    """1x1-3x3-1x1 bottleneck with expansion 4 (torchvision style, stride on the 3x3).

    The inner width is planes * width_factor (torchvision's width_per_group / 64).
    """
    inner = planes * width_factor
    y = conv(inner, 1, 1, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(batch_norm(f"{name}_bn1", norm)(y))
    y = conv(inner, 3, stride, f"{name}_conv2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(batch_norm(f"{name}_bn2", norm)(y))
    y = conv(planes * 4, 1, 1, f"{name}_conv3")(y)
    y = batch_norm(f"{name}_bn3", norm)(y)
    return add_shortcut(x, y, stride, name, norm)


def add_shortcut(x, y, stride, name, norm):
    """relu(y + shortcut(x)): identity, or a strided 1x1 conv + BN where the shape changes."""
    channels = y.shape[-1]
    shortcut = x
    if stride != 1 or x.shape[-1] != channels:
        shortcut = conv(channels, 1, stride, f"{name}_down_conv")(x)
        shortcut = batch_norm(f"{name}_down_bn", norm)(shortcut)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def stage(x, norm, *, block, planes, num_blocks, stride, name, **block_kwargs):
    for i in range(num_blocks):
        x = block(x, planes, stride if i == 0 else 1, f"{name}_block{i}", norm, **block_kwargs)
    return x


def cifar_stem(images, norm, *, width):
    x = conv(width, 3, 1, "stem_conv")(images)
    return layers.ReLU(name="stem_relu")(batch_norm("stem_bn", norm)(x))


def resnet(block, depths, widths, stem_width, strides, default_split, **block_kwargs):
    """A StagedNetwork of len(depths) stages of `block`."""
    expansion = 4 if block is bottleneck_block else 1
    stages = tuple(
        (stage_fn(stage, block=block, planes=w, num_blocks=d, stride=s, name=f"stage{i + 1}",
                  **block_kwargs), w * expansion)
        for i, (d, w, s) in enumerate(zip(depths, widths, strides)))
    return StagedNetwork(stem=stage_fn(cifar_stem, width=stem_width), stem_channels=stem_width,
                         stages=stages, default_split=default_split)


def register_cifar_resnet(name, block, depths, widths=(16, 32, 64), stem_width=16,
                          **block_kwargs):
    register_staged(name, lambda: resnet(block, depths, widths, stem_width, (1, 2, 2), 3,
                                         **block_kwargs))


register_cifar_resnet("resnet20", basic_block, (3, 3, 3))
register_cifar_resnet("resnet32", basic_block, (5, 5, 5))
register_cifar_resnet("resnet56", basic_block, (9, 9, 9))
# The "ResNet-110" of the OKDDip tables is the authors' bottleneck network: Bottleneck [12, 12, 12],
# widths 16/32/64 with expansion 4 (final features 256). `resnet110_basic` is He et al.'s
# basic-block ResNet-110 ([18, 18, 18], 64 features) for those who want the standard one.
register_cifar_resnet("resnet110_bottleneck", bottleneck_block, (12, 12, 12))
register_cifar_resnet("resnet110_basic", basic_block, (18, 18, 18))
# The "WRN-20-8" of the OKDDip tables is not Zagoruyko and Komodakis' wide ResNet: the authors
# build torchvision's Bottleneck [2, 2, 2] with width_per_group 512, i.e. inner widths 8x the
# planes 16/32/64 (128/256/512) and outputs 4x (64/128/256), 256 final features.
register_cifar_resnet("wrn20_8_bottleneck", bottleneck_block, (2, 2, 2), width_factor=8)
# For tests and smoke runs only: one basic block per stage, 8/16/16 channels.
register_cifar_resnet("tiny", basic_block, (1, 1, 1), widths=(8, 16, 16), stem_width=8)
