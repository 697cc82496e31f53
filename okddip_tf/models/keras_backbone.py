"""Your own functional Keras classifier as an OKDDip backbone.

```python
base = keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3), classes=10,
                                           classifier_activation=None)
backbone = okddip_tf.models.from_keras(base, split_at="expanded_conv_10_add")
group = okddip_tf.GroupModel(backbone=backbone, num_classes=10, image_shape=(96, 96, 3))
```

The model is split at the layer `split_at`: the trunk is everything up to and including it, a
head everything after it. Branch-based groups share one trunk and give every student its own copy
of the head; network-based groups give every student copies of both, i.e. a network of its own.
Every copy is rebuilt from the model's serialised architecture; `weights=` says what it starts
from:

* "keep" (the default for a model object and a `.keras` file): the given model's weights,
  BatchNorm statistics included. A branch-based group's shared trunk and every student's head
  start from them; a network-based group copies the whole model into every student. So that the
  students are not identical at step 0 (identical peers would stay identical: they see the same
  batches and get the same gradients), every student except the deployed one (the leader; for
  methods without one, the student `okddip export` deploys) gets its own freshly initialised
  classification layer: the deployed student starts as exactly the given model, the peers as
  the given model with a new classifier each. With `num_classes=` different from the model's,
  the classification layer is replaced by one with `num_classes` outputs, freshly initialised
  for every student, the leader included; everything else is kept.
* "fresh" (the default for a factory): every copy is newly initialised, as the paper trains.

Layers the user froze (`trainable=False`) stay frozen in every copy, and a frozen BatchNorm layer
runs in inference mode (its moving statistics neither normalise the batch nor update), as in
Keras' fine-tuning guide. A classification layer drawn afresh is always trainable.

The features the peer attention and ONE's gate read are the input of the final classification
layer (the last layer with weights before the output; globally average-pooled when it is a
feature map), or the output of the layer `features_at`. A final softmax (a softmax layer, or a
softmax activation on the classification layer) is removed: the group needs logits.

The model's input may be of any kind: images of any size and channel count, token ids (an input
an `Embedding` reads: int32, values below its input_dim), feature vectors, frames
(`okddip_tf.inputs.InputSpec`, `Backbone.inputs()`). Only image models get the group's pixel
normalisation, and only when they do not normalise their input themselves (`raw_pixels`).

The backbone serialises the model's architecture (not its weights) into the group's config, so a
saved group loads, resumes and exports without the code or the file that made the model (the
kept weights are in the group's own weights), as long as the model consists of Keras' own
layers (custom layers, keras-hub's included, must be registered with
`keras.saving.register_keras_serializable` wherever the group is loaded: import keras_hub).
"""

import importlib
import json
import inspect
import os

import keras
from keras import layers

from okddip_tf import compat, inputs
from okddip_tf.errors import MissingInputError
from okddip_tf.models import transfer
from okddip_tf.models.backbone import Backbone

PREPROCESSING_LAYERS = (layers.Rescaling, layers.Normalization)
WEIGHTLESS_PASS_THROUGH = (layers.Flatten, layers.Reshape, layers.Dropout, layers.Activation,
                           layers.Softmax, layers.Identity)
WEIGHTS = ("keep", "fresh")


def from_keras(model_or_factory, split_at=None, features_at=None, *, raw_pixels=None,
               factory_kwargs=None, weights=None, num_classes=None, new_classifier=None):
    """Turns a functional Keras classifier (or a function building one) into a `Backbone`.

    ```python
    base = keras.saving.load_model("pretrained.keras")        # or keras.applications, keras-hub
    backbone = okddip_tf.models.from_keras(base, weights="keep", num_classes=37)
    group = okddip_tf.GroupModel(backbone=backbone, num_classes=37)
    ```

    Args:
      model_or_factory: a functional (or Sequential) `keras.Model` from one input (images,
        token ids, feature vectors, frames: `Backbone.inputs()` reads its spec) to class
        scores; the path of a `.keras` file holding one; a function returning one; or
        "package.module:function" naming such a function.
      split_at: the layer after which the branches start (branch-based groups share everything
        up to and including it). None splits right before the classification layer, so the
        students share all but their classifiers.
      features_at: the layer whose output is the students' features; None: the input of the
        final classification layer.
      raw_pixels: the model normalises its input itself (its first layer is a Rescaling or
        Normalization layer, as in keras.applications models with built-in preprocessing): the
        group then feeds it raw [0, 255] pixels instead of normalising them. None detects it.
        Only image models are normalised by the group: for other inputs it is always False.
      factory_kwargs: keyword arguments given to a factory, each only if the factory's
        signature accepts it (e.g. {"num_classes": 10, "input_shape": (32, 32, 3)}).
      weights: "keep" (the students start from the model's weights, see the module docstring)
        or "fresh" (newly initialised). None: "keep" for a model object or a `.keras` file (its
        weights are what you hand over: pass "fresh" to train it from scratch), "fresh" for a
        factory (a function builds a new model, whose weights carry nothing).
      num_classes: the number of classes the group trains on; if it differs from the model's,
        the classification layer (a Dense or Conv layer) is replaced by a freshly initialised
        one with `num_classes` outputs. None keeps the model's.
      new_classifier: True draws every student's classifier afresh even where the class count
        stays (fine-tuning on other classes that happen to be as many: their old scores mean
        nothing); None replaces it only where `num_classes` differs from the model's.

    Returns:
      A `Backbone` that `GroupModel(backbone=...)` accepts.

    Raises:
      ValueError: the model is not functional, has several inputs or outputs, or cannot be split
        at `split_at` (the message lists the layers it can be split at, or says how to split
        inside a nested model).
    """
    if new_classifier not in (None, True, False):
        raise ValueError(f"new_classifier must be True, False or None, got {new_classifier!r}.")
    if weights not in (None,) + WEIGHTS:
        raise ValueError(f"weights must be 'keep' or 'fresh' (or None for the default), got "
                         f"{weights!r}.")
    factory = None
    if is_keras_file(model_or_factory):
        model_or_factory = load_model_file(model_or_factory)
    elif isinstance(model_or_factory, str):
        factory = model_or_factory
        model_or_factory = import_factory(model_or_factory)
    if isinstance(model_or_factory, keras.Model):
        model = model_or_factory
        weights = weights or "keep"
    elif callable(model_or_factory):
        model = call_factory(model_or_factory, factory_kwargs or {})
        weights = weights or "fresh"
    else:
        raise TypeError("from_keras needs a keras.Model, a .keras file, a function returning a "
                        "model, or a 'package.module:function' string; got "
                        f"{type(model_or_factory).__name__}.")
    check_functional(model)
    architecture = keras.saving.serialize_keras_object(model)
    # How the user compiled it is not the group's (keras-hub models compile themselves, and
    # rebuilding them from that warns).
    architecture.pop("compile_config", None)
    # A JSON string: Keras' own config serialisation would mangle a nested model config.
    serialized = json.dumps(architecture)
    config = {"keras_model": serialized, "split_at": split_at,
              "features_at": features_at, "raw_pixels": raw_pixels, "factory": factory,
              "weights": weights, "num_classes": num_classes,
              "new_classifier": bool(new_classifier),
              "frozen": transfer.frozen_layers(model)}
    return from_config(config, source=model if weights == "keep" else None)


def from_config(config, source=None):
    """Rebuilds a `from_keras` backbone from its `get_config()` (no user code needed).

    The config holds the architecture, not the weights: the students are built with the weights
    of `source` (`from_keras` passes the user's model when weights="keep"), else initialised, as
    when a saved group is loaded (its own weights are then loaded over them).
    """
    # Deserialising consumes the dict it is given: every use gets its own copy.
    template = keras.saving.deserialize_keras_object(json.loads(config["keras_model"]))
    check_functional(template)
    keep = config.get("weights", "fresh") == "keep"
    if source is not None:
        transfer.copy_all_weights(source, template)
    frozen = config.get("frozen")
    transfer.freeze(template, frozen)
    split_at, features_at = config.get("split_at"), config.get("features_at")
    classifier, classifier_features, after = classifier_chain(logits_tensor(template))
    given_classes = int(logits_tensor(template).shape[-1])
    new_classes = config.get("num_classes")
    replaced = (new_classes is not None and new_classes != given_classes) or bool(
        config.get("new_classifier"))
    if replaced or has_softmax_activation(classifier):
        # The classification layer rebuilt without its softmax, with the new number of classes.
        template = transfer.new_classifier(template, classifier_features, classifier, after,
                                           (new_classes or given_classes) if replaced else None,
                                           linear=has_softmax_activation(classifier))
    logits = logits_tensor(template)
    features = (output_of(template, features_at, "features_at") if features_at
                else classifier_chain(logits)[1])
    if split_at is None:
        split_at = producer(features).name
    split = output_of(template, split_at, "split_at")
    trunk_template = keras.Model(template.inputs[0], split, name="trunk_core")
    # Splitting right at the features: the head is the classifier, its input the features.
    features_are_input = features is split
    try:
        head_template = keras.Model(split, logits if features_are_input else [features, logits],
                                    name="head_core")
    except ValueError as error:
        raise ValueError(
            f"Model {template.name!r} cannot be split at layer {split_at!r}: the layers after it "
            f"also read tensors from before it (a skip connection crosses the split), or the "
            f"features layer {producer(features).name!r} comes before it ({error}). Pass "
            f"split_at= one of the layers it can be split at, e.g. "
            f"{split_points(template, features, logits)[-8:]}.") from None
    spec = input_spec_of(template)
    raw = config.get("raw_pixels")
    if raw is None:
        raw = first_layer_normalises(template)
    raw = bool(raw) and spec.is_image  # only images are normalised by the group
    feature_shape = tuple(features.shape[1:])
    num_classes = int(logits.shape[-1])

    def student_copy(part, sync_batchnorm, fresh=()):
        """A copy of the trunk or head with the kept weights, but for the layers in `fresh`."""
        copy = clone(part, sync_batchnorm, unseeded=fresh)
        transfer.freeze(copy, frozen)
        for name in fresh:
            copy.get_layer(name).trainable = True  # a classifier drawn afresh must learn
        if keep:
            transfer.copy_layer_weights(part, copy, skip=fresh)
        return copy

    def build_trunk(name, sync_batchnorm):
        core = student_copy(trunk_template, sync_batchnorm)
        # The trunk reads what the group feeds it: normalised float images, or the input as
        # it is (token ids stay integers).
        x = keras.Input(shape=spec.shape, name="normalized_images" if spec.is_image
                        else spec.name, dtype="float32" if spec.is_image else spec.dtype)
        return keras.Model(x, core(x), name=name)

    def build_head(name, num_classes_wanted, sync_batchnorm, deployed=False):
        if num_classes_wanted != num_classes:
            raise ValueError(
                f"Model {template.name!r} outputs {num_classes} classes but the group has "
                f"num_classes={num_classes_wanted}; pass num_classes={num_classes_wanted} to "
                "from_keras (it replaces the classification layer), or build the model with "
                f"{num_classes_wanted} classes (e.g. classes= for keras.applications).")
        kept_classifier = keep and deployed and not replaced
        core = student_copy(head_template, sync_batchnorm,
                            fresh=() if kept_classifier else (classifier.name,))
        feature_map = keras.Input(shape=tuple(split.shape[1:]), name="trunk_features")
        if features_are_input:
            student_features, student_logits = feature_map, core(feature_map)
        else:
            student_features, student_logits = core(feature_map)
        if len(feature_shape) == 3:
            student_features = layers.GlobalAveragePooling2D(name="pool")(student_features)
        elif len(feature_shape) != 1:
            student_features = layers.Flatten(name="flatten")(student_features)
        student_features = layers.Activation("linear", dtype="float32",
                                             name="features")(student_features)
        student_logits = layers.Activation("linear", dtype="float32",
                                           name="logits")(student_logits)
        return keras.Model(feature_map, [student_features, student_logits], name=name)

    feature_dim = feature_shape[-1] if len(feature_shape) in (1, 3) else int(
        keras.ops.prod(feature_shape))
    return Backbone(name=template.name, build_trunk=build_trunk, build_head=build_head,
                    trunk_channels=int(split.shape[-1]), feature_dim=int(feature_dim),
                    raw_pixels=raw, input_spec=spec,
                    config={**config, "split_at": split_at, "raw_pixels": raw})


def is_keras_file(model_or_factory):
    """A path (a string or os.PathLike) of a `.keras` file."""
    return isinstance(model_or_factory, (str, os.PathLike)) and \
        os.fspath(model_or_factory).endswith(".keras")


def require_model_file(path):
    if not os.path.isfile(path):
        raise MissingInputError(f"No model file {path!r}: save your model there with "
                                "model.save(path), or give the path of an existing .keras file.")


def load_model_file(path):
    """The model saved in a `.keras` file, with an error saying what to do when it is missing."""
    path = os.fspath(path)
    require_model_file(path)
    return keras.saving.load_model(path, compile=False)


def check_own_model(backbone):
    """Fails fast, before a run loads data, on a .keras file that is not there or a
    "module:factory" that does not import."""
    if is_keras_file(backbone):
        require_model_file(backbone)
    else:
        import_factory(backbone)


def import_factory(path):
    """"package.module:function" -> the function, with errors that say what to fix."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"Expected 'package.module:function', got {path!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"Cannot import {module_name!r} for backbone {path!r} ({error}); make "
                         "the module importable (install it, or add its folder to "
                         "PYTHONPATH).") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"{module_name!r} has no function {attribute!r} (backbone {path!r}).")
    return factory


def call_factory(factory, factory_kwargs):
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in factory_kwargs.items() if takes_any or k in parameters}
    model = factory(**kwargs)
    if not isinstance(model, keras.Model):
        raise TypeError(f"The backbone factory {factory.__name__} returned a "
                        f"{type(model).__name__}, not a keras.Model.")
    return model


def check_functional(model):
    if not isinstance(model, (compat.functional_model_class(), keras.Sequential)):
        inner = [layer.name for layer in model.layers if isinstance(
            layer, (compat.functional_model_class(), keras.Sequential))]
        hint = (f" It holds the functional model(s) {inner} (e.g. a keras-hub backbone): build "
                "the classifier on their graph, keras.Model(inner.input, head(inner.output)) "
                "with head your classification layers, and pass that." if inner else "")
        raise ValueError(f"{type(model).__name__} is a subclassed model, whose layers cannot be "
                         "split; build it with the functional API (keras.Model(inputs, "
                         f"outputs)).{hint}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Model {model.name!r} has {len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs; a backbone needs one input (images, token "
                         "ids, features, ...) and "
                         "one output of class scores.")


def producer(tensor):
    """The layer that produced a functional model's tensor."""
    return compat.keras_history(tensor)[0]


def producer_inputs(tensor):
    return compat.inbound_tensors(tensor)


def is_softmax(activation):
    return activation in (keras.activations.softmax, "softmax") or \
        getattr(activation, "__name__", "") == "softmax"


def has_softmax_activation(layer):
    return not isinstance(layer, (layers.Activation, layers.Softmax)) and \
        is_softmax(getattr(layer, "activation", None))


def logits_tensor(template):
    """The model's output, or the input of its final softmax layer."""
    output = template.outputs[0]
    layer = producer(output)
    if isinstance(layer, layers.Softmax) or (isinstance(layer, layers.Activation)
                                              and is_softmax(layer.activation)):
        return producer_inputs(output)[0]
    return output


def classifier_chain(logits):
    """(the classification layer, its input tensor, the weightless layers after it in order):
    the last layer with weights before the logits and what lies between them."""
    tensor, after = logits, []
    for _ in range(16):
        layer, inputs = producer(tensor), producer_inputs(tensor)
        if len(inputs) != 1 or isinstance(layer, layers.InputLayer):
            break
        if layer.weights:
            return layer, inputs[0], after[::-1]
        if not isinstance(layer, WEIGHTLESS_PASS_THROUGH):
            break
        after.append(layer)
        tensor = inputs[0]
    raise ValueError(f"Could not find the classification layer before the output (stopped at "
                     f"{producer(tensor).name!r}); pass features_at= the layer whose output "
                     "the classifier reads.")


def output_of(template, layer_name, argument):
    try:
        layer = template.get_layer(layer_name)
    except ValueError:
        nested = nested_model_holding(template, layer_name)
        if nested is not None:
            raise ValueError(
                f"Layer {layer_name!r} ({argument}) is inside the nested model {nested!r} of "
                f"{template.name!r}, which the group sees as one layer. Split after it "
                f"({argument}={nested!r}), or build your classifier on the nested model's graph "
                "so that its layers are the classifier's own, e.g. "
                "keras.Model(inner.input, head(inner.output)) for inner = "
                f"model.get_layer({nested!r}) and head your classification layers; then pass "
                "that model.") from None
        raise ValueError(f"Model {template.name!r} has no layer {layer_name!r} ({argument}); its "
                         f"last layers are {[l.name for l in template.layers][-10:]}.") from None
    try:
        output = layer.output
    except (AttributeError, ValueError):
        output = None
    if not isinstance(output, keras.KerasTensor):
        raise ValueError(f"Layer {layer_name!r} ({argument}) has several outputs or is called "
                         "more than once; name a layer with one output tensor.")
    return layer.output


def nested_model_holding(model, layer_name):
    """The name of the layer of `model` (a nested model) that holds a layer `layer_name`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                layer.get_layer(layer_name)
                return layer.name
            except ValueError:
                if nested_model_holding(layer, layer_name) is not None:
                    return layer.name
    return None


def split_points(template, features, logits):
    """Names of the layers a model can be split after (the head reads only their output)."""
    names = []
    for layer in template.layers[1:]:
        try:
            keras.Model(output_of(template, layer.name, "split_at"), [features, logits])
        except ValueError:
            continue
        names.append(layer.name)
    return names


def input_spec_of(template):
    """The `InputSpec` of a model's input: its shape and dtype, the kind they suggest.

    An input read by an `Embedding` layer holds token ids (int32, values below its input_dim),
    whatever dtype its `keras.Input` was declared with.
    """
    tensor = template.inputs[0]
    shape, dtype = tuple(tensor.shape[1:]), inputs.dtype_name(tensor.dtype)
    embeddings = [layer for layer in consumers_of_input(template)
                  if isinstance(layer, layers.Embedding)]
    if embeddings:
        return inputs.InputSpec(shape, dtype if dtype in inputs.INTEGER_DTYPES else "int32",
                                kind="tokens",
                                value_range=(0, min(layer.input_dim for layer in embeddings)))
    kind = inputs.infer_kind(shape, dtype)
    return inputs.InputSpec(shape, "float32" if kind == "images" else dtype, kind=kind,
                            value_range=inputs.PIXEL_RANGE if kind == "images" else None)


def consumers_of_input(template):
    return [layer for layer in template.layers[1:] if any(
        t is template.inputs[0] for inputs_ in compat.call_inputs(layer) for t in inputs_)]


def first_layer_normalises(template):
    return any(isinstance(layer, PREPROCESSING_LAYERS) for layer in consumers_of_input(template))


def clone(model, sync_batchnorm, unseeded=()):
    """A copy of a functional model with fresh weights (synchronised BatchNorm if asked); the
    layers named in `unseeded` draw their own values even where their initializer has a seed."""

    def clone_layer(layer):
        config = layer.get_config()
        if sync_batchnorm and isinstance(layer, layers.BatchNormalization):
            config["synchronized"] = True
        if layer.name in unseeded:
            config = transfer.without_seed(config)
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone_layer)
