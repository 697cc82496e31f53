"""Backbone registry: a backbone knows how to build a trunk and a per-student head.

Registered backbones are looked up by name, optionally with options (`get_backbone("resnet32",
split_stage=2, batchnorm="keras")`); `from_keras` turns the user's own functional Keras
classifier into a backbone. A backbone serialises to a JSON-able dict (`Backbone.get_config`)
that `backbone_from_config` rebuilds, so a saved group records exactly what it was built from.
"""

import dataclasses
from typing import Callable, Optional

from okddip_tf.errors import ConfigError

BACKBONES = {}  # name -> the backbone with its default options
_CONFIGURABLE = {}  # name -> (**options) -> Backbone
# The options every registered network accepts (None keeps the network's default).
COMMON_OPTIONS = ("split_stage", "batchnorm")


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build one student network in two parts.

    Attributes:
      name: the registry name (for a user's model, its model name).
      build_trunk: `(name, sync_batchnorm) -> keras.Model` mapping normalised images
        [B, H, W, 3] to the trunk's feature map [B, h, w, trunk_channels].
      build_head: `(name, num_classes, sync_batchnorm) -> keras.Model` mapping the trunk's feature
        map to `[features, logits]`: the pooled features [B, feature_dim] used by the attention and
        the logits [B, num_classes]. Branch-based groups share one trunk and give each student its
        own head; network-based groups give each student its own trunk as well.
      trunk_channels: channels of the trunk's output.
      feature_dim: size of the pooled features.
      options: the (key, value) pairs a registered backbone was configured with.
      raw_pixels: the network normalises its input itself (e.g. a `keras.applications` model
        with built-in preprocessing): the group then feeds it raw [0, 255] pixels.
      config: how to rebuild it, when it is not "registered name + options" (see `from_keras`).
    """

    name: str
    build_trunk: Callable = dataclasses.field(compare=False)
    build_head: Callable = dataclasses.field(compare=False)
    trunk_channels: int
    feature_dim: int
    options: tuple = ()
    raw_pixels: bool = False
    config: Optional[dict] = dataclasses.field(default=None, compare=False, repr=False)

    def get_config(self):
        """A JSON-able dict that `backbone_from_config` turns back into this backbone."""
        if self.config is not None:
            return dict(self.config)
        return {"name": self.name, "options": dict(self.options)}


def register_backbone(backbone, configure=None):
    """Adds a backbone; a duplicate name is an error.

    Args:
      backbone: the backbone with its default options.
      configure: optional `(**options) -> Backbone` for `get_backbone(name, **options)`.
    """
    if backbone.name in BACKBONES:
        raise KeyError(f"Backbone {backbone.name!r} is already registered.")
    BACKBONES[backbone.name] = backbone
    if configure is not None:
        _CONFIGURABLE[backbone.name] = configure
    return backbone


def get_backbone(name, **options):
    """Looks up a backbone by name; the error lists the known ones.

    Options whose value is None keep the backbone's default; `split_stage` (where the branches
    start) and `batchnorm` ("pytorch" or "keras") are accepted by every registered network.
    """
    if name not in BACKBONES:
        raise ConfigError(
            f"Unknown backbone {name!r}. Known backbones: {sorted(BACKBONES)}. "
            "Set it with backbone=... or --config.model.backbone=..., or pass your own model "
            "as --config.model.backbone=package.module:factory (see okddip_tf.models.from_keras)."
        )
    options = {key: value for key, value in options.items() if value is not None}
    if not options:
        return BACKBONES[name]
    if name not in _CONFIGURABLE:
        raise ValueError(f"Backbone {name!r} takes no options, got {sorted(options)}.")
    return _CONFIGURABLE[name](**options)


def resolve_backbone(backbone, *, split_stage=None, batchnorm=None, split_at=None):
    """A `Backbone` from a name, a "module:factory" string, a config dict or a `Backbone`.

    Args:
      backbone: a registered name; "package.module:factory" (an importable function returning a
        functional Keras classifier, see `from_keras`); a dict from `Backbone.get_config`; or a
        `Backbone`, returned unchanged.
      split_stage, batchnorm: options of a registered backbone (None: its default).
      split_at: the layer name a user's model is split at (only with "module:factory").
    """
    if isinstance(backbone, Backbone):
        if split_stage is not None or batchnorm is not None or split_at is not None:
            raise ValueError("Options (split_stage, batchnorm, split_at) apply to backbone "
                             "names; this Backbone object is already configured.")
        return backbone
    if isinstance(backbone, dict):
        return backbone_from_config(backbone)
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a name, a 'module:factory' string, a Backbone or a "
                        f"config dict, got {type(backbone).__name__}.")
    if ":" in backbone:
        if split_stage is not None or batchnorm is not None:
            raise ValueError("split_stage and batchnorm apply to registered backbones; a user's "
                             "model keeps its own layers (use split_at to choose the split).")
        from okddip_tf.models import keras_backbone  # pylint: disable=import-outside-toplevel

        return keras_backbone.from_keras(backbone, split_at=split_at)
    if split_at is not None:
        raise ValueError(f"split_at names a layer of your own model; for the registered "
                         f"backbone {backbone!r} use split_stage (an integer stage index).")
    return get_backbone(backbone, split_stage=split_stage, batchnorm=batchnorm)


def backbone_from_config(config):
    """Rebuilds a backbone from `Backbone.get_config()`."""
    if "keras_model" in config:
        from okddip_tf.models import keras_backbone  # pylint: disable=import-outside-toplevel

        return keras_backbone.from_config(config)
    if "name" not in config:
        raise ValueError("Not a backbone config (no 'name' or 'keras_model' key): "
                         f"{sorted(config)}.")
    return get_backbone(config["name"], **config.get("options", {}))


# Registration happens on import; importing them here means callers never have to.
from okddip_tf.models import resnet_cifar  # noqa: E402,F401
from okddip_tf.models import densenet, resnet_imagenet, vgg  # noqa: E402,F401
from okddip_tf.models.keras_backbone import from_keras  # noqa: E402,F401
