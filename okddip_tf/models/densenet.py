"""DenseNet-40-12 (DenseNet-BC) as in the OKDDip tables.

conv 3x3 (24 channels) -> three dense blocks of 6 bottleneck layers (BN-ReLU-conv1x1 to 4 x 12,
BN-ReLU-conv3x3 to 12, concatenated), with transitions (BN-ReLU-conv1x1 halving the channels,
2x2 average pool) between them -> BN -> ReLU -> global average pool (132 features) -> linear.
176,122 parameters at 10 classes.

Split (decision 16): each student owns its own third dense block, its final BN and classifier
(default split_stage 3). The authors' branch model assigns one dense block object to every
branch, so their branches share it; this package does not reproduce that.
"""

from keras import layers

from okddip_tf.models.common import StagedNetwork, batch_norm, conv, register_staged, stage_fn

GROWTH, BN_SIZE, INIT_FEATURES, BLOCK_LAYERS = 12, 4, 24, (6, 6, 6)


def dense_layer(x, norm, name):
    y = layers.ReLU(name=f"{name}_relu1")(batch_norm(f"{name}_bn1", norm)(x))
    y = conv(BN_SIZE * GROWTH, 1, 1, f"{name}_conv1")(y)
    y = layers.ReLU(name=f"{name}_relu2")(batch_norm(f"{name}_bn2", norm)(y))
    y = conv(GROWTH, 3, 1, f"{name}_conv2")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def dense_stage(x, norm, *, num_layers, transition_to, name):
    """A dense block, then (unless transition_to is None) a compressing transition."""
    for i in range(num_layers):
        x = dense_layer(x, norm, f"{name}_layer{i}")
    if transition_to is None:
        return x
    x = layers.ReLU(name=f"{name}_trans_relu")(batch_norm(f"{name}_trans_bn", norm)(x))
    x = conv(transition_to, 1, 1, f"{name}_trans_conv")(x)
    return layers.AveragePooling2D(2, name=f"{name}_trans_pool")(x)


def densenet_top(x, num_classes, norm):
    from okddip_tf.models.common import pooled_classifier  # pylint: disable=import-outside-toplevel

    x = layers.ReLU(name="final_relu")(batch_norm("final_bn", norm)(x))
    return pooled_classifier(x, num_classes, norm)


def densenet40_12():
    stages, channels = [], INIT_FEATURES
    for i, num_layers in enumerate(BLOCK_LAYERS):
        channels += num_layers * GROWTH
        last = i == len(BLOCK_LAYERS) - 1
        transition_to = None if last else channels // 2  # compression 0.5
        stages.append((stage_fn(dense_stage, num_layers=num_layers, transition_to=transition_to,
                                name=f"dense{i + 1}"), channels if last else transition_to))
        channels = channels if last else transition_to
    stem = lambda images, norm: conv(INIT_FEATURES, 3, 1, "stem_conv")(images)  # noqa: E731
    return StagedNetwork(stem=stem, stem_channels=INIT_FEATURES, stages=tuple(stages),
                         top=densenet_top, default_split=3)


register_staged("densenet40_12", densenet40_12)
