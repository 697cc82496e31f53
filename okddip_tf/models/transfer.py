"""What a user's model hands on to its copies in a group: its weights, its frozen layers and its
classifier (kept, drawn afresh per student, or replaced for a new number of classes).

`okddip_tf.models.keras_backbone` builds every student's trunk and head as a copy of a part of the
user's model; the functions here move weights and trainability from one model to another by
layer name (the copies keep the names of the model they were cloned from) and edit the
classification layer. See `from_keras` for the rules they implement.
"""

import keras
from keras import layers

# Layer options that hold the number of classes of a classification layer, by layer type.
CLASS_COUNT_OPTIONS = ((layers.Dense, "units"), (layers.Conv1D, "filters"),
                       (layers.Conv2D, "filters"), (layers.Conv3D, "filters"))


def frozen_layers(model, prefix=""):
    """The paths ("layer" or "nested_model/layer") of the layers with weights the user froze."""
    paths = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if not layer.trainable:
            paths.append(prefix + layer.name)
        elif isinstance(layer, keras.Model):
            paths += frozen_layers(layer, f"{prefix}{layer.name}/")
    return paths


def freeze(model, paths):
    """Sets `trainable = False` on the layers at `paths` that `model` holds (others are skipped).

    A nested model's config may rebuild it from constructor arguments (keras-hub models do), which
    do not record which of its layers were frozen: the paths do.
    """
    for path in paths or ():
        layer = model
        for name in path.split("/"):
            try:
                layer = layer.get_layer(name)
            except ValueError:  # in the other part of the split model
                layer = None
                break
        if layer is not None:
            # Through True: a model rebuilt from a config saying trainable=False has the flag but
            # not its sublayers' (Keras 3.15), and setting False again does not pass it on.
            layer.trainable = True
            layer.trainable = False


def copy_all_weights(source, target):
    """Copies every weight (BatchNorm statistics included) of `source` into its rebuilt copy."""
    values = source.get_weights()
    shapes = [tuple(v.shape) for v in target.weights]
    if [tuple(v.shape) for v in values] != shapes:
        raise ValueError(
            f"Model {source.name!r} does not rebuild from its config with the same weights "
            f"({len(values)} weights given, {len(shapes)} rebuilt): a custom layer's get_config "
            "probably leaves out an argument that shapes its weights. Fix its get_config, or "
            "pass weights='fresh'.")
    target.set_weights(values)


def copy_layer_weights(source, target, skip=()):
    """Copies the weights of each layer of `target` from the layer of that name in `source`."""
    for layer in target.layers:
        if layer.weights and layer.name not in skip:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def without_seed(config):
    """A layer config whose initializers draw new values for every copy (no fixed seed)."""
    config = dict(config)
    for key, value in config.items():
        if key.endswith("_initializer") and isinstance(value, dict) and \
                isinstance(value.get("config"), dict) and value["config"].get("seed") is not None:
            config[key] = {**value, "config": {**value["config"], "seed": None}}
    return config


def class_count_option(layer):
    """The config key holding the number of classes of a classification layer, or None."""
    return next((key for kind, key in CLASS_COUNT_OPTIONS if isinstance(layer, kind)), None)


def new_classifier(template, features, classifier, after, num_classes, linear):
    """`template` with its classification layer rebuilt: `num_classes` outputs (None: as many as
    before, keeping its weights) and, if `linear`, no activation.

    Args:
      template: the functional model; `features` is the classifier's input tensor in it.
      classifier: the classification layer; `after` the weightless layers between it and the
        logits (Flatten, Reshape, Dropout...), rebuilt after it.
    """
    config = classifier.get_config()
    if linear:
        config["activation"] = "linear"
    old_classes = None
    if num_classes is not None:
        key = class_count_option(classifier)
        if key is None:
            raise ValueError(
                f"Cannot give the classification layer {classifier.name!r} "
                f"({type(classifier).__name__}) {num_classes} classes: only Dense and Conv "
                f"layers can be replaced. Build the model with {num_classes} classes, or pass "
                "features_at= a layer before it and end the model with a Dense layer.")
        old_classes, config[key] = config[key], num_classes
    layer = type(classifier).from_config(config)
    x = layer(features)
    for follower in after:
        follower_config = follower.get_config()
        shape = follower_config.get("target_shape")
        if old_classes is not None and shape and shape[-1] == old_classes:
            follower_config["target_shape"] = tuple(shape[:-1]) + (num_classes,)
        x = type(follower).from_config(follower_config)(x)
    if num_classes is None:
        layer.set_weights(classifier.get_weights())
    layer.trainable = classifier.trainable or num_classes is not None
    return keras.Model(template.inputs[0], x, name=template.name)
