"""VGG-16 with BatchNorm as the OKDDip authors build it for CIFAR.

Five conv stages [64, 64], [128, 128], [256 x 3], [512 x 3], [512 x 3], each conv 3x3 (with bias,
padding 1) -> BN -> ReLU and each stage ending in a 2x2 max-pool; then the classifier
512 -> 512 -> 512 -> C with ReLU and dropout. 15,253,578 parameters at 10 classes.

Split: the authors' branch model shares the first four stages; each student owns the last conv
stage and the classifier (default split_stage 5). The features the attention reads are the
512-d pooled output of the last conv stage (the flattened 1x1 map on 32x32 inputs; global
average pooling keeps other sizes working).

Dropout (the two 0.5-or-0.0 layers of the classifier): the authors' branch-based models use 0.5
(`models/model_cifar/vgg_GL.py:20,46,49`, OKDDip; `vgg_one.py:63,66` `nn.Dropout()`, ONE, CL-ILR
and Ind), their single network and network-based groups take `--dropout`, default 0.0
(`models/model_cifar/vgg.py:20,44,47`; `train.py:49,275` Baseline; `train_kd.py:52,299` KD;
`MultiNet.py:12,22` network-based OKDDip; `DML.py:10,20`, `train_DML.py:46,374` DML).
`vgg16(dropout)` takes it (registered default 0.5, the branch value); the config's
`model.dropout=None` (auto) selects the authors' value for the group
(okddip_tf.config.authors_dropout, applied by okddip_tf.builders.build_backbone).

Initialisation, as the authors' VGG modules: convolutions Kaiming-normal fan-out (ReLU gain) with
zero biases, and every linear layer N(0, 0.01) (`nn.init.normal_(m.weight, 0, 0.01)`) with zero
bias (`vgg.py:50-60`, `vgg_one.py:75-85`). The branch-based OKDDip model (`vgg_GL.py:57-66`)
draws its linear weights, W_L and W_E included, from the same N(0, 0.01) (so
`linear_init_std=0.01`: the attention follows it in branch groups) but leaves the linear biases at
PyTorch's default U(+-1/sqrt(512)); okddip_tf zeroes them in every VGG. The network-based OKDDip's
W_L and W_E (`MultiNet.py:28-29`) keep PyTorch's default, as they do here.
"""

from keras import layers

from okddip_tf.initializers import linear_initializers
from okddip_tf.models.common import StagedNetwork, batch_norm, conv, register_staged, stage_fn

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
LINEAR_INIT_STD = 0.01  # vgg.py:59, vgg_GL.py:66, vgg_one.py:84: nn.init.normal_(w, 0, 0.01)
BRANCH_DROPOUT = 0.5  # vgg_GL.py:20 (dropout=0.5), vgg_one.py:63,66 (nn.Dropout(), p=0.5)


def vgg_linear(units, name):
    """A linear layer initialised as the authors' VGG: N(0, 0.01) weights, zero bias."""
    kernel, bias = linear_initializers(None, LINEAR_INIT_STD)
    return layers.Dense(units, kernel_initializer=kernel, bias_initializer=bias, name=name)


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
        y = vgg_linear(512, f"fc{i}")(y)
        y = layers.ReLU(name=f"fc{i}_relu")(y)
        y = layers.Dropout(dropout, name=f"fc{i}_dropout")(y)
    return features, vgg_linear(num_classes, "classifier")(y)


def vgg16(dropout):
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"vgg16's dropout must be in [0, 1), got {dropout}.")
    stages = tuple((stage_fn(vgg_stage, widths=w, name=f"stage{i + 1}"), w[-1])
                   for i, w in enumerate(STAGES))
    return StagedNetwork(stem=lambda images, norm: images, stem_channels=3, stages=stages,
                         top=stage_fn(vgg_top, dropout=dropout), default_split=5,
                         linear_init_std=LINEAR_INIT_STD)


register_staged("vgg16", vgg16, dropout=BRANCH_DROPOUT)
