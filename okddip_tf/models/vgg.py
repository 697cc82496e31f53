"""VGG-16 with BatchNorm as the OKDDip authors build it for CIFAR.

Five conv stages [64, 64], [128, 128], [256 x 3], [512 x 3], [512 x 3], each conv 3x3 (with bias,
padding 1) -> BN -> ReLU and each stage ending in a 2x2 max-pool; then the classifier
512 -> 512 -> 512 -> C with ReLU and dropout. 15,253,578 parameters at 10 classes.

Split: the authors' branch model shares the first four stages; each student owns the last conv
stage and the classifier (default split_stage 5). The features the attention reads are the
512-d pooled output of the last conv stage (the flattened 1x1 map on 32x32 inputs; global
average pooling keeps other sizes working).

Dropout: the authors' branch-based models use 0.5, their plain and network-based VGG 0.0 by
default; `dropout` is an option (default 0.5). The authors do not state the VGG initialisation in
the OKDDip code paths this package follows; convolutions use the Kaiming-normal fan-out init of
the ResNets, with zero biases.
"""

from keras import layers

from okddip_tf.models.common import (StagedNetwork, batch_norm, conv, linear, register_staged,
                                     stage_fn)

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg_stage(x, norm, *, widths, name):
    for i, width in enumerate(widths):
        x = conv(width, 3, 1, f"{name}_conv{i}", use_bias=True)(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(batch_norm(f"{name}_bn{i}", norm)(x))
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def vgg_top(x, num_classes, norm, *, dropout):
    del norm
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    y = features
    for i in range(2):
        y = linear(512, y.shape[-1], f"fc{i}")(y)
        y = layers.ReLU(name=f"fc{i}_relu")(y)
        y = layers.Dropout(dropout, name=f"fc{i}_dropout")(y)
    return features, linear(num_classes, 512, "classifier")(y)


def vgg16(dropout):
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"vgg16's dropout must be in [0, 1), got {dropout}.")
    stages = tuple((stage_fn(vgg_stage, widths=w, name=f"stage{i + 1}"), w[-1])
                   for i, w in enumerate(STAGES))
    return StagedNetwork(stem=lambda images, norm: images, stem_channels=3, stages=stages,
                         top=stage_fn(vgg_top, dropout=dropout), default_split=5)


register_staged("vgg16", vgg16, dropout=0.5)
