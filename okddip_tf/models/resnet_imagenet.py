"""ResNet-34 for ImageNet in torchvision's layout (the paper's ImageNet network).

conv 7x7/2 (64) -> BN -> ReLU -> max-pool 3x3/2 -> four stages of basic blocks [3, 4, 6, 3] at
64/128/256/512 channels (strides 1, 2, 2, 2, 1x1-conv-BN downsampling) -> global average pool ->
linear. 21,797,672 parameters at 1000 classes.

Split: the paper gives each student the last two stages ("the last two blocks are separated"),
so branches start at stage 3 by default; `split_stage` moves it.
"""

from keras import layers

from okddip_tf.models.common import StagedNetwork, batch_norm, conv, register_staged
from okddip_tf.models.resnet_cifar import basic_block, resnet


def imagenet_stem(images, norm):
    x = conv(64, 7, 2, "stem_conv")(images)
    x = layers.ReLU(name="stem_relu")(batch_norm("stem_bn", norm)(x))
    # PyTorch pads the max-pool with -inf; after a ReLU, zero padding gives the same result.
    x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)


def resnet34_imagenet():
    network = resnet(basic_block, (3, 4, 6, 3), (64, 128, 256, 512), 64, (1, 2, 2, 2), 3)
    return StagedNetwork(stem=imagenet_stem, stem_channels=64, stages=network.stages,
                         default_split=3)


register_staged("resnet34_imagenet", resnet34_imagenet)
