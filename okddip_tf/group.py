"""The group model: m students of one backbone trained together, with a leader to deploy."""

import keras
from keras import ops

from okddip_tf import metrics as group_metrics
from okddip_tf.errors import ConfigError
from okddip_tf import optim  # noqa: F401  registers CoupledSGD, which saved groups compile with
from okddip_tf import progress
from okddip_tf.methods import GroupContext, Students, create_method
from okddip_tf.models import resolve_backbone
from okddip_tf.normalization import CIFAR100_MEAN, CIFAR100_STD, PixelNormalization
from okddip_tf import inputs as input_specs
from okddip_tf import fit_checks  # the NaN guard, ramp-up warning and label checks of fit

SHARINGS = ("branch", "network")
IS_TENSORFLOW = keras.backend.backend() == "tensorflow"


def resolve_sync_batchnorm(sync_batchnorm):
    """"auto": synchronise BatchNorm when a TF strategy spreads each batch over several replicas."""
    if sync_batchnorm != "auto":
        return bool(sync_batchnorm)
    if not IS_TENSORFLOW:
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1


@keras.saving.register_keras_serializable(package="okddip_tf")
class GroupModel(keras.Model):
    """A group of m students of one backbone trained together by a method; one is deployed.

    For OKDDip (the default) the group is m - 1 auxiliary peers and a group leader. The group
    takes whatever single input its backbone takes (`input_spec`): raw images for the paper's
    networks, or, from your own model (`okddip_tf.models.from_keras`), images of any shape,
    token ids [B, T], feature vectors [B, F], frames [B, T, F]. `group(inputs)` returns a dict: `leader_logits` [B, C] (the deployed student); with peers, `peer_logits`
    [B, P, C]; and what the method adds (OKDDip: `attention` [B, P, P], rows summing to 1, and
    `peer_targets` [B, P, C], the attention-mixed peer logits; ONE: `gate` and
    `teacher_logits`; KD: `teacher_logits`). `group.leader` is the deployable functional model
    (raw inputs -> logits) that shares the trained weights.

    On TensorFlow the group runs its own steps, and `predict` returns the leader's logits. Other
    backends (JAX) train through Keras' default steps, with `compute_loss`/`compute_metrics`
    logging the same keys; there `predict` returns the output dict, label ranges are not asserted
    (see `okddip_tf.metrics.check_labels`), and `group.leader.predict` gives the leader's logits.

    `fit` stops at the first step whose loss is NaN or infinite, naming the step and the loss
    terms, and puts back the last weights whose loss was finite: it adds a
    `NaNGuard(keep_last_good=True)` unless `callbacks` holds a `NaNGuard`. It does not ramp the
    distillation weight up by itself (a Keras fit runs the callbacks it is given, nothing more):
    a distilling group fitted from step 0 at full weight without `DistillWeightRampup` warns
    once. Labels outside [0, num_classes) raise an `InputError` naming them, before training for
    in-memory labels and at the first bad batch for a dataset.

    Example:
    ```python
    group = okddip_tf.GroupModel(backbone="resnet32", num_classes=100, num_students=4)
    group.compile(optimizer=okddip_tf.paper_sgd(steps_per_epoch=390))
    group.fit(train_ds, validation_data=test_ds, epochs=300,
              callbacks=[okddip_tf.DistillWeightRampup(length=80)])
    leader = group.leader
    ablation = okddip_tf.GroupModel(method="okddip", method_options={"attention": "mean"})
    ```

    Args:
      backbone: a registered backbone name (see `okddip_tf.models.BACKBONES`), a configured
        `okddip_tf.models.Backbone` (`get_backbone(name, split_stage=..., batchnorm=...)`, or
        your own model through `okddip_tf.models.from_keras`), or its `get_config()` dict.
      num_classes: number of classes.
      num_students: m, the group size (the method says which sizes it takes).
      sharing: "branch" (shared trunk, last stage per student) or "network" (m networks).
      temperature: T of the distillation terms.
      method: a registered method name (see `okddip_tf.methods.SPECS`) or a
        `okddip_tf.methods.Method` instance, used as it is (`okddip train` builds one with
        `builders.build_method`); an instance another group already uses is copied.
      method_options: the method's options by name (e.g. {"attention": "mean"} for OKDDip).
      input_spec: what the group takes (`okddip_tf.inputs.InputSpec` or its config dict:
        shape without the batch axis, dtype, kind, name); None takes the backbone's
        (`backbone.inputs()`), with `image_shape` for an image backbone. The group keeps it as
        `group.example_spec` (Keras' own `input_spec` attribute is another thing).
      image_shape: (H, W, C) of the images the leader is built for (image backbones; the
        argument of earlier versions, kept); None: the backbone's, or H, W dynamic.
      pixel_mean, pixel_std: per-channel normalisation in [0, 255] units, the first layer of
        image groups whose backbone does not normalise its input itself (`raw_pixels`);
        other groups have no normalisation (`group.normalizer` is None).
      sync_batchnorm: True, False or "auto" (synchronise under a multi-replica TF strategy).
    """

    def __init__(
        self,
        backbone="resnet32",
        num_classes=100,
        num_students=4,
        sharing="branch",
        temperature=3.0,
        method="okddip",
        method_options=None,
        image_shape=None,
        pixel_mean=CIFAR100_MEAN,
        pixel_std=CIFAR100_STD,
        sync_batchnorm="auto",
        input_spec=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        spec = resolve_backbone(backbone)
        self.method = create_method(method, method_options)  # an unused instance as it is
        validate_group_args(num_classes, sharing, temperature)
        self.method.check_group(num_students, sharing)
        self.backbone, self.backbone_name, self.method_name = spec, spec.name, self.method.name
        # A name stays a name in the config; anything else is saved as the backbone's config.
        self._backbone_config = backbone if isinstance(backbone, str) and spec.config is None \
            else spec.get_config()
        self.num_classes, self.num_students, self.sharing = num_classes, num_students, sharing
        self.num_peers = self.method.num_peers(num_students)
        self.has_leader = self.method.has_leader(num_students)
        self.deployed_index = self.method.deployed_index(num_students)
        self.temperature = float(temperature)
        self.example_spec = resolve_input_spec(spec, input_spec, image_shape)
        self.sync_batchnorm = sync_batchnorm
        sync_bn = resolve_sync_batchnorm(sync_batchnorm)

        self.normalizer = None
        if spec.normalizes_pixels:
            self.normalizer = PixelNormalization(pixel_mean, pixel_std, name="normalize")
        names = [f"peer_{i}" for i in range(self.num_peers)] + ["leader"] * self.has_leader
        if sharing == "branch":
            self.trunks = [spec.build_trunk("trunk", sync_bn)]
        else:
            self.trunks = [spec.build_trunk(f"{n}_trunk", sync_bn) for n in names]
        self.heads = [spec.build_head(f"{n}_head", num_classes, sync_bn,
                                      deployed=i == self.deployed_index)
                      for i, n in enumerate(names)]
        context = GroupContext(spec, num_classes, num_students, self.num_peers, sharing, sync_bn,
                               self.image_shape, self.example_spec)
        self.method.bound = True  # its layers are this group's from here on
        for name, layer in self.method.build_layers(context).items():
            if hasattr(self, name):
                raise RuntimeError(f"Method {self.method_name!r} names a layer {name!r}, which the "
                                 "group already has.")
            setattr(self, name, layer)
        self.distill_weight = None
        if self.method.distills:
            # A variable, not a float: a compiled step reads its current value every call.
            self.distill_weight = self.add_weight(
                shape=(), initializer="ones", trainable=False, name="distill_weight"
            )
        self.trackers = group_metrics.GroupTrackers(
            self.method.terms, self.num_peers, self.method.distills, self.has_leader)
        object.__setattr__(self, "_leader", None)
        self.build((None,) + self.example_spec.shape)

    def build(self, input_shape):
        if self.normalizer is not None:
            self.normalizer.build(input_shape)
        self.built = True

    @property
    def image_shape(self):
        """(H, W, C) of an image group (None where H, W are dynamic), None for other inputs."""
        spec = self.example_spec
        return spec.shape if spec.is_image and spec.fully_defined else None

    def prepare_inputs(self, inputs):
        """Checks the batch against `example_spec`; normalised pixels (image groups) or the
        input cast to the backbone's dtype."""
        spec = self.example_spec
        spec.check(inputs.shape, getattr(inputs, "dtype", None))
        if self.normalizer is not None:
            return self.normalizer(inputs)
        return ops.cast(inputs, "float32" if spec.is_image else spec.dtype)

    # The forward pass.

    def call(self, inputs, training=False):
        x = self.prepare_inputs(inputs)
        shared = None
        if self.sharing == "branch":
            shared = self.trunks[0](x, training=training)
            feature_maps = [self.method.shared_features(shared)] * self.num_students
        else:
            feature_maps = [trunk(x, training=training) for trunk in self.trunks]
        features, logits = zip(
            *(head(h, training=training) for head, h in zip(self.heads, feature_maps))
        )
        outputs = {"leader_logits": logits[self.deployed_index]}  # [B, C]
        if self.num_peers:
            outputs["peer_logits"] = ops.stack(logits[:self.num_peers], axis=1)  # [B, P, C]
        outputs.update(self.method.outputs(Students(inputs, shared, features, logits), training))
        return outputs

    def leader_logits(self, inputs, training=False):
        """The deployed student alone: no other student or method layer runs."""
        x = self.prepare_inputs(inputs)
        trunk = self.trunks[0 if self.sharing == "branch" else self.deployed_index]
        _, logits = self.heads[self.deployed_index](trunk(x, training=training), training=training)
        return logits

    @property
    def leader(self):
        """The deployable student ("the leader"): a functional `keras.Model`, raw inputs -> logits.

        Its input is named and typed after `example_spec` (`images` float32 [B, H, W, 3],
        `token_ids` int32 [B, T], `features` float32 [B, F], ...). It shares the group's layer
        objects (so its weights are the trained ones) and holds nothing of the other students
        or the method's layers.
        """
        if self._leader is None:
            spec = self.example_spec
            inputs = keras.Input(shape=spec.shape, dtype=spec.dtype, name=spec.name)
            leader = keras.Model(inputs, self.leader_logits(inputs), name="leader")
            # Not tracked as a sub-layer: it holds no state of its own and must not change
            # what the group saves.
            object.__setattr__(self, "_leader", leader)
        return self._leader

    # Training and evaluation.

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            **kwargs):
        """`keras.Model.fit` that stops on a non-finite loss and on labels outside [0, C).

        See the class docstring and `okddip_tf.fit_checks`. Left at verbose="auto", the progress
        is `progress.ProgressLine`: the loss, the method's reported accuracy and the time left,
        not Keras' bar of every logged value (see `metrics`); an explicit `verbose`, or a
        progress bar among `callbacks`, gets Keras' behaviour.
        """
        fit_checks.check_fit_labels(self, y, kwargs.get("validation_data"))
        callbacks = fit_checks.fit_callbacks(self, callbacks)
        if verbose == "auto":
            callbacks = progress.with_progress_line(callbacks)
        with fit_checks.clear_label_errors():
            return super().fit(x=x, y=y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                               callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, with the label checks of `fit`."""
        fit_checks.check_label_values(y, self.num_classes)
        with fit_checks.clear_label_errors():
            return super().evaluate(x, y, *args, **kwargs)

    @property
    def metrics(self):
        # Exactly our trackers: Keras' built-in "loss" tracker would otherwise be logged as 0.
        return self.trackers.all()

    def compute_group_loss(self, labels, outputs):
        """The method's loss terms for one batch (a dict with the total under `loss`)."""
        weight = self.distill_weight if self.distill_weight is not None else 0.0
        return self.method.loss(labels, outputs, temperature=self.temperature,
                                distill_weight=weight)

    # Two ways to train, one loss. On TensorFlow the group runs its own `train_step` (the design
    # card's custom step: one tape over the two-level loss, the loss scaled for the replicas of a
    # tf.distribute strategy, every term logged). Keras' JAX trainer cannot take a TF-style
    # train_step (it compiles a stateless step of its own), so there Keras' default steps call
    # `compute_loss` and `compute_metrics` below, which compute and log the same terms through
    # `compute_group_loss`. tests/test_jax_backend.py checks both give the same step.

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss, scaled for the replicas; lets Keras' default steps train the group.

        It updates the loss trackers too (`compute_metrics` updates the others).
        """
        if sample_weight is not None:
            raise ValueError("GroupModel does not support sample weights; pass (images, labels).")
        labels = group_metrics.check_labels(y, self.num_classes)
        terms = self.compute_group_loss(labels, y_pred)
        logged = group_metrics.log_terms(terms, labels, self.num_classes)
        self.trackers.update_losses(logged, self.distill_weight)
        return scale_for_replicas(terms["loss"])

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        labels = group_metrics.check_labels(y, self.num_classes)
        return self.trackers.update_predictions(labels, y_pred)

    if IS_TENSORFLOW:

        def train_step(self, data):
            images, labels = self.unpack_batch(data)
            import tensorflow as tf

            with tf.GradientTape() as tape:
                outputs = self(images, training=True)
                terms = self.compute_group_loss(labels, outputs)
                # Gradients are summed over replicas: each replica contributes loss / replicas.
                scaled = self.optimizer.scale_loss(scale_for_replicas(terms["loss"]))
            gradients = tape.gradient(scaled, self.trainable_variables)
            self.optimizer.apply(gradients, self.trainable_variables)
            return self.trackers.update(labels, outputs, terms, self.distill_weight)

        def test_step(self, data):
            images, labels = self.unpack_batch(data)
            outputs = self(images, training=False)
            terms = self.compute_group_loss(labels, outputs)
            return self.trackers.update(labels, outputs, terms, self.distill_weight)

        def predict_step(self, data):
            images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            return self.leader_logits(images, training=False)

        def unpack_batch(self, data):
            images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            if labels is None:
                raise ValueError("Training and evaluation need (images, labels) batches; got images only.")
            if sample_weight is not None:
                raise ValueError("GroupModel does not support sample weights; pass (images, labels).")
            return images, group_metrics.check_labels(labels, self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": self._backbone_config,
            "num_classes": self.num_classes,
            "num_students": self.num_students,
            "sharing": self.sharing,
            "temperature": self.temperature,
            "method": self.method_name,
            "method_options": self.method.get_config(),
            "input_spec": self.example_spec.get_config(),
            "pixel_mean": self.normalizer.mean if self.normalizer else CIFAR100_MEAN,
            "pixel_std": self.normalizer.std if self.normalizer else CIFAR100_STD,
            "sync_batchnorm": self.sync_batchnorm,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**upgrade_config(config))


# GroupModel arguments of okddip_tf before methods had their own options (0.1.0 checkpoints).
LEGACY_OKDDIP_ARGS = ("attention_dim", "attention_scale", "detach_targets", "target_space")


def upgrade_config(config):
    """A saved group's config in today's arguments: OKDDip's old arguments become its options."""
    config = dict(config)
    legacy = {key: config.pop(key) for key in LEGACY_OKDDIP_ARGS if key in config}
    if legacy and config.get("method", "okddip") == "okddip":
        config["method_options"] = {**legacy, **(config.get("method_options") or {})}
    return config


def resolve_input_spec(backbone, input_spec, image_shape):
    """The group's `InputSpec`: the one given, else the backbone's, with `image_shape` for an
    image backbone (a saved group of earlier versions passes only `image_shape`)."""
    given = input_specs.spec_from(input_spec)
    own = backbone.inputs()
    if given is not None and image_shape:
        raise ConfigError("Pass input_spec or image_shape, not both (image_shape is the "
                          "older argument for image groups).")
    if image_shape:
        if not own.is_image:
            raise ConfigError(f"image_shape={tuple(image_shape)} is for image backbones; "
                              f"{backbone.name!r} takes {own.describe()}. Leave image_shape out "
                              "(the group takes the backbone's input) or pass input_spec=.")
        given = own.with_shape(image_shape)
    if given is None:
        return own
    # Convolutional image networks run at any height and width: only the channels must match.
    compared = zip(given.shape[-1:], own.shape[-1:]) if own.is_image else zip(given.shape,
                                                                              own.shape)
    if len(given.shape) != len(own.shape) or any(
            a is not None and b is not None and a != b for a, b in compared):
        raise ConfigError(f"The group's input {given.describe()} does not fit the backbone "
                          f"{backbone.name!r}, which takes {own.describe()}.")
    return given


def scale_for_replicas(loss):
    """loss / replicas under a TF strategy (its gradients are summed), else unchanged."""
    if not IS_TENSORFLOW:
        return loss
    import tensorflow as tf

    return loss / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)


def validate_group_args(num_classes, sharing, temperature):
    """Fails fast, saying what was wrong and how to fix it."""
    if sharing not in SHARINGS:
        raise ConfigError(f"sharing must be one of {SHARINGS}, got {sharing!r}.")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}. The paper uses 3.")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes}.")
