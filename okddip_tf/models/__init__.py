"""Backbone registry: a backbone knows how to build a trunk and a per-student head."""

import dataclasses
from typing import Callable

from okddip_tf.errors import ConfigError

BACKBONES = {}


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build one student network in two parts.

    Attributes:
      name: the registry name.
      build_trunk: `(name, sync_batchnorm) -> keras.Model` mapping normalised images
        [B, H, W, 3] to the trunk's feature map [B, h, w, trunk_channels].
      build_head: `(name, num_classes, sync_batchnorm) -> keras.Model` mapping the trunk's feature
        map to `[features, logits]`: the pooled features [B, feature_dim] used by the attention and
        the logits [B, num_classes]. Branch-based groups share one trunk and give each student its
        own head; network-based groups give each student its own trunk as well.
      trunk_channels: channels of the trunk's output.
      feature_dim: size of the pooled features.
    """

    name: str
    build_trunk: Callable
    build_head: Callable
    trunk_channels: int
    feature_dim: int


def register_backbone(backbone):
    """Adds a backbone; a duplicate name is an error."""
    if backbone.name in BACKBONES:
        raise KeyError(f"Backbone {backbone.name!r} is already registered.")
    BACKBONES[backbone.name] = backbone
    return backbone


def get_backbone(name):
    """Looks up a backbone by name; the error lists the known ones."""
    if name not in BACKBONES:
        raise ConfigError(
            f"Unknown backbone {name!r}. Known backbones: {sorted(BACKBONES)}. "
            "Set it with backbone=... or --config.model.backbone=..."
        )
    return BACKBONES[name]


# Registration happens on import; importing them here means callers never have to.
from okddip_tf.models import resnet_cifar  # noqa: E402,F401
