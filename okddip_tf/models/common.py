"""Layers and the stage-wise split shared by the registered networks.

Every registered network is a stem, a sequence of stages and a top (pooling and classifier). A
backbone splits it before stage `split_stage` (1-based): the trunk is the stem and the stages
before it, a head is that stage, the ones after it and the top. Branch-based groups share the
trunk; the paper's split is each network's default.

Fidelity to the authors' PyTorch code: BatchNorm momentum 0.9 / epsilon 1e-5 (PyTorch's 0.1 /
1e-5) with PyTorch's moving variance of the unbiased batch variance (`batchnorm="keras"` gives
Keras' 0.99 / 1e-3 and biased variance), Kaiming-normal fan-out conv init, PyTorch's
uniform Linear init, and convolutions padded symmetrically ("same" in TF pads stride-2
convolutions asymmetrically).
"""

import dataclasses
import functools
from typing import Callable, Optional

import keras
from keras import layers

from okddip_tf.initializers import torch_linear_initializer
from okddip_tf.models.backbone import Backbone
from okddip_tf.models.registry import register_backbone
from okddip_tf.models.batchnorm import BatchNormalization

# batchnorm option -> (momentum, epsilon)
BATCHNORM_STYLES = {"pytorch": (0.9, 1e-5), "keras": (0.99, 1e-3)}


@dataclasses.dataclass(frozen=True)
class NormSettings:
    """How every BatchNormalization of one network is built."""

    synchronized: bool = False
    style: str = "pytorch"


def norm_settings(sync_batchnorm, style):
    if style not in BATCHNORM_STYLES:
        raise ValueError(f"batchnorm must be one of {sorted(BATCHNORM_STYLES)}, got {style!r}: "
                         "'pytorch' (momentum 0.9, epsilon 1e-5, the paper's) or 'keras' "
                         "(Keras' defaults 0.99, 1e-3).")
    return NormSettings(bool(sync_batchnorm), style)


def conv_init():
    """Kaiming-normal, fan-out, ReLU gain: a new instance per layer.

    A Keras 3 initializer without a seed returns the same values every time one instance is
    called, so a shared module-level instance would give every same-shaped conv (and every
    student's head) identical weights.
    """
    return keras.initializers.VarianceScaling(2.0, mode="fan_out",
                                              distribution="untruncated_normal")


def batch_norm(name, norm):
    """BatchNormalization built as `norm` (NormSettings, or a bool: synchronise, PyTorch style)."""
    if not isinstance(norm, NormSettings):
        norm = NormSettings(bool(norm))
    momentum, epsilon = BATCHNORM_STYLES[norm.style]
    kwargs = {"synchronized": True} if norm.synchronized else {}
    # TensorFlow's fused kernel in training (okddip_tf.models.batchnorm); the PyTorch style also
    # takes PyTorch's moving-variance update (the unbiased batch variance), Keras' the biased one.
    return BatchNormalization(momentum=momentum, epsilon=epsilon, name=name,
                              unbiased_moving_variance=norm.style == "pytorch", **kwargs)


def conv(filters, kernel_size, stride, name, use_bias=False, padding=None):
    """A conv with PyTorch's symmetric padding (default (kernel_size - 1) // 2).

    At stride 1 an odd kernel's "same" padding is that symmetric padding, done inside the
    convolution (faster); at stride 2 "same" would pad only after, so a padding layer pads both
    sides.
    """
    pad = (kernel_size - 1) // 2 if padding is None else padding
    inside = stride == 1 and kernel_size % 2 == 1 and pad == (kernel_size - 1) // 2
    ops_ = [layers.ZeroPadding2D(pad, name=f"{name}_pad")] if pad and not inside else []
    ops_.append(
        layers.Conv2D(
            filters, kernel_size, strides=stride, padding="same" if inside else "valid",
            use_bias=use_bias, kernel_initializer=conv_init(), name=name,
        )
    )

    def apply(x):
        for op in ops_:
            x = op(x)
        return x

    return apply


def linear(units, fan_in, name):
    """A Dense layer with PyTorch's nn.Linear initialisation U(+-1/sqrt(fan_in))."""
    return layers.Dense(units, kernel_initializer=torch_linear_initializer(fan_in),
                        bias_initializer=torch_linear_initializer(fan_in), name=name)


def pooled_classifier(x, num_classes, norm):
    """Global average pooling and a linear classifier: -> (features, logits)."""
    del norm
    pooled = layers.GlobalAveragePooling2D(name="pool")(x)
    return pooled, linear(num_classes, pooled.shape[-1], "classifier")(pooled)


@dataclasses.dataclass(frozen=True)
class StagedNetwork:
    """A network as stem -> stages -> top, each a function of (tensor, NormSettings).

    Attributes:
      stem: `(images, norm) -> feature map`.
      stem_channels: channels of the stem's output.
      stages: `((fn, out_channels), ...)`, each fn `(x, norm) -> x`.
      top: `(x, num_classes, norm) -> (features, logits)`.
      default_split: the paper's split: the 1-based index of the first per-student stage.
      linear_init_std: see `Backbone.linear_init_std` (None: PyTorch's default linear init).
    """

    stem: Callable
    stem_channels: int
    stages: tuple
    top: Callable = pooled_classifier
    default_split: int = 0
    linear_init_std: Optional[float] = None


def staged_backbone(name, network, split_stage=None, batchnorm="pytorch", options=()):
    """The backbone of a StagedNetwork split before stage `split_stage` (1-based)."""
    split = network.default_split if split_stage is None else split_stage
    num_stages = len(network.stages)
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= num_stages:
        raise ValueError(f"split_stage of {name!r} must be an integer in 1..{num_stages} (the "
                         f"first stage each student owns; the paper's is {network.default_split}"
                         f"), got {split_stage!r}.")
    norm_settings(False, batchnorm)  # validates the style now, not at build time
    trunk_channels = network.stem_channels if split == 1 else network.stages[split - 2][1]

    def build_trunk(model_name, sync_batchnorm):
        norm = norm_settings(sync_batchnorm, batchnorm)
        images = keras.Input(shape=(None, None, 3), name="normalized_images")
        x = network.stem(images, norm)
        for fn, _ in network.stages[:split - 1]:
            x = fn(x, norm)
        return keras.Model(images, x, name=model_name)

    def build_head(model_name, num_classes, sync_batchnorm, deployed=False):  # all drawn anew
        norm = norm_settings(sync_batchnorm, batchnorm)
        feature_map = keras.Input(shape=(None, None, trunk_channels), name="trunk_features")
        x = feature_map
        for fn, _ in network.stages[split - 1:]:
            x = fn(x, norm)
        features, logits = network.top(x, num_classes, norm)
        # Under a mixed-precision policy the loss still sees float32 features and logits.
        features = layers.Activation("linear", dtype="float32", name="features")(features)
        logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
        return keras.Model(feature_map, [features, logits], name=model_name)

    return Backbone(name=name, build_trunk=build_trunk, build_head=build_head,
                    trunk_channels=trunk_channels, feature_dim=network.stages[-1][1],
                    options=tuple(sorted(options)), linear_init_std=network.linear_init_std)


def register_staged(name, make_network, **extra_defaults):
    """Registers `name` with options split_stage, batchnorm and the network's own extras.

    Args:
      make_network: `(**extras) -> StagedNetwork`.
      extra_defaults: the network's own options (e.g. VGG's dropout) and their defaults.
    """

    def configure(split_stage=None, batchnorm=None, **extras):
        unknown = sorted(set(extras) - set(extra_defaults))
        if unknown:
            raise ValueError(f"Backbone {name!r} has no option(s) {unknown}; its options are "
                             f"{sorted(('split_stage', 'batchnorm') + tuple(extra_defaults))}.")
        given = dict(split_stage=split_stage, batchnorm=batchnorm, **extras)
        given = {key: value for key, value in given.items() if value is not None}
        network = make_network(**{**extra_defaults, **extras})
        return staged_backbone(name, network, split_stage, batchnorm or "pytorch",
                               options=given.items())

    register_backbone(staged_backbone(name, make_network(**extra_defaults)), configure,
                      extra_options=tuple(extra_defaults))


def stage_fn(fn, **kwargs):
    """A stage function `(x, norm) -> x` with its other arguments bound."""
    return functools.partial(fn, **kwargs)
