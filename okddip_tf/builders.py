"""From a config to the things a run trains: method, strategy, data, group and optimizer.

`okddip train` (okddip_tf.train) and `okddip tune` (okddip_tf.tuner) build through these same
functions, so a setting works the same in both: the npz source, multi-worker sharding, the
strategy's checks, the method's options.
"""

import inspect

import keras

from okddip_tf import config as config_module
from okddip_tf import distribution, methods, models
from okddip_tf.data import npz
from okddip_tf.errors import ConfigError
from okddip_tf.group import GroupModel
from okddip_tf.optim import CoupledSGD, step_schedule


def build_method(config, prepared=None):
    """The one method instance a run trains with, from `config.model.method` and its sections.

    Args:
      config: the run's config.
      prepared: option values the pipeline prepared for the run (a teacher located or trained
        by okddip_tf.teachers), over the config's.

    The method draws what its run fixes from the seed (OKDDip without a leader: the reported
    student) and checks the group size and sharing; the group is then built with this instance.
    """
    options = {**methods.options_from_config(config), **(prepared or {})}
    method = methods.get_method_class(config.model.method)(**options)
    method.prepare_run(config.train.seed, config.model.num_students)
    method.check_group(config.model.num_students, config.model.sharing)
    return method


def build_strategy(config):
    """The config's distribution strategy, checked against its batch sizes and switches.

    Sets the precision policy first (an unknown one fails before anything is written), and
    MultiWorkerMirroredStrategy is made before TensorFlow runs any op, as it must be.
    """
    distribution.set_precision(config.train.precision)
    strategy = distribution.make_strategy(config.train.strategy, config.train.tpu)
    distribution.check_strategy(strategy, config.data.batch_size, config.data.eval_batch_size,
                                config.train.jit_compile, config.train.deterministic)
    return strategy


def backbone_options(model):
    """The backbone options of a config's model section, {name: value or None}.

    `model.dropout` goes to a backbone with a dropout option (vgg16), None resolved to the
    authors' value for the group (`config.authors_dropout`); set on another backbone it is an
    error, not silently unused.
    """
    options = {"split_stage": model.split_stage, "split_at": model.split_at,
               "batchnorm": None if model.batchnorm == "pytorch" else model.batchnorm}
    own = models.names_own_model(model.backbone)
    models.check_weights(model.backbone, model.get("weights"))
    if own:
        options["weights"] = model.get("weights")  # a registered network's are always fresh
    if not own and "dropout" in models.backbone_options(model.backbone):
        options["dropout"] = config_module.model_dropout(model)
    elif model.get("dropout") is not None:
        raise ConfigError(f"model.dropout={model.dropout} applies to backbones with dropout "
                          f"(vgg16), not {model.backbone!r}: leave it unset (None).")
    return options


def build_backbone(config, info):
    """The backbone of `config.model`: a registered name (with its options, `backbone_options`)
    or the user's own model ("package.module:factory", called with the dataset's classes and
    input shape, or a .keras file), given the dataset's number of classes (a model with another
    number gets a new classification layer, `from_keras`)."""
    model = config.model
    options = backbone_options(model)
    if not models.names_own_model(model.backbone):
        if info.image_shape is None:
            raise ConfigError(
                f"model.backbone={model.backbone!r} is an image network, but data "
                f"{info.name!r} holds {info.input_dtype} inputs of shape {list(info.input_shape)} "
                "per example (token ids or features). Train your own model on them: "
                "--config.model.backbone=FILE.keras or package.module:factory.")
        if all(value is None for value in options.values()):
            return model.backbone  # a name stays a plain name in the saved group
        return models.resolve_backbone(model.backbone, **options)
    factory_kwargs = {"num_classes": info.num_classes, "input_shape": info.example_shape}
    return models.resolve_backbone(model.backbone, **options, factory_kwargs=factory_kwargs,
                                   num_classes=info.num_classes)


def build_group(config, info, method):
    """The group model for a dataset: the config's model section, the dataset's shapes and the
    run's method instance (`build_method`). A backbone whose input does not take the dataset's
    examples is a ConfigError that names both."""
    model = config.model
    pixels = (dict(image_shape=info.image_shape, pixel_mean=info.pixel_mean,
                   pixel_std=info.pixel_std) if info.image_shape is not None else {})
    group = GroupModel(
        backbone=build_backbone(config, info), num_classes=info.num_classes,
        num_students=model.num_students, sharing=model.sharing, temperature=model.temperature,
        method=method, sync_batchnorm=model.sync_batchnorm, **pixels)
    if info.image_shape is None:
        try:
            group.example_spec.check((None, *info.input_shape), info.input_dtype)
        except ValueError as error:
            raise ConfigError(f"model.backbone={model.backbone!r} does not take the examples of "
                              f"data {info.name!r} ({info.input_dtype}, shape "
                              f"{list(info.input_shape)} each): {error}") from error
    return group


def build_optimizer(optim_config, steps_per_epoch):
    """The paper's SGD (coupled L2, Nesterov) with the step-wise learning-rate drops.

    `optim.weight_decay="decoupled"` gives Keras' SGD with decoupled weight decay
    (w <- w - lr * l2 * w after the update) instead, the alternative of decision 9.
    """
    schedule = step_schedule(steps_per_epoch, optim_config.learning_rate,
                             tuple(optim_config.drop_epochs), optim_config.drop_factor)
    if optim_config.get("weight_decay", "coupled") == "decoupled":
        return keras.optimizers.SGD(schedule, momentum=optim_config.momentum,
                                    nesterov=optim_config.nesterov,
                                    weight_decay=optim_config.l2 or None)
    return CoupledSGD(schedule, momentum=optim_config.momentum, nesterov=optim_config.nesterov,
                      l2=optim_config.l2)


def build_compiled_group(config, info, strategy, steps_per_epoch, method):
    """The compiled group with its optimizer built, inside the strategy's scope."""
    with strategy.scope():
        group = build_group(config, info, method)
        # train.jit_compile is TensorFlow's XLA switch; other backends (JAX) always compile.
        jit_compile = config.train.jit_compile or keras.backend.backend() != "tensorflow"
        group.compile(optimizer=build_optimizer(config.optim, steps_per_epoch),
                      jit_compile=jit_compile)
        group.optimizer.build(group.trainable_variables)  # to size and to restore it
    distribution.enable_multi_worker_fit(group, strategy)
    return group


def load_data(data_config, *, seed, epochs, initial_epoch=0):
    """(train, eval, info) of a data config: tf.data pipelines, or for data.source='npz' on JAX,
    device batches; sharded by example under a multi-worker strategy.

    `data_config` is a `config.data` section or a dict of its keys (the tuner swaps the splits).
    The npz source on JAX (okddip_tf.data.npz) imports no TensorFlow; the others need it.
    """
    options = dict(**data_config, seed=seed, epochs=epochs, initial_epoch=initial_epoch)
    if options["source"] == "npz":
        # Only what the array source takes: the tfds, folder and tf.data keys are not its own.
        accepted = inspect.signature(npz.load_datasets).parameters
        options = {key: value for key, value in options.items() if key in accepted}
        train_ds, eval_ds, info = npz.load_datasets(**options)
    else:
        try:  # the lazy package imports the tf.data sources here, on first use
            from okddip_tf.data import load_datasets  # pylint: disable=import-outside-toplevel
        except ImportError as error:
            raise ImportError(f"data.source={options['source']!r} reads data with TensorFlow, "
                              f"which is not installed ({error}). Without TensorFlow use "
                              "--config.data.source=npz --config.data.path=FILE.npz.") from error
        train_ds, eval_ds, info = load_datasets(**options)
    if keras.backend.backend() != "tensorflow":
        return train_ds, eval_ds, info
    return distribution.shard_by_example(train_ds), distribution.shard_by_example(eval_ds), info
