"""Backbone registry: registered backbones are looked up by name, optionally with options.

`get_backbone("resnet32", split_stage=2, batchnorm="keras")` configures a registered network;
`resolve_backbone` also takes a "module:factory" string or a `.keras` file (the user's own
functional Keras classifier, see `okddip_tf.models.keras_backbone.from_keras`), a
`Backbone.get_config()` dict, or a `Backbone`. The backbone modules register themselves here when `okddip_tf.models` imports them.
"""

from okddip_tf.errors import ConfigError
from okddip_tf.models import keras_backbone
from okddip_tf.models.backbone import Backbone

BACKBONES = {}  # name -> the backbone with its default options
_CONFIGURABLE = {}  # name -> (**options) -> Backbone
_OPTIONS = {}  # name -> the option names get_backbone(name, ...) accepts
# The options every registered network accepts (None keeps the network's default).
COMMON_OPTIONS = ("split_stage", "batchnorm")


def register_backbone(backbone, configure=None, extra_options=()):
    """Adds a backbone; a duplicate name is an error.

    Args:
      backbone: the backbone with its default options.
      configure: optional `(**options) -> Backbone` for `get_backbone(name, **options)`.
      extra_options: the options `configure` takes beside COMMON_OPTIONS (e.g. "dropout").
    """
    if backbone.name in BACKBONES:
        raise KeyError(f"Backbone {backbone.name!r} is already registered.")
    BACKBONES[backbone.name] = backbone
    if configure is not None:
        _CONFIGURABLE[backbone.name] = configure
        _OPTIONS[backbone.name] = COMMON_OPTIONS + tuple(extra_options)
    return backbone


def backbone_options(name):
    """The option names `get_backbone(name, ...)` accepts (() for an unknown or fixed one)."""
    return _OPTIONS.get(name, ())


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


def names_own_model(backbone):
    """Whether a backbone string names the user's own model: "module:factory" or a .keras file."""
    return isinstance(backbone, str) and (keras_backbone.is_keras_file(backbone) or
                                          ":" in backbone)


def check_weights(backbone, weights):
    """Refuses weights="keep" for a registered network (it has no weights to keep)."""
    if weights not in (None,) + keras_backbone.WEIGHTS:
        raise ConfigError(f"weights must be 'keep' or 'fresh' (or None for the default), got "
                          f"{weights!r}.")
    if weights == "keep" and not names_own_model(backbone):
        raise ConfigError(f"weights='keep' keeps the weights of your own model; the registered "
                          f"backbone {backbone!r} is built with new weights. Pass your model as a "
                          ".keras file or package.module:factory, or leave weights unset.")


def resolve_backbone(backbone, *, split_stage=None, batchnorm=None, split_at=None,
                     factory_kwargs=None, weights=None, num_classes=None, **options):
    """A `Backbone` from a name, a "module:factory" string or .keras file, a config dict or a
    `Backbone`.

    Args:
      backbone: a registered name; "package.module:factory" (an importable function returning a
        functional Keras classifier, see `from_keras`) or the path of a `.keras` file holding
        one; a dict from `Backbone.get_config`; or a `Backbone`, returned unchanged.
      split_stage, batchnorm: options of a registered backbone (None: its default).
      split_at: the layer name a user's model is split at (only with a user's model).
      factory_kwargs: the keyword arguments a "module:factory" function takes, if it takes them
        (`okddip train` passes num_classes and input_shape; see `from_keras`).
      weights, num_classes: what `from_keras` keeps of a user's model ("keep" or "fresh"; None:
        "keep" for a .keras file, "fresh" for a factory) and the classes it is given.
      options: a registered network's own options (e.g. vgg16's dropout; None: its default).
    """
    options = {key: value for key, value in options.items() if value is not None}
    if isinstance(backbone, Backbone):
        if split_stage is not None or batchnorm is not None or split_at is not None or options \
                or weights is not None:
            raise ValueError("Options (split_stage, batchnorm, split_at, weights) apply to "
                             "backbone names; this Backbone object is already configured.")
        return backbone
    if isinstance(backbone, dict):
        return backbone_from_config(backbone)
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a name, a 'module:factory' string, a .keras file, a "
                        f"Backbone or a config dict, got {type(backbone).__name__}.")
    check_weights(backbone, weights)
    if names_own_model(backbone):
        if split_stage is not None or batchnorm is not None or options:
            raise ConfigError(f"split_stage, batchnorm and {sorted(options) or 'other options'} "
                              "apply to registered backbones; a user's model keeps its own "
                              "layers (use split_at to choose the split).")
        return keras_backbone.from_keras(backbone, split_at=split_at,
                                         factory_kwargs=factory_kwargs, weights=weights,
                                         num_classes=num_classes)
    if split_at is not None:
        raise ValueError(f"split_at names a layer of your own model; for the registered "
                         f"backbone {backbone!r} use split_stage (an integer stage index).")
    return get_backbone(backbone, split_stage=split_stage, batchnorm=batchnorm, **options)


def backbone_from_config(config):
    """Rebuilds a backbone from `Backbone.get_config()`."""
    if "keras_model" in config:
        return keras_backbone.from_config(config)
    if "name" not in config:
        raise ValueError("Not a backbone config (no 'name' or 'keras_model' key): "
                         f"{sorted(config)}.")
    return get_backbone(config["name"], **config.get("options", {}))
